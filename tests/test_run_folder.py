"""The run folder: one trainer at a time, and optimiser states (this version's and the former Adam's) resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latentlab import load_model
from latentlab.checkpoint import load_tensors, save_tensors
from latentlab.errors import CheckpointError, OutputError
from latentlab.train.recipe import train
from latentlab.train.runs import STATE_FILE, run_lock

from .conftest import tiny_train_cfg

# what latentlab's former hand-written Adam wrote in each parameter group: torch.optim.Adam's layout, fewer keys
FORMER_GROUP_KEYS = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "params")


def cfg(toy_data: Path, **changes):
    return tiny_train_cfg(toy_data / "img_align_celeba", **changes)


def params(run: Path) -> dict[str, torch.Tensor]:
    return load_model(run).state_dict()


def rewrite_state(run: Path, change) -> None:
    tensors, meta = load_tensors(run / STATE_FILE, what="training state")
    change(tensors, meta)
    save_tensors(run / STATE_FILE, tensors, meta)


def test_two_steps_equal_one_step_save_resume_one_step(toy_data, tmp_path):
    train(cfg(toy_data, max_steps=2), out=tmp_path / "straight", progress=False)
    train(cfg(toy_data, max_steps=1), out=tmp_path / "resumed", progress=False)
    train(cfg(toy_data, max_steps=2), out=tmp_path / "resumed", resume=True, progress=False)
    a, b = params(tmp_path / "straight"), params(tmp_path / "resumed")
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_a_state_written_by_the_former_adam_resumes_exactly(toy_data, tmp_path):
    """Its moments and steps are what torch.optim.Adam keeps; only the group settings it did not write differ."""
    train(cfg(toy_data, max_steps=6), out=tmp_path / "straight", progress=False)
    run = tmp_path / "former"
    train(cfg(toy_data, max_steps=3), out=run, progress=False)

    def as_former(tensors, meta):
        groups = meta["optimizer"]["param_groups"]
        meta["optimizer"]["param_groups"] = [{k: g[k] for k in FORMER_GROUP_KEYS} for g in groups]

    rewrite_state(run, as_former)
    train(cfg(toy_data, max_steps=6), out=run, resume=True, progress=False)
    a, b = params(tmp_path / "straight"), params(run)
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_an_optimiser_state_that_does_not_fit_is_a_one_line_checkpoint_error(toy_data, tmp_path):
    run = tmp_path / "r"
    train(cfg(toy_data, max_steps=2), out=run, progress=False)

    def wrong_shape(tensors, meta):
        tensors["optim.0.exp_avg"] = torch.zeros(5, 5)

    rewrite_state(run, wrong_shape)
    with pytest.raises(CheckpointError, match="optimiser state does not fit") as caught:
        train(cfg(toy_data, max_steps=4), out=run, resume=True, progress=False)
    assert "\n" not in str(caught.value)


def test_a_second_trainer_on_the_same_folder_is_refused(toy_data, tmp_path):
    (tmp_path / "r").mkdir()
    with run_lock(tmp_path / "r"), pytest.raises(OutputError, match="another latentlab process"):
        train(cfg(toy_data, max_steps=2), out=tmp_path / "r", progress=False)
    train(cfg(toy_data, max_steps=2), out=tmp_path / "r", progress=False)  # released: the folder is free again


def test_a_lock_held_by_another_process_refuses_and_dies_with_it(tmp_path):
    holder = (
        "import sys\nfrom pathlib import Path\nfrom latentlab.train.runs import run_lock\n"
        "with run_lock(Path(sys.argv[1])):\n    print('locked', flush=True)\n    sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(OutputError, match="another latentlab process is training into"), run_lock(tmp_path):
            pass
    finally:
        proc.kill()  # the operating system releases a dead holder's lock
        proc.wait()
    with run_lock(tmp_path):
        pass
