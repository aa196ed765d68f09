"""Pixel quantisation as in the Glow paper: uint8 images <-> floats in [-0.5, 0.5) at n_bits."""

from __future__ import annotations

import torch


def n_bins(n_bits: int) -> int:
    """Number of intensity levels kept at `n_bits`."""
    return 2**n_bits


def to_levels(x_uint8: torch.Tensor, n_bits: int) -> torch.Tensor:
    """uint8 pixels -> integer levels k in [0, 2**n_bits), dropping the low bits (as the paper does)."""
    return torch.div(x_uint8.to(torch.int64), 2 ** (8 - n_bits), rounding_mode="floor")


def to_float(x_uint8: torch.Tensor, n_bits: int, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float in [-0.5, 0.5): the centre of each n_bits bin, no noise.

    This is the deterministic input for encoding a given image.
    """
    k = to_levels(x_uint8, n_bits).to(dtype)
    return (k + 0.5) / n_bins(n_bits) - 0.5


def dequantize(
    x_uint8: torch.Tensor, n_bits: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """uint8 -> float in [-0.5, 0.5) with uniform noise filling each bin: the training input."""
    k = to_levels(x_uint8, n_bits).to(dtype)
    noise = torch.rand(k.shape, generator=generator, dtype=dtype, device="cpu").to(k.device)
    # below 1 by a margin, so k + noise never rounds up to the next bin: `bins_and_noise` is exact
    noise.clamp_(max=1 - NOISE_MARGIN)
    return (k + noise) / n_bins(n_bits) - 0.5


# 2**-16 of a bin: k + u (k < 256) keeps 16 fractional bits in float32, so no sum rounds up to k + 1
NOISE_MARGIN = 2.0**-16


def bins_and_noise(x: torch.Tensor, n_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dequantised x -> (levels k, noise u in [0, 1)) with x = (k + u)/n_bins − 0.5; exact for `dequantize`'s output."""
    t = (x + 0.5) * n_bins(n_bits)
    k = _bin_of(t, n_bits)
    return k, (t - k).clamp_(0, 1 - NOISE_MARGIN)


def _bin_of(t: torch.Tensor, n_bits: int) -> torch.Tensor:
    """The bin index of t = (x + 0.5)·n_bins, as a float tensor: values outside [-0.5, 0.5) join the end bins."""
    return torch.floor(t).clamp_(0, n_bins(n_bits) - 1)


def to_uint8(x: torch.Tensor, n_bits: int) -> torch.Tensor:
    """float in [-0.5, 0.5) -> uint8 for viewing: the bin of each value, spread over 0..255."""
    bins = n_bins(n_bits)
    k = _bin_of((x.detach().float() + 0.5) * bins, n_bits)
    return torch.round(k * (255.0 / (bins - 1))).to(torch.uint8)
