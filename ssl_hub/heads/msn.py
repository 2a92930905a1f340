"""MSN's projection head (Assran et al., 2022, arXiv:2204.07141, section 4; official ``src/msn_train.py``)."""

from __future__ import annotations

from torch import nn

from ssl_hub._validation import check_positive_int
from ssl_hub.heads.projection import ProjectionHead


class MSNProjectionHead(ProjectionHead):
    """3-layer MLP with batch norm and GELU after the two hidden layers, to a 256-d embedding.

    "We train with a 3-layer projection head with output dimension 256 and batch-normalization at the input and
    hidden layers" (MSN, section 4); linear weights start from a truncated normal (std 0.02) as in the official
    ``init_model``. MSN and PMSN use it. LightlySSL's name and defaults (``input_dim`` 768 is a ViT-B's width).

    Args:
        input_dim: Backbone feature width.
        hidden_dim: Width of the two hidden layers.
        output_dim: Embedding width compared with the prototypes.
    """

    def __init__(self, input_dim: int = 768, hidden_dim: int = 2048, output_dim: int = 256) -> None:
        for name, value in [("input_dim", input_dim), ("hidden_dim", hidden_dim), ("output_dim", output_dim)]:
            check_positive_int(name, value, type(self).__name__)
        super().__init__(
            [
                (input_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.GELU()),
                (hidden_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.GELU()),
                (hidden_dim, output_dim, None, None),
            ]
        )
        for module in self.layers.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02, a=-2.0, b=2.0)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
