"""Attribute directions: streaming equals in-memory, planted directions come back, conditioning, reports, mismatches."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from latentlab.checkpoint import load_model, model_fingerprint
from latentlab.data.cache import prepare_cache
from latentlab.data.toy_faces import TOY_ATTRIBUTES
from latentlab.directions.attribute_vectors import compute_attribute_vectors
from latentlab.directions.file import load_directions
from latentlab.directions.fit import fit_directions
from latentlab.directions.probe import held_out_rows
from latentlab.errors import AttributeNameError, CheckpointError, ConfigError, DataError


def planted(n: int = 2000, d: int = 32, seed: int = 0):
    """Isotropic latents with attribute A along e0 and B along a unit vector at 60 degrees to it."""
    rng = np.random.default_rng(seed)
    a = rng.choice([-1, 1], size=n)
    b = np.where(rng.random(n) < 0.8, a, -a)  # B agrees with A 80% of the time: correlated attributes
    u_a = np.eye(d)[0]
    u_b = 0.5 * np.eye(d)[0] + np.sqrt(0.75) * np.eye(d)[1]
    z = rng.standard_normal((n, d)) + 1.5 * a[:, None] * u_a + 1.0 * b[:, None] * u_b
    return z.astype(np.float32), np.stack([a, b], axis=1).astype(np.int8), u_a, u_b


def cosine(x, y) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))


@pytest.mark.parametrize("method", ["mean-diff", "logistic"])
def test_a_planted_direction_is_recovered_by_each_method(method):
    z, labels, u_a, _ = planted()
    fit = fit_directions(z, labels, ["A", "B"], method=method, seed=0)
    v = fit.vectors["A"].numpy()
    assert cosine(v, u_a) > 0.9
    assert fit.extra["probe_balanced_accuracy"]["A"] > 0.85 and fit.extra["probe_accuracy"]["A"] > 0.85
    assert fit.extra["held_out_rows"] == 400 and fit.extra["held_out_fraction"] == 0.2
    # alpha = 1 moves the negatives' mean projection to the positives' (over the training rows)
    unit = v / np.linalg.norm(v)
    train = ~held_out_rows(len(z), 0.2, seed=0)
    proj, y = z[train].astype(np.float64) @ unit, labels[train, 0]
    gap = proj[y > 0].mean() - proj[y < 0].mean()
    assert np.linalg.norm(v) == pytest.approx(gap, rel=1e-9)
    if method == "logistic":
        assert fit.extra["classifier_accuracy"]["A"] > 0.85 and fit.extra["logistic_rows"] == 1600


def training_mean_diff(z: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """In memory: the mean difference of attribute 0 over the rows `fit_directions` trains on."""
    train = ~held_out_rows(len(z), 0.2, seed=seed)
    z, y = z[train].astype(np.float64), labels[train, 0]
    return z[y > 0].mean(0) - z[y < 0].mean(0)


def test_mean_difference_is_exact_and_independent_of_chunking_and_order():
    z, labels, _, _ = planted(n=300)
    expected = training_mean_diff(z, labels)
    base = fit_directions(z, labels, ["A", "B"])
    np.testing.assert_allclose(base.vectors["A"].numpy(), expected, rtol=0, atol=1e-12)
    order = np.random.default_rng(1).permutation(len(z))
    for kwargs in ({"chunk_rows": 7}, {"chunk_rows": 1}):
        other = fit_directions(z, labels, ["A", "B"], **kwargs)
        for name in ("A", "B"):
            np.testing.assert_allclose(other.vectors[name].numpy(), base.vectors[name].numpy(), atol=1e-12)
        assert other.latent_std == pytest.approx(base.latent_std, rel=1e-9)
    # In another order the split holds out other faces: still the exact mean difference over its training rows.
    shuffled = fit_directions(z[order], labels[order], ["A", "B"], chunk_rows=13)
    np.testing.assert_allclose(shuffled.vectors["A"].numpy(), training_mean_diff(z[order], labels[order]), atol=1e-12)
    unit = shuffled.vectors["A"].numpy() / np.linalg.norm(shuffled.vectors["A"].numpy())
    assert shuffled.latent_std["A"] == pytest.approx((z.astype(np.float64) @ unit).std(), rel=1e-9)  # every row
    assert base.pos_counts == {"A": int((labels[:, 0] > 0).sum()), "B": int((labels[:, 1] > 0).sum())}


@pytest.mark.parametrize("method", ["mean-diff", "logistic"])
def test_orthogonalised_directions_are_orthogonal_to_their_conditions(method):
    z, labels, u_a, u_b = planted()
    plain = fit_directions(z, labels, ["A", "B"], method=method)
    assert abs(cosine(plain.vectors["A"], plain.vectors["B"])) > 0.3  # correlated before conditioning
    fit = fit_directions(z, labels, ["A", "B"], method=method, orthogonal_to=["B"])
    assert abs(cosine(fit.vectors["A"], fit.vectors["B"])) < 1e-10
    np.testing.assert_allclose(fit.vectors["B"].numpy(), plain.vectors["B"].numpy())  # conditions stay
    residual = (
        plain.vectors["A"]
        - (plain.vectors["A"] @ plain.vectors["B"]) / plain.vectors["B"].norm() ** 2 * plain.vectors["B"]
    )
    assert cosine(fit.vectors["A"], residual) > 0.99  # what is left of A once B is taken out


@pytest.mark.parametrize("method", ["mean-diff", "logistic"])
def test_held_out_rows_are_never_used_for_fitting(method):
    z, labels, _, _ = planted(n=1000)
    base = fit_directions(z, labels, ["A", "B"], method=method, orthogonal_to=["B"], seed=3)
    held = held_out_rows(len(z), 0.2, seed=3)
    assert base.extra["held_out_rows"] == held.sum() == 200
    z2, labels2 = z.copy(), labels.copy()
    rng = np.random.default_rng(9)
    z2[held] = 10 * rng.standard_normal(z2[held].shape).astype(np.float32)
    labels2[held] = rng.choice(np.array([-1, 1], dtype=np.int8), size=labels2[held].shape)
    other = fit_directions(z2, labels2, ["A", "B"], method=method, orthogonal_to=["B"], seed=3)
    for name in ("A", "B"):
        assert torch.equal(other.vectors[name], base.vectors[name])
    assert other.extra["probe_balanced_accuracy"]["A"] < 0.6 < base.extra["probe_balanced_accuracy"]["A"]


def test_a_rare_attribute_with_a_useless_direction_scores_chance_not_the_majority_rate():
    rng = np.random.default_rng(2)
    n, d = 20000, 16
    z = rng.standard_normal((n, d)).astype(np.float32)
    rare = np.where(rng.random(n) < 0.05, 1, -1).astype(np.int8)  # unrelated to z: any direction is useless
    planted_attr = rng.choice(np.array([-1, 1], dtype=np.int8), size=n)
    z[:, 0] += 2.0 * planted_attr
    fit = fit_directions(z, np.stack([rare, planted_attr], axis=1), ["Rare", "Planted"], seed=0)
    extra = fit.extra
    held = held_out_rows(n, 0.2, seed=0)
    majority = max((rare[held] > 0).mean(), (rare[held] < 0).mean())
    assert extra["probe_majority_rate"]["Rare"] == pytest.approx(majority) and majority > 0.9
    assert abs(extra["probe_balanced_accuracy"]["Rare"] - 0.5) < 0.05
    assert extra["probe_balanced_accuracy"]["Planted"] > 0.95 and extra["probe_held_out"]["Planted"] == 4000


def test_an_attribute_without_held_out_positives_gets_no_probe_figures_and_a_reason():
    z, labels, _, _ = planted(n=1000)
    held = held_out_rows(len(z), 0.2, seed=0)
    labels[held, 1] = -1
    fit = fit_directions(z, labels, ["A", "B"])
    assert "B" in fit.vectors and fit.extra["probe_balanced_accuracy"]["B"] is None
    assert fit.extra["probe_accuracy"]["B"] is None and fit.extra["probe_majority_rate"]["B"] is None
    assert "held-out split has 0 positives" in fit.extra["probe_notes"]["B"] and "A" not in fit.extra["probe_notes"]
    with pytest.raises(ConfigError, match="held-out fraction"):
        fit_directions(z, labels, ["A", "B"], held_out_fraction=1.0)


def test_conditions_must_be_computed_and_not_skipped():
    z, labels, _, _ = planted(n=200)
    with pytest.raises(ConfigError, match="'C'.*not among"):
        fit_directions(z, labels, ["A", "B"], orthogonal_to=["C"])
    labels[:, 1] = -1
    labels[:3, 1] = 1
    with pytest.raises(DataError, match="orthogonal to B: it was skipped"):
        fit_directions(z, labels, ["A", "B"], orthogonal_to=["B"])


def test_streaming_pipeline_equals_in_memory_computation(tiny_run, toy_data, tmp_path):
    model = load_model(tiny_run)
    folder = toy_data / "img_align_celeba"
    cache = prepare_cache(folder, model.config.image_size, workers=1, progress=False)
    with torch.inference_mode():
        z = model.eval().encode(model.preprocess(torch.from_numpy(np.array(cache.images)))).double().numpy()
    labels = pd.read_csv(toy_data / "list_attr_celeba.csv", dtype={"image_id": str}).set_index("image_id")
    labels = labels.loc[cache.names]
    results = []
    train = ~held_out_rows(len(z), 0.2, seed=0)
    for batch_size in (5, 64):
        result = compute_attribute_vectors(
            labels_path=toy_data / "list_attr_celeba.csv",
            model_path=tiny_run,
            out=tmp_path / f"b{batch_size}.safetensors",
            batch_size=batch_size,
            latent_dtype="float32",
            min_count=5,
            progress=False,
            workers=1,
        )
        assert result.images == folder and result.images_used == 96 and not result.directions.skipped
        results.append(result.directions)
        for name in TOY_ATTRIBUTES:
            y = labels[name].to_numpy()
            expected = z[train & (y > 0)].mean(0) - z[train & (y < 0)].mean(0)
            np.testing.assert_allclose(result.directions.vectors[name].numpy(), expected, atol=1e-5)
            counts = (result.directions.pos_counts[name], result.directions.neg_counts[name])
            assert counts == ((y > 0).sum(), (y < 0).sum())
    for name in TOY_ATTRIBUTES:
        np.testing.assert_allclose(results[0].vectors[name].numpy(), results[1].vectors[name].numpy(), atol=1e-5)


def test_direction_file_and_report_hold_everything(tiny_run, toy_data, tmp_path):
    out = tmp_path / "dirs.safetensors"
    result = compute_attribute_vectors(
        labels_path=toy_data / "list_attr_celeba.csv",
        model_path=tiny_run,
        out=out,
        attrs=["Smiling", "Male"],
        method="logistic",
        orthogonal_to=["Bangs"],
        min_count=5,
        progress=False,
        workers=1,
    )
    dirs = load_directions(out)
    fingerprint = model_fingerprint(load_model(tiny_run))
    assert dirs.fingerprint == fingerprint == result.fingerprint
    dirs.check_model(fingerprint, "tiny")
    with pytest.raises(CheckpointError, match="another model"):
        dirs.check_model("0" * 16, "other")
    assert dirs.names == ["Smiling", "Male", "Bangs"] and dirs.method == "logistic"  # the condition is computed too
    assert dirs.latent_std is not None and all(s > 0 for s in dirs.latent_std.values())
    assert set(dirs.extra["probe_accuracy"]) == set(dirs.names) and dirs.extra["orthogonal_to"] == ["Bangs"]
    for name in ("Smiling", "Male"):
        assert abs(cosine(dirs.vectors[name], dirs.vectors["Bangs"])) < 1e-5
    report = json.loads(result.report["json"].read_text())
    assert [row["attribute"] for row in report["attributes"]] == dirs.names
    assert report["fingerprint"] == fingerprint and report["cosine"]["names"] == dirs.names
    assert all(row["classifier_accuracy"] is not None for row in report["attributes"])
    assert result.report["heatmap"].stat().st_size > 0
    assert report["held_out_rows"] == 19 and "scored on 19 held-out faces" in report["probe"]
    assert all(row["probe_held_out"] is not None for row in report["attributes"])
    assert pd.read_csv(result.report["csv"]).shape[0] == 3


def test_defaults_just_work(tiny_run, toy_data, isolated_paths):
    shutil.copytree(tiny_run, isolated_paths / "models" / "tiny")
    result = compute_attribute_vectors(labels_path=toy_data / "list_attr_celeba.csv", min_count=5, progress=False)
    assert result.path == Path(isolated_paths / "attributes" / "tiny.safetensors")
    assert result.model == isolated_paths / "models" / "tiny" and result.images == toy_data / "img_align_celeba"
    assert (
        result.report["json"].name == "tiny-report.json" and result.report["heatmap"].name == "tiny-report-cosine.png"
    )
    assert not list((isolated_paths / "cache").glob("latents-*"))  # the temporary latent store is gone


def test_too_few_positives_are_reported_and_skipped(tiny_run, toy_data, tmp_path):
    table = pd.read_csv(toy_data / "list_attr_celeba.csv", dtype={"image_id": str})
    table["Eyeglasses"] = -1
    table.loc[:2, "Eyeglasses"] = 1
    labels = tmp_path / "labels.csv"
    table.to_csv(labels, index=False)
    out = tmp_path / "dirs.safetensors"
    result = compute_attribute_vectors(
        labels_path=labels,
        images=toy_data / "img_align_celeba",
        model_path=tiny_run,
        out=out,
        progress=False,
        workers=1,
    )
    row = next(r for r in result.rows if r["attribute"] == "Eyeglasses")
    assert row["positives"] == 3 and "positives" in row["skipped"] and "training split" in row["skipped"]
    assert row["norm"] is None
    assert "Eyeglasses" not in load_directions(out).names and "Smiling" in load_directions(out).names
    assert "Eyeglasses" in load_directions(out).skipped
    with pytest.raises(DataError, match="no attribute can get a direction"):
        compute_attribute_vectors(
            labels_path=labels,
            images=toy_data / "img_align_celeba",
            model_path=tiny_run,
            out=out,
            attrs=["Eyeglasses"],
            progress=False,
            workers=1,
        )


def test_mismatched_labels_and_images_are_counted(tiny_run, toy_data, tmp_path):
    images = tmp_path / "faces"
    shutil.copytree(toy_data / "img_align_celeba", images)
    (images / "000007.png").rename(images / "renamed.png")
    table = pd.read_csv(toy_data / "list_attr_celeba.csv", dtype={"image_id": str})
    table = table.drop(index=[0, 1, 2])  # three images lose their labels
    extra = table.iloc[:2].assign(image_id=["elsewhere1.png", "elsewhere2.png"])  # two labels lose their images
    labels = tmp_path / "labels.csv"
    pd.concat([table, extra]).to_csv(labels, index=False)
    out = tmp_path / "d.safetensors"
    result = compute_attribute_vectors(
        labels_path=labels, images=images, model_path=tiny_run, out=out, min_count=5, progress=False, workers=1
    )
    assert result.images_without_labels == 3 + 1 and result.labels_without_image == 2 + 1
    assert result.images_used == 96 - 4
    assert "3 label rows without an image" in result.match_summary and "4 images without labels" in result.match_summary
    report = json.loads(result.report["json"].read_text())
    assert (report["images_without_labels"], report["labels_without_image"]) == (4, 3)


def test_unknown_attributes_get_a_suggestion_before_any_work(toy_data):
    with pytest.raises(AttributeNameError, match="did you mean Blond_Hair"):
        compute_attribute_vectors(labels_path=toy_data / "list_attr_celeba.csv", attrs=["Blond"], progress=False)
    with pytest.raises(AttributeNameError, match="did you mean Male"):
        compute_attribute_vectors(labels_path=toy_data / "list_attr_celeba.csv", orthogonal_to=["male"])


def test_labels_matching_no_image_and_bad_options_are_errors(tiny_run, toy_data, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("image_id,Smiling\nnope1.jpg,1\nnope2.jpg,-1\n")
    with pytest.raises(DataError, match="none of the 96 images"):
        compute_attribute_vectors(
            labels_path=labels, images=toy_data / "img_align_celeba", model_path=tiny_run, progress=False, workers=1
        )
    with pytest.raises(DataError, match="does not exist"):
        compute_attribute_vectors(labels_path=tmp_path / "missing.csv", model_path=tiny_run)
    with pytest.raises(ConfigError, match="unknown method"):
        compute_attribute_vectors(labels_path=labels, method="lda")


@pytest.mark.parametrize("fraction", [-0.1, 0.95, 1.0, float("nan"), "half"])
def test_a_held_out_fraction_outside_0_to_0_9_is_refused(fraction):
    z, labels, _, _ = planted(n=200)
    with pytest.raises(ConfigError, match="must be 0 \\(no probe\\) or between 0 and 0.9|is not a number"):
        fit_directions(z, labels, ["A", "B"], held_out_fraction=fraction)


def test_the_held_out_fraction_sets_the_split_and_0_fits_every_face_without_a_probe():
    z, labels, u_a, _ = planted()
    half = fit_directions(z, labels, ["A", "B"], held_out_fraction=0.5)
    assert half.extra["held_out_rows"] == 1000 and half.extra["probe_held_out"]["A"] == 1000
    everything = fit_directions(z, labels, ["A", "B"], held_out_fraction=0.0)
    assert everything.extra["held_out_rows"] == 0 and everything.extra["held_out_fraction"] == 0.0
    assert everything.extra["probe_balanced_accuracy"]["A"] is None
    assert "no faces were held out" in everything.extra["probe_notes"]["A"]
    y = labels[:, 0]
    np.testing.assert_allclose(everything.vectors["A"].numpy(), z[y > 0].mean(0) - z[y < 0].mean(0), atol=1e-5)
    assert cosine(everything.vectors["A"], u_a) > 0.9


def test_held_out_fraction_option_of_the_command(tiny_run, toy_data, tmp_path):
    from typer.testing import CliRunner

    from latentlab.cli.app import app

    out = tmp_path / "d.safetensors"
    args = ["attribute-vectors", "--labels", toy_data / "list_attr_celeba.csv", "--model", tiny_run, "--quiet"]
    args = [str(a) for a in (*args, "--attrs", "Smiling,Male", "--min-count", "5", "--out", out)]
    bad = CliRunner().invoke(app, [*args, "--held-out-fraction", "0.95"])
    assert bad.exit_code == 1 and "between 0 and 0.9" in bad.stderr and "Traceback" not in bad.output + bad.stderr
    assert not out.exists()
    for fraction, probe in (("0.5", "scored on 48 held-out faces"), ("0", "no faces were held out")):
        result = CliRunner().invoke(app, [*args, "--held-out-fraction", fraction])
        assert result.exit_code == 0, result.output + result.stderr
        assert probe in json.loads(out.with_name("d-report.json").read_text())["probe"]
    assert load_directions(out).extra["held_out_rows"] == 0


def sparse_planted(n: int = 2000, d: int = 1024, seed: int = 0):
    """A rare attribute (10%) that moves only 8 of d coordinates: much of the mean difference is noise."""
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < 0.1, 1, -1).astype(np.int8)
    u = np.zeros(d)
    u[:8] = 1 / np.sqrt(8)
    z = rng.standard_normal((n, d)) + 2.5 * (y[:, None] > 0) * u
    return z.astype(np.float32), y[:, None], u


def test_stderr_of_the_streamed_sums_equals_the_in_memory_one():
    from latentlab.directions.sums import AttributeSums

    z, labels, _, _ = planted(n=500, d=6)
    sums = AttributeSums(["A", "B"], 6)
    for lo in range(0, 500, 77):
        sums.update(z[lo : lo + 77], labels[lo : lo + 77])
    for a in range(2):
        pos, neg = z[labels[:, a] > 0].astype(np.float64), z[labels[:, a] < 0].astype(np.float64)
        expected = np.sqrt(pos.var(0) / len(pos) + neg.var(0) / len(neg))
        np.testing.assert_allclose(sums.stderr()[a].numpy(), expected, rtol=1e-9)


def test_shrinking_the_mean_difference_removes_its_noise():
    from latentlab.directions.maths import shrink_mean_diff

    m, se = torch.tensor([3.0, -3.0, 0.5, -0.2]), torch.tensor([1.0, 1.0, 1.0, 0.1])
    assert shrink_mean_diff(m, se, 1.5).tolist() == pytest.approx([1.5, -1.5, 0.0, -0.05])
    assert torch.equal(shrink_mean_diff(m, se, 0.0), m)
    with pytest.raises(ConfigError, match="shrink -1"):
        shrink_mean_diff(m, se, -1)
    z, labels, u = sparse_planted()
    plain = fit_directions(z, labels, ["Rare"], seed=0)
    shrunk = fit_directions(z, labels, ["Rare"], method="mean-diff-shrunk", seed=0)
    assert shrunk.method == "mean-diff-shrunk" and shrunk.extra["shrink"] == 1.5 and plain.extra["shrink"] is None
    assert cosine(plain.vectors["Rare"], u) < 0.8 < 0.9 < cosine(shrunk.vectors["Rare"], u)
    assert shrunk.extra["probe_balanced_accuracy"]["Rare"] > plain.extra["probe_balanced_accuracy"]["Rare"] + 0.05
    # the alpha convention holds: |v| is the class gap along v over the training rows
    v = shrunk.vectors["Rare"].numpy()
    train = ~held_out_rows(len(z), 0.2, seed=0)
    proj, y = z[train].astype(np.float64) @ (v / np.linalg.norm(v)), labels[train, 0]
    assert np.linalg.norm(v) == pytest.approx(proj[y > 0].mean() - proj[y < 0].mean(), rel=1e-9)


def test_the_shrunk_mean_difference_through_the_command(tiny_run, toy_data, tmp_path):
    from typer.testing import CliRunner

    from latentlab.cli.app import app

    out = tmp_path / "s.safetensors"
    args = ["attribute-vectors", "--labels", toy_data / "list_attr_celeba.csv", "--model", tiny_run, "--quiet"]
    args = [str(a) for a in (*args, "--attrs", "Smiling,Male", "--min-count", "5", "--out", out)]
    result = CliRunner().invoke(app, [*args, "--method", "mean-diff-shrunk", "--shrink", "1"])
    assert result.exit_code == 0, result.output + result.stderr
    dirs = load_directions(out)
    assert dirs.method == "mean-diff-shrunk" and dirs.extra["shrink"] == 1.0
    assert json.loads(out.with_name("s-report.json").read_text())["shrink"] == 1.0
    bad = CliRunner().invoke(app, [*args, "--method", "mean-diff-shrunk", "--shrink", "-1"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output + bad.stderr


def test_mirrored_faces_fit_the_pair_averages_and_the_probe_scores_faces_only():
    """With mirror latents the class sums are over (z + z_mirror) / 2; the probe and spread use z alone."""
    z, labels, u_a, _ = planted(n=600)
    zm = z + np.random.default_rng(5).standard_normal(z.shape).astype(np.float32)  # the same faces, other noise
    fit = fit_directions(z, labels, ["A", "B"], method="mean-diff", mirrored=zm)
    train = ~held_out_rows(len(z), 0.2, seed=0)
    pairs, y = (z.astype(np.float64) + zm) / 2, labels[:, 0]
    expected = pairs[train & (y > 0)].mean(0) - pairs[train & (y < 0)].mean(0)
    np.testing.assert_allclose(fit.vectors["A"].numpy(), expected, rtol=0, atol=1e-9)
    same_faces = fit_directions(z, labels, ["A", "B"], method="mean-diff", mirrored=z)
    plain = fit_directions(z, labels, ["A", "B"], method="mean-diff")
    np.testing.assert_allclose(same_faces.vectors["A"].numpy(), plain.vectors["A"].numpy(), atol=1e-9)
    assert same_faces.extra["probe_balanced_accuracy"] == plain.extra["probe_balanced_accuracy"]
    assert same_faces.latent_std == plain.latent_std  # the spread is the faces'
    shrunk = fit_directions(z, labels, ["A", "B"], method="mean-diff-shrunk", mirrored=zm)
    logistic = fit_directions(z, labels, ["A", "B"], method="logistic", mirrored=zm)
    assert cosine(shrunk.vectors["A"], u_a) > 0.9 and cosine(logistic.vectors["A"], u_a) > 0.9
    assert logistic.extra["logistic_rows"] == 480  # faces; each fitted with its mirror
    with pytest.raises(DataError, match="mirrored latents have shape"):
        fit_directions(z, labels, ["A", "B"], mirrored=zm[:-1])


def test_logistic_with_mirrors_keeps_a_face_and_its_mirror_on_one_side_of_its_hold_out():
    """The classifier's accuracy is scored on faces whose mirrors it never saw."""
    from latentlab.directions.maths import logistic_directions, logistic_split

    train, test = logistic_split(400, 300, 0.25, seed=0, mirrored_half=True)
    assert len(test) == 38 and len(train) == 2 * 112 and (test < 200).all()
    assert not set(test) & set(train) and not set(test + 200) & set(train)
    assert set(train[train >= 200] - 200) == set(train[train < 200])
    plain_train, plain_test = logistic_split(400, 300, 0.25, seed=0)
    assert len(plain_test) == 75 and len(plain_train) == 225
    z, labels, _, _ = planted(n=400)
    stacked, twice = np.concatenate([z, z]), np.concatenate([labels, labels])
    with pytest.raises(DataError, match="even number"):
        logistic_directions(stacked[:-1], twice[:-1, :1], attrs=["A"], mirrored_half=True)


def test_mirror_through_the_command_encodes_the_mirror_images(tiny_run, toy_data, tmp_path):
    """--mirror: a second store of the mirror images beside the faces', and the fit on both."""
    from typer.testing import CliRunner

    from latentlab.cli.app import app
    from latentlab.latents import open_store

    out, lat = tmp_path / "m.safetensors", tmp_path / "lat"
    args = ["attribute-vectors", "--labels", toy_data / "list_attr_celeba.csv", "--model", tiny_run, "--quiet"]
    args = [str(a) for a in (*args, "--attrs", "Smiling,Male", "--min-count", "5", "--out", out, "--latents", lat)]
    result = CliRunner().invoke(app, [*args, "--mirror", "--dtype", "float32"])
    assert result.exit_code == 0, result.output + result.stderr
    faces, mirrors = open_store(lat), open_store(lat / "mirror")
    assert mirrors.ids == faces.ids and mirrors.meta["mirror"] and not faces.meta["mirror"]
    model = load_model(tiny_run)
    cache = prepare_cache(toy_data / "img_align_celeba", model.config.image_size, workers=1, progress=False)
    first = np.array(cache.images)[[cache.names.index(faces.ids[0])]]
    with torch.inference_mode():
        expected = model.eval().encode(model.preprocess(torch.from_numpy(first).flip(-1))).numpy()
    np.testing.assert_allclose(np.asarray(mirrors.latents[:1]), expected, atol=1e-4)
    dirs = load_directions(out)
    assert dirs.extra["mirror"] is True
    z, zm = np.asarray(faces.latents, np.float64), np.asarray(mirrors.latents, np.float64)
    y = faces.labels["Smiling"].to_numpy()
    train = ~held_out_rows(len(z), 0.2, seed=0)
    pairs = (z + zm) / 2
    expected_v = pairs[train & (y > 0)].mean(0) - pairs[train & (y < 0)].mean(0)
    np.testing.assert_allclose(dirs.vectors["Smiling"].numpy(), expected_v, atol=1e-5)
    pca = CliRunner().invoke(app, [*args, "--mirror", "--method", "pca"])
    assert pca.exit_code != 0 and "--mirror" in pca.output + pca.stderr and "Traceback" not in pca.output + pca.stderr


def test_a_mirror_store_is_not_taken_for_the_faces_and_back(tiny_run, toy_data, tmp_path):
    from latentlab.errors import OutputError
    from latentlab.latents import encode_to_store

    model = load_model(tiny_run)
    folder = toy_data / "img_align_celeba"
    encode_to_store(model, folder, tmp_path / "a", limit=8, progress=False, workers=1, mirror=True)
    with pytest.raises(OutputError, match="mirroring"):
        encode_to_store(model, folder, tmp_path / "a", limit=8, progress=False, workers=1)
    encode_to_store(model, folder, tmp_path / "b", limit=8, progress=False, workers=1)
    with pytest.raises(OutputError, match="mirroring"):
        encode_to_store(model, folder, tmp_path / "b", limit=8, progress=False, workers=1, mirror=True)
