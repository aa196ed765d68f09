"""How well a model knows each image: its bits/dim (as `evaluate` computes them) and its reconstruction PSNR.

A photo whose bits/dim lie far above the model's held-out figure is unlike the faces it was trained on
(another framing, lighting, or no face at all): its edits will look wrong whatever the direction, and
users should learn that from the figures rather than blame the direction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from latentlab.checkpoint import read_model_metadata
from latentlab.data.quantize import dequantize
from latentlab.flow.glow import Glow, evaluating
from latentlab.train.evaluate import EVAL_NOISE_SEED

FAR_ABOVE = 1.0  # bits/dim above the model's held-out figure from which an image counts as unknown to it


def psnr(a: torch.Tensor, b: torch.Tensor, *, peak: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio (B,) in dB between image batches (B, ...), computed in float64; inf where equal.

    `peak` is the range of the values: 1 for model inputs in [-0.5, 0.5], 255 for uint8 pixels.
    """
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(peak**2 / mse)  # mse 0 gives inf, a NaN image NaN


def image_bits_per_dim(model: Glow, images: torch.Tensor, *, batch_size: int = 32) -> torch.Tensor:
    """Bits/dim (B,) float64 of uint8 images (B, 3, S, S), by the model's exact log-likelihood.

    Every image is dequantised with the noise `evaluate` draws first (a generator seeded EVAL_NOISE_SEED),
    so an image's figure does not depend on its batch and equals `evaluate`'s on a folder of that image alone.
    """
    dtype, device = model.top_mean.dtype, model.top_mean.device

    def noisy(image: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(EVAL_NOISE_SEED)
        return dequantize(image[None], model.config.n_bits, generator=gen, dtype=dtype)

    x = torch.cat([noisy(img) for img in images]) if len(images) else images.new_zeros((0,), dtype=dtype)
    with evaluating(model):
        parts = [
            model.bits_per_dim_from_log_prob(model.log_likelihood(b.to(device))).double().cpu()
            for b in x.split(batch_size)
        ]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def reconstruction_psnr(model: Glow, images: torch.Tensor, z: torch.Tensor, *, batch_size: int = 32) -> torch.Tensor:
    """PSNR (B,) in dB of decode(z) against the images as the model sees them (their n_bits bin centres).

    z (B, D) are the images' latents (`encode`, no noise); the flow is exact, so a healthy model gives
    float rounding only (well above 100 dB); a low figure means the inverse is numerically off for that image.
    """
    out = []
    with evaluating(model):
        for img, zb in zip(images.split(batch_size), z.split(batch_size), strict=True):
            x = model.preprocess(img)
            out.append(psnr(model.decode(zb.to(x.device), saturate=True), x).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


@dataclass(frozen=True)
class ImageFit:
    """One image's figures: its name, bits/dim (evaluate's dequantisation) and reconstruction PSNR in dB."""

    name: str
    bits_per_dim: float
    psnr_db: float


@dataclass(frozen=True)
class Reference:
    """The model's own bits/dim from training: on its held-out images ("held-out"), else on training batches."""

    bits_per_dim: float
    source: str


@dataclass(frozen=True)
class FitReport:
    """The figures of a set of images next to the model's reference; `far` are those `margin` bits/dim above it."""

    images: tuple[ImageFit, ...]
    reference: Reference | None
    margin: float = FAR_ABOVE

    @property
    def far(self) -> tuple[ImageFit, ...]:
        """Images more than `margin` bits/dim above the reference (NaN figures too): their edits will look wrong."""
        if self.reference is None:
            return ()
        limit = self.reference.bits_per_dim + self.margin
        return tuple(f for f in self.images if not f.bits_per_dim <= limit)

    def median_bits_per_dim(self) -> float:
        values = sorted(f.bits_per_dim for f in self.images)
        if not values:
            return math.nan
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    def min_psnr(self) -> float:
        return min((f.psnr_db for f in self.images), default=math.nan)


def model_reference(model_path: str | Path) -> Reference | None:
    """The bits/dim a checkpoint records from training: `val_bpd` (held-out), else `train_bpd`, else None."""
    metrics = read_model_metadata(model_path).get("metrics") or {}
    for key, source in (("val_bpd", "held-out"), ("train_bpd", "training")):
        value = metrics.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            return Reference(float(value), source)
    return None


def fit_images(
    model: Glow,
    images: torch.Tensor,
    z: torch.Tensor,
    names: Sequence[str],
    *,
    batch_size: int = 32,
) -> list[ImageFit]:
    """Each image's `ImageFit` from uint8 images (B, 3, S, S) and their latents z (B, D), encoded once by the caller."""
    bpd = image_bits_per_dim(model, images, batch_size=batch_size)
    db = reconstruction_psnr(model, images, z, batch_size=batch_size)
    return [ImageFit(str(n), float(b), float(p)) for n, b, p in zip(names, bpd, db, strict=True)]
