"""The benchmark machinery on the tiny configuration: every field is there and positive (no timing asserts)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import latentlab.cli.bench  # noqa: F401  (registers `bench` on the app)
from latentlab.bench import CONFIGS, forward_flops, run_benchmark, run_isolated
from latentlab.cli.app import app
from latentlab.errors import ConfigError
from latentlab.train import devices

POSITIVE = [
    "parameters",
    "forward_gflop_per_image",
    "train_images_per_s",
    "encode_images_per_s",
    "decode_images_per_s",
    "train_peak_memory_mb",
    "encode_peak_memory_mb",
    "decode_peak_memory_mb",
    "peak_memory_mb",
    "train_achieved_gflop_per_s",
    "encode_achieved_gflop_per_s",
    "conv3x3_ceiling_gflop_per_s",
    "encode_ceiling_fraction",
    "decode_ceiling_fraction",
    "threads",
]


def check(result: dict, *, memory_saving: str = "none") -> None:
    for key in POSITIVE:
        assert result[key] > 0, key
    assert 0 <= result["reconstruction_max_abs_error"] < 1e-4
    assert result["config"] == "tiny" and result["batch_size"] == CONFIGS["tiny"].batch_size
    assert result["memory_saving"] == memory_saving
    assert result["torch"] and result["device"] == "cpu" and result["device_name"]
    assert result["cpu_instructions"].startswith("ATen ")
    assert len(result["train_runs"]) == result["repeats"]


def test_run_benchmark_in_process():
    result = run_benchmark("tiny", device="cpu", threads=1, repeats=2, warmup=1)
    check(result)
    json.dumps(result)  # machine-readable as is


@pytest.mark.parametrize("mode", ["checkpoint", "invertible"])
def test_memory_saving_modes_are_measured(mode):
    check(run_benchmark("tiny", device="cpu", threads=1, repeats=1, warmup=1, memory_saving=mode), memory_saving=mode)


@pytest.mark.parametrize("fast", [True, False])
def test_auto_precision_reports_what_it_chose(monkeypatch, fast, uncapped_isa):
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"} if fast else {"avx2"}))
    result = run_benchmark("tiny", device="cpu", threads=1, repeats=1, warmup=1, precision="auto", phases=("train",))
    assert result["precision"] == ("bf16" if fast else "fp32") and result["train_images_per_s"] > 0


def test_isolated_run_prints_json_from_its_own_process():
    check(run_isolated("tiny", device="cpu", threads=1, repeats=1, warmup=1, timeout=300))


def test_cli_json():
    result = CliRunner().invoke(
        app,
        ["bench", "--config", "tiny", "--device", "cpu", "--json", "--repeats", "1", "--warmup", "1", "--threads", "1"],
    )
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    check(row)


def test_cli_table_and_bad_options():
    runner = CliRunner()
    result = runner.invoke(
        app, ["bench", "--config", "tiny", "--device", "cpu", "--repeats", "1", "--warmup", "1", "--threads", "1"]
    )
    assert result.exit_code == 0 and "encode img/s" in result.output
    assert runner.invoke(app, ["bench", "--config", "C"]).exit_code == 2
    assert runner.invoke(app, ["bench", "--memory-saving", "lots"]).exit_code == 2


def test_bad_names_are_clear():
    with pytest.raises(ConfigError, match="unknown benchmark config"):
        run_benchmark("Z")
    with pytest.raises(ConfigError, match="unknown memory saving"):
        run_benchmark("tiny", memory_saving="swap")
    with pytest.raises(ConfigError, match="unknown precision"):
        run_benchmark("tiny", precision="fp8")


def test_flop_count_matches_the_issue():
    """Config A's forward pass is about 0.24 GFLOP per image and B's about 5.4."""
    assert forward_flops(CONFIGS["A"].model) / 1e9 == pytest.approx(0.24, rel=0.02)
    assert forward_flops(CONFIGS["B"].model) / 1e9 == pytest.approx(5.4, rel=0.02)


def test_the_ceiling_is_measured_on_the_architectures_own_3x3_convolutions():
    """Every 3x3 convolution of config A's model is among the ceiling's candidates, with width -> width added."""
    from latentlab.bench.ceiling import conv3x3_shapes
    from latentlab.flow.glow import Glow

    cfg = CONFIGS["A"].model
    shapes = conv3x3_shapes(cfg)
    pairs = {(cin, cout) for cin, cout, _ in shapes}
    model = Glow(cfg)
    in_model = {
        (m.in_channels, m.out_channels)
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
    }
    assert in_model and in_model <= pairs
    assert pairs - in_model == {(128, 128)}
    assert sorted({side for *_, side in shapes}) == [4, 8, 16]


def test_cpu_instructions_name_the_kernels_and_the_onednn_cap(monkeypatch):
    """A figure measured on a CPU held to AVX2 (the way an AVX2-only CPU is reproduced) says so."""
    from latentlab.bench.machine import cpu_instructions

    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert cpu_instructions() == f"ATen {torch.backends.cpu.get_cpu_capability()}, oneDNN AVX2"
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert cpu_instructions().endswith("oneDNN no cap")
