"""The training recipe: setup, train, save_checkpoint; one process or torchrun/DDP.

Data order is a pure function of (seed, epoch, rank), the learning rate of the step, and the noise
generator is saved with every checkpoint, so a resumed run ends with exactly the parameters of an
uninterrupted one (on the same machine).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from latentlab.checkpoint import load_model, save_model
from latentlab.config import TrainConfig
from latentlab.data.quantize import dequantize, to_uint8
from latentlab.errors import ConfigError, DataError, TrainingError
from latentlab.flow.glow import Glow, evaluating
from latentlab.paths import data_dir, models_dir
from latentlab.train.adam import Adam
from latentlab.train.averaging import WeightAverage, averaged
from latentlab.train.devices import resolve_device, resolve_precision
from latentlab.train.distributed import DistInfo, barrier, setup_distributed, teardown_distributed
from latentlab.train.runs import (
    append_metrics,
    check_resume_config,
    check_run_folder,
    clear_history,
    load_train_state,
    raw_weights,
    remove_stale_temporaries,
    restore_optimizer,
    rng_states,
    run_lock,
    save_train_state,
    truncate_metrics,
)
from latentlab.train.schedule import epoch_order, jitter_shifts, lr_at, split_indices

SAMPLE_SEED = 1234
VAL_NOISE_SEED = 4321


@dataclass
class TrainResult:
    """What a finished run reports."""

    out: Path
    step: int
    train_bpd: float
    val_bpd: float | None
    images_per_second: float
    stopped_by: str
    skipped_steps: int = 0
    precision: str = "fp32"
    history: list[dict[str, Any]] = field(default_factory=list)


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


def default_out(cfg: TrainConfig, preset: str | None) -> Path:
    """models/<preset or 'toy32'> unless --out was given."""
    return Path(cfg.out) if cfg.out else models_dir() / (preset or "run")


class Trainer:
    """One training run: `setup`, then `train`; checkpoints through `save_checkpoint`."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        out: Path,
        resume: bool = False,
        force: bool = False,
        progress: bool = True,
        console: Any = None,
    ) -> None:
        self.cfg = cfg
        self.out = out
        self.resume = resume
        self.force = force
        self.progress = progress
        self.console = console
        self.history: list[dict[str, Any]] = []

    # ----------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        """Devices, data, model, optimiser, and (with --resume) the saved state."""
        cfg = self.cfg
        self.dist = setup_distributed(cfg.device)
        self.device = resolve_device(cfg.device, self.dist.local_rank)
        self.precision = resolve_precision(cfg.precision, self.device)  # 'auto' decided here, per machine
        if self.dist.is_main:
            check_run_folder(self.out, resume=self.resume, force=self.force)
        torch.manual_seed(cfg.seed)
        folder = resolve_data(cfg, progress=self.progress, dist_info=self.dist)
        self.cache, self.jittered = self._caches(folder)
        self.train_idx, self.val_idx = split_indices(len(self.cache), cfg)
        per_step = cfg.batch_size * self.dist.world_size
        self.steps_per_epoch = len(self.train_idx) // per_step
        if self.steps_per_epoch == 0:
            raise DataError(
                f"{folder} has {len(self.train_idx)} training images, fewer than one batch of {per_step}; "
                "add images or lower --batch-size"
            )
        self.total_steps = self._total_steps()
        self.noise = torch.Generator().manual_seed(cfg.seed * 1000 + self.dist.rank)
        self.step = 0
        if self.resume:
            self.model = load_model(self.out).train()
            tensors, meta = load_train_state(self.out, step=self._model_step())  # the state matching the weights
            check_resume_config(meta["config"], cfg.to_dict())
            self.step = int(meta["step"])
        else:
            self.model = Glow(cfg.model)
            self._initialize_actnorm()
        self.model.to(self.device)
        if self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = Adam(self.model.parameters(), lr=cfg.lr)  # torch.optim would import torch._dynamo
        # Polyak averaging: `average` holds the moving average, the model the optimiser's own weights
        self.average = WeightAverage(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        if self.average is not None and self.resume:  # the saved model is the average; the state has the rest
            self.average.load_own_weights(raw_weights(tensors), source=self.out)
        if self.resume:
            restore_optimizer(self.optimizer, tensors, meta["optimizer"])
            states = rng_states(tensors)
            self.noise.set_state(states["noise"])
            torch.set_rng_state(states["torch"])
            if self.dist.is_main:
                truncate_metrics(self.out, self.step)
        elif self.dist.is_main:
            clear_history(self.out)  # --force over a finished run, or a fresh folder (nothing to clear)
        self.model.memory_saving = cfg.memory_saving
        self.net: torch.nn.Module = self.model
        if self.dist.world_size > 1:
            self.net = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if cfg.compile:
            self.net = torch.compile(self.net)

    def _caches(self, folder: Path) -> tuple[Any, list[Any]]:
        """The standard-crop cache and, with crop jitter, one cache per shift (rank 0 builds, the others open)."""
        from latentlab.data.cache import prepare_caches

        cfg, shifts = self.cfg, jitter_shifts(self.cfg.crop_jitter)
        size, workers = cfg.model.image_size, cfg.workers
        if self.dist.is_main:
            caches = prepare_caches(folder, size, shifts=shifts, workers=workers, progress=self.progress)
        barrier(self.dist)
        if not self.dist.is_main:
            caches = prepare_caches(folder, size, shifts=shifts, workers=workers, progress=False)
        if any(c.names != caches[0].names for c in caches):
            raise DataError(
                f"the shifted crops of {folder} skipped other files than the standard crop; check the images"
            )
        return caches[0], caches

    def _model_step(self) -> int:
        from latentlab.checkpoint import read_model_metadata

        return int(read_model_metadata(self.out)["step"])

    def _total_steps(self) -> int | None:
        cfg = self.cfg
        if cfg.max_steps is not None:
            return cfg.max_steps
        if cfg.epochs is not None:
            return cfg.epochs * self.steps_per_epoch
        if cfg.time_limit is not None:
            return None
        raise ConfigError("say how long to train: --max-steps, --epochs or --time-limit")

    def _initialize_actnorm(self) -> None:
        """Data-dependent ActNorm initialisation on a seeded batch of training images."""
        n = min(self.cfg.init_batch, len(self.train_idx))
        idx = np.sort(np.random.default_rng(self.cfg.seed + 1).choice(self.train_idx, n, replace=False))
        x8 = torch.from_numpy(np.ascontiguousarray(self.cache.images[idx]))
        self.model.initialize(
            dequantize(x8, self.cfg.model.n_bits, generator=torch.Generator().manual_seed(self.cfg.seed))
        )

    # ----------------------------------------------------------------------------------- train
    def _batch(self, step: int) -> torch.Tensor:
        epoch, pos = divmod(step, self.steps_per_epoch)
        if getattr(self, "_order_epoch", None) != epoch:
            self._order = epoch_order(self.train_idx, seed=self.cfg.seed, epoch=epoch, dist_info=self.dist)
            self._order_epoch = epoch
        bs = self.cfg.batch_size
        idx = np.sort(self._order[pos * bs : (pos + 1) * bs])
        if len(self.jittered) > 1:  # each image from one of the shifted crops, drawn from the saved generator
            which = torch.randint(len(self.jittered), (len(idx),), generator=self.noise).tolist()
            x8 = torch.from_numpy(np.stack([self.jittered[v].images[i] for v, i in zip(which, idx, strict=True)]))
        else:
            x8 = torch.from_numpy(np.ascontiguousarray(self.cache.images[idx]))
        x = dequantize(x8, self.cfg.model.n_bits, generator=self.noise)
        if self.cfg.flip:  # faces are left-right symmetric: mirrored copies are free extra data
            mirror = torch.rand(len(x), generator=self.noise) < 0.5
            x[mirror] = x[mirror].flip(-1)
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        return x.to(self.device)

    def _time_fraction(self, started: float) -> float:
        """Fraction of --time-limit used, the same on every rank (rank 0's clock decides)."""
        if self.cfg.time_limit is None:
            return 0.0
        fraction = torch.tensor([(time.perf_counter() - started) / (self.cfg.time_limit * 60)], dtype=torch.float64)
        if self.dist.world_size > 1:
            dist.broadcast(fraction, src=0)
        return float(fraction)

    def _train_step(self, step: int, time_fraction: float) -> tuple[float, bool]:
        """One optimiser step; returns (loss in bits/dim, whether it was applied)."""
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step, cfg, total_steps=self.total_steps, time_fraction=time_fraction)
        x = self._batch(step)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            log_prob = self.net(x)
        loss = self.model.bits_per_dim_from_log_prob(log_prob.float()).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        ok = torch.isfinite(loss.detach()) & torch.isfinite(grad_norm)
        if self.dist.world_size > 1:
            flag = ok.to(torch.float32)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            ok = flag > 0
        if bool(ok):
            self.optimizer.step()
            if self.average is not None:
                self.average.update(step)
            return float(loss.detach()), True
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach()), False

    def validate(self) -> float | None:
        """Mean bits/dim over the held-out split, with fixed dequantisation noise."""
        if len(self.val_idx) == 0:
            return None
        gen = torch.Generator().manual_seed(VAL_NOISE_SEED)
        total, count = 0.0, 0
        with averaged(self.average), evaluating(self.model):
            for start in range(0, len(self.val_idx), 256):
                idx = self.val_idx[start : start + 256]
                x8 = torch.from_numpy(np.ascontiguousarray(self.cache.images[idx]))
                x = dequantize(x8, self.cfg.model.n_bits, generator=gen).to(self.device)
                bpd = self.model.bits_per_dim_from_log_prob(self.model.log_likelihood(x))
                total += float(bpd.double().sum())
                count += len(idx)
        return total / count

    def save_samples(self, step: int) -> Path:
        """A 6x6 grid at temperature 0.7 from a fixed seed, so grids are comparable across steps."""
        from latentlab.data.pictures import make_grid, save_image

        with averaged(self.average), evaluating(self.model):
            x = self.model.sample(36, temperature=0.7, generator=torch.Generator().manual_seed(SAMPLE_SEED))
        path = self.out / "samples" / f"step_{step:06d}.png"
        save_image(path, make_grid(to_uint8(x.cpu(), self.cfg.model.n_bits), nrow=6))
        return path

    def save_checkpoint(self, step: int, metrics: dict[str, Any]) -> None:
        """Training state first, then the weights; both atomic (rank 0 only)."""
        if not self.dist.is_main:
            return
        rng = {"noise": self.noise.get_state(), "torch": torch.get_rng_state()}
        save_train_state(
            self.out,
            optimizer=self.optimizer,
            step=step,
            rng=rng,
            config=self.cfg.to_dict(),
            extra={"metrics": metrics},
            raw_weights=self.average.own_weights() if self.average is not None else None,
        )
        with averaged(self.average):
            save_model(self.model, self.out, step=step, metrics=metrics, extra={"train": self.cfg.to_dict()})

    def train(self) -> TrainResult:
        """Run until max steps, epochs or the time limit; checkpoint along the way and at the end."""
        lock = run_lock(self.out) if self.dist.is_main else contextlib.nullcontext()
        with lock:
            if self.dist.is_main:
                remove_stale_temporaries(self.out)  # left by a run killed mid-write; the lock says none is live
            return self._loop()

    def _loop(self) -> TrainResult:
        from latentlab.progress import TrainProgress

        cfg = self.cfg
        start_step = self.step
        started = time.perf_counter()
        last_val: float | None = None
        ema: float | None = None
        bad_run = skipped = 0
        stopped_by = "max steps" if cfg.max_steps is not None else "epochs"
        window_t, window_n = time.perf_counter(), 0
        rate = 0.0
        bar = TrainProgress(
            total=self.total_steps,
            start=start_step,
            time_limit=cfg.time_limit,
            enabled=self.progress and self.dist.is_main,
            console=self.console,
        )
        with bar:
            while self.total_steps is None or self.step < self.total_steps:
                time_fraction = self._time_fraction(started)
                loss, applied = self._train_step(self.step, time_fraction)
                self.step += 1
                window_n += cfg.batch_size * self.dist.world_size
                if applied:
                    bad_run = 0
                    ema = loss if ema is None else 0.95 * ema + 0.05 * loss
                else:
                    bad_run += 1
                    skipped += 1
                    bar.note(f"step {self.step}: non-finite loss or gradient ({loss}); step skipped")
                    if bad_run >= cfg.max_bad_steps:
                        raise TrainingError(
                            f"{bad_run} non-finite steps in a row at step {self.step}; stopped. The last good "
                            f"checkpoint in {self.out} is kept; resume with a lower --lr or --grad-clip"
                        )
                if applied and self.step % cfg.log_every == 0:
                    now = time.perf_counter()
                    rate = window_n / max(now - window_t, 1e-9)
                    window_t, window_n = now, 0
                    record = {
                        "step": self.step,
                        "train_bpd": loss,
                        "train_bpd_ema": ema,
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "images_per_s": rate,
                        "elapsed_s": now - started,
                    }
                    self._log(record)
                bar.update(self.step, bpd=ema, rate=rate, val=last_val)
                out_of_time = self._time_fraction(started) >= 1.0
                final = out_of_time or (self.total_steps is not None and self.step >= self.total_steps)
                if self.dist.is_main and (self.step % cfg.val_every == 0 or final):
                    last_val = self.validate()
                    if last_val is not None:
                        self._log({"step": self.step, "val_bpd": last_val})
                if self.dist.is_main and (self.step % cfg.sample_every == 0 or final):
                    self.save_samples(self.step)
                if self.step % cfg.checkpoint_every == 0 or final:
                    self.save_checkpoint(self.step, {"train_bpd": ema, "val_bpd": last_val})
                barrier(self.dist)
                if out_of_time:
                    stopped_by = "time limit"
                    break
        elapsed = time.perf_counter() - started
        images = (self.step - start_step) * cfg.batch_size * self.dist.world_size
        return TrainResult(
            out=self.out,
            step=self.step,
            train_bpd=float(ema or float("nan")),
            val_bpd=last_val,
            images_per_second=images / max(elapsed, 1e-9),
            stopped_by=stopped_by,
            skipped_steps=skipped,
            precision=self.precision,
            history=self.history,
        )

    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.dist.is_main:
            append_metrics(self.out, record)


def train(
    cfg: TrainConfig,
    *,
    out: Path,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    console: Any = None,
) -> TrainResult:
    """Train a Glow as configured into the run folder `out`; returns a summary."""
    trainer = Trainer(cfg, out=out, resume=resume, force=force, progress=progress, console=console)
    try:
        trainer.setup()
        return trainer.train()
    finally:
        teardown_distributed()
