"""Model benchmarks: parameters, training / encode / decode throughput, reconstruction error, peak memory.

`run_benchmark("A")` measures one configuration in the current process; `python -m latentlab.bench A`
does the same and prints one JSON object, which is how `latentlab bench` (through `run_isolated`)
runs every configuration, inference and training apart, in processes of their own, so that no peak
memory hides another.

Every throughput is the median over `repeats` timed runs taken after `warmup` untimed iterations,
in images per second. Training is one optimiser step: forward, loss (bits/dim), backward, Adam.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from latentlab import __version__
from latentlab._malloc import tune_malloc
from latentlab.config import MEMORY_SAVING, PRECISIONS, GlowConfig
from latentlab.errors import ConfigError, LatentlabError
from latentlab.train.devices import resolve_device, resolve_precision


@dataclass(frozen=True)
class BenchConfig:
    """A model and the batch size it is measured at."""

    model: GlowConfig
    batch_size: int
    min_run_seconds: float = 1.0  # each timed run repeats the operation until it lasts this long


CONFIGS: dict[str, BenchConfig] = {
    "A": BenchConfig(GlowConfig(image_size=32, levels=3, steps=8, width=128), batch_size=16),
    "B": BenchConfig(GlowConfig(image_size=64, levels=4, steps=16, width=256), batch_size=8),
    # for tests and smoke runs: seconds, not minutes
    "tiny": BenchConfig(GlowConfig(image_size=8, levels=2, steps=2, width=16), batch_size=4, min_run_seconds=0.0),
}


# Adam implementations: latentlab's (torch's fused kernel without torch.optim, which imports torch._dynamo:
# ~70 MB), and torch.optim.Adam with one fused kernel, one op per step over lists, or a loop over parameters
ADAM_IMPLEMENTATIONS: dict[str, dict[str, bool] | None] = {
    "latentlab": None,
    "torch-fused": {"fused": True},
    "torch-foreach": {"foreach": True},
    "torch-loop": {"foreach": False},
}


MALLOC_SETTINGS = ("auto", "tuned", "default")  # auto: as the CLI runs (malloc_tuning.py)


def make_adam(kind: str, params: list[torch.nn.Parameter], *, lr: float, device: torch.device) -> Any:
    """The Adam optimiser named `kind` (a key of ADAM_IMPLEMENTATIONS)."""
    kernels = ADAM_IMPLEMENTATIONS[kind]
    if kernels is None:
        from latentlab.train.adam import Adam

        return Adam(params, lr=lr)
    if device.type not in ("cpu", "cuda"):
        kernels = {}  # no fused or foreach kernels elsewhere
    return torch.optim.Adam(params, lr=lr, **kernels)


def forward_flops(cfg: GlowConfig) -> float:
    """Multiply-adds ×2 of one image's forward pass through the convolutions (elementwise work left out)."""
    macs, channels, size = 0, 3, cfg.image_size
    for level in range(cfg.levels):
        channels, size = channels * 4, size // 2
        half = channels // 2
        out = 2 * (channels - half) if cfg.coupling == "affine" else channels - half
        per_pixel = half * cfg.width * 9 + cfg.width * cfg.width + cfg.width * out * 9
        if cfg.permutation != "reverse":
            per_pixel += channels * channels
        macs += cfg.steps * per_pixel * size * size
        if level < cfg.levels - 1:
            macs += half * 2 * (channels - half) * 9 * size * size
            channels = channels - half
    return 2.0 * macs


class _PeakMemory:
    """Peak memory of one phase: CUDA's allocator peak, else the process's resident-set high-water mark.

    On Linux the high-water mark (VmHWM) is reset at the start of each phase through /proc/self/clear_refs,
    so a phase's peak is its own; elsewhere it is the process peak so far (ru_maxrss).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return _process_peak_rss_mb()


def _process_peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load_average() -> float | None:
    """The 1-minute load average (Unix), or None."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _synced(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _throughput(
    fn: Callable[[], Any], *, images: int, repeats: int, warmup: int, min_seconds: float, sync: Callable[[], None]
) -> tuple[float, list[float]]:
    """Median images/s of `fn` (which handles `images` images per call) over `repeats` timed runs."""
    t0 = time.perf_counter()
    for _ in range(max(1, warmup)):
        fn()
    sync()
    per_call = (time.perf_counter() - t0) / max(1, warmup)
    calls = max(1, math.ceil(min_seconds / max(per_call, 1e-9)))
    rates = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        rates.append(calls * images / (time.perf_counter() - t))
    return statistics.median(rates), rates


def bench_images(n: int, size: int, *, n_bits: int, seed: int = 0) -> torch.Tensor:
    """n smooth random images (n, 3, size, size) in [-0.5, 0.5], dequantised at n_bits like training data."""
    from latentlab.data.quantize import dequantize

    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, max(1, size // 4), max(1, size // 4), generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    x8 = (smooth * 200 + 28 * torch.rand(smooth.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    return dequantize(x8, n_bits, generator=g)


@torch.no_grad()
def perturb_output_convs(model: torch.nn.Module, *, seed: int, scale: float = 0.1) -> None:
    """Move the zero-initialised output convolutions off zero (outputs of order `scale`), as training would,
    so that couplings and priors do real work and the reconstruction error means something."""
    from latentlab.flow.glow import ZeroConv2d  # through flow: the ablation's "before" variant swaps that module

    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, ZeroConv2d):
            weight = module.conv.weight
            fan_in = weight[0].numel()
            weight.add_(torch.randn(weight.shape, generator=g) * scale / math.sqrt(fan_in))


def run_benchmark(
    config_name: str,
    *,
    device: str = "auto",
    threads: int | None = None,
    repeats: int = 5,
    warmup: int = 2,
    memory_saving: str = "none",
    precision: str = "fp32",
    compile: bool = False,
    infer_batch: int | None = None,
    adam: str = "latentlab",
    malloc: str = "auto",
    phases: tuple[str, ...] = ("encode", "decode", "train"),
) -> dict[str, Any]:
    """Measure one configuration ("A", "B" or "tiny") in this process; returns a JSON-able dict.

    Inference runs in eval mode under `torch.inference_mode` through the default paths of
    `Glow.encode` / `Glow.decode`; training is `Glow.forward` (log-density), the bits/dim loss, backward
    and an Adam step. Throughputs are images/s; memory is MiB (CPU: resident set high-water mark of
    the phase, reset at its start on Linux; CUDA: allocator peak). `run_isolated` runs inference and
    training in separate processes, so that memory freed by one phase does not count for the next.
    """
    from latentlab.flow.glow import Glow

    if config_name not in CONFIGS:
        raise ConfigError(f"unknown benchmark config {config_name!r}; choose one of {', '.join(CONFIGS)}")
    if memory_saving not in MEMORY_SAVING:
        raise ConfigError(f"unknown memory saving {memory_saving!r}; choose one of {', '.join(MEMORY_SAVING)}")
    if adam not in ADAM_IMPLEMENTATIONS:
        raise ConfigError(f"unknown Adam implementation {adam!r}; choose one of {', '.join(ADAM_IMPLEMENTATIONS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if malloc not in MALLOC_SETTINGS:
        raise ConfigError(f"unknown malloc setting {malloc!r}; choose one of {', '.join(MALLOC_SETTINGS)}")
    if malloc != "default":  # auto: what the CLI does (tuned where glibc allows it)
        tuned = tune_malloc()
        if malloc == "tuned" and not tuned:
            raise ConfigError("--malloc tuned needs glibc's mallopt (Linux) and no MALLOC_* variables of your own")
        malloc = "tuned" if tuned else "default"
    bench = CONFIGS[config_name]
    cfg = bench.model
    dev = resolve_device(device)
    precision = resolve_precision(precision, dev)  # 'auto' is reported as what it chose
    if threads is not None:
        torch.set_num_threads(threads)
    sync = _synced(dev)
    memory = _PeakMemory(dev)
    torch.manual_seed(0)
    batch = bench.batch_size
    infer_batch = infer_batch or batch
    x = bench_images(max(batch, infer_batch), cfg.image_size, n_bits=cfg.n_bits).to(dev)
    model = Glow(cfg)
    model.initialize(x[:batch].cpu())
    perturb_output_convs(model, seed=1)
    model.to(dev)
    result: dict[str, Any] = {
        "config": config_name,
        "model": cfg.to_dict(),
        "batch_size": batch,
        "infer_batch_size": infer_batch,
        "parameters": sum(p.numel() for p in model.parameters()),
        "forward_gflop_per_image": forward_flops(cfg) / 1e9,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "latentlab": __version__,
        "python": platform.python_version(),
        "memory_saving": memory_saving,
        "precision": precision,
        "compile": compile,
        "adam": adam,
        "malloc": malloc,
        "repeats": repeats,
        "warmup": warmup,
        "phases": list(phases),
        "memory_unit": "MiB, CUDA allocator peak" if dev.type == "cuda" else "MiB, resident set peak",
        "setup_memory_mb": memory.peak_mb(),
        "load_average_at_start": _load_average(),  # other work on the machine skews every number
    }
    timing = dict(repeats=repeats, warmup=warmup, min_seconds=bench.min_run_seconds, sync=sync)
    if "encode" in phases or "decode" in phases:
        _measure_inference(model, x[:infer_batch], result, phases=phases, memory=memory, **timing)
    if "train" in phases:
        model.train()
        model.memory_saving = memory_saving
        net: Callable[[torch.Tensor], torch.Tensor] = torch.compile(model) if compile else model
        optimizer = make_adam(adam, list(model.parameters()), lr=1e-4, device=dev)
        xt = x[:batch]

        def train_step() -> None:
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                log_prob = net(xt)
            loss = model.bits_per_dim_from_log_prob(log_prob.float()).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        memory.reset()
        result["train_images_per_s"], result["train_runs"] = _throughput(train_step, images=batch, **timing)
        result["train_peak_memory_mb"] = memory.peak_mb()
        result["train_achieved_gflop_per_s"] = 3 * result["forward_gflop_per_image"] * result["train_images_per_s"]
    result["load_average_at_end"] = _load_average()
    result["peak_memory_mb"] = (
        torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else _process_peak_rss_mb()
    )
    return result


def _measure_inference(
    model: torch.nn.Module,
    x: torch.Tensor,
    result: dict[str, Any],
    *,
    phases: tuple[str, ...],
    memory: _PeakMemory,
    **timing: Any,
) -> None:
    """Encode and decode throughput (eval mode, inference_mode: what the commands run), and the round trip.

    Always eager: torch.compile of encode/decode gained nothing measurable here (BENCHMARKS.md).
    """
    encode_fn, decode_fn = model.encode, model.decode
    model.eval()
    with torch.inference_mode():
        z = encode_fn(x)
        for phase, fn, arg in (("encode", encode_fn, x), ("decode", decode_fn, z)):
            if phase in phases:
                memory.reset()
                rate, runs = _throughput(lambda fn=fn, arg=arg: fn(arg), images=len(x), **timing)
                result[f"{phase}_images_per_s"], result[f"{phase}_runs"] = rate, runs
                result[f"{phase}_peak_memory_mb"] = memory.peak_mb()
        error = (decode_fn(z) - x).abs()
    result["reconstruction_max_abs_error"] = float(error.max())
    result["reconstruction_mean_abs_error"] = float(error.mean())
    if "encode" in phases:
        result["encode_achieved_gflop_per_s"] = result["forward_gflop_per_image"] * result["encode_images_per_s"]


def run_isolated(config_name: str, *, timeout: float | None = None, **options: Any) -> dict[str, Any]:
    """`run_benchmark` in fresh Python processes (`python -m latentlab.bench`): one for inference, one for
    training, so that each peak memory is its own (freed memory that the C allocator keeps would otherwise
    carry over from one phase into the next). Returns the merged result.

    options are run_benchmark's keyword arguments; a failure is a LatentlabError with the child's last words.
    """
    if config_name not in CONFIGS:
        raise ConfigError(f"unknown benchmark config {config_name!r}; choose one of {', '.join(CONFIGS)}")
    groups = [options.pop("phases")] if "phases" in options else [("encode", "decode"), ("train",)]
    merged: dict[str, Any] = {}
    for phases in groups:
        result = _run_child(config_name, timeout=timeout, phases=phases, **options)
        merged.update(result)
        merged[f"{'_'.join(phases)}_process_peak_memory_mb"] = result["peak_memory_mb"]
        merged["peak_memory_mb"] = max(merged.get("peak_memory_mb", 0.0), result["peak_memory_mb"])
    merged.pop("phases", None)
    return merged


def _run_child(config_name: str, *, timeout: float | None, **options: Any) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "latentlab.bench", config_name]
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            cmd.append(flag)
        elif isinstance(value, (tuple, list)):
            cmd += [flag, ",".join(value)]
        else:
            cmd += [flag, str(value)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LatentlabError(f"benchmark of config {config_name} ran over {timeout:.0f} s and was stopped") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise LatentlabError(f"benchmark of config {config_name} failed (exit {proc.returncode}): {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    """`python -m latentlab.bench A [--device auto] [--threads N] ...`: one configuration, one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m latentlab.bench", description=main.__doc__)
    parser.add_argument("config", choices=sorted(CONFIGS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--memory-saving", default="none", choices=MEMORY_SAVING)
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--infer-batch", type=int, default=None)
    parser.add_argument("--adam", default="latentlab", choices=sorted(ADAM_IMPLEMENTATIONS))
    parser.add_argument("--malloc", default="auto", choices=MALLOC_SETTINGS)
    parser.add_argument("--phases", default="encode,decode,train")
    args = parser.parse_args(argv)
    result = run_benchmark(
        args.config,
        device=args.device,
        threads=args.threads,
        repeats=args.repeats,
        warmup=args.warmup,
        memory_saving=args.memory_saving,
        precision=args.precision,
        compile=args.compile,
        infer_batch=args.infer_batch,
        adam=args.adam,
        malloc=args.malloc,
        phases=tuple(p for p in args.phases.split(",") if p),
    )
    print(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
