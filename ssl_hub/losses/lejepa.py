"""LeJEPA's loss: view invariance plus SIGReg (Balestriero & LeCun, 2025, arXiv:2511.08544)."""

from __future__ import annotations

import torch
from torch import nn

from ssl_hub._validation import check_probability
from ssl_hub.losses.sigreg import SIGReg
from ssl_hub.losses.utils import at_least_float32, sum_of_terms


class LeJEPALoss(nn.Module):
    """``lambda_param * SIGReg(all views) + (1 - lambda_param) * invariance``, the paper's eq. for LeJEPA.

    The invariance (the JEPA's prediction term) is the squared distance of every view's embedding, global and local,
    to the mean of the global views' embeddings of its image, averaged over views, images and dimensions; SIGReg
    (:class:`~ssl_hub.losses.SIGReg`) pulls each view's embeddings towards an isotropic Gaussian. No stop-gradient,
    teacher or predictor: the official code's single trade-off.

    Args:
        lambda_param: Weight of SIGReg in ``[0, 1]``; the invariance has ``1 - lambda_param`` (0.05, LightlySSL's
            default and the paper's; its experiments span 0.01 to 0.1).
        sigreg_num_vectors: Random directions of SIGReg per call (1024, the official README).
        sigreg_knots: Integration points of SIGReg on ``[0, sigreg_t_max]`` (17).
        sigreg_t_max: End of SIGReg's integration grid (3).
        gather_distributed: SIGReg over the global batch under multi-process training; the invariance is per image,
            so its mean over the ranks (DDP's gradient averaging) is the global batch's.
        seed: Seed of SIGReg's directions (:class:`~ssl_hub.losses.SIGReg`).
    """

    def __init__(
        self,
        lambda_param: float = 0.05,
        sigreg_num_vectors: int = 1024,
        sigreg_knots: int = 17,
        sigreg_t_max: float = 3.0,
        gather_distributed: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        check_probability("lambda_param", lambda_param, "LeJEPALoss")
        self.lambda_param = lambda_param
        self.sigreg = SIGReg(
            num_vectors=sigreg_num_vectors,
            knots=sigreg_knots,
            t_max=sigreg_t_max,
            gather_distributed=gather_distributed,
            seed=seed,
        )

    def forward(self, *, global_proj: torch.Tensor, local_proj: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of ``(V_g, N, D)`` global-view and ``(V_l, N, D)`` local-view embeddings of ``N`` images (LightlySSL's
        keyword names; no local views allowed)."""
        return sum_of_terms(self.terms(global_proj=global_proj, local_proj=local_proj))

    def terms(self, *, global_proj: torch.Tensor, local_proj: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The loss's weighted terms, which sum to it: ``invariance`` and ``sigreg``."""
        shapes = [tuple(global_proj.shape)] + ([] if local_proj is None else [tuple(local_proj.shape)])
        if (
            global_proj.ndim != 3
            or global_proj.shape[0] < 1
            or (local_proj is not None and (local_proj.ndim != 3 or local_proj.shape[1:] != global_proj.shape[1:]))
        ):
            raise ValueError(
                f"LeJEPALoss expects (V_g, N, D) global and (V_l, N, D) local embeddings of the same N images, got "
                f"{shapes}."
            )
        views = global_proj if local_proj is None else torch.cat([global_proj, local_proj])  # (V, N, D)
        views = at_least_float32(views)
        centres = views[: global_proj.shape[0]].mean(dim=0)  # (N, D): the global views' mean of each image
        invariance = (views - centres).square().mean()
        return {
            "invariance": (1 - self.lambda_param) * invariance,
            "sigreg": self.lambda_param * self.sigreg(views),
        }
