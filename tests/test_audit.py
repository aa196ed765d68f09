"""The audit: judges that share nothing with the model see a planted attribute's own direction flip it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from latentlab.audit import direction_effect, run_audit
from latentlab.audit.run import CONTROL
from latentlab.cli.app import app
from latentlab.directions.file import load_directions
from latentlab.directions.probe import held_out_rows

AUDITED = ["Eyeglasses", "Wearing_Hat", "Male"]


@pytest.fixture(scope="module")
def toy_vectors(tiny_run: Path, toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mean-difference direction file of the tiny model for a few toy attributes (20% of faces held out)."""
    from latentlab.directions.attribute_vectors import compute_attribute_vectors

    out = tmp_path_factory.mktemp("audit") / "toy.safetensors"
    mp = pytest.MonkeyPatch()
    mp.setenv("LATENTLAB_CACHE_DIR", str(tmp_path_factory.mktemp("audit-cache")))
    try:
        compute_attribute_vectors(
            labels_path=toy_data / "list_attr_celeba.csv",
            model_path=tiny_run,
            out=out,
            attrs=AUDITED,
            min_count=5,
            progress=False,
            workers=1,
        )
    finally:
        mp.undo()
    return out


@pytest.fixture(scope="module")
def toy_audit(toy_vectors: Path, tiny_run: Path, tmp_path_factory: pytest.TempPathFactory):
    mp = pytest.MonkeyPatch()
    mp.setenv("LATENTLAB_CACHE_DIR", str(tmp_path_factory.mktemp("audit-cache")))
    try:
        return run_audit(vectors=toy_vectors, model_path=tiny_run, faces=100, progress=False, workers=1)
    finally:
        mp.undo()


def test_a_planted_attribute_flips_under_its_own_direction_and_not_under_a_random_one(toy_audit):
    effects = {e.direction: e for e in toy_audit.effects}
    assert list(effects) == [*AUDITED, CONTROL]
    judges = toy_audit.judges
    for name in ("Eyeglasses", "Wearing_Hat"):
        assert judges.balanced_accuracy[name] >= 0.75, judges.balanced_accuracy  # the judge itself is good
        e = effects[name]
        chance = effects[CONTROL].flips[judges.names.index(name)]
        assert e.success is not None and e.success >= 0.6 and e.success > chance + 0.4, (name, e.success, chance)
        assert e.own_change > 0.2
        j = judges.names.index(name)
        assert e.effect[j] == max(e.effect), (
            name,
            dict(zip(judges.names, e.effect, strict=True)),
        )  # its own judge moves most
    assert effects[CONTROL].success is None and effects[CONTROL].worst in judges.names


def test_audit_faces_are_those_the_directions_held_out(toy_audit, toy_vectors):
    dirs = load_directions(toy_vectors)
    ids = pd.read_csv(dirs.extra["labels"], dtype={"image_id": str})["image_id"].tolist()
    held = held_out_rows(dirs.extra["images_used"], dirs.extra["held_out_fraction"], seed=dirs.extra["seed"])
    held_ids = {Path(i).name for i, h in zip(sorted(ids), held, strict=True) if h}
    faces = toy_audit.meta["face_ids"]
    assert len(faces) == toy_audit.meta["faces"] == dirs.extra["held_out_rows"]  # fewer held out than asked for
    assert {Path(f).name for f in faces} == held_ids and "held out of its fit" in toy_audit.meta["split"]
    assert toy_audit.judges.trained_on == dirs.extra["images_used"] - len(faces)


def test_outputs_hold_the_matrix_and_a_readable_heat_map(toy_audit, toy_vectors):
    paths = toy_audit.paths
    assert paths["json"] == toy_vectors.with_name("toy-audit.json")
    doc = json.loads(paths["json"].read_text())
    judged = doc["matrix"]["judged"]
    assert doc["matrix"]["directions"] == [*AUDITED, CONTROL]
    for key in ("effect", "mean_abs_change", "flip_rate"):
        assert np.array(doc["matrix"][key]).shape == (4, len(judged))
    assert set(doc["judges"]["balanced_accuracy"]) == set(judged)
    table = pd.read_csv(paths["csv"])
    assert table["direction"].tolist() == [*AUDITED, CONTROL]
    assert {"success", "drift", "worst_side_effect", *(f"effect:{n}" for n in judged)} <= set(table.columns)
    width, height = Image.open(paths["png"]).size
    assert width > 22 * len(judged) and height > 22 * 4


def test_direction_effect_counts_flips_both_ways_and_names_the_worst_side_effect():
    p0 = np.array([[0.2, 0.5, 0.1], [0.8, 0.5, 0.1], [0.3, 0.5, 0.1], [0.9, 0.5, 0.1]])
    plus = p0 + [[0.6, 0.0, 0.3]]  # faces 0 and 2 (judged without a) gain it; c rises too
    minus = p0 - [[0.6, 0.0, 0.05]]  # faces 1 and 3 (judged with a) lose it
    e = direction_effect("a", ["a", "b", "c"], p0, np.clip(plus, 0, 1), np.clip(minus, 0, 1), drift=3.0)
    assert e.success == e.success_plus == e.success_minus == 1.0 and (e.eligible_plus, e.eligible_minus) == (2, 2)
    assert e.worst == "c" and e.worst_moved == pytest.approx((0.3 + 0.05) / 2)
    assert e.effect[2] == pytest.approx((0.3 + 0.05) / 2) and e.effect[1] == 0
    assert e.flips.tolist() == [0.5, 0.0, 0.0]  # a: every face flips under one sign of two; c rises, never crosses
    unjudged = direction_effect("pc1", ["a", "b", "c"], p0, plus, minus, drift=1.0)
    assert unjudged.success is None and unjudged.own_change is None and unjudged.worst == "a"


def test_a_direction_without_a_judge_is_named_by_what_it_moves(toy_vectors, tiny_run, tmp_path):
    dirs = load_directions(toy_vectors)
    from dataclasses import replace

    renamed = {"pc1": dirs.vectors["Eyeglasses"], "pc2": dirs.vectors["Wearing_Hat"]}
    counts = dict.fromkeys(renamed, 0)
    pcs = replace(dirs, vectors=renamed, pos_counts=counts, neg_counts=counts, latent_std=None)
    path = pcs.save(tmp_path / "pcs.safetensors")
    result = run_audit(vectors=path, model_path=tiny_run, faces=30, progress=False, workers=1)
    effects = {e.direction: e for e in result.effects}
    assert effects["pc1"].success is None and effects["pc1"].worst == "Eyeglasses"
    assert effects["pc2"].worst == "Wearing_Hat"


runner = CliRunner()


def one_line_error(*args: object) -> str:
    result = runner.invoke(app, ["audit", *(str(a) for a in args)])
    assert result.exit_code == 1, result.output + result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


def test_bad_input_is_one_line(toy_vectors, tiny_run, toy_data, tmp_path):
    base = ["--vectors", toy_vectors, "--model", tiny_run, "--quiet", "--out", tmp_path / "a"]
    assert "Eyeglasses" in one_line_error(*base, "--attrs", "Eyeglass")
    assert "does not exist" in one_line_error(*base, "--labels", tmp_path / "missing.csv")
    assert "does not exist" in one_line_error(*base, "--images", tmp_path / "nowhere")
    assert "positive" in one_line_error(*base, "--alpha", "-1")
    dirs = load_directions(toy_vectors)
    from dataclasses import replace

    replace(dirs, fingerprint="0" * 16).save(tmp_path / "other.safetensors")
    other = ["--vectors", tmp_path / "other.safetensors", "--model", tiny_run, "--quiet", "--out", tmp_path / "b"]
    assert "another model" in one_line_error(*other)
    replace(dirs, extra={}, latent_std=None).save(tmp_path / "bare.safetensors")
    bare = ["--vectors", tmp_path / "bare.safetensors", "--model", tiny_run, "--quiet", "--out", tmp_path / "c"]
    assert "--labels" in one_line_error(*bare)
    assert "spread" in one_line_error(*bare, "--labels", toy_data / "list_attr_celeba.csv", "--units", "sigma")
    assert not list(tmp_path.glob("[abc].*"))  # nothing written


def test_the_cli_prints_each_direction_and_writes_the_files(toy_vectors, tiny_run, tmp_path):
    args = ["audit", "--vectors", toy_vectors, "--model", tiny_run, "--attrs", "Eyeglasses", "--faces", "10"]
    result = runner.invoke(app, [str(a) for a in [*args, "--units", "sigma", "--quiet", "--out", tmp_path / "x"]])
    assert result.exit_code == 0, result.output + result.stderr
    assert "Eyeglasses" in result.output and "worst side effect" in result.output and CONTROL in result.output
    assert all((tmp_path / f"x.{ext}").exists() for ext in ("json", "csv", "png"))
    assert json.loads((tmp_path / "x.json").read_text())["units"] == "sigma"


def test_the_held_out_faces_are_found_again_when_the_recorded_paths_lead_nowhere(
    toy_vectors, tiny_run, toy_data, tmp_path
):
    from dataclasses import replace

    dirs = load_directions(toy_vectors)
    moved = {**dirs.extra, "labels": "elsewhere/list_attr_celeba.csv", "images": "elsewhere/img_align_celeba"}
    path = replace(dirs, extra=moved).save(tmp_path / "moved.safetensors")
    given = {"labels": toy_data / "list_attr_celeba.csv", "images": toy_data / "img_align_celeba"}
    found = run_audit(vectors=path, model_path=tiny_run, attrs=["Male"], faces=5, progress=False, workers=1, **given)
    assert "held out of its fit" in found.meta["split"]
    renamed = {**moved, "labels": "elsewhere/other_labels.csv"}
    path = replace(dirs, extra=renamed).save(tmp_path / "renamed.safetensors")
    lost = run_audit(vectors=path, model_path=tiny_run, attrs=["Male"], faces=5, progress=False, workers=1, **given)
    assert "does not say which" in lost.meta["split"]
