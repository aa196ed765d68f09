"""The images a run trains on: the data folder, its uint8 crop caches, the split, and each step's batch.

A batch is a pure function of (config, step, rank) and the run's saved noise generator, so a resumed run
draws exactly the batches an uninterrupted one would have drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentlab.config import TrainConfig
from latentlab.data.quantize import dequantize
from latentlab.errors import DataError
from latentlab.paths import data_dir
from latentlab.train.distributed import DistInfo, barrier
from latentlab.train.schedule import epoch_order, jitter_shifts, split_indices


def resolve_data(cfg: TrainConfig, *, progress: bool, dist_info: DistInfo) -> Path:
    """The image folder to train on; with no --data, the embedded toy faces (generated once, then reused)."""
    if cfg.data is not None:
        folder = Path(cfg.data)
        if not folder.is_dir():
            raise DataError(f"--data {folder} is not a folder of images")
        return folder
    from latentlab.data.toy_faces import make_toy_faces

    folder = data_dir() / f"toy-faces-n{cfg.toy_count}-s{cfg.seed}"
    if dist_info.is_main and not (folder / "list_attr_celeba.csv").exists():
        make_toy_faces(folder, count=cfg.toy_count, size=64, seed=cfg.seed, progress=progress, workers=cfg.workers)
    barrier(dist_info)
    return folder


class TrainingImages:
    """A run's images: the standard-crop cache, one cache per crop shift, the seeded split and the batches."""

    def __init__(self, cfg: TrainConfig, folder: Path, *, dist_info: DistInfo, progress: bool) -> None:
        self.cfg = cfg
        self.dist = dist_info
        self.cache, self.jittered = _caches(cfg, folder, dist_info=dist_info, progress=progress)
        self.train_idx, self.val_idx = split_indices(len(self.cache), cfg)
        per_step = cfg.batch_size * dist_info.world_size
        self.steps_per_epoch = len(self.train_idx) // per_step
        if self.steps_per_epoch == 0:
            raise DataError(
                f"{folder} has {len(self.train_idx)} training images, fewer than one batch of {per_step}; "
                "add images or lower --batch-size"
            )
        self._order_epoch: int | None = None
        self._order = np.zeros(0, dtype=np.int64)

    def init_batch(self) -> torch.Tensor:
        """A seeded batch of training images for the data-dependent ActNorm initialisation."""
        n = min(self.cfg.init_batch, len(self.train_idx))
        idx = np.sort(np.random.default_rng(self.cfg.seed + 1).choice(self.train_idx, n, replace=False))
        x8 = torch.from_numpy(np.ascontiguousarray(self.cache.images[idx]))
        return dequantize(x8, self.cfg.model.n_bits, generator=torch.Generator().manual_seed(self.cfg.seed))

    def batch(self, step: int, noise: torch.Generator) -> torch.Tensor:
        """This rank's dequantised (B, 3, S, S) batch of the 0-based `step`, on the CPU; draws from `noise`."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        if self._order_epoch != epoch:
            self._order = epoch_order(self.train_idx, seed=self.cfg.seed, epoch=epoch, dist_info=self.dist)
            self._order_epoch = epoch
        bs = self.cfg.batch_size
        idx = np.sort(self._order[pos * bs : (pos + 1) * bs])
        if len(self.jittered) > 1:  # each image from one of the shifted crops, drawn from the saved generator
            which = torch.randint(len(self.jittered), (len(idx),), generator=noise).tolist()
            x8 = torch.from_numpy(np.stack([self.jittered[v].images[i] for v, i in zip(which, idx, strict=True)]))
        else:
            x8 = torch.from_numpy(np.ascontiguousarray(self.cache.images[idx]))
        x = dequantize(x8, self.cfg.model.n_bits, generator=noise)
        if self.cfg.flip:  # faces are left-right symmetric: mirrored copies are free extra data
            mirror = torch.rand(len(x), generator=noise) < 0.5
            x[mirror] = x[mirror].flip(-1)
        return x


def _caches(cfg: TrainConfig, folder: Path, *, dist_info: DistInfo, progress: bool) -> tuple[Any, list[Any]]:
    """The standard-crop cache and, with crop jitter, one cache per shift (rank 0 builds, the others open)."""
    from latentlab.data.cache import prepare_caches

    shifts = jitter_shifts(cfg.crop_jitter)
    size, workers = cfg.model.image_size, cfg.workers
    if dist_info.is_main:
        caches = prepare_caches(folder, size, shifts=shifts, workers=workers, progress=progress)
    barrier(dist_info)
    if not dist_info.is_main:
        caches = prepare_caches(folder, size, shifts=shifts, workers=workers, progress=False)
    if any(c.names != caches[0].names for c in caches):
        raise DataError(f"the shifted crops of {folder} skipped other files than the standard crop; check the images")
    return caches[0], caches
