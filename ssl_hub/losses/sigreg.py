"""SIGReg: Sketched Isotropic Gaussian Regularization (Balestriero & LeCun, LeJEPA, 2025, arXiv:2511.08544)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ssl_hub import distributed
from ssl_hub._validation import check_positive, check_positive_int
from ssl_hub.losses.utils import at_least_float32


class SIGReg(nn.Module):
    """The Epps-Pulley statistic of the embeddings projected on random unit directions, against a standard normal.

    For each of ``num_vectors`` directions ``a`` (unit vectors, drawn anew at every call) and each view's ``N``
    embeddings ``z_n``, with ``x_n = a . z_n`` and ``phi(t) = exp(-t^2 / 2)``, the standard normal's characteristic
    function (paper section 4, the official ``EppsPulley`` and ``SlicingUnivariateTest``)::

        T(a) = N * integral over [-t_max, t_max] of |mean_n exp(i t x_n) - phi(t)|^2 phi(t) dt

    by the trapezoidal rule on ``knots`` points of ``[0, t_max]``, the integrand being even in ``t``. The loss is
    ``T`` averaged over directions and views: it is smallest when every 1-D projection of the embeddings is a standard
    normal, i.e. when they are an isotropic Gaussian (Cramer-Wold), which rules collapse out.

    The directions come from a generator seeded by (``seed``, call count), both buffers: a resumed run draws the
    directions the original would have, and the ranks of a DDP run, whose buffers DDP copies from rank 0, draw the same
    ones, as the official code synchronises its ``global_step``.

    Args:
        num_vectors: Directions per call (LightlySSL's name; the official ``num_slices``, 1024 in its README).
        knots: Points of the integration grid on ``[0, t_max]`` (17).
        t_max: End of the integration grid (3).
        gather_distributed: Characteristic functions over the global batch under multi-process training (``N`` the
            global batch), as the official code all-reduces them.
        seed: Seed of the directions; ``None`` draws one from torch's default generator, so ``torch.manual_seed``
            before building fixes them as it fixes the initial weights.
    """

    seed: torch.Tensor  # () int64
    calls: torch.Tensor  # () int64

    def __init__(
        self,
        num_vectors: int = 1024,
        knots: int = 17,
        t_max: float = 3.0,
        gather_distributed: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("num_vectors", num_vectors, "SIGReg")
        check_positive_int("knots", knots, "SIGReg", minimum=2)
        check_positive("t_max", t_max, "SIGReg")
        self.num_vectors = num_vectors
        self.knots = knots
        self.t_max = t_max
        self.gather_distributed = gather_distributed
        seed = int(torch.randint(0, 2**62, ())) if seed is None else seed
        self.register_buffer("seed", torch.tensor(seed, dtype=torch.int64))
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def integration_grid(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
        """The ``(T,)`` points ``t`` of ``[0, t_max]``, ``phi(t)``, and the trapezoid weights times ``phi(t)``, doubled
        for ``[-t_max, 0]`` (computed in float64, then cast)."""
        t = torch.linspace(0.0, self.t_max, self.knots, dtype=torch.float64)
        spacing = self.t_max / (self.knots - 1)
        trapezoid = torch.full((self.knots,), 2 * spacing, dtype=torch.float64)
        trapezoid[[0, -1]] = spacing
        phi = torch.exp(-t.square() / 2)
        return tuple(x.to(dtype=dtype, device=device) for x in (t, phi, trapezoid * phi))

    def directions(self, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The ``(dim, num_vectors)`` unit directions of this call; advances the call count."""
        entropy = [int(self.seed), int(self.calls)]
        self.calls += 1
        generator = torch.Generator(device=device).manual_seed(
            int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])
        )
        directions = torch.randn(dim, self.num_vectors, generator=generator, device=device, dtype=dtype)
        return directions / directions.norm(dim=0)

    def forward(self, embeddings: torch.Tensor, directions: torch.Tensor | None = None) -> torch.Tensor:
        """SIGReg of ``(..., N, D)`` embeddings (``N`` samples of each leading index, e.g. ``(V, N, D)`` views);
        ``directions`` ``(D, M)`` replace the call's random ones."""
        if embeddings.ndim < 2 or embeddings.shape[-2] < 1:
            raise ValueError(f"SIGReg expects (..., N, D) embeddings, got shape {tuple(embeddings.shape)}.")
        embeddings = at_least_float32(embeddings)
        if directions is None:
            directions = self.directions(embeddings.shape[-1], embeddings.device, embeddings.dtype)
        t, phi, weights = self.integration_grid(embeddings.dtype, embeddings.device)
        x_t = (embeddings @ directions).unsqueeze(-1) * t  # (..., N, M, T)
        num_samples = embeddings.shape[-2]
        cos_sum, sin_sum = x_t.cos().sum(dim=-3), x_t.sin().sum(dim=-3)  # (..., M, T)
        if self.gather_distributed and distributed.is_distributed():
            cos_sum, sin_sum = distributed.all_reduce_sum(cos_sum), distributed.all_reduce_sum(sin_sum)
            count = torch.tensor(float(num_samples), device=embeddings.device)
            num_samples = int(distributed.all_reduce_sum(count).item())  # the global batch
        error = (cos_sum / num_samples - phi).square() + (sin_sum / num_samples).square()  # (..., M, T)
        statistic = (error @ weights) * num_samples  # (..., M)
        return statistic.mean()
