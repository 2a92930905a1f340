"""Reference computations for the masked-image tests, written out with loops in float64, independent of ssl_hub."""

from __future__ import annotations

import math

import torch


def pixel_patch(image: torch.Tensor, row: int, col: int, size: int) -> list[float]:
    """The pixels of one patch of a (C, H, W) image, row by row, the channels of a pixel together (MAE's order)."""
    channels = image.shape[0]
    return [
        float(image[c, size * row + y, size * col + x])
        for y in range(size)
        for x in range(size)
        for c in range(channels)
    ]


def normalized(values: list[float], eps: float = 1e-6) -> list[float]:
    """A patch minus its mean, over sqrt(its unbiased variance + eps) (MAE's norm_pix_loss)."""
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return [(v - mean) / math.sqrt(var + eps) for v in values]


def squared_error(prediction: torch.Tensor, target: list[float]) -> float:
    """Mean over the pixels of one patch of (prediction - target)^2."""
    return sum((float(p) - t) ** 2 for p, t in zip(prediction, target, strict=True)) / len(target)


def absolute_error(prediction: torch.Tensor, target: list[float]) -> float:
    """Sum over the pixels of one patch of |prediction - target|."""
    return sum(abs(float(p) - t) for p, t in zip(prediction, target, strict=True))


def sincos_reference(grid_height: int, grid_width: int, dim: int) -> torch.Tensor:
    """MAE's ``get_2d_sincos_pos_embed`` (also I-JEPA's and AIM's), one patch and one frequency at a time: patch
    ``(y, x)`` in raster order gets ``[sin(x w_i)], [cos(x w_i)], [sin(y w_i)], [cos(y w_i)]`` for the ``dim / 4``
    frequencies ``w_i = 1 / 10000 ** (i / (dim / 4))``. Float64, ``(grid_height * grid_width, dim)``."""
    quarter = dim // 4
    frequencies = [1.0 / 10000 ** (i / quarter) for i in range(quarter)]
    rows = []
    for y in range(grid_height):
        for x in range(grid_width):
            row = [math.sin(x * w) for w in frequencies] + [math.cos(x * w) for w in frequencies]
            row += [math.sin(y * w) for w in frequencies] + [math.cos(y * w) for w in frequencies]
            rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


class Capture:
    """Records the output of a module (a forward hook) and the keyword arguments it was called with."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.output: torch.Tensor | None = None
        self.inputs: tuple = ()
        self.kwargs: dict = {}
        module.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        self.inputs, self.kwargs, self.output = args, kwargs, output
