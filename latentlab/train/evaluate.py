"""Held-out bits per dimension (over a folder, or a run's validation split) and sample grids from a model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latentlab.data.quantize import dequantize, to_uint8
from latentlab.errors import ConfigError
from latentlab.flow.glow import Glow, evaluating

EVAL_NOISE_SEED = 4321
PREVIEW_SEED = 1234


@dataclass(frozen=True)
class Evaluation:
    """bits/dim over a folder: the mean, its standard error, and how many images it covers.

    For a model with a learned dequantiser, bits_per_dim is the bound with its q(u | image), and
    uniform_bits_per_dim the same flow's bound with uniform noise in each bin, as in the Glow paper
    (both bound the same discrete likelihood); without one, the two are the same figure.
    """

    bits_per_dim: float
    std_error: float
    images: int
    skipped: int
    uniform_bits_per_dim: float
    uniform_std_error: float


def _mean_and_error(values: list[np.ndarray]) -> tuple[float, float]:
    bpd = np.concatenate(values) if values else np.zeros(0)
    std_error = float(bpd.std(ddof=1) / np.sqrt(len(bpd))) if len(bpd) > 1 else float("nan")
    return float(bpd.mean()) if len(bpd) else float("nan"), std_error


def evaluate_folder(
    model: Glow,
    folder: Path,
    *,
    batch_size: int = 64,
    limit: int | None = None,
    progress: bool = True,
    workers: int = 2,
) -> Evaluation:
    """Mean bits/dim of the images in `folder` (decoded once through the uint8 cache), with fixed noise."""
    from latentlab.data.cache import prepare_cache
    from latentlab.progress import progress_bar

    cache = prepare_cache(folder, model.config.image_size, workers=workers, progress=progress)
    n = len(cache) if limit is None else min(limit, len(cache))
    gen = torch.Generator().manual_seed(EVAL_NOISE_SEED)
    device = model.top_mean.device
    values: list[np.ndarray] = []
    uniform: list[np.ndarray] = []
    with evaluating(model), progress_bar("evaluate", n, enabled=progress) as advance:
        for start in range(0, n, batch_size):
            x8 = torch.from_numpy(np.array(cache.images[start : min(n, start + batch_size)]))  # a writable copy
            x = dequantize(x8, model.config.n_bits, generator=gen, dtype=model.top_mean.dtype).to(device)
            values.append(model.bits_per_dim_from_log_prob(model.log_likelihood(x)).double().cpu().numpy())
            if model.dequantizer is not None:
                uniform.append(model.bits_per_dim_from_log_prob(model.log_prob(x)).double().cpu().numpy())
            advance(len(x8))
    bpd, std_error = _mean_and_error(values)
    uniform_bpd, uniform_error = _mean_and_error(uniform) if uniform else (bpd, std_error)
    return Evaluation(
        bits_per_dim=bpd,
        std_error=std_error,
        images=n,
        skipped=cache.skipped,
        uniform_bits_per_dim=uniform_bpd,
        uniform_std_error=uniform_error,
    )


def held_out_bits_per_dim(
    model: Glow, images: np.ndarray, indices: np.ndarray, *, device: torch.device, batch_size: int = 256
) -> float | None:
    """Mean bits/dim of the uint8 rows `images[indices]` with fixed dequantisation noise (a run's validation).

    None when there are no rows. The caller chooses the weights (the run's average, or its own).
    """
    if len(indices) == 0:
        return None
    gen = torch.Generator().manual_seed(EVAL_NOISE_SEED)
    total, count = 0.0, 0
    with evaluating(model):
        for start in range(0, len(indices), batch_size):
            idx = indices[start : start + batch_size]
            x8 = torch.from_numpy(np.ascontiguousarray(images[idx]))
            x = dequantize(x8, model.config.n_bits, generator=gen).to(device)
            total += float(model.bits_per_dim_from_log_prob(model.log_likelihood(x)).double().sum())
            count += len(idx)
    return total / count


def preview_grid(model: Glow) -> np.ndarray:
    """A 6x6 grid (H, W, 3) uint8 at temperature 0.7 from a fixed seed: a run's previews compare across steps."""
    from latentlab.data.pictures import make_grid

    with evaluating(model):
        x = model.sample(36, temperature=0.7, generator=torch.Generator().manual_seed(PREVIEW_SEED))
    return make_grid(to_uint8(x.cpu(), model.config.n_bits), nrow=6)


def sample_grid(
    model: Glow, *, n: int, temperatures: list[float], seed: int = 0, nrow: int | None = None
) -> np.ndarray:
    """A grid (H, W, 3) uint8: one row block per temperature, the same ε for every temperature.

    Temperatures up to 1 decode as `Glow.sample` does, saturating: a rare sample whose exact inverse
    overflows shows saturated pixels instead of failing the grid. Above 1, an overflow is an error.
    """
    from latentlab.data.pictures import make_grid

    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(n, model.latent_dim, generator=gen, dtype=model.top_mean.dtype)
    images = []
    with evaluating(model):
        for t in temperatures:
            x = model.decode((t * eps).to(model.top_mean.device), saturate=t <= 1)
            if not bool(torch.isfinite(x).all()):  # NaN pixels would be written as arbitrary colours
                raise ConfigError(
                    f"temperature {t:g} is too high for this model: it decodes to NaN or inf; "
                    "use 0 to 1, as the Glow paper does"
                )
            images.append(to_uint8(x.cpu(), model.config.n_bits))
    columns = nrow or (n if len(temperatures) > 1 else max(1, int(round(n**0.5))))
    return make_grid(torch.cat(images), nrow=columns)
