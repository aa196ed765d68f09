"""A training run's folder: the lock, the resumable train state, metrics and the guard against overwrites.

models/<run>/
    model.safetensors        weights + metadata (what every other command loads)
    train_state.safetensors  optimiser moments, step, RNG states, the TrainConfig (what --resume loads)
    train_state.previous.safetensors  the state before it, for a run cut off between state and weights
    metrics.jsonl            one JSON object per logged step / validation
    samples/step_XXXXXX.png  sample grids at temperature 0.7
    train.lock               locked while a process trains into the folder (filelock)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from latentlab.checkpoint import load_tensors, save_tensors
from latentlab.config import GlowConfig
from latentlab.errors import CheckpointError, ConfigError, OutputError
from latentlab.fileio import folder_lock
from latentlab.paths import MODEL_FILE
from latentlab.train.optimizer import optimizer_tensors

STATE_FILE = "train_state.safetensors"
# the state before the newest, kept until the weights of the newest are written: a run killed between
# writing its state and its weights resumes from the pair that matches
PREVIOUS_STATE_FILE = "train_state.previous.safetensors"
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = "train.lock"
STATE_FORMAT = "latentlab-train-state"


def check_run_folder(out: Path, *, resume: bool, force: bool) -> None:
    """Refuse to train over a finished or running run unless --resume or --force says so."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; give a folder for the run")
    has_state = (out / STATE_FILE).exists() or (out / PREVIOUS_STATE_FILE).exists()
    has_run = (out / MODEL_FILE).exists() or has_state
    if resume:
        if not has_state:
            raise CheckpointError(f"nothing to resume in {out} (no {STATE_FILE}); drop --resume to start a new run")
        return
    if has_run and not force:
        raise OutputError(
            f"{out} already holds a trained run; pass --resume to continue it, --force to overwrite it, "
            "or choose another --out"
        )


def run_lock(out: Path) -> contextlib.AbstractContextManager[None]:
    """Hold an exclusive lock on the run folder; a second trainer gets a clear error, not interleaved files."""
    return folder_lock(
        out / LOCK_FILE, busy=f"another latentlab process is training into {out}; wait for it or use another --out"
    )


# what `fileio.atomic_path` names its temporary files: "." + the file's name + "." + mkstemp's 8 characters
# + the suffix, e.g. ".model.safetensors.ux6pk5oo.safetensors"
_RUN_FILES = rf"(?:{re.escape(MODEL_FILE)}|{re.escape(STATE_FILE)}|{re.escape(PREVIOUS_STATE_FILE)}|step_\d+\.png)"
_TEMPORARY = re.compile(rf"\.{_RUN_FILES}\.[A-Za-z0-9_]{{8}}\.\w+")


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete the half-written files a killed trainer left in its run folder; returns what was removed.

    An atomic write removes its temporary file on any error, but a process killed by SIGKILL or a power
    cut cannot. Call only while holding `run_lock`, so no live writer's file is taken.
    """
    removed = []
    for folder in (out, out / "samples"):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.is_file() and _TEMPORARY.fullmatch(path.name):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def save_train_state(
    out: Path,
    *,
    optimizer: torch.optim.Optimizer,
    step: int,
    rng: dict[str, torch.Tensor],
    config: dict[str, Any],
    extra: dict[str, Any],
    raw_weights: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write everything --resume needs (besides the saved model) atomically.

    raw_weights: the optimiser's own weights where the saved model holds their moving average.
    """
    tensors, scalars = optimizer_tensors(optimizer)
    tensors.update({f"rng.{name}": state for name, state in rng.items()})
    tensors.update({f"raw.{name}": t for name, t in (raw_weights or {}).items()})
    meta = {"format": STATE_FORMAT, "step": step, "optimizer": scalars, "config": config, **extra}
    if (out / STATE_FILE).exists():
        os.replace(out / STATE_FILE, out / PREVIOUS_STATE_FILE)  # still matches the weights on disk
    save_tensors(out / STATE_FILE, tensors, meta)


def load_train_state(out: Path, *, step: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read the newest training state, or with `step` the one saved at that step (the newest or the one
    before it, when a run was cut off between writing its state and its weights)."""
    found: list[int] = []
    for path in (out / STATE_FILE, out / PREVIOUS_STATE_FILE):
        if not path.exists():
            continue
        tensors, meta = load_tensors(path, what="training state")
        if meta.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{path} is not a latentlab training state")
        if step is None or meta.get("step") == step:
            return tensors, meta
        found.append(meta.get("step"))
    if not found:
        raise CheckpointError(f"nothing to resume in {out} (no {STATE_FILE}); drop --resume to start a new run")
    raise CheckpointError(
        f"{out} holds a model at step {step} but training states at step {', '.join(map(str, found))} only; "
        "restart the run with --force"
    )


def raw_weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The optimiser's weights saved by `save_train_state` (empty without weight averaging)."""
    return {name[4:]: t for name, t in tensors.items() if name.startswith("raw.")}


def rng_states(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The RNG states saved by `save_train_state`."""
    return {name[4:]: t for name, t in tensors.items() if name.startswith("rng.")}


def append_metrics(out: Path, record: dict[str, Any]) -> None:
    """Append one JSON line to metrics.jsonl (a line is written whole with one write call)."""
    line = json.dumps(record, sort_keys=True) + "\n"
    with open(out / METRICS_FILE, "a", encoding="utf-8") as fh:
        fh.write(line)


def truncate_metrics(out: Path, step: int) -> None:
    """On resume, drop metric lines logged after the checkpoint, so the file matches the resumed run."""
    path = out / METRICS_FILE
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if _line_step(line) <= step]
    from latentlab.fileio import atomic_write_text

    atomic_write_text(path, "".join(line + "\n" for line in kept))


def clear_history(out: Path) -> None:
    """--force: drop the replaced run's metrics and sample grids, so none of its history mixes with the new run's."""
    truncate_metrics(out, 0)
    for state in (STATE_FILE, PREVIOUS_STATE_FILE):  # the replaced run's states must never pair with new weights
        if (out / state).exists():
            (out / state).unlink()
    for grid in (out / "samples").glob("step_*.png"):
        grid.unlink(missing_ok=True)


def _line_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 0


def check_resume_config(saved: dict[str, Any], requested: dict[str, Any]) -> None:
    """A resumed run must keep its model architecture; other settings may change (said in the log)."""
    if GlowConfig.from_dict(saved.get("model", {})) != GlowConfig.from_dict(requested.get("model", {})):
        raise ConfigError(
            "--resume with a different model architecture than the run was started with; "
            f"saved {saved.get('model')}, requested {requested.get('model')}"
        )
