"""Crop jitter: shifted crops are the standard crop of a shifted image, one cache per shift, resumable training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import latentlab.data.images as images_module
from latentlab import load_model
from latentlab.config import TrainConfig
from latentlab.data.cache import cache_root, prepare_cache, prepare_caches
from latentlab.data.images import CELEBA_ALIGNED_SIZE, load_image
from latentlab.errors import ConfigError
from latentlab.train.recipe import train
from latentlab.train.schedule import jitter_shifts

from .conftest import tiny_train_cfg


def _smooth_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


def test_a_shifted_crop_is_the_standard_crop_of_the_shifted_image(tmp_path: Path) -> None:
    # 148-px CelebA crop to 37 px: one output pixel is exactly 4 source pixels
    width, height = CELEBA_ALIGNED_SIZE
    wide = _smooth_image(width + 8, height + 8)
    Image.fromarray(wide[4 : 4 + height, 4 : 4 + width]).save(tmp_path / "centre.png")
    Image.fromarray(wide[4 : 4 + height, 8 : 8 + width]).save(tmp_path / "moved_left.png")
    Image.fromarray(wide[0:height, 4 : 4 + width]).save(tmp_path / "moved_down.png")
    centre = tmp_path / "centre.png"
    np.testing.assert_array_equal(load_image(centre, 37, shift=(1.0, 0.0)), load_image(tmp_path / "moved_left.png", 37))
    np.testing.assert_array_equal(
        load_image(centre, 37, shift=(0.0, -1.0)), load_image(tmp_path / "moved_down.png", 37)
    )
    np.testing.assert_array_equal(load_image(centre, 37, shift=(0.0, 0.0)), load_image(centre, 37))
    half = load_image(centre, 37, shift=(0.5, 0.0)).astype(int)  # sub-pixel: between the two
    assert (
        0
        < np.abs(half - load_image(centre, 37)).mean()
        < np.abs(load_image(centre, 37, shift=(1.0, 0.0)) - load_image(centre, 37)).mean()
    )


def test_a_square_photo_has_no_room_to_shift(tmp_path: Path) -> None:
    Image.fromarray(_smooth_image(40, 40)).save(tmp_path / "square.png")
    np.testing.assert_array_equal(
        load_image(tmp_path / "square.png", 16, shift=(0.5, -0.5)), load_image(tmp_path / "square.png", 16)
    )


@pytest.fixture()
def tall_faces(tmp_path: Path) -> Path:
    """48 non-square images (24x30): their centre squares have room to move up and down."""
    folder = tmp_path / "tall"
    folder.mkdir()
    for i in range(48):
        Image.fromarray(_smooth_image(24, 30, seed=i)).save(folder / f"{i:03d}.png")
    return folder


def test_each_shift_has_its_own_cache_and_none_removes_another(tall_faces: Path) -> None:
    plain = prepare_cache(tall_faces, 16, workers=1, progress=False)
    moved = prepare_cache(tall_faces, 16, shift=(0.0, 0.5), workers=1, progress=False)
    assert plain.key != moved.key and plain.path != moved.path
    assert plain.path.exists() and moved.path.exists()
    assert not np.array_equal(np.asarray(plain.images), np.asarray(moved.images))
    np.testing.assert_array_equal(moved.images[3], load_image(tall_faces / "003.png", 16, shift=(0.0, 0.5)))
    again = prepare_cache(tall_faces, 16, workers=1, progress=False)  # reused, not rebuilt
    assert again.path == plain.path and len(list(cache_root().iterdir())) == 2


def test_missing_shifts_are_built_in_one_pass_that_decodes_each_file_once(
    tall_faces: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shifts = [(0.0, 0.0), (0.0, -0.5), (0.0, 0.5)]
    prepare_cache(tall_faces, 16, shift=shifts[1], workers=1, progress=False)  # one of them exists already
    opened = []
    real_open = images_module._open_checked
    monkeypatch.setattr(images_module, "_open_checked", lambda path, size: opened.append(path) or real_open(path, size))
    caches = prepare_caches(tall_faces, 16, shifts=shifts, workers=1, progress=False)
    assert len(opened) == 48  # the two missing caches share one decode of each file
    for shift, cache in zip(shifts, caches, strict=True):
        assert cache.names == caches[0].names
        for i in (0, 47):
            np.testing.assert_array_equal(cache.images[i], load_image(tall_faces / cache.names[i], 16, shift=shift))
    assert len(list(cache_root().iterdir())) == 3


def _cfg(folder: Path, **changes) -> TrainConfig:
    return tiny_train_cfg(folder, **{"batch_size": 8, "crop_jitter": 0.5, **changes})


def test_jittered_training_draws_every_shift_and_resumes_exactly(tall_faces: Path, tmp_path: Path) -> None:
    assert len(jitter_shifts(0.5)) == 9 and jitter_shifts(0.5)[0] == (0.0, 0.0) and jitter_shifts(0.0) == [(0.0, 0.0)]
    train(_cfg(tall_faces), out=tmp_path / "straight", progress=False)
    assert len(list(cache_root().iterdir())) == 9
    train(_cfg(tall_faces, max_steps=3), out=tmp_path / "resumed", progress=False)
    train(_cfg(tall_faces), out=tmp_path / "resumed", resume=True, progress=False)
    a, b = load_model(tmp_path / "straight").state_dict(), load_model(tmp_path / "resumed").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    plain = train(_cfg(tall_faces, crop_jitter=0.0), out=tmp_path / "plain", progress=False)
    c = load_model(plain.out).state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the shifted crops changed what was learned


def test_crop_jitter_out_of_range_is_refused() -> None:
    with pytest.raises(ConfigError, match="crop_jitter"):
        TrainConfig(crop_jitter=3.0)
