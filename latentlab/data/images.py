"""Finding and decoding face images: any common format and mode -> uint8 (3, S, S), CelebA-cropped."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from latentlab.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
MAX_MEGAPIXELS = 40
MIN_SIDE = 8
CELEBA_ALIGNED_SIZE = (178, 218)
CELEBA_CROP_BOX = (15, 35, 163, 183)  # the centred 148x148 face square of an aligned CelebA image
NO_SHIFT = (0.0, 0.0)  # the standard crop window, not moved

_TRANSPARENT_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def list_images(folder: Path) -> list[Path]:
    """Every image under `folder` (recursive), sorted by relative path; hidden files and folders skipped."""
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"image folder {folder} does not exist; give a folder of .jpg/.png images")
    if not folder.is_dir():
        raise DataError(f"{folder} is a file, not a folder; give the folder that holds the images")
    found = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            found.append(rel)
    if not found:
        exts = ", ".join(IMAGE_EXTENSIONS)
        raise DataError(f"no images in {folder}; expected files ending in {exts}")
    return [folder / rel for rel in sorted(found, key=lambda r: r.as_posix())]


def load_image(path: Path, size: int, *, shift: tuple[float, float] = NO_SHIFT) -> np.ndarray:
    """Decode one image to uint8 (3, size, size) RGB: EXIF-rotated, face-cropped, antialiased resize.

    Aligned CelebA images (178x218) get the standard centred 148x148 crop; anything else a centre
    square. shift (dx, dy) moves the crop window by that many output pixels (fractions allowed: the
    sub-pixel crops of training's crop jitter). Bombs (over MAX_MEGAPIXELS), truncated and tiny
    (< MIN_SIDE px) images raise DataError.
    """
    return load_image_crops(path, size, shifts=[shift])[0]


def load_image_crops(path: Path, size: int, *, shifts: Sequence[tuple[float, float]]) -> list[np.ndarray]:
    """`load_image` for several crop shifts at once: the file is decoded once, then cropped once per shift."""
    path = Path(path)
    if size < 1:
        raise DataError(f"image size {size} is too small; use a positive size such as 64")
    im = open_rgb(path, size)
    width, height = im.size
    if min(width, height) < MIN_SIDE:
        raise DataError(f"{path} is only {width}×{height} pixels; images need at least {MIN_SIDE} px on each side")
    box = CELEBA_CROP_BOX if (width, height) == CELEBA_ALIGNED_SIZE else centre_square(width, height)
    crops = []
    for shift in shifts:
        moved = box if tuple(shift) == NO_SHIFT else shifted_box(box, shift, size, (width, height))
        out = im.resize((size, size), Image.Resampling.LANCZOS, box=moved, reducing_gap=3.0)
        crops.append(np.ascontiguousarray(np.asarray(out, dtype=np.uint8).transpose(2, 0, 1)))
    return crops


def open_rgb(path: Path, size: int) -> Image.Image:
    """Decode an image file upright (EXIF) and in RGB; bombs, truncated and unreadable files raise DataError.

    `size` is the output side the image is decoded for: big JPEGs decode at a reduced scale, kept at
    least twice that.
    """
    source = _open_checked(path, size)
    try:
        return _to_rgb(_orient(source, path))
    finally:
        source.close()


def centre_square(width: int, height: int) -> tuple[int, int, int, int]:
    """The largest centred square (left, top, right, bottom) inside a width×height image."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return (left, top, left + side, top + side)


def shifted_box(
    box: tuple[float, float, float, float], shift: tuple[float, float], size: int, image: tuple[int, int]
) -> tuple[float, float, float, float]:
    """A crop box moved by shift (dx, dy) output pixels of a size-pixel output, kept inside the image.

    Box units are source pixels. Where the image has no room (a square photo's centre square is the
    whole photo), the box moves only as far as the edge allows.
    """
    left, top, right, bottom = box
    dx = min(max(shift[0] * (right - left) / size, -left), image[0] - right)
    dy = min(max(shift[1] * (bottom - top) / size, -top), image[1] - bottom)
    return (left + dx, top + dy, right + dx, bottom + dy)


def try_load_image(
    path: Path, size: int, *, shifts: Sequence[tuple[float, float]] = (NO_SHIFT,)
) -> tuple[list[np.ndarray] | None, str]:
    """`load_image_crops` for batch jobs: (one array per shift, "") or (None, reason), so one bad file
    does not stop a run."""
    try:
        return load_image_crops(path, size, shifts=shifts), ""
    except DataError as exc:
        return None, _reason(str(exc), path)
    except Exception as exc:  # a decoder bug on one odd file must not stop a 200,000-image run
        return None, f"unexpected {type(exc).__name__}: {_short(exc)}"


def _reason(message: str, path: Path) -> str:
    """The DataError message without the leading file name (the caller lists the name itself)."""
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _open_checked(path: Path, size: int) -> Image.Image:
    """Open lazily, refuse decompression bombs from the header, then decode fully (no truncation allowed)."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not an image file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes)")
    limit = MAX_MEGAPIXELS * 1_000_000
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        what = f"{int(claimed.group(1)):,} pixels" if claimed else "more pixels than Pillow's safety limit"
        raise DataError(f"{path}: claims {what}; refusing to decode images over {MAX_MEGAPIXELS} megapixels") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({_short(exc)})") from None
    width, height = im.size
    if width * height > limit:
        im.close()
        raise DataError(
            f"{path}: claims {width}×{height} pixels; refusing to decode images over {MAX_MEGAPIXELS} megapixels"
        )
    if im.format == "JPEG" and (width, height) != CELEBA_ALIGNED_SIZE:
        # Big photos decode at 1/2, 1/4 or 1/8 scale (JPEG DCT scaling), kept at least twice the output size.
        factor = min(width, height) / (2 * size)
        if factor >= 2:
            im.draft(None, (math.ceil(width / factor), math.ceil(height / factor)))
    try:
        im.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        im.close()
        raise DataError(
            f"{path}: image data is corrupt or truncated ({_short(exc)}); re-download or remove it"
        ) from None
    return im


def _orient(im: Image.Image, path: Path) -> Image.Image:
    """Apply the EXIF Orientation tag so the face is upright, as a photo viewer shows it."""
    try:
        rotated = ImageOps.exif_transpose(im)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError) as exc:
        raise DataError(f"{path}: unreadable EXIF data ({_short(exc)})") from None
    return rotated if rotated is not None else im


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB: alpha composited on white, 16-bit and float scaled (not clipped) to 8 bits."""
    mode = im.mode
    if mode == "P" and "transparency" in im.info:
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in _TRANSPARENT_MODES:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I") or mode.startswith("F"):
        return Image.fromarray(_deep_to_uint8(np.asarray(im))).convert("RGB")
    return im.convert("RGB")


def _deep_to_uint8(values: np.ndarray) -> np.ndarray:
    """16/32-bit integer or float grey levels -> uint8.

    I;16 spans 0..65535. Mode I and F carry no range of their own, so: integers above 255 are read
    as 16-bit, float images within [0, 1] as unit-range; anything else is taken as 0..255 already.
    """
    if values.dtype.kind in "ui" and values.dtype.itemsize == 2:
        scaled = values.astype(np.float64) / 257.0
    elif values.dtype.kind in "ui":
        scaled = values.astype(np.float64)
        if scaled.max(initial=0) > 255:
            scaled = scaled / 257.0
    else:
        scaled = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if scaled.size and scaled.min() >= 0.0 and scaled.max() <= 1.0:
            scaled = scaled * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
