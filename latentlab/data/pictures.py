"""Picture primitives: uint8 layouts, grids, upscaling, still images written atomically, fonts and text.

Images are uint8. Batches of images are channels-first (N, 3, H, W), as the model gives them;
single frames and grids are channels-last (H, W, 3), as image files and imageio want them.
Every stage that makes pictures (training samples, evaluation, reports, edits) builds on these.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from latentlab.errors import OutputError
from latentlab.fileio import atomic_path

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def as_array(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """A tensor (moved to the CPU) or array as an ndarray, without copying where it can."""
    return images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)


def check_batch(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """uint8 images (N, 3, H, W) as an ndarray; anything else is a ValueError."""
    arr = as_array(images)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1] != 3:
        raise ValueError(f"expected uint8 images (N, 3, H, W); got {arr.dtype} {arr.shape}")
    return arr


def check_frame(frame: torch.Tensor | np.ndarray) -> np.ndarray:
    """One uint8 frame (H, W, 3) as an ndarray; anything else is a ValueError."""
    arr = as_array(frame)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected a uint8 frame (H, W, 3); got {arr.dtype} {arr.shape} (see to_hwc)")
    return arr


def check_suffix(path: Path, allowed: Iterable[str], what: str) -> str:
    """The lower-case extension of `path` if it is one of `allowed`, else an OutputError naming them."""
    suffix = path.suffix.lower()
    allowed = tuple(allowed)
    if suffix not in allowed:
        raise OutputError(
            f"cannot write {what} {path}: unknown extension {suffix or '(none)'!r}; use {', '.join(allowed)}"
        )
    return suffix


def to_hwc(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """uint8 (N, 3, H, W) -> (N, H, W, 3) ndarray, the layout of frames."""
    return np.ascontiguousarray(check_batch(images).transpose(0, 2, 3, 1))


def make_grid(
    images: torch.Tensor | np.ndarray, *, nrow: int, pad: int = 2, pad_value: int | tuple[int, int, int] = 255
) -> np.ndarray:
    """Tile uint8 images (N, 3, H, W) into one (H', W', 3) picture, `nrow` images per row.

    As in torchvision, `nrow` is the number of images in each row; `pad` pixels of `pad_value`
    surround every image, outer border included.
    """
    arr = check_batch(images)
    n, _, h, w = arr.shape
    if n == 0:
        raise ValueError("make_grid needs at least one image")
    if nrow < 1:
        raise ValueError(f"nrow must be at least 1, got {nrow}")
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    grid = np.empty((rows * h + (rows + 1) * pad, cols * w + (cols + 1) * pad, 3), dtype=np.uint8)
    grid[:] = np.asarray(pad_value, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + h, x : x + w] = arr[i].transpose(1, 2, 0)
    return grid


def upscale(frame: torch.Tensor | np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize a uint8 frame (H, W, 3) to `size`: (height, width), or an int for the longer side.

    Whole-number enlargements repeat pixels (nearest neighbour): a 32 px sample shown at 256 px
    stays crisp and exact instead of being smoothed into the look of a blurrier model. Any other
    size (fractional, or smaller) uses Lanczos, the sharpest of Pillow's antialiasing filters.
    """
    arr = check_frame(frame)
    h, w = arr.shape[:2]
    if isinstance(size, int):
        k = size / max(h, w)
        th, tw = max(1, round(h * k)), max(1, round(w * k))
    else:
        th, tw = (int(s) for s in size)
    if th < 1 or tw < 1:
        raise ValueError(f"cannot resize to {th}x{tw}")
    if th % h == 0 and tw % w == 0 and th // h == tw // w:
        f = th // h
        return np.repeat(np.repeat(arr, f, axis=0), f, axis=1)
    return np.asarray(Image.fromarray(arr).resize((tw, th), Image.Resampling.LANCZOS))


def save_image(path: str | os.PathLike[str], image: torch.Tensor | np.ndarray, *, quality: int = 95) -> Path:
    """Write a uint8 (H, W, 3) image atomically as PNG or JPEG (chosen by the extension)."""
    path = Path(path)
    fmt = IMAGE_FORMATS[check_suffix(path, IMAGE_FORMATS, "image")]
    arr = check_frame(image)
    options = {"quality": quality} if fmt == "JPEG" else {}
    try:
        with atomic_path(path) as tmp:
            Image.fromarray(arr).save(tmp, format=fmt, **options)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def load_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at `size` px, or its fixed bitmap font where Pillow has no FreeType."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


_SPELLED = {"α": "alpha", "σ": "sigma", "−": "-", "≠": "!=", "…": "...", "→": "->", "’": "'"}


def plain_text(text: str) -> str:
    """Spell out characters that Pillow's default font (Latin only) would draw as empty boxes."""
    return "".join(_SPELLED.get(ch, ch if ord(ch) < 0x250 else "?") for ch in text)


def text_size(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont) -> tuple[int, int]:
    """(width, height) in px of `text` drawn in `font`."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top
