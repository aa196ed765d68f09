"""Frames out: streamed MP4/GIF/WebP loops and PNG strips, written atomically.

Frames are uint8 (H, W, 3). The file is written to a temporary file beside the target and renamed
over it only when every frame went in: an error leaves the old file (or nothing), never half a video.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import subprocess
from collections.abc import Generator
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import numpy as np
import torch
from PIL import Image

from latentlab.data.pictures import check_frame, check_suffix, make_grid
from latentlab.errors import ConfigError, OutputError
from latentlab.fileio import atomic_path

FRAME_FORMATS = (".mp4", ".gif", ".webp", ".png")
MAX_GIF_FPS = 50  # GIF delays are whole centiseconds and browsers slow down anything under 2 cs
MAX_PNG_FRAMES = 256


class _Stop(BaseException):
    """Thrown into imageio-ffmpeg's writer to abandon a file: a BaseException makes it kill ffmpeg at once."""


def ffmpeg_settings(suffix: str, quality: int) -> tuple[str, str, list[str]]:
    """(codec, output pixel format, further output options) of ffmpeg for a video `suffix` at `quality` 1-9."""
    if suffix == ".mp4":
        crf = round(51 * (1 - quality / 10))
        # sRGB in, BT.709 matrix and tags out: players then convert back with the right matrix.
        tags = "setparams=range=tv:colorspace=bt709:color_primaries=bt709:color_trc=bt709"
        scale = f"scale=out_color_matrix=bt709:out_range=tv,{tags}"
        return "libx264", "yuv420p", ["-vf", scale, "-crf", str(crf), "-movflags", "+faststart", "-f", "mp4"]
    if suffix == ".gif":
        palette = "split[a][b];[a]palettegen=stats_mode=single[p];[b][p]paletteuse=new=1"
        return "gif", "pal8", ["-filter_complex", palette, "-loop", "0", "-f", "gif"]
    return "libwebp_anim", "yuv420p", ["-lossless", "0", "-quality", str(quality * 10), "-loop", "0", "-f", "webp"]


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
    Video formats are streamed into one ffmpeg process (`imageio_ffmpeg.write_frames`): memory does
    not grow with the number of frames.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, fps: float = 30.0, quality: int = 8, nrow: int | None = None
    ) -> None:
        self.path = Path(path)
        self.format = check_suffix(self.path, FRAME_FORMATS, "frames to")
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
        self._video: Generator[None, np.ndarray | None, None] | None = None
        self._ffmpeg: subprocess.Popen[bytes] | None = None
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
        arr = check_frame(frame)
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
            if self._video is None:
                self._start(arr.shape[1], arr.shape[0])
            self._send(np.ascontiguousarray(arr))
        self.n_frames += 1

    def _start(self, width: int, height: int) -> None:
        import imageio_ffmpeg

        codec, pix_fmt, options = ffmpeg_settings(self.format, self.quality)
        self._video = imageio_ffmpeg.write_frames(
            str(self._tmp),
            (width, height),
            fps=Fraction(self.fps).limit_denominator(1001),
            codec=codec,
            pix_fmt_out=pix_fmt,
            quality=None,
            macro_block_size=1,
            ffmpeg_log_level="error",
            output_params=options,
        )
        try:
            self._video.send(None)  # starts ffmpeg
        except OSError as exc:
            self._video = None
            raise OutputError(f"cannot start ffmpeg to write {self.path}: {exc.strerror or exc}") from None
        # write_frames does not report ffmpeg's exit status; its process is read from the generator
        # so that a file ffmpeg failed to finish is never renamed into place.
        self._ffmpeg = self._video.gi_frame.f_locals.get("p") if self._video.gi_frame else None

    def _send(self, arr: np.ndarray) -> None:
        assert self._video is not None
        try:
            self._video.send(arr)
        except OSError:
            raise OutputError(f"ffmpeg stopped while writing {self.path}{self._status()}") from None

    def _status(self) -> str:
        code = None if self._ffmpeg is None else self._ffmpeg.poll()
        return "" if code is None else f" (exit status {code}; its message is above)"

    def _finish(self) -> None:
        if self.n_frames == 0:
            raise OutputError(f"no frames were given for {self.path}; nothing written")
        if self.format == ".png":
            nrow = self.nrow or (self.n_frames if self.n_frames <= 10 else math.ceil(math.sqrt(self.n_frames)))
            grid = make_grid(np.stack(self._held).transpose(0, 3, 1, 2), nrow=nrow)
            self._held.clear()
            Image.fromarray(grid).save(self._tmp, format="PNG")
            return
        assert self._video is not None
        self._video.close()  # ffmpeg reads the end of its input, finishes the file and exits
        self._video = None
        if self._ffmpeg is not None and self._ffmpeg.returncode != 0:
            raise OutputError(f"ffmpeg could not write {self.path}{self._status()}")

    def _abort(self) -> None:
        self._held.clear()
        if self._video is not None:
            with contextlib.suppress(_Stop, OSError):
                self._video.throw(_Stop())
            self._video = None
        if self._ffmpeg is not None:
            with contextlib.suppress(OSError):
                self._ffmpeg.kill()
            self._ffmpeg.wait()
