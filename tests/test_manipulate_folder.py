"""`latentlab manipulate FOLDER --out FOLDER`: every photo edited under its own name, failures listed and skipped."""

from __future__ import annotations

import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from latentlab.checkpoint import load_model, model_fingerprint
from latentlab.cli.app import app
from latentlab.directions.file import load_directions, save_directions
from latentlab.errors import OutputError
from latentlab.render import batch
from latentlab.render.batch import manipulate_folder
from latentlab.render.faces import load_faces
from latentlab.render.pictures import edited_faces

runner = CliRunner()


@pytest.fixture
def setup(tiny_run: Path, toy_data: Path, isolated_paths: Path, tmp_path: Path) -> dict:
    """The tiny run as the last model with its direction file, and a folder of photos: three faces (one in a
    subfolder, one as WebP), a corrupt JPEG, an empty PNG and a text file."""
    run = isolated_paths / "models" / "tiny"
    shutil.copytree(tiny_run, run)
    model = load_model(run)
    g = torch.Generator().manual_seed(0)
    vectors_path = save_directions(
        isolated_paths / "attributes" / "tiny.safetensors",
        vectors={"Smiling": 0.5 * torch.randn(model.latent_dim, generator=g)},
        pos_counts=[9],
        neg_counts=[9],
        method="mean-diff",
        model_fingerprint=model_fingerprint(model),
        latent_std=[1.0],
    )
    faces = sorted((toy_data / "img_align_celeba").iterdir())[:3]
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    shutil.copy(faces[0], photos / "a.png")
    shutil.copy(faces[1], photos / "sub" / "b.png")
    Image.open(faces[2]).save(photos / "c.webp", lossless=True)
    (photos / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (photos / "empty.png").write_bytes(b"")
    (photos / "notes.txt").write_text("not a photo\n")
    before = {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()}
    return {"model": model, "dirs": load_directions(vectors_path), "photos": photos, "before": before}


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def test_a_folder_is_edited_into_a_folder_under_the_same_names(setup, tmp_path):
    photos, out = setup["photos"], tmp_path / "edited"
    result = invoke("manipulate", photos, "--attr", "Smiling", "--alpha", "0.5", "--out", out, "--size", "32")
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert written == ["a.png", "c.png", "sub", "sub/b.png"]  # WebP becomes PNG; nothing half-written is left
    assert "corrupt.jpg" in result.stderr and "empty.png" in result.stderr and "skipped" in result.stderr
    assert "notes.txt" not in result.output  # not an image: not a photo of the folder
    assert "3 photo(s)" in result.stdout and "bits/dim" in result.stdout
    # each output is that photo's edited face alone, as `manipulate PHOTO --bare` gives it, at --size
    model, dirs = setup["model"], setup["dirs"]
    for name, source in (("a.png", "a.png"), ("sub/b.png", "sub/b.png"), ("c.png", "c.webp")):
        face = edited_faces(model, load_faces([photos / source], 16), dirs, [("Smiling", 0.5)])[0]
        expected = np.repeat(np.repeat(face.permute(1, 2, 0).numpy(), 2, 0), 2, 1)
        np.testing.assert_array_equal(iio.imread(out / name), expected)
    assert {p: p.read_bytes() for p in setup["before"]} == setup["before"]  # the inputs are untouched


def test_sweeps_and_grids_write_one_picture_per_photo(setup, tmp_path):
    photos = setup["photos"]
    sweep = invoke("manipulate", photos, "--attr", "Smiling", "--sweep", "-1,1,3", "--out", tmp_path / "s", "--quiet")
    assert sweep.exit_code == 0, sweep.output
    grids = invoke("manipulate", photos, "--attr", "Smiling", "--alpha", "1", "--grid", "--out", tmp_path / "g")
    assert grids.exit_code == 0, grids.output
    for folder, columns in ((tmp_path / "s", 4), (tmp_path / "g", 3)):  # input + 3 alphas; input, recon, edit
        picture = iio.imread(folder / "sub" / "b.png")
        assert picture.shape[1] >= columns * 160 and picture.shape[0] > 160


def test_one_photo_failing_while_written_skips_only_that_photo(setup, tmp_path, monkeypatch):
    real = batch.save_image

    def fails_for_a(path, image):
        if Path(path).name == "a.png":
            raise OutputError(f"cannot write {path}: disk full")
        return real(path, image)

    monkeypatch.setattr(batch, "save_image", fails_for_a)
    result = manipulate_folder(setup["photos"], [("Smiling", 0.5)], out=tmp_path / "e")
    assert result.written == 2
    assert sorted(f.path.name for f in result.failed) == ["a.png", "corrupt.jpg", "empty.png"]
    assert "disk full" in next(f.reason for f in result.failed if f.path.name == "a.png")
    assert len(result.fit.images) == 3  # every photo that could be read has its figures


def test_a_folder_of_nothing_usable_fails(setup, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(setup["photos"] / "corrupt.jpg", bad / "x.jpg")
    result = invoke("manipulate", bad, "--attr", "Smiling", "--alpha", "0.5", "--out", tmp_path / "o")
    assert result.exit_code == 1 and "none of the 1 photo(s)" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.parametrize(
    ("out", "code", "message"),
    [
        ("file.txt", 1, "is a file"),
        ("edited.png", 2, "give --out FOLDER"),
        ("photos/inside", 1, "inside the input folder"),
        ("photos", 1, "inside the input folder"),
    ],
)
def test_bad_output_folders_are_refused_before_any_work(setup, tmp_path, out, code, message):
    (tmp_path / "file.txt").write_text("x")
    result = invoke("manipulate", setup["photos"], "--attr", "Smiling", "--alpha", "0.5", "--out", tmp_path / out)
    assert result.exit_code == code and message in result.stderr, result.output
    assert {p: p.read_bytes() for p in setup["before"]} == setup["before"]
    assert sorted(p.name for p in setup["photos"].rglob("*")) == sorted(p.name for p in setup["before"]) + ["sub"]


def test_folder_options_that_do_not_apply_are_usage_errors(setup, tmp_path):
    photos, face = setup["photos"], setup["photos"] / "a.png"
    edit = ["--attr", "Smiling", "--alpha", "0.5"]
    assert invoke("manipulate", photos, face, *edit, "--out", tmp_path / "o").exit_code == 2
    assert invoke("manipulate", photos, *edit, "--show-input", "--out", tmp_path / "o").exit_code == 2
    assert invoke("manipulate", photos, *edit, "--bare", "--grid", "--out", tmp_path / "o").exit_code == 2
    assert invoke("manipulate", face, *edit, "--grid", "--out", tmp_path / "o.png").exit_code == 2
