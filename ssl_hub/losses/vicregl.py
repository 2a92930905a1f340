"""VICRegL's global and local loss (Bardes, Ponce, LeCun, NeurIPS 2022, arXiv:2210.01571)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ssl_hub import distributed
from ssl_hub._validation import check_non_negative, check_positive_int, check_probability
from ssl_hub.losses.utils import at_least_float32, sum_of_terms
from ssl_hub.losses.vicreg import covariance_loss, invariance_loss, variance_loss

# Views whose maps are matched to every other view's: the two global crops (the official ``for i in range(2)``).
N_GLOBAL_VIEWS = 2


def nearest_matches(distances: torch.Tensor, num_matches: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """VICRegL's matching: each location of the first map paired with its nearest location of the second, keeping the
    ``num_matches`` closest pairs (paper sec. 3.2; official ``neirest_neighbores``).

    Args:
        distances: ``(B, N, M)`` distances from the ``N`` locations of one map to the ``M`` of another.
        num_matches: Pairs to keep per image, at most ``N`` (``None``: all ``N``).

    Returns:
        ``(B, n)`` indices into the first map and ``(B, n)`` of their nearest locations in the second; the kept
        locations in increasing order, as the official code keeps them.
    """
    nearest_distance, nearest = distances.min(dim=2)  # (B, N) each
    count = distances.shape[1] if num_matches is None else min(num_matches, distances.shape[1])
    closest = nearest_distance.argsort(dim=1, stable=True)[:, :count]  # (B, n)
    kept = closest.sort(dim=1).values  # (B, n)
    return kept, nearest.gather(1, kept)


def _select(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` ``(B, n)`` of ``maps`` ``(B, N, D)``: ``(B, n, D)``."""
    return maps.gather(1, index.unsqueeze(2).expand(-1, -1, maps.shape[2]))


class VICRegLLoss(nn.Module):
    """VICRegL's loss: VICReg on the views' embeddings (global) and on matched locations of their feature maps
    (local), ``alpha * global + (1 - alpha) * local``, with the official ``main_vicregl.py``'s scaling.

    Views: 2 global views first, then any local views. The global term averages the invariance
    :func:`~ssl_hub.losses.vicreg.invariance_loss` over the pairs (global view ``i``, any other view ``j``), and the
    variance and covariance terms over all views. The local term takes, for each such pair, the VICReg terms of
    matched locations, found twice: by the distance of the embeddings at each location (every location of one map
    against its nearest in the other) and by the distance of the locations in the image (the ``num_matches[0]``
    locations of view ``i`` closest to one of view ``j``, and ``num_matches[1]`` the other way); each match in both
    directions, averaged, the two matchings added, averaged over the pairs. The variance and covariance of matched
    locations are taken over the batch, per match slot (:func:`~ssl_hub.losses.vicreg.covariance_loss`).

    Matches are capped at the number of a map's locations. LightlySSL's ``VICRegLLoss`` has these arguments; unlike
    the official default (``l2_all_matches``), it also keeps only ``num_matches`` of the matches by embedding distance.

    Args:
        lambda_param: Weight of the invariance terms (>= 0).
        mu_param: Weight of the variance terms (>= 0).
        nu_param: Weight of the covariance terms (>= 0).
        alpha: Weight of the global term; the local term has ``1 - alpha``.
        num_matches: Location matches kept from the global view and from the other view of each pair.
        gather_distributed: Variance and covariance over all ranks (with their gradient, as the official code).
        eps: Added to the variance before its square root.
    """

    def __init__(
        self,
        lambda_param: float = 25.0,
        mu_param: float = 25.0,
        nu_param: float = 1.0,
        alpha: float = 0.75,
        num_matches: tuple[int, int] = (20, 4),
        gather_distributed: bool = False,
        eps: float = 1e-4,
    ) -> None:
        super().__init__()
        for name, value in [("lambda_param", lambda_param), ("mu_param", mu_param), ("nu_param", nu_param)]:
            check_non_negative(name, value, "VICRegLLoss")
        check_non_negative("eps", eps, "VICRegLLoss")
        check_probability("alpha", alpha, "VICRegLLoss")
        if len(num_matches) != 2:
            raise ValueError(f"VICRegLLoss: num_matches is (global view, other view), got {num_matches}.")
        for value in num_matches:
            check_positive_int("num_matches", value, "VICRegLLoss")
        self.lambda_param = lambda_param
        self.mu_param = mu_param
        self.nu_param = nu_param
        self.alpha = alpha
        self.num_matches = (int(num_matches[0]), int(num_matches[1]))
        self.gather_distributed = gather_distributed
        self.eps = eps

    def forward(
        self,
        global_view_features: Sequence[tuple[torch.Tensor, torch.Tensor]],
        global_view_grids: Sequence[torch.Tensor],
        local_view_features: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
        local_view_grids: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The loss; arguments as :meth:`terms`."""
        return sum_of_terms(self.terms(global_view_features, global_view_grids, local_view_features, local_view_grids))

    def terms(
        self,
        global_view_features: Sequence[tuple[torch.Tensor, torch.Tensor]],
        global_view_grids: Sequence[torch.Tensor],
        local_view_features: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
        local_view_grids: Sequence[torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The weighted terms, which sum to the loss: ``global_*`` unless ``alpha`` is 0, ``local_*`` unless it is 1,
        each of ``invariance``, ``variance`` and ``covariance``.

        Args:
            global_view_features: For each of the 2 global views, ``(embedding (B, D), maps (B, H, W, D'))``.
            global_view_grids: For each global view, ``(B, H, W, 2)``: where each location of its map lies in the
                image (:func:`~ssl_hub.modules.location_grid`).
            local_view_features: The same for the local views (their maps may be smaller), or ``None``.
            local_view_grids: The local views' grids, or ``None``.
        """
        features = [*global_view_features, *(local_view_features or [])]
        grids = [*global_view_grids, *(local_view_grids or [])]
        self._check(global_view_features, global_view_grids, features, grids)
        embeddings = [at_least_float32(embedding) for embedding, _ in features]  # (B, D) each
        maps = [at_least_float32(view_maps).flatten(1, 2) for _, view_maps in features]  # (B, H_v * W_v, D') each
        locations = [grid.flatten(1, 2).to(maps[0].dtype) for grid in grids]  # (B, H_v * W_v, 2) each
        pairs = [(i, j) for i in range(N_GLOBAL_VIEWS) for j in range(len(features)) if j != i]
        terms: dict[str, torch.Tensor] = {}
        if self.alpha > 0:
            for name, value in self._global_terms(embeddings, pairs).items():
                terms[f"global_{name}"] = self.alpha * value
        if self.alpha < 1:
            local = [self._local_terms(maps[i], maps[j], locations[i], locations[j]) for i, j in pairs]
            for name in ("invariance", "variance", "covariance"):
                terms[f"local_{name}"] = (1 - self.alpha) * torch.stack([t[name] for t in local]).mean()
        return terms

    def _global_terms(self, embeddings: list[torch.Tensor], pairs: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        """Official ``global_loss``: invariance over the pairs, variance and covariance over the views."""
        invariance = torch.stack([invariance_loss(embeddings[i], embeddings[j]) for i, j in pairs]).mean()
        gathered = [self._gather(z) for z in embeddings]  # (W * B, D) each
        variance = torch.stack([variance_loss(z, self.eps) for z in gathered]).mean()
        covariance = torch.stack([covariance_loss(z) for z in gathered]).mean()
        return {
            "invariance": self.lambda_param * invariance,
            "variance": self.mu_param * variance,
            "covariance": self.nu_param * covariance,
        }

    def _local_terms(
        self, maps_a: torch.Tensor, maps_b: torch.Tensor, locations_a: torch.Tensor, locations_b: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Official ``_local_loss`` of one pair: the matches by embedding distance (all locations) plus those by image
        distance (``num_matches``), each matching the mean of its two directions."""
        with torch.no_grad():
            by_embedding = torch.cdist(maps_a.detach(), maps_b.detach())  # (B, N_a, N_b)
            by_location = torch.cdist(locations_a, locations_b)  # (B, N_a, N_b)
        totals = dict.fromkeys(("invariance", "variance", "covariance"), maps_a.new_zeros(()))
        for distances, (matches_a, matches_b) in [(by_embedding, (None, None)), (by_location, self.num_matches)]:
            index_a, nearest_b = nearest_matches(distances, matches_a)  # (B, n) each
            index_b, nearest_a = nearest_matches(distances.transpose(1, 2), matches_b)
            forward = self._vicreg_terms(_select(maps_a, index_a), _select(maps_b, nearest_b))
            backward = self._vicreg_terms(_select(maps_b, index_b), _select(maps_a, nearest_a))
            for name in totals:
                totals[name] = totals[name] + (forward[name] + backward[name]) / 2
        return totals

    def _vicreg_terms(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Official ``_vicreg_loss`` of matched ``(B, n, D)`` locations: invariance, and the mean of both sides'
        variance and covariance per match slot."""
        invariance = F.mse_loss(x, y)
        x, y = self._gather(x), self._gather(y)  # (W * B, n, D)
        return {
            "invariance": self.lambda_param * invariance,
            "variance": self.mu_param * (variance_loss(x, self.eps) + variance_loss(y, self.eps)) / 2,
            "covariance": self.nu_param * (covariance_loss(x) + covariance_loss(y)) / 2,
        }

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        gathered = distributed.gather(x) if self.gather_distributed else x
        if gathered.shape[0] < 2:
            raise ValueError("VICRegLLoss needs at least 2 images in the (global) batch for its variance terms.")
        return gathered

    @staticmethod
    def _check(
        global_view_features: Sequence[tuple[torch.Tensor, torch.Tensor]],
        global_view_grids: Sequence[torch.Tensor],
        features: list[tuple[torch.Tensor, torch.Tensor]],
        grids: list[torch.Tensor],
    ) -> None:
        if len(global_view_features) != N_GLOBAL_VIEWS or len(global_view_grids) != N_GLOBAL_VIEWS:
            raise ValueError(
                f"VICRegLLoss takes {N_GLOBAL_VIEWS} global views, got {len(global_view_features)} features and "
                f"{len(global_view_grids)} grids."
            )
        if len(features) != len(grids):
            raise ValueError(f"VICRegLLoss: one grid per view, got {len(features)} views and {len(grids)} grids.")
        batch_size = features[0][0].shape[0]
        for index, ((embedding, maps), grid) in enumerate(zip(features, grids, strict=True)):
            if embedding.ndim != 2 or maps.ndim != 4 or grid.ndim != 4 or grid.shape[-1] != 2:
                raise ValueError(
                    f"VICRegLLoss: view {index} must give an embedding (B, D), maps (B, H, W, D') and a grid "
                    f"(B, H, W, 2), got {tuple(embedding.shape)}, {tuple(maps.shape)} and {tuple(grid.shape)}."
                )
            if embedding.shape[0] != batch_size or maps.shape[:3] != grid.shape[:3]:
                raise ValueError(
                    f"VICRegLLoss: view {index}'s maps {tuple(maps.shape)} and grid {tuple(grid.shape)} must cover the "
                    f"same (B, H, W) locations of the batch of {batch_size} images."
                )
