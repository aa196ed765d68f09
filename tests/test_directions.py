"""Attribute directions on synthetic latents with a known answer, the direction file, edits, the report."""

from __future__ import annotations

import json
import math
import pathlib
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console

from latentlab.directions.file import DirectionSet, load_directions, save_directions
from latentlab.directions.fit import AttributeSums, ProjectionStats
from latentlab.directions.maths import (
    apply_edits,
    best_threshold,
    check_alpha,
    condition_directions,
    cosine_matrix,
    logistic_directions,
    orthogonalize,
    scale_to_class_gap,
    sweep_alphas,
)
from latentlab.directions.probe import held_out_rows, probe_description, probe_score
from latentlab.directions.report import attribute_table, cosine_heatmap, report_rows, write_report
from latentlab.errors import AttributeNameError, CheckpointError, ConfigError, DataError, OutputError

NAMES = ["Smiling", "Blond_Hair", "Male"]


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.dot(a.double(), b.double()) / (a.double().norm() * b.double().norm()))


def project(z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Projections of z (N, D) on the unit direction of v (D,) -> (N,) float64."""
    return z.double() @ (v.double() / v.double().norm())


@pytest.fixture(scope="module")
def planted():
    """z = noise + y * v / 2 per attribute: the mean difference along each attribute is exactly v."""
    rng = np.random.default_rng(0)
    n, d = 2000, 256
    labels = rng.choice(np.array([-1, 1], dtype=np.int8), size=(n, 2))
    true = torch.from_numpy(rng.standard_normal((2, d)))
    true = true / true.norm(dim=1, keepdim=True) * 4.0
    z = torch.from_numpy(rng.standard_normal((n, d))) + torch.from_numpy(labels.astype(np.float64)) @ true / 2
    return z.float(), labels, true


def in_memory_mean_diff(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.stack([z[labels[:, a] == 1].mean(0) - z[labels[:, a] == -1].mean(0) for a in range(labels.shape[1])])


def test_streaming_sums_equal_in_memory_whatever_the_order_and_batching():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((301, 17)).astype(np.float32)
    labels = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(301, 3), p=[0.45, 0.1, 0.45])
    expected = in_memory_mean_diff(z.astype(np.float64), labels)
    for batch, seed in [(1, 0), (7, 1), (64, 2), (301, 3)]:
        order = np.random.default_rng(seed).permutation(301)
        sums = AttributeSums(NAMES, 17)
        for i in range(0, 301, batch):
            rows = order[i : i + batch]
            sums.update(torch.from_numpy(z[rows]), labels[rows])
        np.testing.assert_allclose(sums.mean_diff().numpy(), expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(sums.pos_counts, (labels == 1).sum(0))
        np.testing.assert_array_equal(sums.neg_counts, (labels == -1).sum(0))


def test_sums_reject_bad_labels_and_latents():
    sums = AttributeSums(NAMES, 4)
    with pytest.raises(DataError, match="-1 or \\+1"):
        sums.update(np.zeros((2, 4)), np.full((2, 3), 2, dtype=np.int8))
    with pytest.raises(DataError, match="shape"):
        sums.update(np.zeros((2, 4)), np.ones((3, 3), dtype=np.int8))
    with pytest.raises(DataError, match="NaN"):
        sums.update(np.full((2, 4), np.nan), np.ones((2, 3), dtype=np.int8))


def test_too_few_examples_are_skipped_with_a_reason():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((50, 6))
    labels = np.ones((50, 3), dtype=np.int8)
    labels[:25, 0] = -1
    labels[:3, 1] = -1  # only 3 negatives
    sums = AttributeSums(NAMES, 6)
    sums.update(z, labels)
    skipped = sums.skipped(min_count=10)
    assert list(skipped) == ["Blond_Hair", "Male"]
    assert "3 negatives" in skipped["Blond_Hair"] and "0 negatives" in skipped["Male"]
    assert torch.isnan(sums.mean_diff()[2]).all()  # no crash: an empty class gives a NaN row
    directions, accuracy, skipped = logistic_directions(z, labels, attrs=NAMES, seed=0, min_count=10)
    assert set(skipped) == {"Blond_Hair", "Male"}
    assert torch.isfinite(directions[0]).all() and torch.isnan(directions[1]).all() and math.isnan(accuracy[2])


def test_planted_direction_is_recovered_by_mean_difference_and_probe(planted):
    z, labels, true = planted
    sums = AttributeSums(["a", "b"], z.shape[1])
    for i in range(0, len(z), 500):
        sums.update(z[i : i + 500], labels[i : i + 500])
    v = sums.mean_diff()
    half = held_out_rows(len(z), 0.5, seed=0)
    for a in range(2):
        assert cos(v[a], true[a]) > 0.95
        acc = probe_score(project(z, v[a]), labels[:, a], half).accuracy
        assert acc > 0.9
        assert probe_score(project(z, -v[a]), labels[:, a], half).accuracy < 0.6  # polarity matters
    stats = ProjectionStats(v)
    for i in range(0, len(z), 300):
        stats.update(z[i : i + 300], labels[i : i + 300])
    proj = torch.stack([project(z, v[a]) for a in range(2)], dim=1)
    np.testing.assert_allclose(stats.std(), proj.std(dim=0, unbiased=False).numpy(), rtol=1e-5)
    held = held_out_rows(len(z), 0.2, seed=0)
    assert stats.probe_scores(held) == [probe_score(proj[:, a], labels[:, a], held) for a in range(2)]
    shuffled = np.random.default_rng(0).permutation(labels[:, 0])
    assert abs(probe_score(project(z, v[0]), shuffled, half).accuracy - 0.5) < 0.06


def test_planted_direction_is_recovered_by_logistic_regression(planted):
    z, labels, true = planted
    directions, accuracy, skipped = logistic_directions(z, labels, attrs=["a", "b"], seed=0, max_samples=2000)
    assert not skipped
    for a in range(2):
        assert cos(directions[a], true[a]) > 0.9
        assert accuracy[a] > 0.9
        # The documented scaling: the projections' class-mean gap along u equals |v|.
        u = directions[a] / directions[a].norm()
        proj = z.double() @ u
        gap = proj[torch.from_numpy(labels[:, a] == 1)].mean() - proj[torch.from_numpy(labels[:, a] == -1)].mean()
        assert float(gap) == pytest.approx(float(directions[a].norm()), rel=1e-9)
        assert float(directions[a].norm()) == pytest.approx(4.0, rel=0.15)


def test_best_threshold_matches_brute_force_with_ties():
    rng = np.random.default_rng(4)
    for _ in range(20):
        proj = rng.integers(0, 6, size=40).astype(np.float64)  # many ties
        positive = rng.random(40) < 0.5
        t = best_threshold(proj, positive)
        candidates = np.concatenate([[-np.inf], np.unique(proj)])
        best = max(np.mean((proj > c) == positive) for c in candidates)
        assert np.mean((proj > t) == positive) == pytest.approx(best)
        t = best_threshold(proj, positive, balanced=True)
        balanced = [((proj > c)[positive].mean() + (proj <= c)[~positive].mean()) / 2 for c in candidates]
        assert ((proj > t)[positive].mean() + (proj <= t)[~positive].mean()) / 2 == pytest.approx(max(balanced))


def test_the_balanced_threshold_keeps_a_rare_class_that_plain_accuracy_gives_up():
    rng = np.random.default_rng(7)
    positive = rng.random(4000) < 0.1
    proj = positive * 1.0 + rng.standard_normal(4000)  # overlapping classes, one rare
    plain, balanced = best_threshold(proj, positive), best_threshold(proj, positive, balanced=True)
    tpr = [(proj > t)[positive].mean() for t in (plain, balanced)]
    assert tpr[0] < 0.2 < 0.6 < tpr[1]  # plain accuracy calls nearly everything negative


def test_held_out_rows_are_a_seeded_share():
    mask = held_out_rows(1000, 0.2, seed=3)
    assert mask.dtype == bool and mask.sum() == 200
    assert np.array_equal(mask, held_out_rows(1000, 0.2, seed=3)) and not np.array_equal(mask, held_out_rows(1000, 0.2))
    assert held_out_rows(2, 0.01).sum() == 1 and held_out_rows(2, 0.99).sum() == 1  # never none, never all
    assert held_out_rows(10, 0.0).sum() == 0  # 0: nothing held out, no probe
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match="held-out fraction"):
            held_out_rows(10, bad)


def test_probe_score_is_balanced_and_names_the_majority_rate():
    rng = np.random.default_rng(6)
    n = 20000
    labels = np.where(rng.random(n) < 0.05, 1, -1).astype(np.int8)  # a rare attribute
    held = held_out_rows(n, 0.2, seed=0)
    useless = probe_score(rng.standard_normal(n), labels, held)
    y = labels[held] > 0
    assert useless.held_out == held.sum() and useless.majority_rate == pytest.approx(max(y.mean(), 1 - y.mean()))
    assert abs(useless.balanced_accuracy - 0.5) < 0.05
    planted = probe_score(3.0 * labels + rng.standard_normal(n), labels, held)
    assert planted.balanced_accuracy > 0.99 and planted.accuracy > 0.99
    # the wrong way round: no threshold beats answering one class (only the natural polarity counts)
    assert probe_score(-3.0 * labels + rng.standard_normal(n), labels, held).balanced_accuracy <= 0.5
    labels[held] = -1  # no held-out positive: no figures, a reason
    empty = probe_score(rng.standard_normal(n), labels, held)
    assert empty.balanced_accuracy is empty.majority_rate is empty.accuracy is None
    assert "held-out split has 0 positives" in empty.note
    assert "123 held-out faces" in probe_description(123) and "mean of TPR and TNR" in probe_description(None)


def test_probe_rejects_mismatched_rows():
    with pytest.raises(DataError):
        probe_score(np.array([1.0, 2.0]), np.array([1]), np.array([False, True]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_orthogonalized_direction_is_orthogonal_to_correlated_conditions(dtype):
    g = torch.Generator().manual_seed(5)
    d = 512
    male = torch.randn(d, generator=g, dtype=torch.float64)
    young = 0.9 * male + 0.1 * torch.randn(d, generator=g, dtype=torch.float64)  # correlated
    almost_male = male + 1e-9 * torch.randn(d, generator=g, dtype=torch.float64)  # nearly collinear
    others = torch.stack([male, young, almost_male, 2 * male]).to(dtype)  # and an exact duplicate
    v = (0.7 * male + torch.randn(d, generator=g, dtype=torch.float64)).to(dtype)
    w = orthogonalize(v, others)
    assert w.dtype == dtype
    for c in others:
        assert abs(cos(w, c)) < 1e-6
    assert float(w.norm()) > 0.5 * float(v.norm())
    assert torch.equal(orthogonalize(v, torch.empty(0, d, dtype=dtype)), v)


def test_orthogonalize_removes_only_the_projection_onto_the_span():
    g = torch.Generator().manual_seed(8)
    basis = torch.randn(300, 2, generator=g, dtype=torch.float64)
    basis[:, 1] += 0.8 * basis[:, 0]  # correlated, not orthogonal
    v = torch.randn(300, generator=g, dtype=torch.float64)
    expected = v - basis @ torch.linalg.lstsq(basis, v[:, None]).solution[:, 0]
    assert torch.allclose(orthogonalize(v, basis.T), expected, atol=1e-12)


def test_conditioning_keeps_the_conditions_and_drops_directions_inside_their_span():
    g = torch.Generator().manual_seed(10)
    male, young, smile = (torch.randn(64, generator=g, dtype=torch.float64) for _ in range(3))
    units = {"Smiling": smile + male, "Male": male, "Old": 2 * male - 3 * young, "Young": young}
    kept, skipped = condition_directions(units, ["Male", "Young"])
    assert list(kept) == ["Smiling", "Male", "Young"] and list(skipped) == ["Old"]
    assert "span of Male, Young" in skipped["Old"]
    assert torch.equal(kept["Male"], male) and torch.equal(kept["Young"], young)
    assert abs(cos(kept["Smiling"], male)) < 1e-12 and abs(cos(kept["Smiling"], young)) < 1e-12
    assert condition_directions(units, []) == (units, {})


def test_scaled_direction_spans_the_class_mean_gap():
    g = torch.Generator().manual_seed(11)
    mean_diff = torch.randn(16, generator=g, dtype=torch.float64)
    assert torch.allclose(scale_to_class_gap(3 * mean_diff, mean_diff), mean_diff, atol=1e-12)
    u = torch.randn(16, generator=g, dtype=torch.float64)
    v = scale_to_class_gap(u, mean_diff)
    assert cos(v, u) == pytest.approx(math.copysign(1, float(mean_diff @ u)))
    assert float(v @ u / u.norm()) == pytest.approx(float(mean_diff @ u / u.norm()))


def test_cosine_matrix():
    v = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, -2.0]])
    c = cosine_matrix(v)
    assert torch.allclose(c, c.T) and torch.allclose(torch.diag(c), torch.ones(3, dtype=torch.float64))
    assert float(c[0, 1]) == pytest.approx(1 / math.sqrt(2)) and float(c[0, 2]) == pytest.approx(0.0)


# --- the direction file ------------------------------------------------------------------------


def make_file(path, fingerprint="abc123" * 4):
    g = torch.Generator().manual_seed(6)
    vectors = {n: torch.randn(32, generator=g) for n in ["Smiling", "Blond_Hair", "Male"]}  # not sorted
    save_directions(
        path,
        vectors=vectors,
        pos_counts={"Smiling": 10, "Blond_Hair": 20, "Male": 30},
        neg_counts=[11, 21, 31],
        method="mean-diff",
        model_fingerprint=fingerprint,
        extra={"images": 72},
        latent_std=[1.5, 2.0, 0.5],
    )
    return vectors


def test_save_load_round_trip_is_exact(tmp_path):
    path = tmp_path / "dirs.safetensors"
    vectors = make_file(path)
    dirs = load_directions(path)
    assert dirs.names == ["Smiling", "Blond_Hair", "Male"]
    for name, v in vectors.items():
        assert torch.equal(dirs.vectors[name], v)
        assert dirs.norms[name] == pytest.approx(float(v.double().norm()))
    assert dirs.pos_counts == {"Smiling": 10, "Blond_Hair": 20, "Male": 30}
    assert dirs.neg_counts == {"Smiling": 11, "Blond_Hair": 21, "Male": 31}
    assert (dirs.method, dirs.dim, dirs.extra) == ("mean-diff", 32, {"images": 72})
    assert dirs.latent_std == {"Smiling": 1.5, "Blond_Hair": 2.0, "Male": 0.5}
    sigma = dirs.vector("Male", units="sigma")
    assert float(sigma.norm()) == pytest.approx(0.5) and cos(sigma, vectors["Male"]) == pytest.approx(1.0)
    assert [p.name for p in tmp_path.iterdir()] == ["dirs.safetensors"]  # no temp file left behind


def test_fingerprint_mismatch_is_refused(tmp_path):
    path = tmp_path / "dirs.safetensors"
    make_file(path, fingerprint="a" * 64)
    dirs = load_directions(path)
    dirs.check_model("a" * 64, "models/x")
    with pytest.raises(CheckpointError, match="another model") as err:
        dirs.check_model("b" * 64, "models/other")
    message = str(err.value)
    assert "aaaaaaaaaaaa≠bbbbbbbbbbbb" in message and "--model models/other" in message and str(path) in message


class _Plant:
    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(_Plant.marker),))


def test_pickle_files_are_refused_without_running_them(tmp_path):
    _Plant.marker = str(tmp_path / "pwned")
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps(_Plant(), protocol=4))
    with pytest.raises(CheckpointError, match="pickle"):
        load_directions(evil)
    zipped = tmp_path / "dirs.pt"
    torch.save({"Smiling": torch.zeros(3)}, zipped)
    with pytest.raises(CheckpointError, match="pickle"):
        load_directions(zipped)
    assert not (tmp_path / "pwned").exists()


def test_a_header_length_that_starts_like_a_pickle_still_loads(tmp_path):
    path = tmp_path / "dirs.safetensors"
    for pad in range(200):  # the first byte is the header length's low byte: make it 0x80
        save_directions(
            path,
            vectors={"A": torch.ones(4)},
            pos_counts=[1],
            neg_counts=[1],
            method="m",
            model_fingerprint="f",
            extra={"pad": "x" * pad},
        )
        if path.read_bytes()[:1] == b"\x80":
            break
    else:
        pytest.fail("no padding gave a 0x80 first byte")
    assert torch.equal(load_directions(path).vectors["A"], torch.ones(4))


def test_corrupt_missing_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "dirs.safetensors"
    make_file(path)
    data = path.read_bytes()
    for name, content in [("trunc", data[: len(data) // 2]), ("junk", b"\x07" * 100), ("empty", b"")]:
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(content)
        with pytest.raises(CheckpointError, match=name):
            load_directions(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_directions(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"Smiling": torch.zeros(3)}, tmp_path / "foreign.safetensors")
    with pytest.raises(CheckpointError, match="not a latentlab direction file"):
        load_directions(tmp_path / "foreign.safetensors")


def test_save_refuses_bad_vectors_and_names(tmp_path):
    kwargs = dict(pos_counts=[1], neg_counts=[1], method="m", model_fingerprint="f")
    with pytest.raises(ValueError, match="NaN"):
        save_directions(tmp_path / "d.safetensors", vectors={"A": torch.tensor([1.0, math.nan])}, **kwargs)
    with pytest.raises(OutputError, match=".safetensors"):
        save_directions(tmp_path / "d.pt", vectors={"A": torch.ones(2)}, **kwargs)
    assert not list(tmp_path.iterdir())


def test_unknown_attribute_suggests_the_close_name(tmp_path):
    path = tmp_path / "dirs.safetensors"
    make_file(path)
    dirs = load_directions(path)
    assert torch.equal(dirs.vector("Male"), dirs.vectors["Male"])
    for wrong in ["blond_hair", "Blond", "Smilling"]:
        with pytest.raises(AttributeNameError, match="did you mean (Blond_Hair|Smiling)") as err:
            dirs.vector(wrong)
        assert f"unknown attribute '{wrong}' in {path};" in str(err.value)
    with pytest.raises(AttributeNameError, match=r"did you mean Blond_Hair\? \(names are case-sensitive\)"):
        dirs.vector("blond_hair")
    with pytest.raises(AttributeNameError, match="valid names are Smiling, Blond_Hair, Male"):
        dirs.vector("Xyzzy")
    with pytest.raises(ConfigError, match="units"):
        dirs.vector("Male", units="furlongs")


def test_a_fitted_set_saves_and_loads_as_the_same_set(tmp_path):
    g = torch.Generator().manual_seed(9)
    fitted = DirectionSet(
        vectors={"Male": torch.randn(8, generator=g, dtype=torch.float64), "Young": torch.randn(8, generator=g)},
        method="mean-diff",
        pos_counts={"Male": 12, "Bald": 2, "Young": 30},  # Bald was skipped: counted, no vector
        neg_counts={"Male": 40, "Bald": 50, "Young": 22},
        latent_std={"Male": 1.25, "Young": 0.75},
        fingerprint="f" * 16,
        extra={"skipped": {"Bald": "too few"}, "probe_accuracy": {"Male": 0.9, "Young": 0.7}},
    )
    path = fitted.save(tmp_path / "d.safetensors")
    loaded = load_directions(path)
    assert loaded.names == fitted.names == ["Male", "Young"] and loaded.skipped == fitted.skipped == {"Bald": "too few"}
    assert loaded.pos_counts == {"Male": 12, "Young": 30} and loaded.neg_counts == {"Male": 40, "Young": 22}
    assert (loaded.method, loaded.fingerprint, loaded.latent_std, loaded.extra, loaded.path) == (
        fitted.method,
        fitted.fingerprint,
        fitted.latent_std,
        fitted.extra,
        path,
    )
    for name, v in fitted.vectors.items():
        assert loaded.vectors[name].dtype == torch.float32 and torch.equal(loaded.vectors[name], v.float())
    fitted_rows = report_rows(fitted)
    assert [r["attribute"] for r in fitted_rows] == ["Male", "Bald", "Young"] and fitted_rows[1]["norm"] is None
    # a file from before the held-out figures reports them as None and keeps its plain accuracy
    assert fitted_rows[0]["probe_accuracy"] == 0.9 and fitted_rows[0]["probe_balanced_accuracy"] is None
    assert fitted_rows[0]["probe_majority_rate"] is None and fitted_rows[0]["probe_held_out"] is None
    for fitted_row, loaded_row in zip([fitted_rows[0], fitted_rows[2]], report_rows(loaded), strict=True):
        assert fitted_row == {**loaded_row, "norm": pytest.approx(loaded_row["norm"], rel=1e-6)}


# --- edits -----------------------------------------------------------------------------------------


def test_composed_edits_equal_the_sum():
    g = torch.Generator().manual_seed(7)
    z = torch.randn(4, 16, generator=g)
    v1, v2 = torch.randn(16, generator=g), torch.randn(16, generator=g)
    out = apply_edits(z, [v1, v2], [0.5, -1.25])
    assert torch.allclose(out, z + 0.5 * v1 - 1.25 * v2)
    assert torch.allclose(
        apply_edits(z, [v1, v2], [0.5, -1.25]), apply_edits(apply_edits(z, [v1], [0.5]), [v2], [-1.25])
    )
    assert torch.equal(apply_edits(z, [], []), z)
    assert torch.allclose(apply_edits(z[0], [v1], [2.0]), z[0] + 2 * v1)
    with pytest.raises(ConfigError):
        apply_edits(z, [v1], [1.0, 2.0])
    with pytest.raises(CheckpointError, match="another model"):
        apply_edits(z, [torch.ones(8)], [1.0])
    with pytest.raises(ConfigError, match="finite"):
        apply_edits(z, [v1], [math.nan])


def test_sweep_alphas():
    alphas = sweep_alphas("-1,1,7")
    assert len(alphas) == 7 and alphas[0] == -1.0 and alphas[3] == 0.0 and alphas[-1] == 1.0
    assert sweep_alphas(" 0 , 0.3 , 4 ")[-1] == 0.3
    for bad, why in [
        ("1,2", "fields"),
        ("a,1,3", "not a number"),
        ("0,1,1", "between 2"),
        ("nan,1,3", "finite"),
        ("0,inf,3", "finite"),
        ("0,1,2.5", "whole number"),
    ]:
        with pytest.raises(ConfigError, match=why):
            sweep_alphas(bad)
    assert check_alpha("0.25") == 0.25
    with pytest.raises(ConfigError):
        check_alpha(float("inf"))


# --- the report ------------------------------------------------------------------------------------


def test_report_files_and_table(tmp_path):
    v = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    dirs = DirectionSet(
        vectors={"Blond_Hair": v[0], "Male": 1.4 * v[1]},
        method="logistic",
        pos_counts={"Smiling": 5, "Blond_Hair": 50, "Male": 40},
        neg_counts={"Smiling": 60, "Blond_Hair": 10, "Male": 20},
        extra={
            "probe_balanced_accuracy": {"Blond_Hair": 0.875, "Male": None},
            "probe_majority_rate": {"Blond_Hair": 0.8, "Male": None},
            "probe_accuracy": {"Blond_Hair": 0.9, "Male": None},
            "probe_held_out": {"Blond_Hair": 12, "Male": 11},
            "probe_notes": {"Male": "the held-out split has 0 positives and 11 negatives; a probe needs both"},
            "held_out_rows": 13,
            "classifier_accuracy": {"Blond_Hair": 0.95, "Male": None},
            "skipped": {"Smiling": "5 positives and 60 negatives; need at least 10 of each"},
        },
    )
    rows = report_rows(dirs)
    assert rows[2]["norm"] == pytest.approx(1.4 * math.sqrt(2)) and rows[1]["classifier_accuracy"] == 0.95
    paths = write_report(tmp_path / "x", rows, cosine=cosine_matrix(v), cosine_names=NAMES[1:], meta={"method": "m"})
    doc = json.loads(paths["json"].read_text())
    assert (
        doc["method"] == "m" and doc["attributes"][0]["norm"] is None and doc["attributes"][2]["probe_accuracy"] is None
    )
    assert doc["cosine"]["names"] == NAMES[1:] and doc["cosine"]["matrix"][0][1] == pytest.approx(2**-0.5)
    table = pd.read_csv(paths["csv"])
    assert list(table.columns) == [
        "attribute",
        "positives",
        "negatives",
        "norm",
        "probe_balanced_accuracy",
        "probe_majority_rate",
        "probe_accuracy",
        "probe_held_out",
        "skipped",
        "probe_note",
        "classifier_accuracy",
    ]
    assert table["probe_balanced_accuracy"].iloc[1] == 0.875 and table["probe_majority_rate"].iloc[1] == 0.8
    from PIL import Image

    assert Image.open(paths["heatmap"]).size[0] > 100
    console = Console(width=160, record=True)
    console.print(attribute_table(rows, held_out=13))
    text = console.export_text()
    assert "skipped: 5 positives" in text and "0.875" in text and "0.800" in text and "0.900" in text
    assert "probe: the held-out split has 0 positives" in text
    assert (
        probe_description(13) in " ".join(text.split())
        and "balanced" in text
        and "majority" in text
        and "plain" in text
    )


def test_heatmap_colours_follow_the_sign():
    img = cosine_heatmap(np.array([[1.0, -1.0], [-1.0, 1.0]]), ["A", "B"])
    assert img.dtype == np.uint8 and img.ndim == 3
    reds = (img[..., 0] > 150) & (img[..., 2] < 80)
    blues = (img[..., 2] > 150) & (img[..., 0] < 80)
    assert reds.sum() > 100 and blues.sum() > 100
