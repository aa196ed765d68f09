"""Pictures out: image grids with labels, upscaling, still images, and streamed GIF/MP4/WebP loops.

Images are uint8. Batches of images are channels-first (N, 3, H, W), as the model gives them;
single frames and grids are channels-last (H, W, 3), as image files and imageio want them.
Every file is written to a temporary file beside the target and renamed over it on success.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import IO

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from latentlab.errors import ConfigError, OutputError
from latentlab.fileio import atomic_path

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
FRAME_FORMATS = (".mp4", ".gif", ".webp", ".png")
MAX_GIF_FPS = 50  # GIF delays are whole centiseconds and browsers slow down anything under 2 cs
MAX_PNG_FRAMES = 256


def _array(images: torch.Tensor | np.ndarray) -> np.ndarray:
    return images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)


def _check_batch(images: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = _array(images)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1] != 3:
        raise ValueError(f"expected uint8 images (N, 3, H, W); got {arr.dtype} {arr.shape}")
    return arr


def _check_frame(frame: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = _array(frame)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected a uint8 frame (H, W, 3); got {arr.dtype} {arr.shape} (see to_hwc)")
    return arr


def to_hwc(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """uint8 (N, 3, H, W) -> (N, H, W, 3) ndarray, the layout of frames."""
    return np.ascontiguousarray(_check_batch(images).transpose(0, 2, 3, 1))


def make_grid(
    images: torch.Tensor | np.ndarray, *, nrow: int, pad: int = 2, pad_value: int | tuple[int, int, int] = 255
) -> np.ndarray:
    """Tile uint8 images (N, 3, H, W) into one (H', W', 3) picture, `nrow` images per row.

    As in torchvision, `nrow` is the number of images in each row; `pad` pixels of `pad_value`
    surround every image, outer border included.
    """
    arr = _check_batch(images)
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


def load_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


_SPELLED = {"α": "alpha", "σ": "sigma", "−": "-", "≠": "!=", "…": "...", "→": "->", "’": "'"}


def plain_text(text: str) -> str:
    """Spell out characters that Pillow's default font (Latin only) would draw as empty boxes."""
    return "".join(_SPELLED.get(ch, ch if ord(ch) < 0x250 else "?") for ch in text)


def text_size(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def label_grid(
    grid_rows: Sequence[Sequence[torch.Tensor | np.ndarray]],
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    *,
    pad: int = 2,
    pad_value: int = 255,
    font_size: int = 14,
) -> np.ndarray:
    """A grid of uint8 images (3, H, W), one list per row, with text labels in a margin -> (H', W', 3).

    Row labels go left of each row, column labels above each column (PIL's default font, shrunk
    down to 8 px until the column labels fit their columns; it has no Greek, so "α" is written
    "alpha", see `plain_text`). Short rows are filled with blank
    cells. Upscale small images first (see `upscale`) so the text is not larger than the faces.
    """
    if not grid_rows or not any(grid_rows):
        raise ValueError("label_grid needs at least one image")
    first = _array(next(img for row in grid_rows for img in row))
    cols = max(len(row) for row in grid_rows)
    blank = np.full_like(first, pad_value)
    cells = [_array(row[c]) if c < len(row) else blank for row in grid_rows for c in range(cols)]
    grid = make_grid(np.stack(cells), nrow=cols, pad=pad, pad_value=pad_value)
    if row_labels is not None and len(row_labels) != len(grid_rows):
        raise ValueError(f"{len(row_labels)} row labels for {len(grid_rows)} rows")
    if col_labels is not None and len(col_labels) != cols:
        raise ValueError(f"{len(col_labels)} column labels for {cols} columns")
    if row_labels is None and col_labels is None:
        return grid
    row_labels = None if row_labels is None else [plain_text(s) for s in row_labels]
    col_labels = None if col_labels is None else [plain_text(s) for s in col_labels]

    h, w = first.shape[1:]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    size = font_size
    font = load_font(size)
    while col_labels and size > 8 and max(text_size(probe, s, font)[0] for s in col_labels) > w:
        size -= 1
        font = load_font(size)
    line = text_size(probe, "Ag", font)[1]
    margin = max(4, size // 2)
    left = max(text_size(probe, s, font)[0] for s in row_labels) + 2 * margin if row_labels else 0
    top = line + 2 * margin if col_labels else 0
    ink = (0, 0, 0) if pad_value >= 128 else (255, 255, 255)
    canvas = Image.new("RGB", (grid.shape[1] + left, grid.shape[0] + top), (pad_value,) * 3)
    canvas.paste(Image.fromarray(grid), (left, top))
    draw = ImageDraw.Draw(canvas)
    for r, text in enumerate(row_labels or []):
        y = top + pad + r * (h + pad) + h // 2
        draw.text((left - margin, y), text, fill=ink, font=font, anchor="rm")
    for c, text in enumerate(col_labels or []):
        x = left + pad + c * (w + pad) + w // 2
        draw.text((x, top - margin), text, fill=ink, font=font, anchor="ms")
    return np.asarray(canvas)


def upscale(frame: torch.Tensor | np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize a uint8 frame (H, W, 3) to `size`: (height, width), or an int for the longer side.

    Whole-number enlargements repeat pixels (nearest neighbour): a 32 px sample shown at 256 px
    stays crisp and exact instead of being smoothed into the look of a blurrier model. Any other
    size (fractional, or smaller) uses Lanczos, the sharpest of Pillow's antialiasing filters.
    """
    arr = _check_frame(frame)
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


def _suffix(path: Path, allowed: Iterable[str], what: str) -> str:
    suffix = path.suffix.lower()
    allowed = tuple(allowed)
    if suffix not in allowed:
        raise OutputError(
            f"cannot write {what} {path}: unknown extension {suffix or '(none)'!r}; use {', '.join(allowed)}"
        )
    return suffix


def save_image(path: str | os.PathLike[str], image: torch.Tensor | np.ndarray, *, quality: int = 95) -> Path:
    """Write a uint8 (H, W, 3) image atomically as PNG or JPEG (chosen by the extension)."""
    path = Path(path)
    fmt = IMAGE_FORMATS[_suffix(path, IMAGE_FORMATS, "image")]
    arr = _check_frame(image)
    options = {"quality": quality} if fmt == "JPEG" else {}
    try:
        with atomic_path(path) as tmp:
            Image.fromarray(arr).save(tmp, format=fmt, **options)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def check_output_path(out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]]) -> None:
    """Raise OutputError if `out` is one of `inputs` (writing would destroy an input)."""
    out_path = Path(out)
    for inp in inputs:
        inp_path = Path(inp)
        same = out_path.resolve() == inp_path.resolve()
        if not same and out_path.exists() and inp_path.exists():
            same = os.path.samefile(out_path, inp_path)
        if same:
            raise OutputError(f"output {out_path} is also an input; choose another output path")


class FrameWriter:
    """Write frames (H, W, 3) uint8 one by one to .mp4, .gif, .webp or a .png strip.

    Use as a context manager; the file appears only when the block ends without error.
    - .mp4: H.264 (libx264), yuv420p, BT.709-tagged, faststart: plays in browsers. `quality` 1-9
      maps to CRF 46..5 (default 8: CRF 10). Odd widths/heights get one repeated edge column/row,
      since yuv420p needs even sizes (H.264 itself needs no multiple of 16: nothing is rescaled).
    - .gif: loops forever, a palette per frame (ffmpeg palettegen/paletteuse); frame delays are
      whole centiseconds, so ffmpeg alternates delays to keep the average at `fps` (at most 50).
    - .webp: animated lossy WebP (libwebp), loops forever, `quality` x 10 on WebP's 0-100 scale;
      libwebp stores identical consecutive frames once, with a longer duration.
    - .png: the frames tiled into one image, `nrow` per row (default: all in one row up to 10,
      else a square-ish grid); held in memory, so at most 256 frames.
    Video formats are streamed through one ffmpeg process (imageio-ffmpeg's binary): memory does
    not grow with the number of frames.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, fps: float = 30.0, quality: int = 8, nrow: int | None = None
    ) -> None:
        self.path = Path(path)
        self.format = _suffix(self.path, FRAME_FORMATS, "frames to")
        if isinstance(fps, bool) or not (isinstance(fps, numbers.Real) and math.isfinite(fps) and 0 < fps <= 240):
            raise ConfigError(f"fps {fps!r} must be a number between 0 and 240")
        if self.format == ".gif" and fps > MAX_GIF_FPS:
            raise ConfigError(f"fps {fps} is too fast for a GIF (at most {MAX_GIF_FPS}); write an .mp4 instead")
        if not (isinstance(quality, int) and 1 <= quality <= 9):
            raise ConfigError(f"quality {quality!r} must be a whole number from 1 to 9")
        self.fps, self.quality, self.nrow = float(fps), quality, nrow
        self.n_frames = 0
        self._size: tuple[int, int] | None = None  # (H, W) of the first frame
        self._held: list[np.ndarray] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._stack: contextlib.ExitStack | None = None
        self._tmp: Path | None = None

    def __enter__(self) -> FrameWriter:
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic_path(self.path))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        assert self._stack is not None
        if exc_type is None:
            try:
                self._finish()
            except BaseException as err:
                self._abort()
                self._stack.__exit__(type(err), err, err.__traceback__)
                raise
        else:
            self._abort()
        return bool(self._stack.__exit__(exc_type, exc, tb))

    def append(self, frame: torch.Tensor | np.ndarray) -> None:
        """Add one uint8 frame (H, W, 3); every frame must have the first one's size."""
        if self._stack is None:
            raise RuntimeError("use FrameWriter as a context manager: `with FrameWriter(path) as w:`")
        arr = _check_frame(frame)
        if self._size is None:
            self._size = arr.shape[:2]
        elif arr.shape[:2] != self._size:
            raise ValueError(f"frame {self.n_frames} is {arr.shape[:2]}, the first frame was {self._size}")
        if self.format == ".png":
            if self.n_frames >= MAX_PNG_FRAMES:
                raise OutputError(f"a PNG strip holds at most {MAX_PNG_FRAMES} frames; write .mp4 or .gif instead")
            self._held.append(arr.copy())
        else:
            if self.format == ".mp4" and (arr.shape[0] % 2 or arr.shape[1] % 2):
                arr = np.pad(arr, ((0, arr.shape[0] % 2), (0, arr.shape[1] % 2), (0, 0)), mode="edge")
            if self._proc is None:
                self._start(arr.shape[1], arr.shape[0])
            self._send(np.ascontiguousarray(arr))
        self.n_frames += 1

    def extend(self, frames: Iterable[torch.Tensor | np.ndarray] | np.ndarray) -> None:
        """Add frames (N, H, W, 3) or any iterable of (H, W, 3) frames."""
        for frame in frames:
            self.append(frame)

    def _command(self, width: int, height: int) -> list[str]:
        import imageio_ffmpeg

        rate = str(Fraction(self.fps).limit_denominator(1001))
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-hide_banner", "-loglevel", "error", "-nostdin"]
        cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", rate, "-i", "pipe:0", "-an"]
        if self.format == ".mp4":
            crf = round(51 * (1 - self.quality / 10))
            # sRGB in, BT.709 matrix and tags out: players then convert back with the right matrix.
            tags = "setparams=range=tv:colorspace=bt709:color_primaries=bt709:color_trc=bt709"
            cmd += ["-vf", f"scale=out_color_matrix=bt709:out_range=tv,{tags}", "-c:v", "libx264"]
            cmd += ["-pix_fmt", "yuv420p", "-crf", str(crf), "-movflags", "+faststart", "-f", "mp4"]
        elif self.format == ".gif":
            palette = "split[a][b];[a]palettegen=stats_mode=single[p];[b][p]paletteuse=new=1"
            cmd += ["-filter_complex", palette, "-c:v", "gif", "-loop", "0", "-f", "gif"]
        else:
            cmd += [
                "-c:v",
                "libwebp_anim",
                "-pix_fmt",
                "yuv420p",
                "-lossless",
                "0",
                "-quality",
                str(self.quality * 10),
                "-loop",
                "0",
            ]
            cmd += ["-f", "webp"]
        return [*cmd, str(self._tmp)]

    def _start(self, width: int, height: int) -> None:
        self._log = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(
                self._command(width, height), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log
            )
        except OSError as exc:
            raise OutputError(f"cannot start ffmpeg to write {self.path}: {exc.strerror or exc}") from None

    def _send(self, arr: np.ndarray) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(arr.data)
        except OSError:
            self._proc.wait()
            raise OutputError(f"ffmpeg stopped while writing {self.path}: {self._ffmpeg_error()}") from None

    def _ffmpeg_error(self) -> str:
        if self._log is None:
            return "no message"
        self._log.seek(0)
        lines = self._log.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else f"exit status {self._proc.returncode if self._proc else '?'}"

    def _finish(self) -> None:
        if self.n_frames == 0:
            raise OutputError(f"no frames were given for {self.path}; nothing written")
        if self.format == ".png":
            nrow = self.nrow or (self.n_frames if self.n_frames <= 10 else math.ceil(math.sqrt(self.n_frames)))
            grid = make_grid(np.stack(self._held).transpose(0, 3, 1, 2), nrow=nrow)
            self._held.clear()
            Image.fromarray(grid).save(self._tmp, format="PNG")
            return
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        if self._proc.wait() != 0:
            raise OutputError(f"ffmpeg could not write {self.path}: {self._ffmpeg_error()}")
        self._close_log()

    def _abort(self) -> None:
        self._held.clear()
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self._proc.stdin.close()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
