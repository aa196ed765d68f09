"""What the model thinks of each photo: bits/dim as `evaluate` computes them, reconstruction PSNR, the warning."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from latentlab.checkpoint import load_model, model_fingerprint
from latentlab.cli.app import app
from latentlab.directions.file import save_directions
from latentlab.latents.likelihood import (
    FitReport,
    ImageFit,
    Reference,
    image_bits_per_dim,
    model_reference,
    psnr,
    reconstruction_psnr,
)
from latentlab.render.faces import encode_faces, load_faces
from latentlab.render.jobs import manipulate
from latentlab.train.evaluate import evaluate_folder

runner = CliRunner()


@pytest.fixture
def run(tiny_run: Path, isolated_paths: Path) -> Path:
    """The tiny toy-faces run as the last trained model, with a direction file where the defaults look."""
    path = isolated_paths / "models" / "tiny"
    shutil.copytree(tiny_run, path)
    model = load_model(path)
    g = torch.Generator().manual_seed(0)
    save_directions(
        isolated_paths / "attributes" / "tiny.safetensors",
        vectors={"Smiling": 0.5 * torch.randn(model.latent_dim, generator=g)},
        pos_counts=[9],
        neg_counts=[9],
        method="mean-diff",
        model_fingerprint=model_fingerprint(model),
        latent_std=[1.0],
    )
    return path


@pytest.fixture
def face(toy_data: Path) -> Path:
    return sorted((toy_data / "img_align_celeba").iterdir())[0]


@pytest.fixture
def noise(tmp_path: Path) -> Path:
    """Uniform noise: nothing like a toy face."""
    path = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
    return path


def test_psnr_in_decibels():
    a = torch.zeros(2, 3, 4, 4)
    b = a.clone()
    b[1] += 0.1  # mse 0.01 on a range of 1: 20 dB
    got = psnr(b, a)
    assert got[0] == math.inf and got[1].item() == pytest.approx(20.0)
    assert psnr(b * 255, a * 255, peak=255.0)[1].item() == pytest.approx(20.0)


def test_a_photos_bits_per_dim_equal_evaluates_on_a_folder_of_that_photo(run, face, tmp_path):
    model = load_model(run)
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(face, folder / face.name)
    expected = evaluate_folder(model, folder, progress=False, workers=1).bits_per_dim
    got = image_bits_per_dim(model, load_faces([face], 16))
    assert got.shape == (1,) and got.dtype == torch.float64
    assert got[0].item() == pytest.approx(expected, abs=1e-5)


def test_the_figure_does_not_depend_on_the_batch(run, face, noise):
    model = load_model(run)
    both = load_faces([face, noise], 16)
    together = image_bits_per_dim(model, both, batch_size=2)
    alone = torch.cat([image_bits_per_dim(model, both[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)


def test_reconstruction_is_exact_to_float_rounding_and_a_wrong_latent_shows(run, face):
    model = load_model(run)
    images = load_faces([face], 16)
    z = encode_faces(model, images)
    assert reconstruction_psnr(model, images, z).item() > 80  # float32 rounding only
    assert reconstruction_psnr(model, images, z + 0.5).item() < 40  # another latent: another picture


def test_the_model_reference_is_its_held_out_figure(run):
    ref = model_reference(run)
    assert ref is not None and ref.source == "held-out" and math.isfinite(ref.bits_per_dim)
    report = FitReport((ImageFit("a", ref.bits_per_dim + 0.5, 100.0), ImageFit("b", ref.bits_per_dim + 1.5, 90.0)), ref)
    assert [f.name for f in report.far] == ["b"]
    assert FitReport(report.images, None).far == ()  # nothing to compare with: no warning
    assert report.median_bits_per_dim() == pytest.approx(ref.bits_per_dim + 1.0) and report.min_psnr() == 90.0
    assert [f.name for f in FitReport((ImageFit("n", math.nan, 1.0),), Reference(1.0, "held-out")).far] == ["n"]


def test_noise_lies_far_above_the_toy_faces_model_and_is_flagged(run, face, noise):
    result = manipulate([face, noise], [("Smiling", 0.5)], out="edit.png", bare=True)
    fit = result.fit
    assert [f.name for f in fit.images] == [face.name, noise.name]
    face_bpd, noise_bpd = (f.bits_per_dim for f in fit.images)
    assert face_bpd < fit.reference.bits_per_dim + 1 < noise_bpd  # the toy face is known, the noise is not
    assert [f.name for f in fit.far] == [noise.name]
    assert all(f.psnr_db > 80 for f in fit.images)


def test_the_commands_print_the_figures_and_warn_about_the_noise(run, face, noise):
    known = runner.invoke(app, ["manipulate", str(face), "--attr", "Smiling", "--alpha", "0.5", "--out", "a.png"])
    assert known.exit_code == 0, known.output
    assert f"{face.name}: " in known.stdout and "bits/dim" in known.stdout and "held-out" in known.stdout
    assert "warning" not in known.stderr
    both = runner.invoke(app, ["interpolate", str(face), str(noise), "--frames", "2", "--out", "l.png", "--quiet"])
    assert both.exit_code == 0, both.output
    assert "warning" in both.stderr and "noise.png" in both.stderr and "look wrong" in both.stderr


def test_encode_reports_a_sample(run, toy_data, tmp_path):
    images = toy_data / "img_align_celeba"
    args = ["encode", "--data", str(images), "--out", str(tmp_path / "store"), "--quiet", "--device", "cpu"]
    result = runner.invoke(app, [*args, "--fit-sample", "12"])
    assert result.exit_code == 0, result.output
    assert "12 sampled images: bits/dim median" in result.stdout and "held-out" in result.stdout
    again = runner.invoke(app, [*args, "--fit-sample", "0"])
    assert again.exit_code == 0 and "already encoded" in again.stdout and "bits/dim" not in again.stdout


def test_many_photos_get_a_summary_and_the_outliers_not_a_line_each(capsys):
    from latentlab.cli.photo_fit import print_fit

    ref = Reference(2.0, "held-out")
    images = tuple(ImageFit(f"p{i:02d}.jpg", 1.9 + (2.0 if i >= 8 else 0.0) + i / 100, 120.0) for i in range(20))
    print_fit(FitReport(images, ref))
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 1 and "20 photos: bits/dim median" in out and "held-out" in out
    assert "12 of 20 photos" in err and "p19.jpg" in err and "and 2 more" in err
    assert "p08.jpg" not in err and "p07.jpg" not in err  # the 10 highest are named; p07 is not far
