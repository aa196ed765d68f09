"""Toy faces: labels sampled as specified, every attribute visible, the dataset byte-for-byte reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentlab.data.labels import CELEBA_ATTRIBUTES, load_labels, match_labels
from latentlab.data.toy_faces import (
    HAIR_COLOURS,
    TOY_ATTRIBUTES,
    make_toy_faces,
    render_toy_face,
    sample_toy_attributes,
)
from latentlab.errors import DataError, OutputError


def test_attribute_names_are_celeba_names_in_celeba_order() -> None:
    assert set(TOY_ATTRIBUTES) <= set(CELEBA_ATTRIBUTES)
    assert list(TOY_ATTRIBUTES) == [a for a in CELEBA_ATTRIBUTES if a in TOY_ATTRIBUTES]
    required = {"Black_Hair", "Blond_Hair", "Gray_Hair", "Brown_Hair", "Smiling", "Mouth_Slightly_Open"}
    assert required | {"Eyeglasses", "Bangs", "Male", "Wearing_Hat", "Pale_Skin"} <= set(TOY_ATTRIBUTES)


def test_sampled_rates_and_one_hot_hair() -> None:
    rows = [sample_toy_attributes(np.random.default_rng([0, i])) for i in range(2000)]
    table = np.array([[row[name] for name in TOY_ATTRIBUTES] for row in rows], dtype=float)
    rates = dict(zip(TOY_ATTRIBUTES, table.mean(axis=0), strict=True))
    for name, rate in rates.items():
        expected = 0.25 if name in HAIR_COLOURS else 0.5
        assert abs(rate - expected) < 0.05, (name, rate)
    hair = table[:, [TOY_ATTRIBUTES.index(h) for h in HAIR_COLOURS]]
    assert np.all(hair.sum(axis=1) == 1)
    others = table[:, [i for i, n in enumerate(TOY_ATTRIBUTES) if n not in HAIR_COLOURS]]
    corr = np.corrcoef(others.T) - np.eye(others.shape[1])
    assert np.abs(corr).max() < 0.1, "labeled attributes should be independent"


def _render_pair(name: str, index: int, size: int, swap_to: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The same face (same generator state) with `name` off and on."""
    rng = np.random.default_rng([11, index])
    attrs = sample_toy_attributes(rng)
    state = rng.bit_generator.state
    if name in HAIR_COLOURS:
        off = {**attrs, **{h: h == swap_to for h in HAIR_COLOURS}}
        on = {**attrs, **{h: h == name for h in HAIR_COLOURS}}
    else:
        off, on = {**attrs, name: False}, {**attrs, name: True}
    first = np.asarray(render_toy_face(off, rng, size), dtype=float)
    rng.bit_generator.state = state
    return first, np.asarray(render_toy_face(on, rng, size), dtype=float)


@pytest.mark.parametrize("name", [n for n in TOY_ATTRIBUTES if n not in HAIR_COLOURS])
def test_each_attribute_visibly_changes_the_face(name: str) -> None:
    diffs = [np.abs(np.subtract(*_render_pair(name, i, 32))).mean() for i in range(8)]
    assert min(diffs) > 0.25 and np.mean(diffs) > 1.0, (name, diffs)


@pytest.mark.parametrize("name", list(HAIR_COLOURS))
def test_each_hair_colour_is_visible(name: str) -> None:
    for i, other in enumerate(h for h in HAIR_COLOURS if h != name):
        off, on = _render_pair(name, i, 32, swap_to=other)
        assert np.abs(off - on).mean() > 1.0, (name, other)


def test_nothing_else_changes_with_an_attribute() -> None:
    off, on = _render_pair("Eyeglasses", 0, 64)
    changed = np.abs(off - on).max(axis=-1) > 8
    rows = np.flatnonzero(changed.any(axis=1))
    assert 0.3 * 64 < rows.mean() < 0.65 * 64, "glasses change only the eye band of the face"


def test_render_size_and_validation() -> None:
    rng = np.random.default_rng(0)
    attrs = sample_toy_attributes(rng)
    image = render_toy_face(attrs, rng, 48)
    assert image.size == (48, 48) and image.mode == "RGB"
    with pytest.raises(DataError, match="exactly one hair colour"):
        render_toy_face({**attrs, "Black_Hair": True, "Blond_Hair": True}, rng, 32)
    with pytest.raises(DataError, match="unknown toy-face attribute 'Beard'"):
        render_toy_face({**attrs, "Beard": True}, rng, 32)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_make_toy_faces_is_byte_identical_across_runs_and_workers(tmp_path: Path) -> None:
    first = make_toy_faces(tmp_path / "a", count=12, size=32, seed=3, progress=False, workers=1)
    second = make_toy_faces(tmp_path / "b", count=12, size=32, seed=3, progress=False, workers=2)
    assert first == tmp_path / "a"
    assert _files(first) == _files(second)
    other = make_toy_faces(tmp_path / "c", count=12, size=32, seed=4, progress=False, workers=1)
    assert _files(other) != _files(first)


def test_made_dataset_loads_as_celeba(tmp_path: Path) -> None:
    out = make_toy_faces(tmp_path / "toy", count=10, size=32, seed=0, progress=False, workers=1)
    images = sorted(p.name for p in (out / "img_align_celeba").iterdir())
    assert images == [f"{i:06d}.png" for i in range(1, 11)]
    with Image.open(out / "img_align_celeba" / "000001.png") as first:
        assert first.size == (32, 32) and first.mode == "RGB" and first.format == "PNG"
    raw = (out / "list_attr_celeba.csv").read_bytes()
    assert b"\r" not in raw and raw.startswith(b"image_id,Bangs,Black_Hair")
    labels = load_labels(out / "list_attr_celeba.csv")
    assert tuple(labels.columns) == TOY_ATTRIBUTES and len(match_labels(labels, images)) == 10
    expected = sample_toy_attributes(np.random.default_rng([0, 4]))
    assert {n: bool(v > 0) for n, v in labels.loc["000005.png"].items()} == expected


def test_a_smaller_rerun_removes_extra_images(tmp_path: Path) -> None:
    make_toy_faces(tmp_path, count=6, size=16, progress=False, workers=1)
    make_toy_faces(tmp_path, count=3, size=16, progress=False, workers=1)
    assert sorted(p.name for p in (tmp_path / "img_align_celeba").iterdir()) == [
        "000001.png",
        "000002.png",
        "000003.png",
    ]
    assert len(load_labels(tmp_path / "list_attr_celeba.csv")) == 3


@pytest.mark.parametrize(("count", "size", "message"), [(0, 32, "count 0 is too small"), (5, 8, "size 8 is too small")])
def test_bad_requests_are_refused(tmp_path: Path, count: int, size: int, message: str) -> None:
    with pytest.raises(DataError, match=message):
        make_toy_faces(tmp_path / "toy", count=count, size=size, progress=False)
    assert not (tmp_path / "toy").exists()


def test_output_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "toy"
    target.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        make_toy_faces(target, count=2, size=16, progress=False)
