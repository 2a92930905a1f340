"""Small helpers shared by the losses."""

from __future__ import annotations

import torch


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Upcast half / bfloat16 activations (mixed precision) to float32; float64 stays float64."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def sum_of_terms(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """The loss made of named scalar ``terms`` (a loss's ``terms()``): their sum."""
    return torch.stack(list(terms.values())).sum()
