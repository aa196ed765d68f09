"""The uint8 image cache: build, reuse, rebuild, skipped files, atomicity."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import latentlab.data.cache as cache_module
import latentlab.data.cache_build as build_module
from latentlab.data.cache import cache_root, open_cache, prepare_cache
from latentlab.data.images import load_image
from latentlab.errors import DataError

SIZE = 16


@pytest.fixture(autouse=True)
def _cache_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test caches under tmp_path, never under the home folder."""
    root = tmp_path / "cache-root"
    monkeypatch.setenv("LATENTLAB_CACHE_DIR", str(root))
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Twelve small noise images of mixed sizes and formats, two in a subfolder."""
    rng = np.random.default_rng(0)
    images = tmp_path / "faces"
    for i in range(12):
        name = f"sub/{i:03d}.jpg" if i >= 10 else f"{i:03d}.png"
        path = images / name
        path.parent.mkdir(parents=True, exist_ok=True)
        h, w = int(rng.integers(20, 40)), int(rng.integers(20, 40))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return images


def _prepare(folder: Path, **kwargs) -> cache_module.ImageCache:
    return prepare_cache(folder, SIZE, progress=False, workers=kwargs.pop("workers", 1), **kwargs)


def test_cache_rows_equal_load_image(folder: Path, _cache_env: Path) -> None:
    cache = _prepare(folder)
    assert cache.path.parent == _cache_env and len(cache) == 12 and cache.skipped == 0
    assert cache.names[-2:] == ["sub/010.jpg", "sub/011.jpg"]
    assert cache.images.dtype == np.uint8 and cache.images.shape == (12, 3, SIZE, SIZE)
    assert not cache.images.flags.writeable
    for i, name in enumerate(cache.names):
        np.testing.assert_array_equal(cache.images[i], load_image(folder / name, SIZE))
    meta = json.loads((cache.path / "meta.json").read_text())
    assert meta["names"] == cache.names and meta["size"] == SIZE and meta["key"] == cache.key
    assert (cache.path / "skipped.txt").read_text() == ""


def test_unchanged_folder_reuses_the_cache(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _prepare(folder)

    def no_rebuild(*args, **kwargs):
        raise AssertionError("an unchanged folder was decoded again")

    monkeypatch.setattr(cache_module, "build_caches", no_rebuild)
    again = _prepare(folder)
    assert again.path == first.path and again.key == first.key and again.names == first.names


def test_a_changed_file_rebuilds_and_the_old_cache_goes(folder: Path) -> None:
    first = _prepare(folder)
    changed = folder / "003.png"
    Image.new("RGB", (30, 30), (10, 20, 30)).save(changed)
    os.utime(changed, ns=(1_000_000_000, 1_000_000_000))
    second = _prepare(folder)
    assert second.key != first.key and second.path != first.path
    assert not first.path.exists(), "the stale cache of the same folder should be removed"
    assert tuple(second.images[3][:, 0, 0]) == (10, 20, 30)


def test_a_different_size_is_a_different_cache(folder: Path) -> None:
    small, large = _prepare(folder), prepare_cache(folder, 24, progress=False, workers=1)
    assert small.path != large.path and small.path.exists() and large.images.shape[-1] == 24


def test_corrupt_files_are_skipped_and_listed(folder: Path) -> None:
    (folder / "004.png").write_bytes(b"")
    (folder / "bad.jpg").write_text("not a jpeg")
    good = (folder / "006.png").read_bytes()
    (folder / "006.png").write_bytes(good[: len(good) // 3])
    cache = _prepare(folder)
    assert cache.skipped == 3 and len(cache) == 10
    assert cache.images.shape == (10, 3, SIZE, SIZE)
    assert not {"004.png", "bad.jpg", "006.png"} & set(cache.names)
    lines = (cache.path / "skipped.txt").read_text().splitlines()
    reasons = dict(line.split("\t") for line in lines)
    assert set(reasons) == {"004.png", "006.png", "bad.jpg"}
    assert "empty" in reasons["004.png"] and "not a readable image" in reasons["bad.jpg"]
    for i, name in enumerate(cache.names):
        np.testing.assert_array_equal(cache.images[i], load_image(folder / name, SIZE))


def test_two_workers_give_the_same_cache(folder: Path, tmp_path: Path) -> None:
    one = _prepare(folder, cache_dir=tmp_path / "one")
    two = _prepare(folder, cache_dir=tmp_path / "two", workers=2)
    np.testing.assert_array_equal(one.images, two.images)
    assert one.names == two.names


def test_nothing_readable_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_text("no")
    with pytest.raises(DataError, match=r"none of the 1 images .* could be read \(first: a\.jpg"):
        _prepare(bad)


def test_an_interrupted_build_leaves_no_cache(folder: Path, monkeypatch: pytest.MonkeyPatch, _cache_env: Path) -> None:
    calls = []

    def dies_midway(path, size, shifts):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return [load_image(path, size, shift=shift) for shift in shifts], ""

    monkeypatch.setattr(build_module, "try_load_image", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        _prepare(folder)
    assert list(_cache_env.iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setenv("LATENTLAB_CACHE_DIR", str(_cache_env))
    assert len(_prepare(folder)) == 12


def test_abandoned_builds_of_dead_processes_are_cleaned(folder: Path, _cache_env: Path) -> None:
    dead = _cache_env / ".building-2147483000-abcd"
    dead.mkdir(parents=True)
    (dead / "images.npy").write_bytes(b"half")
    _prepare(folder)
    assert not dead.exists()


def test_cache_location_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_root(tmp_path / "given") == tmp_path / "given"
    assert cache_root() == tmp_path / "cache-root"
    monkeypatch.delenv("LATENTLAB_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "latentlab"


def test_open_cache_refuses_non_caches_and_other_versions(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a latentlab image cache"):
        open_cache(tmp_path)
    cache = _prepare(folder)
    meta = json.loads((cache.path / "meta.json").read_text())
    (cache.path / "meta.json").write_text(json.dumps({**meta, "format_version": 999}))
    with pytest.raises(DataError, match="format version 999"):
        open_cache(cache.path)
    assert len(_prepare(folder)) == 12, "an unreadable cache is rebuilt, not trusted"


def test_size_too_small(folder: Path) -> None:
    with pytest.raises(DataError, match="too small"):
        prepare_cache(folder, 4, progress=False)
