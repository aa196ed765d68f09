"""Faces in and out of the latent space: load photos, encode them, decode latents, and size them for display.

Images are uint8 (B, 3, S, S) at the model's size; latents are (B, D), no noise added when encoding.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from latentlab.data.images import load_image
from latentlab.data.quantize import to_uint8
from latentlab.errors import ConfigError
from latentlab.flow.glow import Glow, evaluating

FAR_LATENT = 10.0  # latents beyond this many times sqrt(D) in norm are refused (real faces: ~0.8 sqrt(D))


def load_faces(
    paths: Sequence[str | Path], size: int, *, face_crop: bool = False, face: int | None = None
) -> torch.Tensor:
    """uint8 (B, 3, size, size): aligned CelebA images get the training crop, other photos the centre
    square, or with `face_crop` the detected face in CelebA's aligned layout (see `facecrop`): the
    largest, or with `face` the face-th from the left (counting from 1; implies `face_crop`)."""
    if face_crop or face is not None:
        from latentlab.data.facecrop import load_face

        return torch.from_numpy(np.stack([load_face(Path(p), size, face=face) for p in paths]))
    return torch.from_numpy(np.stack([load_image(Path(p), size) for p in paths]))


def model_view(model: Glow, images: torch.Tensor) -> torch.Tensor:
    """What the model sees of uint8 images (B, 3, S, S): reduced to its n_bits, shown as uint8."""
    return to_uint8(model.preprocess(images), model.config.n_bits).cpu()


def encode_faces(model: Glow, images: torch.Tensor, *, batch_size: int = 32) -> torch.Tensor:
    """uint8 images (B, 3, S, S) -> latents (B, D) on the model's device, no noise added."""
    with evaluating(model):
        return torch.cat([model.encode(model.preprocess(b)) for b in images.split(batch_size)])


def decode_batches(model: Glow, z: torch.Tensor, *, batch_size: int = 32) -> Iterator[torch.Tensor]:
    """Latents (N, D) -> uint8 images (b, 3, S, S) on the CPU, one batch at a time."""
    typical = math.sqrt(model.latent_dim)  # the norm of a standard Gaussian latent, ±1
    with evaluating(model):
        for batch in z.split(batch_size):
            furthest = float(batch.norm(dim=1).max())
            if not furthest <= FAR_LATENT * typical:  # NaN norms included
                raise ConfigError(
                    f"these latents lie {furthest / typical:.3g}x further out than a typical latent (norm "
                    f"{furthest:.3g} against {typical:.0f}), far beyond the faces the model knows; use a smaller "
                    "--alpha (useful edits lie in [-1, 1])"
                )
            # saturating: an edit pushed beyond what the model knows shows as broken pixels, not NaN
            x = model.decode(batch.to(model.top_mean.device), saturate=True)
            if not bool(torch.isfinite(x).all()):  # finite latents, saturated decode: only broken weights get here
                raise ConfigError(
                    "the model decodes these latents to NaN or inf although they are finite and near the faces "
                    "it knows: its weights are broken; use an earlier checkpoint"
                )
            yield to_uint8(x, model.config.n_bits).cpu()


def decode_images(model: Glow, z: torch.Tensor, *, batch_size: int = 32) -> torch.Tensor:
    """Latents (N, D) -> uint8 images (N, 3, S, S) on the CPU."""
    return torch.cat(list(decode_batches(model, z, batch_size=batch_size)))


def display_size(image_size: int, size: int | None = None, *, at_least: int) -> int:
    """Pixels per face shown: `size`, else the smallest whole multiple of the image size >= `at_least`.

    A whole multiple repeats every pixel equally often, so enlarged faces stay sharp and undistorted.
    """
    if size is not None:
        if size < 1:
            raise ConfigError(f"size {size} must be a positive number of pixels, e.g. 256")
        return size
    return image_size * math.ceil(at_least / image_size)
