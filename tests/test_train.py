"""Training: it learns, resumes exactly, refuses to overwrite, skips non-finite steps, runs under DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latentlab import load_model
from latentlab.config import TrainConfig
from latentlab.errors import ConfigError, OutputError, TrainingError
from latentlab.flow.glow import Glow
from latentlab.train import devices
from latentlab.train.devices import resolve_precision
from latentlab.train.recipe import train
from latentlab.train.runs import check_resume_config, load_train_state
from latentlab.train.schedule import lr_at

from .conftest import TINY_MODEL, tiny_train_cfg


def tiny_cfg(toy_data: Path, **changes) -> TrainConfig:
    return tiny_train_cfg(toy_data / "img_align_celeba", **changes)


def params(run: Path) -> dict[str, torch.Tensor]:
    return load_model(run).state_dict()


def test_a_short_run_lowers_bits_per_dim(toy_data, tmp_path):
    result = train(
        tiny_cfg(toy_data, max_steps=40, lr=3e-3, warmup_steps=5, val_every=40), out=tmp_path / "r", progress=False
    )
    losses = [r["train_bpd"] for r in result.history if "train_bpd" in r]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3
    lines = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert any("val_bpd" in line for line in lines)
    assert (tmp_path / "r" / "samples" / "step_000040.png").exists()
    meta_model = load_model(tmp_path / "r")
    assert meta_model.is_initialized


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(toy_data, tmp_path):
    train(tiny_cfg(toy_data, max_steps=6), out=tmp_path / "straight", progress=False)
    train(tiny_cfg(toy_data, max_steps=3), out=tmp_path / "resumed", progress=False)
    result = train(tiny_cfg(toy_data, max_steps=6), out=tmp_path / "resumed", resume=True, progress=False)
    assert result.step == 6
    a, b = params(tmp_path / "straight"), params(tmp_path / "resumed")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # metrics of the resumed run cover each step once
    steps = [
        json.loads(x)["step"]
        for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
        if "train_bpd" in x
    ]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_same_seed_gives_bit_identical_checkpoints(toy_data, tmp_path):
    train(tiny_cfg(toy_data, max_steps=3), out=tmp_path / "a", progress=False)
    train(tiny_cfg(toy_data, max_steps=3), out=tmp_path / "b", progress=False)
    a, b = params(tmp_path / "a"), params(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_existing_run_is_not_overwritten_without_force(toy_data, tmp_path):
    train(tiny_cfg(toy_data, max_steps=2), out=tmp_path / "r", progress=False)
    before = (tmp_path / "r" / "model.safetensors").read_bytes()
    with pytest.raises(OutputError, match="already holds a trained run"):
        train(tiny_cfg(toy_data, max_steps=2), out=tmp_path / "r", progress=False)
    assert (tmp_path / "r" / "model.safetensors").read_bytes() == before
    train(tiny_cfg(toy_data, max_steps=2, seed=5), out=tmp_path / "r", force=True, progress=False)
    assert (tmp_path / "r" / "model.safetensors").read_bytes() != before


def test_non_finite_steps_are_skipped_then_stop_with_last_good_checkpoint(toy_data, tmp_path, monkeypatch):
    real = Glow.forward
    calls = {"n": 0}

    def flaky(self, x):
        calls["n"] += 1
        out = real(self, x)
        return out * float("nan") if calls["n"] in (2,) or calls["n"] > 3 else out

    monkeypatch.setattr(Glow, "forward", flaky)
    with pytest.raises(TrainingError, match="non-finite steps in a row"):
        train(tiny_cfg(toy_data, max_steps=50, checkpoint_every=3, max_bad_steps=4), out=tmp_path / "r", progress=False)
    model = load_model(tmp_path / "r")  # the last good checkpoint (step 3) loads: finite weights
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_lr_warmup_and_cosine():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, schedule="cosine", max_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, cfg, total_steps=110) == pytest.approx(1e-4)
    assert lr_at(9, cfg, total_steps=110) == pytest.approx(1e-3)
    assert lr_at(60, cfg, total_steps=110) == pytest.approx(0.55e-3)
    assert lr_at(110, cfg, total_steps=110) == pytest.approx(1e-4)
    assert lr_at(500, TrainConfig(lr=1e-3, warmup_steps=10)) == 1e-3
    by_time = TrainConfig(lr=1e-3, warmup_steps=10, schedule="cosine", time_limit=15.0, min_lr_ratio=0.0)
    assert lr_at(500, by_time, time_fraction=0.5) == pytest.approx(0.5e-3)
    assert lr_at(500, by_time, time_fraction=1.5) == pytest.approx(0.0)


def test_memory_saving_checkpoint_gives_the_same_gradients(toy_data):
    torch.manual_seed(0)
    model = Glow(TrainConfig.from_dict({"model": TINY_MODEL}).model).double()
    x = torch.rand(4, 3, 16, 16, dtype=torch.float64) - 0.5
    model.initialize(x)
    grads = {}
    for mode in ("none", "checkpoint"):
        model.zero_grad()
        model.memory_saving = mode
        model(x).sum().backward()
        grads[mode] = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    pairs = zip(grads["none"], grads["checkpoint"], strict=True)
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in pairs)


@pytest.mark.slow
def test_two_process_gloo_run_trains_and_writes_one_checkpoint(toy_data, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", LATENTLAB_CACHE_DIR=str(tmp_path / "cache"))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29517",
        "-m",
        "latentlab",
        "train",
        "--data",
        str(toy_data / "img_align_celeba"),
        "--out",
        str(tmp_path / "ddp"),
        "--batch-size",
        "8",
        "--max-steps",
        "4",
        "--device",
        "cpu",
        "--quiet",
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
        "checkpoint_every=2",
        "--set",
        "log_every=1",
        "--set",
        "crop_jitter=0.5",  # rank 0 builds each shifted cache, the other rank waits and opens it
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(p.name for p in (tmp_path / "ddp").iterdir())
    assert "model.safetensors" in files and "train_state.safetensors" in files
    assert not any(name.startswith(".") and name.endswith(".safetensors") for name in files)
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines if "train_bpd" in x] == list(range(1, 5))
    assert load_model(tmp_path / "ddp").is_initialized
    assert len(list((tmp_path / "cache").iterdir())) == 9  # one cache per crop shift, none built twice


def test_bf16_autocast_run_learns_and_saves_float32(toy_data, tmp_path):
    """--precision bf16 (autocast; on a CPU too): the loss falls, the checkpoint stays float32 and inverts exactly."""
    cfg = tiny_cfg(toy_data, max_steps=30, lr=3e-3, warmup_steps=5, val_every=30, precision="bf16")
    result = train(cfg, out=tmp_path / "bf16", progress=False)
    losses = [r["train_bpd"] for r in result.history if "train_bpd" in r]
    assert len(losses) == 30 and all(map(torch.isfinite, torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.2
    model = load_model(tmp_path / "bf16")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    x = torch.rand(4, 3, 16, 16) - 0.5
    with torch.no_grad():
        assert (model.decode(model.encode(x)) - x).abs().max() < 1e-5


@pytest.mark.parametrize("fast", [True, False])
def test_auto_precision_is_bf16_exactly_where_the_cpu_has_it(toy_data, tmp_path, monkeypatch, fast, uncapped_isa):
    """--precision auto trains in bf16 on a CPU with native bf16 and in float32 on one without."""
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"} if fast else {"avx2"}))
    autocast_seen: list[bool] = []
    forward = Glow.forward

    def spy(self, x):
        autocast_seen.append(torch.is_autocast_enabled("cpu"))
        return forward(self, x)

    monkeypatch.setattr(Glow, "forward", spy)
    result = train(tiny_cfg(toy_data, max_steps=2, val_every=100, precision="auto"), out=tmp_path / "a", progress=False)
    assert result.precision == ("bf16" if fast else "fp32")
    assert autocast_seen == [fast, fast]
    assert TrainConfig.from_dict(load_train_state(tmp_path / "a")[1]["config"]).precision == "auto"  # per machine


@pytest.mark.parametrize(
    ("environ", "capped"),
    [
        ({}, False),
        ({"ATEN_CPU_CAPABILITY": "avx2"}, True),
        ({"ATEN_CPU_CAPABILITY": "AVX512"}, False),
        ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, True),
        ({"ONEDNN_MAX_CPU_ISA": "avx512_core"}, True),
        ({"DNNL_MAX_CPU_ISA": "AVX512_CORE_VNNI"}, True),
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, False),
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, False),
        ({"ONEDNN_MAX_CPU_ISA": "ALL"}, False),
    ],
)
def test_auto_precision_stays_float32_where_the_isa_is_capped_below_bf16(monkeypatch, uncapped_isa, environ, capped):
    """ATEN_CPU_CAPABILITY=avx2 or ONEDNN_MAX_CPU_ISA=AVX2 (an AVX2-only CPU reproduced) makes bf16 emulated: fp32."""
    assert devices.isa_capped_below_bf16(environ) is capped
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert resolve_precision("auto", torch.device("cpu")) == ("fp32" if capped else "bf16")


def test_cpu_flags_come_from_cpuinfo_and_default_to_none(tmp_path, monkeypatch):
    """Linux's /proc/cpuinfo (x86 "flags", Arm "Features"); no such file (Windows, macOS) means no native bf16."""
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    assert devices.cpu_flags.__wrapped__(str(x86)) == {"fpu", "avx2", "avx512f", "avx512_bf16"}
    assert devices.cpu_flags.__wrapped__(str(arm)) == {"fp", "asimd", "bf16"}
    assert devices.cpu_flags.__wrapped__(str(tmp_path / "missing")) == frozenset()
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset())
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"


@pytest.mark.parametrize(("capability", "chosen"), [((7, 0), "fp32"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_auto_precision_on_cuda_is_bf16_from_ampere_on(monkeypatch, capability, chosen):
    """A V100 or 1080 Ti only emulates bf16 (torch.cuda.is_bf16_supported says yes): auto keeps float32 there."""
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert resolve_precision("auto", torch.device("cuda", 0)) == chosen


@pytest.mark.skipif(sys.platform != "linux", reason="torch.compile's CPU backend is exercised on Linux only")
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")  # torch's own, while compiling
def test_compiled_run_matches_the_eager_run(toy_data, tmp_path):
    """--compile (inductor) trains the same model as eager mode, to float32 round-off, over a few steps."""
    eager = train(tiny_cfg(toy_data, max_steps=3, val_every=100), out=tmp_path / "eager", progress=False)
    compiled = train(tiny_cfg(toy_data, max_steps=3, val_every=100, compile=True), out=tmp_path / "c", progress=False)
    loss = [[r["train_bpd"] for r in run.history if "train_bpd" in r] for run in (eager, compiled)]
    assert loss[0] == pytest.approx(loss[1], abs=1e-4)
    a, b = params(tmp_path / "eager"), params(tmp_path / "c")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)


def test_weight_average_is_saved_and_the_optimiser_path_is_unchanged(toy_data, tmp_path):
    """With ema_decay the model file holds the average; the optimiser's own weights (kept in the training
    state) are exactly those of the same run without averaging."""
    from latentlab.train.runs import load_train_state, raw_weights

    train(tiny_cfg(toy_data, max_steps=6), out=tmp_path / "plain", progress=False)
    train(tiny_cfg(toy_data, max_steps=6, ema_decay=0.9), out=tmp_path / "avg", progress=False)
    plain, averaged = params(tmp_path / "plain"), params(tmp_path / "avg")
    raw = raw_weights(load_train_state(tmp_path / "avg")[0])
    assert raw and all(torch.equal(raw[name], plain[name]) for name in raw)
    assert any(not torch.equal(averaged[name], plain[name]) for name in raw)
    assert load_model(tmp_path / "avg").is_initialized


def test_resume_with_weight_average_gives_the_same_parameters(toy_data, tmp_path):
    train(tiny_cfg(toy_data, max_steps=6, ema_decay=0.9), out=tmp_path / "straight", progress=False)
    train(tiny_cfg(toy_data, max_steps=3, ema_decay=0.9), out=tmp_path / "resumed", progress=False)
    train(tiny_cfg(toy_data, max_steps=6, ema_decay=0.9), out=tmp_path / "resumed", resume=True, progress=False)
    a, b = params(tmp_path / "straight"), params(tmp_path / "resumed")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_with_weight_average_of_a_run_that_had_none_is_refused(toy_data, tmp_path):
    """Its training state holds no optimiser weights apart from the model's: a clear error, not a guess."""
    train(tiny_cfg(toy_data, max_steps=3), out=tmp_path / "plain", progress=False)
    before = params(tmp_path / "plain")
    with pytest.raises(TrainingError, match="no optimiser weights for weight averaging"):
        train(tiny_cfg(toy_data, max_steps=6, ema_decay=0.9), out=tmp_path / "plain", resume=True, progress=False)
    after = params(tmp_path / "plain")
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_resume_after_a_cut_between_writing_the_state_and_the_weights(toy_data, tmp_path):
    """Killed after the step-9 training state was written but before the step-9 weights: --resume picks the
    step-6 state that matches the weights on disk and ends exactly where an uninterrupted run does."""
    from latentlab.checkpoint import load_tensors, save_tensors
    from latentlab.train.runs import PREVIOUS_STATE_FILE, STATE_FILE

    train(tiny_cfg(toy_data, max_steps=9), out=tmp_path / "straight", progress=False)
    run = tmp_path / "cut"
    train(tiny_cfg(toy_data, max_steps=6), out=run, progress=False)
    tensors, meta = load_tensors(run / STATE_FILE, what="training state")
    (run / STATE_FILE).replace(run / PREVIOUS_STATE_FILE)  # what saving the step-9 state does first
    save_tensors(run / STATE_FILE, tensors, {**meta, "step": 9})  # the new state; its weights never came
    train(tiny_cfg(toy_data, max_steps=9), out=run, resume=True, progress=False)
    a, b = params(tmp_path / "straight"), params(run)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_accepts_a_run_saved_before_prior_width_existed():
    """A run whose saved model config has no prior_width key is the prior_width = 0 architecture."""
    current = TrainConfig().to_dict()
    older = json.loads(json.dumps(current))
    older["model"].pop("prior_width", None)
    check_resume_config(older, current)
    wider = TrainConfig().replace(model={"prior_width": 64}).to_dict()
    with pytest.raises(ConfigError, match="different model architecture"):
        check_resume_config(older, wider)


def test_resume_with_a_dequantizer_gives_the_same_parameters(toy_data, tmp_path):
    """The learned dequantiser trains with the flow, under bf16 autocast too, and resumes exactly."""
    model = dict(TINY_MODEL, dequantizer_steps=1, dequantizer_width=8)
    cfg = dict(model=model, val_every=3)
    train(tiny_cfg(toy_data, max_steps=6, **cfg), out=tmp_path / "straight", progress=False)
    train(tiny_cfg(toy_data, max_steps=3, **cfg), out=tmp_path / "resumed", progress=False)
    train(tiny_cfg(toy_data, max_steps=6, **cfg), out=tmp_path / "resumed", resume=True, progress=False)
    a, b = params(tmp_path / "straight"), params(tmp_path / "resumed")
    assert any(key.startswith("dequantizer.") for key in a)
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not torch.equal(
        a["dequantizer.couplings.0.4.weight"], torch.zeros_like(a["dequantizer.couplings.0.4.weight"])
    )
    result = train(tiny_cfg(toy_data, max_steps=3, precision="bf16", **cfg), out=tmp_path / "bf16", progress=False)
    assert all(torch.isfinite(torch.tensor(r["train_bpd"])) for r in result.history if "train_bpd" in r)


def test_resume_removes_what_a_killed_writer_left_and_nothing_else(toy_data, tmp_path):
    """Temporary files of interrupted atomic writes go when a trainer next holds the folder; other files stay."""
    out = tmp_path / "run"
    train(tiny_cfg(toy_data, max_steps=2, val_every=100, sample_every=2), out=out, progress=False)
    stale = [
        out / ".model.safetensors.ux6pk5oo.safetensors",
        out / ".train_state.safetensors.a1b2c3d4.safetensors",
        out / "samples" / ".step_000002.png.zz_9yy8x.png",
    ]
    kept = [out / ".notes", out / ".model.safetensors.bak", out / "samples" / "mine.png", out / "model.safetensors"]
    for path in stale + kept[:3]:
        path.write_bytes(b"half")
    train(tiny_cfg(toy_data, max_steps=3, val_every=100, sample_every=2), out=out, resume=True, progress=False)
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in kept)
