"""What each training step sees: its learning rate, the train/validation split, the data order, crop shifts.

Pure functions of the config, the seed, the step (or the fraction of the time limit used) and the
rank, so a resumed run replays exactly what an uninterrupted one would have seen.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from latentlab.config import TrainConfig
from latentlab.train.distributed import DistInfo


def lr_at(step: int, cfg: TrainConfig, *, total_steps: int | None = None, time_fraction: float = 0.0) -> float:
    """Learning rate for a 0-based step: linear warm-up, then constant or cosine to lr·min_lr_ratio.

    The cosine ends at `total_steps` (from --max-steps or --epochs); with only a time limit it follows
    the fraction of the time used, so a `--time-limit 15` run still ends on a small learning rate.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule != "cosine":
        return cfg.lr
    if total_steps:
        progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    else:
        progress = time_fraction
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))


def split_indices(n: int, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train/validation split of n images: (train indices, sorted validation indices)."""
    order = np.random.default_rng(cfg.seed).permutation(n)
    n_val = min(cfg.val_max, int(n * cfg.val_fraction))
    return order[n_val:], np.sort(order[:n_val])


def jitter_shifts(jitter: float) -> list[tuple[float, float]]:
    """The crop shifts (dx, dy) in output pixels that training draws from: the standard crop first."""
    from latentlab.data.images import NO_SHIFT

    if jitter == 0:
        return [NO_SHIFT]
    steps = (0.0, -jitter, jitter)
    return [(dx, dy) for dy in steps for dx in steps]


def epoch_order(train_idx: np.ndarray, *, seed: int, epoch: int, dist_info: DistInfo) -> np.ndarray:
    """This rank's image indices for an epoch, as torch's DistributedSampler orders them (drop_last)."""
    sampler = torch.utils.data.DistributedSampler(
        range(len(train_idx)),
        num_replicas=dist_info.world_size,
        rank=dist_info.rank,
        shuffle=True,
        seed=seed,
        drop_last=True,
    )
    sampler.set_epoch(epoch)
    return train_idx[np.fromiter(iter(sampler), dtype=np.int64)]
