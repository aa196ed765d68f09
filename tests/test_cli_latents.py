"""`latentlab encode` and `latentlab attribute-vectors` driven end to end through the real CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from latentlab.cli.app import app
from latentlab.directions.file import load_directions

runner = CliRunner()


def invoke(*args: object):
    """Run the CLI with `args` (paths and numbers as text)."""
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, exit_code: int = 1) -> str:
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


def test_encode_writes_a_store_and_reuses_it(tiny_run, toy_data, tmp_path):
    args = ["encode", "--model", tiny_run, "--data", toy_data / "img_align_celeba", "--out", tmp_path / "lat"]
    args += ["--quiet", "--device", "cpu", "--batch-size", "16"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output + result.stderr
    assert "encoded 96 images" in result.output
    latents = np.load(tmp_path / "lat" / "latents.npy")
    assert latents.shape == (96, 768) and latents.dtype == np.float16
    assert len(json.loads((tmp_path / "lat" / "ids.json").read_text())) == 96
    result = invoke(*args)
    assert result.exit_code == 0 and "already encoded" in result.output
    result = invoke(*args, "--dtype", "float32")
    assert "--force" in one_line_error(result)
    result = invoke(*args, "--dtype", "float32", "--force")
    assert result.exit_code == 0 and np.load(tmp_path / "lat" / "latents.npy").dtype == np.float32


def test_interrupted_encode_says_how_to_continue_and_continues(tiny_run, toy_data, tmp_path, monkeypatch):
    from latentlab.flow.glow import Glow

    real_encode, calls = Glow.encode, {"n": 0}

    def interrupted(self, x):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_encode(self, x)

    monkeypatch.setattr(Glow, "encode", interrupted)
    args = ["encode", "--model", tiny_run, "--data", toy_data / "img_align_celeba", "--out", tmp_path / "lat"]
    args += ["--quiet", "--batch-size", "16"]
    stderr = one_line_error(invoke(*args), 130)
    assert "32 of 96 latents are saved" in stderr and "rerun the same command" in stderr
    monkeypatch.setattr(Glow, "encode", real_encode)
    result = invoke(*args)
    assert result.exit_code == 0 and "encoded 64 images (continued after 32)" in result.output


def test_encode_with_labels_defaults_to_the_images_next_to_them(tiny_run, toy_data, tmp_path):
    labels = toy_data / "list_attr_celeba.csv"
    result = invoke(
        "encode", "--model", tiny_run, "--labels", labels, "--out", tmp_path / "lat", "--limit", "40", "--quiet"
    )
    assert result.exit_code == 0, result.output + result.stderr
    assert "96 labeled images" in result.output and "first 40" in result.output
    assert np.load(tmp_path / "lat" / "labels.npy").shape == (40, 11)


def test_encode_needs_data_or_labels():
    result = runner.invoke(app, ["encode"])
    assert "--data" in one_line_error(result, 2)


def test_attribute_vectors_end_to_end(tiny_run, toy_data, tmp_path):
    out = tmp_path / "attrs" / "tiny.safetensors"
    labels = toy_data / "list_attr_celeba.csv"
    result = invoke(
        "attribute-vectors", "--labels", labels, "--model", tiny_run, "--out", out, "--min-count", "5", "--quiet"
    )
    assert result.exit_code == 0, result.output + result.stderr
    for name in ("Smiling", "Eyeglasses", "balanced", "majority", "held-out faces"):
        assert name in result.output
    assert "96 labeled images" in result.output and str(out) in result.output
    for name in ("tiny.safetensors", "tiny-report.json", "tiny-report.csv", "tiny-report-cosine.png"):
        assert (out.parent / name).stat().st_size > 0
    assert len(load_directions(out).names) == 11


def test_attribute_vectors_logistic_and_conditional(tiny_run, toy_data, tmp_path):
    out = tmp_path / "cond.safetensors"
    args = ["attribute-vectors", "--labels", toy_data / "list_attr_celeba.csv", "--model", tiny_run, "--out", out]
    args += ["--attrs", "Smiling,Bangs", "--orthogonal-to", "Male", "--method", "logistic", "--min-count", "5"]
    result = invoke(*args, "--quiet")
    assert result.exit_code == 0, result.output + result.stderr
    dirs = load_directions(out)
    assert dirs.names == ["Smiling", "Bangs", "Male"] and dirs.method == "logistic"
    male = dirs.vectors["Male"].double()
    for name in ("Smiling", "Bangs"):
        v = dirs.vectors[name].double()
        assert abs(float(v @ male / v.norm() / male.norm())) < 1e-5


def test_skipped_attributes_are_reported_not_fatal(tiny_run, toy_data, tmp_path):
    args = ["attribute-vectors", "--labels", toy_data / "list_attr_celeba.csv", "--model", tiny_run]
    result = invoke(*args, "--out", tmp_path / "d.safetensors", "--limit", "30", "--quiet")
    assert result.exit_code == 0, result.output + result.stderr
    assert "skipped" in result.output and "skipped" in result.stderr


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda toy, tmp: ["--labels", tmp / "missing.csv"], "does not exist"),
        (lambda toy, tmp: ["--labels", tmp / "nomatch.csv", "--images", toy / "img_align_celeba"], "none of the 96"),
        (lambda toy, tmp: ["--labels", toy / "list_attr_celeba.csv", "--attrs", "Blond"], "did you mean Blond_Hair"),
        (lambda toy, tmp: ["--labels", toy / "list_attr_celeba.csv", "--out", tmp / "x.pt"], "end in .safetensors"),
    ],
)
def test_bad_inputs_are_one_line_errors(tiny_run, toy_data, tmp_path, make_args, message):
    (tmp_path / "nomatch.csv").write_text("image_id,Smiling\nnope1.jpg,1\nnope2.jpg,-1\n")
    args = ["attribute-vectors", "--model", tiny_run, "--quiet", *make_args(toy_data, tmp_path)]
    assert message in one_line_error(invoke(*args))


def test_help_has_examples():
    for command in ("encode", "attribute-vectors"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "Examples" in result.output
