"""Directions without labels: streamed principal components, their file, report and use in edits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from latentlab.cli.app import app
from latentlab.directions.attribute_vectors import compute_attribute_vectors
from latentlab.directions.file import load_directions
from latentlab.directions.pca import component_names, principal_directions, subspace_size
from latentlab.directions.report import component_table
from latentlab.errors import ConfigError, DataError

runner = CliRunner()


def planted(n: int = 2000, d: int = 48, seed: int = 0):
    """Latents with a strong spread (σ = 4) along u1, a weaker one (σ = 2) along u2 ⟂ u1, unit noise, an offset."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, 2)))
    u1, u2 = q[:, 0], q[:, 1]
    a, b = rng.standard_normal(n), rng.standard_normal(n)
    z = rng.standard_normal((n, d)) + 4.0 * a[:, None] * u1 + 2.0 * b[:, None] * u2 + 3.0
    return z.astype(np.float32), u1, u2, a


def cosine(x, y) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))


@pytest.mark.parametrize("batch_rows", [32, 250, 5000])
def test_streamed_pca_recovers_the_planted_directions(batch_rows):
    z, u1, u2, _ = planted()
    dirs = principal_directions(z, components=4, batch_rows=batch_rows)
    assert dirs.names == ["pc1", "pc2", "pc3", "pc4"] and dirs.method == "pca"
    assert abs(cosine(dirs.vectors["pc1"], u1)) > 0.99
    assert abs(cosine(dirs.vectors["pc2"], u2)) > 0.98
    ratio = [dirs.extra["explained_variance_ratio"][pc] for pc in dirs.names]
    assert ratio == sorted(ratio, reverse=True) and all(0 < r <= 1 for r in ratio) and sum(ratio) <= 1
    # the total variance is 16 + 4 + 48 (unit noise in every dimension): pc1 holds about 17/68 of it
    assert ratio[0] == pytest.approx(17 / 68, rel=0.1)
    assert dirs.extra["pca_rows"] == 2000 and dirs.extra["pca_subspace"] == 48  # min(D, K + 90)


def test_streamed_components_equal_an_exact_svd_on_a_nearly_flat_spectrum():
    """Glow latents are nearly isotropic: the components must still match the exact ones."""
    rng = np.random.default_rng(3)
    n, d = 600, 200
    scales = np.linspace(1.6, 1.0, d)  # a slowly falling spectrum, no dominant direction
    z = rng.standard_normal((n, d)) * scales + 0.5
    dirs = principal_directions(z, components=5, batch_rows=64)
    zc = z - z.mean(0)
    _, s, vt = np.linalg.svd(zc, full_matrices=False)
    exact = s**2 / (n - 1)
    for k in range(5):
        assert abs(cosine(dirs.vectors[f"pc{k + 1}"], vt[k])) > 0.99
        assert dirs.extra["explained_variance"][f"pc{k + 1}"] == pytest.approx(exact[k], rel=1e-4)
    assert dirs.extra["total_variance"] == pytest.approx(exact.sum(), rel=1e-9)
    again = principal_directions(z, components=5, batch_rows=600)
    for pc in dirs.names:  # the sign is fixed: the largest coordinate is positive
        assert cosine(dirs.vectors[pc], again.vectors[pc]) > 0.99


def test_alpha_and_sigma_units_of_a_component():
    z, u1, _, _ = planted()
    dirs = principal_directions(z, components=2, batch_rows=100)
    v = dirs.vectors["pc1"].numpy()
    proj = (z.astype(np.float64) - z.mean(0)) @ (v / np.linalg.norm(v))
    sigma = proj.std()
    assert dirs.latent_std["pc1"] == pytest.approx(sigma, rel=1e-6)
    assert dirs.latent_std["pc1"] ** 2 == pytest.approx(dirs.extra["explained_variance"]["pc1"], rel=1e-2)
    # alpha = 1 moves the mean of the faces below the mean to the mean of those above: 2·sqrt(2/pi)·σ if Gaussian
    gap = proj[proj > 0].mean() - proj[proj < 0].mean()
    assert np.linalg.norm(v) == pytest.approx(gap, rel=1e-6)
    assert np.linalg.norm(v) == pytest.approx(2 * math.sqrt(2 / math.pi) * sigma, rel=0.05)
    assert dirs.pos_counts["pc1"] == (proj > 0).sum() and dirs.pos_counts["pc1"] + dirs.neg_counts["pc1"] == 2000
    assert float(dirs.vector("pc1", units="sigma").norm()) == pytest.approx(sigma, rel=1e-6)


def test_labels_name_the_attribute_a_component_follows():
    z, _, _, a = planted()
    rng = np.random.default_rng(1)
    follows = np.where(a > 0, 1, -1).astype(np.int8)
    noise = rng.choice([-1, 1], size=len(z)).astype(np.int8)
    labels = np.stack([noise, follows], axis=1)
    labels[:5, 1] = 0  # unknown labels are left out
    dirs = principal_directions(z, components=2, labels=labels, names=["Noise", "Follows"])
    attribute, r = dirs.extra["pca_tracks"]["pc1"]
    assert attribute == "Follows" and abs(r) > 0.7
    assert abs(dirs.extra["pca_correlations"]["pc1"]["Noise"]) < 0.1


def test_too_few_faces_or_too_many_components_are_errors():
    z, *_ = planted(n=50, d=8)
    with pytest.raises(ConfigError, match="exceeds the latent size 8"):
        principal_directions(z, components=9)
    with pytest.raises(DataError, match="need at least 6 faces; got 5"):
        principal_directions(z[:5], components=5)
    with pytest.raises(DataError, match="NaN"):
        principal_directions(np.full((20, 8), np.nan), components=2)
    with pytest.raises(DataError, match="labels have shape"):
        principal_directions(z, components=2, labels=np.ones((49, 1)), names=["A"])
    assert component_names(3) == ["pc1", "pc2", "pc3"]
    assert subspace_size(10, 3072) == 100 and subspace_size(200, 12288) == 400 and subspace_size(10, 48) == 48


def test_the_direction_file_round_trips_and_the_report_lists_the_variance(tmp_path):
    z, *_ = planted(n=400, d=16)
    dirs = principal_directions(z, components=3)
    loaded = load_directions(dirs.save(tmp_path / "pcs.safetensors"))
    assert loaded.names == ["pc1", "pc2", "pc3"] and loaded.method == "pca"
    assert loaded.extra["explained_variance_ratio"] == dirs.extra["explained_variance_ratio"]
    for pc in loaded.names:
        np.testing.assert_allclose(loaded.vectors[pc].numpy(), dirs.vectors[pc].numpy(), rtol=1e-6)
        assert loaded.latent_std[pc] == dirs.latent_std[pc]
    from latentlab.directions.report import report_rows

    rows = report_rows(loaded)
    assert [row["attribute"] for row in rows] == loaded.names
    assert rows[-1]["cumulative_ratio"] == pytest.approx(sum(loaded.extra["explained_variance_ratio"].values()))
    assert rows[0]["sigma"] == loaded.latent_std["pc1"] and rows[0]["tracks"] is None
    assert component_table(rows).row_count == 3


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def test_pca_needs_no_labels_and_manipulate_uses_its_components(tiny_run, toy_data, tmp_path):
    out = tmp_path / "pcs.safetensors"
    images = toy_data / "img_align_celeba"
    result = invoke(
        "attribute-vectors", "--method", "pca", "--images", images, "--model", tiny_run, "--out", out,
        "--components", "3", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr
    assert "principal components of 96 faces" in result.output and "cumulative" in result.output
    dirs = load_directions(out)
    assert dirs.names == ["pc1", "pc2", "pc3"] and dirs.method == "pca" and dirs.extra["labels"] is None
    report = json.loads((tmp_path / "pcs-report.json").read_text())
    assert [row["attribute"] for row in report["attributes"]] == dirs.names
    assert not (tmp_path / "pcs-report-cosine.png").exists()
    edit = tmp_path / "edit.png"
    args = ["manipulate", images / "000001.png", "--model", tiny_run, "--vectors", out, "--attr", "pc1"]
    result = invoke(*args, "--attr", "pc2", "--sweep", "-1,1,3", "--out", edit)
    assert result.exit_code == 0, result.output + result.stderr
    assert edit.stat().st_size > 0


def test_pca_with_labels_reports_what_each_component_follows(tiny_run, toy_data, tmp_path):
    result = compute_attribute_vectors(
        labels_path=toy_data / "list_attr_celeba.csv",
        model_path=tiny_run,
        out=tmp_path / "p.safetensors",
        method="pca",
        components=2,
        progress=False,
        workers=1,
    )
    assert result.images_used == 96 and all(row["tracks"] for row in result.rows)
    assert set(result.directions.extra["pca_correlations"]["pc1"]) >= {"Smiling", "Male"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "mean-diff"], "need a label file (--labels FILE); only --method pca works without"),
        (["--method", "logistic"], "only --method pca works without"),
        (["--method", "pca"], "needs the faces to analyse: --images DIR"),
        (["--method", "pca", "--images", "IMAGES", "--attrs", "Smiling"], "give --labels FILE too"),
        (["--method", "pca", "--images", "IMAGES", "--components", "0"], "Invalid value"),
        (["--method", "pca", "--images", "IMAGES", "--components", "769"], "exceeds the model's latent size 768"),
    ],
)
def test_labels_are_optional_for_pca_only(tiny_run, toy_data, tmp_path, args, message):
    args = [toy_data / "img_align_celeba" if a == "IMAGES" else a for a in args]
    result = invoke("attribute-vectors", "--model", tiny_run, "--out", tmp_path / "x.safetensors", "--quiet", *args)
    assert result.exit_code != 0 and "Traceback" not in result.output + result.stderr
    assert message in result.stderr, result.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_pca_refuses_conditions(toy_data):
    with pytest.raises(ConfigError, match="does not apply to --method pca"):
        compute_attribute_vectors(
            labels_path=toy_data / "list_attr_celeba.csv", method="pca", orthogonal_to=["Male"], progress=False
        )
