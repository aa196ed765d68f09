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

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from latentlab.checkpoint import load_model, read_model_metadata, save_model
from latentlab.config import TrainConfig
from latentlab.errors import ConfigError, TrainingError
from latentlab.flow.glow import Glow
from latentlab.paths import models_dir
from latentlab.train import runs
from latentlab.train.averaging import WeightAverage, averaged
from latentlab.train.batches import TrainingImages, resolve_data
from latentlab.train.devices import resolve_device, resolve_precision
from latentlab.train.distributed import barrier, setup_distributed, teardown_distributed
from latentlab.train.evaluate import held_out_bits_per_dim, preview_grid
from latentlab.train.optimizer import make_optimizer, restore_optimizer
from latentlab.train.schedule import lr_at


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


def default_out(cfg: TrainConfig, preset: str | None) -> Path:
    """--out, or models/<preset> (models/run without a preset)."""
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
            runs.check_run_folder(self.out, resume=self.resume, force=self.force)
        torch.manual_seed(cfg.seed)
        folder = resolve_data(cfg, progress=self.progress, dist_info=self.dist)
        self.data = TrainingImages(cfg, folder, dist_info=self.dist, progress=self.progress)
        self.total_steps = self._total_steps()
        self.noise = torch.Generator().manual_seed(cfg.seed * 1000 + self.dist.rank)
        self.step = 0
        if self.resume:
            self.model = load_model(self.out).train()
        else:
            self.model = Glow(cfg.model)
            self.model.initialize(self.data.init_batch())  # data-dependent ActNorm initialisation
        self.model.to(self.device)
        if self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model.parameters(), lr=cfg.lr)
        # Polyak averaging: `average` holds the moving average, the model the optimiser's own weights
        self.average = WeightAverage(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        if self.resume:
            self._restore()
        elif self.dist.is_main:
            runs.clear_history(self.out)  # --force over a finished run, or a fresh folder (nothing to clear)
        self.model.memory_saving = cfg.memory_saving
        self.net: torch.nn.Module = self.model
        if self.dist.world_size > 1:
            self.net = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if cfg.compile:
            self.net = torch.compile(self.net)

    def _restore(self) -> None:
        """Step, optimiser, RNG states and (with averaging) the optimiser's own weights, as saved with the model."""
        model_step = int(read_model_metadata(self.out)["step"])
        tensors, meta = runs.load_train_state(self.out, step=model_step)  # the state matching the weights
        runs.check_resume_config(meta["config"], self.cfg.to_dict())
        self.step = int(meta["step"])
        if self.average is not None:  # the saved model is the average; the state has the rest
            self.average.load_own_weights(runs.raw_weights(tensors), source=self.out)
        restore_optimizer(self.optimizer, tensors, meta["optimizer"])
        states = runs.rng_states(tensors)
        self.noise.set_state(states["noise"])
        torch.set_rng_state(states["torch"])
        if self.dist.is_main:
            runs.truncate_metrics(self.out, self.step)

    def _total_steps(self) -> int | None:
        cfg = self.cfg
        if cfg.max_steps is not None:
            return cfg.max_steps
        if cfg.epochs is not None:
            return cfg.epochs * self.data.steps_per_epoch
        if cfg.time_limit is not None:
            return None
        raise ConfigError("say how long to train: --max-steps, --epochs or --time-limit")

    # ----------------------------------------------------------------------------------- train
    def _batch(self, step: int) -> torch.Tensor:
        x = self.data.batch(step, self.noise)
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
        # lr_at rather than torch.optim.lr_scheduler: with --time-limit the cosine follows the time used
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
        """Mean bits/dim of the averaged weights over the held-out split, with fixed dequantisation noise."""
        with averaged(self.average):
            return held_out_bits_per_dim(self.model, self.data.cache.images, self.data.val_idx, device=self.device)

    def save_samples(self, step: int) -> Path:
        """The run's preview grid of the averaged weights at this step, in samples/."""
        from latentlab.data.pictures import save_image

        with averaged(self.average):
            grid = preview_grid(self.model)
        path = self.out / "samples" / f"step_{step:06d}.png"
        save_image(path, grid)
        return path

    def save_checkpoint(self, step: int, metrics: dict[str, Any]) -> None:
        """Training state first, then the weights; both atomic (rank 0 only)."""
        if not self.dist.is_main:
            return
        rng = {"noise": self.noise.get_state(), "torch": torch.get_rng_state()}
        runs.save_train_state(
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
        lock = runs.run_lock(self.out) if self.dist.is_main else contextlib.nullcontext()
        with lock:
            if self.dist.is_main:
                runs.remove_stale_temporaries(self.out)  # left by a run killed mid-write; the lock says none is live
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
            runs.append_metrics(self.out, record)


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
