"""`latentlab manipulate` and `latentlab interpolate` end to end, on a tiny trained model and toy faces."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from latentlab.checkpoint import load_model, model_fingerprint
from latentlab.cli.app import app
from latentlab.directions.file import save_directions
from latentlab.render.faces import decode_images, encode_faces, load_faces, model_view

runner = CliRunner()
CELL = 160  # a 16 px model's faces are shown 10x in edit grids
PAD = 2
ATTRS = ("Smiling", "Blond_Hair", "Eyeglasses")


@pytest.fixture
def setup(tiny_run: Path, toy_data: Path, isolated_paths: Path) -> dict:
    """The tiny run as the last trained model, its direction file where the defaults look, two faces."""
    run = isolated_paths / "models" / "tiny"
    shutil.copytree(tiny_run, run)
    model = load_model(run)
    g = torch.Generator().manual_seed(0)
    vectors = {name: 0.7 * torch.randn(model.latent_dim, generator=g) for name in ATTRS}
    vectors_path = save_directions(
        isolated_paths / "attributes" / "tiny.safetensors",
        vectors=vectors,
        pos_counts=[9] * 3,
        neg_counts=[9] * 3,
        method="mean-diff",
        model_fingerprint=model_fingerprint(model),
        latent_std=[1.0] * 3,
    )
    faces = sorted((toy_data / "img_align_celeba").iterdir())[:3]
    return {"run": run, "model": model, "vectors": vectors, "vectors_path": vectors_path, "faces": faces}


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def cell(grid: np.ndarray, col: int, size: int = CELL) -> np.ndarray:
    """Column `col` of the bottom row of a one-face edit grid (no row labels; cells are bottom-aligned)."""
    y, x = grid.shape[0] - PAD - size, PAD + col * (size + PAD)
    return grid[y : y + size, x : x + size]


def shown(model, z: torch.Tensor) -> np.ndarray:
    """How a latent (1, D) appears in a grid cell: decoded, 8-bit, enlarged 10x."""
    img = decode_images(model, z)[0].permute(1, 2, 0).numpy()
    return np.repeat(np.repeat(img, CELL // img.shape[0], 0), CELL // img.shape[1], 1)


def one_line_error(result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) <= 2  # click's usage errors add a "Try --help" line
    return result.stderr


def test_manipulate_with_defaults_writes_input_reconstruction_and_edit(setup):
    face, model = setup["faces"][0], setup["model"]
    result = invoke("manipulate", face, "--attr", "Smiling", "--alpha", "0.8", "--show-input")
    assert result.exit_code == 0, result.output
    out = Path(f"{face.stem}_Smiling_0.8.png")  # named after the input, attribute and alpha, here
    grid = iio.imread(out)
    assert grid.shape[1] == 3 * CELL + 4 * PAD and grid.shape[0] > CELL + 2 * PAD
    z = encode_faces(model, load_faces([face], 16))
    seen = model_view(model, load_faces([face], 16))[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(cell(grid, 0), np.repeat(np.repeat(seen, 10, 0), 10, 1))
    np.testing.assert_array_equal(cell(grid, 1), shown(model, z))
    np.testing.assert_array_equal(cell(grid, 2), shown(model, z + 0.8 * setup["vectors"]["Smiling"]))
    np.testing.assert_array_equal(iio.imread(f"{face.stem}_Smiling_0.8_input.png"), cell(grid, 0))


def test_alpha_zero_is_the_reconstruction_and_edits_compose_by_addition(setup, tmp_path):
    face, model, vectors = setup["faces"][0], setup["model"], setup["vectors"]
    result = invoke("manipulate", face, "--attr", "Smiling", "--alpha", "0", "--out", tmp_path / "zero.png")
    assert result.exit_code == 0, result.output
    grid = iio.imread(tmp_path / "zero.png")
    np.testing.assert_array_equal(cell(grid, 2), cell(grid, 1))
    args = ["--attr", "Smiling", "--alpha", "0.5", "--attr", "Eyeglasses", "--alpha", "-0.75"]
    result = invoke("manipulate", face, *args, "--out", tmp_path / "both.png")
    assert result.exit_code == 0, result.output
    z = encode_faces(model, load_faces([face], 16))
    expected = shown(model, z + 0.5 * vectors["Smiling"] - 0.75 * vectors["Eyeglasses"])
    np.testing.assert_array_equal(cell(iio.imread(tmp_path / "both.png"), 2), expected)


def test_sweep_grid_and_back_and_forth_animations(setup, tmp_path):
    faces = setup["faces"][:2]
    attrs = ["--attr", "Smiling", "--attr", "Blond_Hair", "--sweep", "-1,1,5"]
    result = invoke("manipulate", *faces, *attrs, "--size", "32", "--out", tmp_path / "sweep.png")
    assert result.exit_code == 0, result.output
    grid = iio.imread(tmp_path / "sweep.png")
    rows, cols = 2 * 2, 1 + 5  # a row per (face, attribute); the input, then one column per alpha
    assert grid.shape[0] >= rows * 32 + (rows + 1) * PAD and grid.shape[1] >= cols * 32 + (cols + 1) * PAD
    for ext in (".gif", ".mp4"):
        out = tmp_path / f"sweep{ext}"
        result = invoke("manipulate", *faces, *attrs, "--size", "32", "--out", out)
        assert result.exit_code == 0, result.output
        frames = iio.imread(out, index=...)
        assert frames.shape[0] == 8  # -1 … 1 and back, no end frame twice
        assert frames.shape[2] >= 3 * 32  # columns: the input and each attribute
        assert np.abs(frames[3].astype(int) - frames[5]).mean() < 1.5  # alpha 0.5 on the way there and back
    assert "8 frames" in result.output


@pytest.mark.parametrize("ext", [".mp4", ".gif", ".webp", ".png"])
def test_interpolate_writes_every_format(setup, tmp_path, ext):
    out = tmp_path / f"loop{ext}"
    result = invoke("interpolate", *setup["faces"][:2], "--frames", "4", "--size", "32", "--no-ease", "--out", out)
    assert result.exit_code == 0, result.output
    assert "8 frames, 32x32" in result.output
    frames = iio.imread(out, index=...)[..., :3]
    if ext == ".png":
        assert frames.shape == (1, 32 + 2 * PAD, 8 * 32 + 9 * PAD, 3)  # a strip of 8 frames
    elif ext == ".webp":
        assert frames.shape[1:] == (32, 32, 3) and 2 <= frames.shape[0] <= 8  # libwebp merges repeated frames
    else:
        assert frames.shape == (8, 32, 32, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_interpolation_starts_on_the_first_reconstruction_and_loops(setup, tmp_path):
    faces, model = setup["faces"], setup["model"]
    out = tmp_path / "loop.png"
    result = invoke("interpolate", *faces, "--frames", "6", "--size", "16", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    strip = iio.imread(out).astype(int)
    frames = [strip[2 + r * 18 : 18 + r * 18, 2 + c * 18 : 18 + c * 18] for r in range(5) for c in range(5)][:18]
    recon = decode_images(model, encode_faces(model, load_faces(faces, 16))).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(frames[0], recon[0])
    np.testing.assert_array_equal(frames[1], recon[0])  # --ease holds each face a moment
    steps = [np.abs(frames[i + 1] - frames[i]).mean() for i in range(17)]
    assert np.abs(frames[-1] - frames[0]).mean() <= max(steps)  # the loop closes: no jump back to the start


def test_unknown_attribute_suggests_close_names(setup):
    result = invoke("manipulate", setup["faces"][0], "--attr", "blond", "--alpha", "1")
    assert "did you mean Blond_Hair" in one_line_error(result)


def test_vectors_from_another_model_are_refused(setup, tmp_path):
    other = save_directions(
        tmp_path / "other.safetensors",
        vectors={"Smiling": setup["vectors"]["Smiling"]},
        pos_counts=[9],
        neg_counts=[9],
        method="mean-diff",
        model_fingerprint="0" * 16,
    )
    args = ["--attr", "Smiling", "--alpha", "1", "--vectors", other, "--out", tmp_path / "x.png"]
    result = invoke("manipulate", setup["faces"][0], *args)
    assert "another model" in one_line_error(result) and "attribute-vectors" in result.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--attr", "Smiling", "--alpha", "nan"], "not finite"),
        (["--attr", "Smiling", "--alpha", "inf"], "not finite"),
        (["--attr", "Smiling", "--alpha", "1", "--sweep", "-1,1,3"], "exclude each other"),
        (["--attr", "Smiling", "--attr", "Male", "--alpha", "1", "--alpha", "2", "--alpha", "3"], "one --alpha per"),
        (["--attr", "Smiling"], "give --alpha"),
        (["--attr", "Smiling", "--sweep", "1,2"], "START,STOP,COUNT"),
        (["--attr", "Smiling", "--alpha", "1", "--units", "inches"], "raw, sigma"),
        (["--attr", "Smiling", "--alpha", "1", "--out", "edit.gif"], "add --sweep"),
    ],
)
def test_usage_errors_exit_2(setup, args, message):
    result = invoke("manipulate", setup["faces"][0], *args)
    assert message in one_line_error(result, 2)
    assert list(Path().glob("*.png")) == [] and list(Path().glob("*.gif")) == []


def test_output_errors_are_one_line_and_write_nothing(setup, tmp_path):
    face = tmp_path / "face.png"
    shutil.copy(setup["faces"][0], face)
    edit = ["--attr", "Smiling", "--alpha", "1"]
    result = invoke("manipulate", face, *edit, "--out", face)
    assert "also an input" in one_line_error(result)
    result = invoke("manipulate", face, *edit, "--out", tmp_path / "edit.tiff")
    assert ".png, .jpg, .jpeg" in one_line_error(result)
    (tmp_path / "file").write_text("")
    result = invoke("manipulate", face, *edit, "--out", tmp_path / "file" / "edit.png")
    assert "cannot create folder" in one_line_error(result)
    result = invoke("interpolate", face, setup["faces"][1], "--out", tmp_path / "loop.avi")
    assert ".mp4, .gif, .webp, .png" in one_line_error(result)
    result = invoke("interpolate", face, "--out", tmp_path / "loop.gif")
    assert "at least two faces" in one_line_error(result, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.png", "file"]


def test_face_crop_without_opencv_says_how_to_install_it(setup, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    result = invoke("manipulate", setup["faces"][0], "--face-crop", "--attr", "Smiling", "--alpha", "1")
    assert "pip install 'latentlab[face]'" in one_line_error(result)


def test_help_explains_alpha_and_shows_examples():
    result = runner.invoke(app, ["manipulate", "--help"])
    text = " ".join(result.output.split())
    assert result.exit_code == 0 and "Glow paper" in text and "--sweep -1,1,7" in text and "latentlab[face]" in text
    result = runner.invoke(app, ["interpolate", "--help"])
    assert result.exit_code == 0 and "latentlab interpolate a.jpg b.jpg --out loop.mp4" in " ".join(
        result.output.split()
    )
