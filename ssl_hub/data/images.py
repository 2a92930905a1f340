"""Reading images of any common kind as RGB, with errors that name the file."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")


class UnreadableImageError(OSError):
    """An image file (or bytes) that cannot be decoded: corrupt, truncated or not an image."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"cannot read image {source}: {reason}")
        self.source = source
        self.reason = reason


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    Transparent pixels are composited over white (a plain ``convert("RGB")`` would expose whatever colour hides
    under alpha), 16-bit and float grayscale are rescaled to 8 bits, and CMYK / palette / 1-bit / YCbCr images go
    through PIL's own conversion.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        low, high = (0.0, 65535.0) if image.mode.startswith("I;16") else (values.min(), values.max())
        scaled = np.clip((values - low) / max(high - low, 1e-12) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(scaled).convert("RGB")
    return image.convert("RGB")


def open_image(source: str | Path | bytes) -> Image.Image:
    """Decode a file path or encoded bytes fully into an RGB image.

    Raises:
        UnreadableImageError: The data is not a decodable image (corrupt, truncated, unknown format).
    """
    name = f"<{len(source)} bytes>" if isinstance(source, bytes) else str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image.load()  # decode now: a truncated file fails here, not inside a transform
            return to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UnreadableImageError(name, str(error) or type(error).__name__) from error


def as_rgb_image(item: Any) -> Image.Image:
    """Turn what datasets hold as an image into an RGB PIL image.

    Accepts PIL images, file paths, encoded bytes, Hugging Face ``datasets`` image dicts (``{"bytes", "path"}``),
    ``(H, W)`` / ``(H, W, C)`` arrays and ``(C, H, W)`` tensors (uint8, or float in [0, 1]).
    """
    if isinstance(item, Image.Image):
        return to_rgb(item)
    if isinstance(item, (str, Path, bytes)):
        return open_image(item)
    if isinstance(item, dict) and ("bytes" in item or "path" in item):
        return open_image(item["bytes"] if item.get("bytes") is not None else item["path"])
    if isinstance(item, torch.Tensor):
        if item.ndim == 3 and item.shape[0] in (1, 3, 4):
            item = item.permute(1, 2, 0)
        item = item.detach().cpu().numpy()
    if isinstance(item, np.ndarray):
        array = item
        if array.dtype != np.uint8:
            array = np.clip(array.astype(np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        return to_rgb(Image.fromarray(array))
    raise TypeError(
        f"Cannot use a {type(item).__name__} as an image: expected a PIL image, a path, bytes, an array or a tensor."
    )
