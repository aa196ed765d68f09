"""Interpolation loops between real faces: encode the key faces, walk a closed latent path, stream frames.

A loop through K faces has K segments of `frames` frames each: face 1 -> face 2 -> ... -> face K ->
face 1, the last frame one step before the first, so the file plays on repeat without a seam.
With easing, each segment starts with a short hold on its face (`hold_frames`) and then moves
with zero velocity at both ends (smoothstep). The first frame is the reconstruction of the first
face exactly (the path starts at its latent, t = 0 exactly).

Latents are made, decoded and written one batch at a time (`interpolation.path_latents`,
`render.FrameWriter`), so memory does not grow with the number of frames.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latentlab.data.pictures import to_hwc, upscale
from latentlab.errors import ConfigError, OutputError
from latentlab.flow.glow import Glow
from latentlab.render.edit import decode_batches, encode_faces
from latentlab.render.interpolation import METHODS, loop_schedule, path_latents
from latentlab.render.video import MAX_PNG_FRAMES, FrameWriter

MIN_VIEW = 256  # default frame side in px: the model's size times the smallest whole factor reaching this
MAX_FRAMES_PER_SEGMENT = 10_000


def hold_frames(frames: int, ease: bool) -> int:
    """Frames each face is held still at the start of its segment: a sixth of it when easing, else 0."""
    return frames // 6 if ease else 0


def loop_frames(n_keys: int, frames: int, *, ease: bool) -> list[tuple[int, float]]:
    """The schedule [(segment, t)] of a closed loop of `n_keys` faces, `frames` per segment, hold included."""
    if not 1 <= frames <= MAX_FRAMES_PER_SEGMENT:
        raise ConfigError(f"frames per segment {frames} must be between 1 and {MAX_FRAMES_PER_SEGMENT}")
    hold = hold_frames(frames, ease)
    return loop_schedule(n_keys, frames - hold, ease=ease, hold=hold, closed=True)


def view_size(image_size: int, size: int | None = None) -> int:
    """Frame side in px: `size`, else the smallest whole multiple of the image size >= MIN_VIEW."""
    if size is not None:
        if size < 1:
            raise ConfigError(f"size {size} must be a positive number of pixels, e.g. 256")
        return size
    return image_size * math.ceil(MIN_VIEW / image_size)


def interpolation_frames(
    model: Glow,
    keys: torch.Tensor,
    schedule: list[tuple[int, float]],
    *,
    method: str = "slerp",
    size: int | None = None,
    batch_size: int = 32,
) -> Iterator[np.ndarray]:
    """Yield the loop's frames, uint8 (H, W, 3) at `size` px, decoding `batch_size` latents at a time.

    keys (K, D) latents of the key faces, schedule as from `loop_frames`.
    """
    side = view_size(model.config.image_size, size)
    for z in path_latents(keys, schedule, method=method, batch_size=batch_size):
        for images in decode_batches(model, z, batch_size=batch_size):
            for frame in to_hwc(images):
                yield upscale(frame, side)


@dataclass(frozen=True)
class AnimationOutput:
    """What `write_interpolation` wrote: the file, frame count, frame size (height, width), fps."""

    path: Path
    frames: int
    size: tuple[int, int]
    fps: float

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def write_interpolation(
    model: Glow,
    images: torch.Tensor,
    out: str | Path,
    *,
    frames: int = 30,
    fps: float = 30.0,
    method: str = "slerp",
    ease: bool = True,
    size: int | None = None,
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
) -> AnimationOutput:
    """Write a seamless loop through uint8 faces (K, 3, S, S), K >= 2, to .mp4, .gif, .webp or a .png strip.

    `progress(n)` is called after every n frames written (for a progress bar).
    """
    out = Path(out)
    if images.shape[0] < 2:
        raise ConfigError(f"an interpolation needs at least 2 faces, got {images.shape[0]}")
    if method not in METHODS:
        raise ConfigError(f"unknown path {method!r}; choose one of {', '.join(METHODS)}")
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size} must be at least 1")
    schedule = loop_frames(images.shape[0], frames, ease=ease)
    writer = FrameWriter(out, fps=fps)  # checks the extension and fps before any work
    if writer.format == ".png" and len(schedule) > MAX_PNG_FRAMES:
        raise OutputError(
            f"{len(schedule)} frames are too many for a PNG strip (at most {MAX_PNG_FRAMES}); "
            "lower --frames or write .mp4 or .gif"
        )
    keys = encode_faces(model, images, batch_size=batch_size).cpu()  # the path in float64 on the CPU (MPS has none)
    shape: tuple[int, int] = (0, 0)
    with writer:
        for frame in interpolation_frames(model, keys, schedule, method=method, size=size, batch_size=batch_size):
            writer.append(frame)
            shape = frame.shape[:2]
            if progress is not None:
                progress(1)
    return AnimationOutput(out, writer.n_frames, shape, float(fps))
