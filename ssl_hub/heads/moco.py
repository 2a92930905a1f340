"""MoCo's heads: v2's MLP projector (Chen et al., 2020, arXiv:2003.04297) and v3's BN projector / predictor
(Chen, Xie, He, 2021, arXiv:2104.02057)."""

from __future__ import annotations

from torch import nn

from ssl_hub._validation import check_positive_int
from ssl_hub.heads.projection import Block, ProjectionHead


class MoCoProjectionHead(ProjectionHead):
    """MoCo's MLP: ``num_layers`` linear layers, ReLU between them, and with ``batch_norm`` a BN after every layer.

    MoCo v2: 2 layers without BN, hidden width = backbone width (official ``moco/builder.py``, ``mlp=True``), 128 out.
    MoCo v3: BN after every layer including the output one, which has no affine parameters (official
    ``moco-v3/moco/builder.py``, ``_build_mlp``); projector 3 layers 4096 hidden, 256 out (paper), and the
    predictor is this head with 2 layers, 256 -> 4096 -> 256.

    Args:
        input_dim: Width of the input (backbone features, or projections for v3's predictor).
        hidden_dim: Width of the hidden layers.
        output_dim: Width of the output.
        num_layers: Number of linear layers (2 for v2, 3 for v3's projector, 2 for v3's predictor).
        batch_norm: BN after every layer (False for v2, True for v3).
    """

    def __init__(
        self,
        input_dim: int = 2048,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = False,
    ) -> None:
        check_positive_int("num_layers", num_layers, "MoCoProjectionHead", minimum=2)
        hidden_blocks: list[Block] = [
            (in_dim, hidden_dim, nn.BatchNorm1d(hidden_dim) if batch_norm else None, nn.ReLU())
            for in_dim in [input_dim] + [hidden_dim] * (num_layers - 2)
        ]
        output_norm = nn.BatchNorm1d(output_dim, affine=False) if batch_norm else None
        super().__init__([*hidden_blocks, (hidden_dim, output_dim, output_norm, None)])
