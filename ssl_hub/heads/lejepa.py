"""LeJEPA's projector (Balestriero & LeCun, 2025, arXiv:2511.08544), with LightlySSL's name."""

from __future__ import annotations

from ssl_hub.heads.vicreg import VICRegProjectionHead


class LeJEPAProjectionHead(VICRegProjectionHead):
    """VICReg's expander at LeJEPA's sizes: ``num_layers`` linear layers, all but the last followed by batch
    normalisation and ReLU, as the official example's ``torchvision.ops.MLP`` (2048-2048-``output_dim``).

    Args:
        input_dim: Backbone feature width.
        hidden_dim: Width of the hidden layers (2048).
        output_dim: Embedding width SIGReg sees (64, LightlySSL's default; the official example uses 128, and 16 in
            its Imagenette recipe).
        num_layers: Number of linear layers (>= 2).
    """

    def __init__(
        self, input_dim: int = 2048, hidden_dim: int = 2048, output_dim: int = 64, num_layers: int = 3
    ) -> None:
        super().__init__(input_dim, hidden_dim, output_dim, num_layers)
