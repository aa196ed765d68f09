"""Nothing lost: a killed training run resumes from its last checkpoint; outputs are reproducible;
random bytes as an image and random text as labels only ever give the clear error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latentlab import load_model
from latentlab.checkpoint import read_model_metadata
from latentlab.data.images import load_image
from latentlab.data.labels import load_labels
from latentlab.errors import DataError

TINY_FLAGS = [
    "--set",
    "image_size=16",
    "--set",
    "levels=2",
    "--set",
    "steps=2",
    "--set",
    "width=16",
    "--set",
    "workers=1",
    "--set",
    "log_every=1",
    "--set",
    "val_every=1000",
    "--set",
    "sample_every=1000",
    "--batch-size",
    "8",
    "--device",
    "cpu",
    "--quiet",
]


@pytest.mark.slow
def test_sigkill_during_training_then_resume_continues_from_last_checkpoint(toy_data, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "latentlab",
        "train",
        "--data",
        str(toy_data / "img_align_celeba"),
        "--out",
        str(out),
        "--max-steps",
        "400",
        "--set",
        "checkpoint_every=3",
        *TINY_FLAGS,
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline:
        if (out / "model.safetensors").exists() and read_model_metadata(out)["step"] >= 6:
            break
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    proc.kill()  # SIGKILL on POSIX: no clean-up runs
    proc.wait()
    saved = read_model_metadata(out)["step"]
    assert saved >= 6 and saved % 3 == 0
    # a kill can land mid-write and leave a temporary file (nothing can clean up after SIGKILL); the
    # resumed run, once it holds the folder's lock, removes it
    resume = [*cmd[: cmd.index("--max-steps")], "--max-steps", str(saved + 6), "--resume", *TINY_FLAGS]
    done = subprocess.run(resume, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    left = [p for folder in (out, out / "samples") for p in folder.iterdir() if p.name.startswith(".")]
    assert not left, f"temporary files left behind: {left}"
    assert read_model_metadata(out)["step"] == saved + 6
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines() if "train_bpd" in x]
    assert steps == list(range(1, saved + 7)), "metrics should hold each step exactly once"
    load_model(out)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".jpg", ".png", ".webp", ".bmp"]))
def test_random_bytes_as_an_image_only_give_the_clear_error(tmp_path, data, suffix):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(data)
    try:
        load_image(path, 16)
    except DataError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=400))
def test_random_text_as_labels_only_gives_the_clear_error(tmp_path, text):
    path = tmp_path / "labels.csv"
    path.write_bytes(text.encode("utf-8", "replace"))
    try:
        table = load_labels(path)
    except DataError as exc:
        assert "\n" not in str(exc)
    else:
        assert set(table.to_numpy().ravel().tolist()) <= {-1, 1}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.lists(st.sampled_from(["1", "-1", "0", "", "x", "2", "nan", " 1"]), min_size=2, max_size=2),
        min_size=1,
        max_size=6,
    )
)
def test_near_miss_label_tables_only_give_the_clear_error(tmp_path, rows):
    lines = ["image_id,Smiling,Male"] + [f"{i:06d}.jpg," + ",".join(r) for i, r in enumerate(rows)]
    path = tmp_path / "labels.csv"
    path.write_text("\n".join(lines) + "\n")
    try:
        table = load_labels(path)
    except DataError as exc:
        assert "\n" not in str(exc)
    else:
        assert set(table.to_numpy().ravel().tolist()) <= {-1, 1}


def test_same_seed_gives_byte_identical_outputs(tiny_run, toy_data, tmp_path):
    from typer.testing import CliRunner

    from latentlab.cli.app import app

    runner = CliRunner()
    face = str(sorted((toy_data / "img_align_celeba").iterdir())[0])
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / name
        out.mkdir()
        args = ["sample", "--model", str(tiny_run), "--n", "4", "--seed", "3", "--out", str(out / "s.png")]
        assert runner.invoke(app, args).exit_code == 0
        faces = [face, face.replace("000001", "000002")]
        args = ["interpolate", *faces, "--model", str(tiny_run), "--frames", "4", "--quiet"]
        args += ["--out", str(out / "loop.gif")]
        assert runner.invoke(app, args).exit_code == 0
        outputs.append([(out / f).read_bytes() for f in ("s.png", "loop.gif")])
    assert outputs[0] == outputs[1]
