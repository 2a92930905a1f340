"""VICReg's expander (Bardes et al., ICLR 2022, arXiv:2105.04906, section 4.2), with LightlySSL's name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ssl_hub._validation import check_positive_int
from ssl_hub.heads.projection import Block, ProjectionHead


class VICRegProjectionHead(ProjectionHead):
    """``num_layers`` linear layers of which all but the last are followed by normalisation and ReLU.

    The paper's expander has three layers of 8192 units and batch normalisation. The loss centres the embeddings, so
    the last layer's bias has no effect; it is kept for the parameter layout LightlySSL checkpoints have.

    Args:
        input_dim: Backbone feature width.
        hidden_dim: Width of the hidden layers.
        output_dim: Embedding width the loss sees.
        num_layers: Number of linear layers (>= 2).
        norm_layer: Builds the normalisation of a hidden layer from its width: ``nn.BatchNorm1d`` (the paper's) or
            ``nn.LayerNorm`` (official VICRegL's expanders on ConvNeXt), as torchvision's ``MLP`` takes it.
    """

    def __init__(
        self,
        input_dim: int = 2048,
        hidden_dim: int = 8192,
        output_dim: int = 8192,
        num_layers: int = 3,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm1d,
    ) -> None:
        for name, value in [("input_dim", input_dim), ("hidden_dim", hidden_dim), ("output_dim", output_dim)]:
            check_positive_int(name, value, "VICRegProjectionHead")
        check_positive_int("num_layers", num_layers, "VICRegProjectionHead", minimum=2)
        hidden_blocks: list[Block] = []
        for in_dim in [input_dim] + [hidden_dim] * (num_layers - 2):
            norm = norm_layer(hidden_dim)
            # A bias before batch norm is cancelled by its centring; before a per-sample norm it is not.
            hidden_blocks.append((in_dim, hidden_dim, norm, nn.ReLU(), not isinstance(norm, _BatchNorm)))
        super().__init__([*hidden_blocks, (hidden_dim, output_dim, None, None)])
