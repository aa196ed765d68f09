"""Shared fixtures: every test runs with latentlab's folders redirected under a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_CELEBA = Path(__file__).resolve().parents[2] / "shared" / "celeba-sample"

# Test tensors are tiny: one thread avoids thread start-up and oversubscription costing more than the work.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def isolated_paths(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the models, attributes, data and cache folders at a fresh temp dir; run in it too."""
    root = tmp_path_factory.mktemp("latentlab-home")
    for var, sub in (
        ("LATENTLAB_MODELS", "models"),
        ("LATENTLAB_ATTRIBUTES", "attributes"),
        ("LATENTLAB_DATA", "data"),
        ("LATENTLAB_CACHE_DIR", "cache"),
    ):
        monkeypatch.setenv(var, str(root / sub))
    monkeypatch.chdir(root)
    torch.manual_seed(0)
    return root


@pytest.fixture
def uncapped_isa(monkeypatch: pytest.MonkeyPatch) -> None:
    """No variable holds torch's CPU kernels to an older instruction set (as on a machine left alone)."""
    from latentlab.train.devices import ISA_VARIABLES

    for name in ISA_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 toy faces at 16 px with labels (the folder holding img_align_celeba/ and list_attr_celeba.csv)."""
    from latentlab.data.toy_faces import make_toy_faces

    out = tmp_path_factory.mktemp("toy") / "toy-faces"
    make_toy_faces(out, count=96, size=16, seed=0, progress=False, workers=1)
    return out


TINY_MODEL = {"image_size": 16, "levels": 2, "steps": 2, "width": 16}


def tiny_train_cfg(images: Path, **changes):
    """A TrainConfig for a few steps of a tiny model on the image folder `images` (changes override)."""
    from latentlab.config import TrainConfig

    base = {
        "model": TINY_MODEL,
        "data": str(images),
        "batch_size": 16,
        "max_steps": 6,
        "warmup_steps": 2,
        "checkpoint_every": 3,
        "sample_every": 100,
        "val_every": 3,
        "val_fraction": 0.1,
        "log_every": 1,
        "workers": 1,
    }
    base.update(changes)
    return TrainConfig.from_dict(base)


@pytest.fixture(scope="session")
def tiny_run(toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with a tiny model trained for a few steps on the toy faces."""
    from latentlab.config import TrainConfig
    from latentlab.train.recipe import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = TrainConfig.from_dict(
        {
            "model": TINY_MODEL,
            "data": str(toy_data / "img_align_celeba"),
            "batch_size": 16,
            "max_steps": 8,
            "warmup_steps": 2,
            "checkpoint_every": 4,
            "sample_every": 8,
            "val_every": 8,
            "val_fraction": 0.1,
            "workers": 1,
        }
    )
    cache = tmp_path_factory.mktemp("tiny-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("LATENTLAB_CACHE_DIR", str(cache))
    try:
        train(cfg, out=out, progress=False)
    finally:
        mp.undo()
    return out
