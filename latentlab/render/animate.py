"""Interpolation loops between real faces: encode the key faces, walk a closed latent path, stream frames.

A loop through K faces has K segments of `frames` frames each: face 1 -> face 2 -> ... -> face K ->
face 1, the last frame one step before the first, so the file plays on repeat without a seam.
With easing, each segment starts with a short hold on its face (`interpolation.hold_frames`) and then moves
with zero velocity at both ends (smoothstep). The first frame is the reconstruction of the first
face exactly (the path starts at its latent, t = 0 exactly).

Latents are made, decoded and written one batch at a time (`interpolation.path_latents`,
`video.FrameWriter`), so memory does not grow with the number of frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latentlab.data.pictures import to_hwc, upscale
from latentlab.errors import ConfigError, OutputError
from latentlab.flow.glow import Glow
from latentlab.latents.likelihood import FitReport
from latentlab.render.faces import decode_batches, display_size, encode_faces
from latentlab.render.interpolation import METHODS, loop_frames, path_latents
from latentlab.render.video import MAX_PNG_FRAMES, FrameWriter

MIN_VIEW = 256  # default frame side in px: the model's size times the smallest whole factor reaching this


def interpolation_frames(
    model: Glow,
    keys: torch.Tensor,
    schedule: list[tuple[int, float]],
    *,
    method: str = "slerp",
    size: int | None = None,
    batch_size: int = 32,
    mask: torch.Tensor | None = None,
) -> Iterator[np.ndarray]:
    """Yield the loop's frames, uint8 (H, W, 3) at `size` px, decoding `batch_size` latents at a time.

    keys (K, D) latents of the key faces, schedule as from `loop_frames`; `mask` as in `path_latents`.
    """
    side = display_size(model.config.image_size, size, at_least=MIN_VIEW)
    for z in path_latents(keys, schedule, method=method, batch_size=batch_size, mask=mask):
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
    fit: FitReport | None = None  # the key faces' figures, when the job computed them

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
    z: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> AnimationOutput:
    """Write a seamless loop through uint8 faces (K, 3, S, S), K >= 2, to .mp4, .gif, .webp or a .png strip.

    `progress(n)` is called after every n frames written (for a progress bar). `z` (K, D) are the faces'
    latents when the caller has them (else they are encoded here); `mask` (D,) bool moves only those values
    of the latent, the others staying the first face's (see `path_latents`).
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
    keys = encode_faces(model, images, batch_size=batch_size) if z is None else z
    keys = keys.cpu()  # the path in float64 on the CPU (MPS has none)
    shape: tuple[int, int] = (0, 0)
    with writer:
        frames_iter = interpolation_frames(
            model, keys, schedule, method=method, size=size, batch_size=batch_size, mask=mask
        )
        for frame in frames_iter:
            writer.append(frame)
            shape = frame.shape[:2]
            if progress is not None:
                progress(1)
    return AnimationOutput(out, writer.n_frames, shape, float(fps))
