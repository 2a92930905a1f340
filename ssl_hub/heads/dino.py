"""DINO's projection head (Caron et al., 2021, arXiv:2104.14294, section 3.1 and official ``vision_transformer.py``)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

from ssl_hub._validation import check_positive_int
from ssl_hub.heads.projection import ProjectionHead


class DINOProjectionHead(ProjectionHead):
    """3-layer MLP (GELU) to a bottleneck, L2 normalisation, then a weight-normalised linear layer to K outputs.

    "The projection head consists of a 3-layer multi-layer perceptron (MLP) with hidden dimension 2048 followed by
    l2 normalization and a weight normalized fully connected layer with K dimensions" (section 3.1). The MLP's
    linear layers start from a truncated normal (std 0.02), as in the official code. With ``norm_last_layer`` the
    weight-norm magnitude ``g`` stays fixed at 1, so every output unit is a unit vector.

    Args:
        input_dim: Backbone feature width.
        hidden_dim: Width of the two hidden layers.
        bottleneck_dim: Width of the L2-normalised bottleneck.
        output_dim: Number of outputs ``K`` (65536 in the paper).
        batch_norm: Batch-normalise the hidden layers (off for ViTs, as in the paper).
        freeze_last_layer: Epochs during which the last layer does not train (``-1``: none); read by the DINO
            method's callbacks, or by :meth:`cancel_last_layer_gradients` in a plain loop.
        norm_last_layer: Fix the weight-norm magnitude of the last layer (stabler training).
    """

    def __init__(
        self,
        input_dim: int = 2048,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        output_dim: int = 65536,
        batch_norm: bool = False,
        freeze_last_layer: int = -1,
        norm_last_layer: bool = True,
    ) -> None:
        for name, value in [("hidden_dim", hidden_dim), ("bottleneck_dim", bottleneck_dim), ("output_dim", output_dim)]:
            check_positive_int(name, value, type(self).__name__)
        super().__init__(
            [
                (input_dim, hidden_dim, nn.BatchNorm1d(hidden_dim) if batch_norm else None, nn.GELU()),
                (hidden_dim, hidden_dim, nn.BatchNorm1d(hidden_dim) if batch_norm else None, nn.GELU()),
                (hidden_dim, bottleneck_dim, None, None),
            ]
        )
        for module in self.layers.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02, a=-2.0, b=2.0)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        self.freeze_last_layer = freeze_last_layer
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, output_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0  # g, (output_dim, 1)
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad_(not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, input_dim) -> (B, output_dim)``."""
        bottleneck = F.normalize(self.layers(x), dim=-1)  # (B, bottleneck_dim), unit norm
        return self.last_layer(bottleneck)

    def cancel_last_layer_gradients(self, current_epoch: int) -> None:
        """In a plain training loop, drop the last layer's gradients while ``current_epoch < freeze_last_layer``."""
        if current_epoch >= self.freeze_last_layer:
            return
        for parameter in self.last_layer.parameters():
            parameter.grad = None
