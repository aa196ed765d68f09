"""The manipulate pipeline's library: edit maths, layouts, and the optional face crop."""

from __future__ import annotations

import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from latentlab import Glow, GlowConfig
from latentlab.checkpoint import model_fingerprint
from latentlab.data.images import load_image
from latentlab.directions.file import load_directions, save_directions
from latentlab.errors import AttributeNameError, ConfigError, DataError, OutputError
from latentlab.render.edit import describe_edit, edit_latents, format_alpha, pair_edits, sweep_latents
from latentlab.render.faces import decode_images, display_size, encode_faces
from latentlab.render.interpolation import ping_pong
from latentlab.render.jobs import Sweep, default_edit_output
from latentlab.render.pictures import MIN_CELL, render_edit, render_sweep

from .conftest import SHARED_CELEBA

PAD = 2  # label_grid's default padding around every cell


@pytest.fixture(scope="module")
def model() -> Glow:
    torch.manual_seed(0)
    glow = Glow(GlowConfig(image_size=8, levels=2, steps=1, width=8))
    glow.initialize(torch.rand(16, 3, 8, 8) - 0.5)
    return glow.eval()


@pytest.fixture
def faces() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (2, 3, 8, 8), generator=g, dtype=torch.uint8)


@pytest.fixture
def dirs(model, tmp_path):
    g = torch.Generator().manual_seed(2)
    vectors = {name: torch.randn(model.latent_dim, generator=g) for name in ("Smiling", "Blond_Hair", "Male")}
    path = save_directions(
        tmp_path / "dirs.safetensors",
        vectors=vectors,
        pos_counts=[5, 5, 5],
        neg_counts=[5, 5, 5],
        method="mean-diff",
        model_fingerprint=model_fingerprint(model),
        latent_std=[0.5, 2.0, 1.0],
    )
    return load_directions(path)


def cell(grid: np.ndarray, col: int, size: int, *, left: int = 0) -> np.ndarray:
    """The image in column `col` of the bottom row of a label_grid (cells are bottom-aligned)."""
    y = grid.shape[0] - PAD - size
    x = left + PAD + col * (size + PAD)
    return grid[y : y + size, x : x + size]


def test_pair_edits_pairs_by_position_and_shares_a_single_alpha():
    assert pair_edits(["A", "B"], [0.5, -1]) == [("A", 0.5), ("B", -1.0)]
    assert pair_edits(["A", "B", "C"], [0.3]) == [("A", 0.3), ("B", 0.3), ("C", 0.3)]
    with pytest.raises(ConfigError, match="2 --attr but 3 --alpha"):
        pair_edits(["A", "B"], [1, 2, 3])
    with pytest.raises(ConfigError, match="no attribute"):
        pair_edits([], [1])
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ConfigError, match="not finite"):
            pair_edits(["A"], [bad])


def test_edits_compose_by_addition_and_alpha_zero_is_the_identity(dirs):
    z = torch.randn(3, dirs.dim)
    assert torch.equal(edit_latents(z, dirs, ["Smiling"], [0.0]), z)
    both = edit_latents(z, dirs, ["Smiling", "Male"], [0.5, -1.5])
    expected = z + 0.5 * dirs.vectors["Smiling"] - 1.5 * dirs.vectors["Male"]
    torch.testing.assert_close(both, expected)
    with pytest.raises(AttributeNameError, match="did you mean Blond_Hair"):
        edit_latents(z, dirs, ["blond"], [1.0])


def test_sigma_units_move_by_the_data_spread(dirs):
    z = torch.zeros(1, dirs.dim)
    moved = edit_latents(z, dirs, ["Blond_Hair"], [1.0], units="sigma")
    assert moved.norm().item() == pytest.approx(2.0, rel=1e-5)  # latent_std of Blond_Hair
    raw = edit_latents(z, dirs, ["Blond_Hair"], [1.0])
    assert raw.norm().item() == pytest.approx(dirs.vectors["Blond_Hair"].norm().item(), rel=1e-6)
    with pytest.raises(ConfigError, match="units"):
        edit_latents(z, dirs, ["Blond_Hair"], [1.0], units="furlongs")


def test_sweep_latents_grid_matches_single_edits(dirs):
    z = torch.randn(2, dirs.dim)
    alphas = [-1.0, 0.0, 0.5]
    zs = sweep_latents(z, dirs, ["Smiling", "Male"], alphas)
    assert zs.shape == (2, 2, 3, dirs.dim)
    assert torch.equal(zs[:, 0, 1], z) and torch.equal(zs[:, 1, 1], z)
    for a, name in enumerate(["Smiling", "Male"]):
        for s, alpha in enumerate(alphas):
            torch.testing.assert_close(zs[:, a, s], edit_latents(z, dirs, [name], [alpha]))
    with pytest.raises(ConfigError, match="not finite"):
        sweep_latents(z, dirs, ["Smiling"], [float("nan")])


def test_ping_pong_and_labels():
    assert ping_pong(5) == [0, 1, 2, 3, 4, 3, 2, 1]
    assert ping_pong(2) == [0, 1]
    assert [format_alpha(a) for a in (0.0, 0.8, -1.0, 1 / 3, -0.0)] == ["0", "+0.8", "-1", "+0.333", "0"]
    assert describe_edit([("Smiling", 0.5), ("Male", -1.0)], "sigma") == "Smiling +0.5 sd, Male -1 sd"
    assert default_edit_output(["x/face.jpg"], [("Blond_Hair", 0.8)]) == Path("face_Blond_Hair_0.8.png")
    assert default_edit_output(["a.png", "b.png"], [("A", 1), ("B", -0.5)]) == Path("a_A_1_B_-0.5.png")
    assert default_edit_output(["a.png"], Sweep(("A", "B"), (-1.0, 1.0))) == Path("a_A_B_sweep.png")
    sides = [display_size(n, at_least=MIN_CELL) for n in (8, 16, 64, 256)]
    assert sides == [160, 160, 192, 256] and display_size(8, 100, at_least=MIN_CELL) == 100
    with pytest.raises(ConfigError, match="positive number of pixels"):
        display_size(8, 0, at_least=MIN_CELL)


def test_render_edit_shows_input_reconstruction_and_edit(model, faces, dirs, tmp_path):
    out = render_edit(model, faces[:1], dirs, [("Smiling", 0.0)], tmp_path / "e.png", size=32)
    grid = iio.imread(out.path)
    assert grid.shape[:2] == out.size and out.frames == 1
    assert grid.shape[1] == 3 * 32 + 4 * PAD  # one face: no row labels, three columns
    recon = decode_images(model, encode_faces(model, faces[:1]))[0].permute(1, 2, 0).numpy()
    expected = np.repeat(np.repeat(recon, 4, 0), 4, 1)
    assert np.array_equal(cell(grid, 1, 32), expected)
    assert np.array_equal(cell(grid, 2, 32), expected)  # alpha 0 is the reconstruction
    edited = render_edit(model, faces[:1], dirs, [("Smiling", 3.0)], tmp_path / "f.png", size=32).path
    assert not np.array_equal(cell(iio.imread(edited), 2, 32), expected)
    with pytest.raises(OutputError, match=r"\.png, \.jpg"):
        render_edit(model, faces[:1], dirs, [("Smiling", 1.0)], tmp_path / "e.gif")


def test_render_sweep_still_and_animation(model, faces, dirs, tmp_path):
    still = render_sweep(model, faces, dirs, ["Smiling", "Male"], [-1, 0, 1], tmp_path / "s.png", size=16)
    grid = iio.imread(still.path)
    rows, cols = 2 * 2, 1 + 3
    assert grid.shape[0] > rows * 16 + (rows + 1) * PAD and grid.shape[1] > cols * 16 + (cols + 1) * PAD
    anim = render_sweep(model, faces, dirs, ["Smiling"], [-1, 0, 1], tmp_path / "s.gif", size=16, fps=5)
    frames = iio.imread(anim.path, index=...)
    assert anim.frames == 4 and frames.shape[:3] == (4, *anim.size)
    np.testing.assert_allclose(frames[1].astype(float), frames[3].astype(float), atol=1)  # back and forth
    with pytest.raises(ConfigError, match="fps"):
        render_sweep(model, faces, dirs, ["Smiling"], [0, 1], tmp_path / "t.gif", fps=100)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dirs.safetensors", "s.gif", "s.png"]


# ---- the optional face crop ------------------------------------------------------------------------

CELEBA_IMAGES = SHARED_CELEBA / "images"


def test_face_crop_without_opencv_names_the_extra(monkeypatch, tmp_path):
    from latentlab.data import facecrop

    monkeypatch.setitem(sys.modules, "cv2", None)
    Image.new("RGB", (40, 40)).save(tmp_path / "a.png")
    with pytest.raises(ConfigError, match=r"pip install 'latentlab\[face\]'"):
        facecrop.load_face(tmp_path / "a.png", 16)


@pytest.mark.parametrize(
    ("name", "scale", "angle", "offset"), [("000099.jpg", 1.6, 12, (230, 40)), ("000358.jpg", 2.3, -10, (10, 150))]
)
def test_face_crop_finds_a_tilted_face_in_a_larger_photo_and_levels_it(tmp_path, name, scale, angle, offset):
    pytest.importorskip("cv2")
    source = CELEBA_IMAGES / name
    if not source.exists():
        pytest.skip("the shared CelebA sample is not here")
    from latentlab.data.facecrop import load_face

    face = Image.open(source).convert("RGB")
    big = face.resize((round(178 * scale), round(218 * scale)), Image.Resampling.LANCZOS)
    big = big.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(120, 130, 140))
    photo = Image.new("RGB", (big.width + 300, big.height + 200), (120, 130, 140))
    photo.paste(big, offset)
    photo.save(tmp_path / "photo.png")
    face.rotate(angle, resample=Image.Resampling.BICUBIC).save(tmp_path / "tilted.png")  # still 178x218

    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a.astype(float) - b.astype(float)).mean())

    reference = load_image(source, 16)
    cropped = load_face(tmp_path / "photo.png", 16)
    assert cropped.shape == (3, 16, 16) and cropped.dtype == np.uint8
    found = distance(cropped, reference)
    assert found < 20
    assert found < distance(load_image(tmp_path / "photo.png", 16), reference) / 2  # far better than a centre crop
    assert found < distance(load_image(tmp_path / "tilted.png", 16), reference)  # the eyes were levelled


def test_face_crop_with_no_face_is_an_error(tmp_path):
    pytest.importorskip("cv2")
    from latentlab.data.facecrop import load_face

    y, x = np.mgrid[0:200, 0:300]
    Image.fromarray(np.stack([x % 256, y, (x + y) % 256], -1).astype(np.uint8)).save(tmp_path / "wall.png")
    with pytest.raises(DataError, match=r"wall\.png: no face found"):
        load_face(tmp_path / "wall.png", 16)


# ---- the manipulate job ----------------------------------------------------------------------------


def test_manipulate_job_fills_in_defaults_and_reports_what_it_wrote(model, faces, dirs, tmp_path, isolated_paths):
    from latentlab import save_model
    from latentlab.render.jobs import Sweep, manipulate

    save_model(model, isolated_paths / "models" / "run")
    (isolated_paths / "attributes").mkdir()
    dirs_path = isolated_paths / "attributes" / "run.safetensors"
    (tmp_path / "dirs.safetensors").rename(dirs_path)  # where the defaults look for the run's directions
    paths = []
    for i, face in enumerate(faces):
        paths.append(tmp_path / f"face{i}.png")
        Image.fromarray(face.permute(1, 2, 0).numpy()).save(paths[-1])

    done = manipulate(paths[:1], [("Smiling", 0.5), ("Male", -1.0)], device="cpu")
    assert done.path == Path("face0_Smiling_0.5_Male_-1.png") and done.path.exists() and done.model_view is None
    assert (done.description, done.frames) == ("Smiling +0.5, Male -1", 1)
    assert iio.imread(done.path).shape[:2] == done.size

    sweep = manipulate(paths, Sweep(("Smiling",), (-1.0, 0.0, 1.0)), out=tmp_path / "s.gif", show_input=True, size=16)
    assert sweep.frames == 4 and sweep.description == "2 face(s) x 1 attribute(s) x 3 alphas"
    assert sweep.model_view == tmp_path / "s_input.png" and iio.imread(sweep.model_view).shape == (20, 38, 3)

    missing = tmp_path / "no-run"  # the output and the units are checked before the model is looked for
    with pytest.raises(OutputError, match="cannot write an edit"):
        manipulate(paths, [("Smiling", 1.0)], out=tmp_path / "e.gif", model=missing)
    with pytest.raises(ConfigError, match="unknown units 'inches'"):
        manipulate(paths, [("Smiling", 1.0)], units="inches", model=missing)
