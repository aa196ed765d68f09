"""One benchmark configuration measured in this process: parameters, training / encode / decode throughput,
reconstruction error and peak memory.

Every throughput is the median over `repeats` timed runs taken after `warmup` untimed iterations, in
images per second. Training is one optimiser step as the trainer takes it: forward, loss (bits/dim),
backward, Adam.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from latentlab import __version__
from latentlab._malloc import tune_malloc
from latentlab.bench.ceiling import conv3x3_ceiling
from latentlab.bench.machine import PeakMemory, cpu_instructions, cpu_name, load_average, process_peak_rss_mb
from latentlab.config import MEMORY_SAVING, PRECISIONS, GlowConfig
from latentlab.errors import ConfigError
from latentlab.train.devices import resolve_device, resolve_precision
from latentlab.train.optimizer import make_optimizer


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


MALLOC_SETTINGS = ("auto", "tuned", "default")  # auto: as the CLI runs (latentlab._malloc)


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
    memory = PeakMemory(dev)
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
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
        "cpu_instructions": cpu_instructions(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "latentlab": __version__,
        "python": platform.python_version(),
        "memory_saving": memory_saving,
        "precision": precision,
        "compile": compile,
        "malloc": malloc,
        "repeats": repeats,
        "warmup": warmup,
        "phases": list(phases),
        "memory_unit": "MiB, CUDA allocator peak" if dev.type == "cuda" else "MiB, resident set peak",
        "setup_memory_mb": memory.peak_mb(),
        "load_average_at_start": load_average(),  # other work on the machine skews every number
    }
    timing = dict(repeats=repeats, warmup=warmup, min_seconds=bench.min_run_seconds, sync=sync)
    if "encode" in phases or "decode" in phases:
        _measure_inference(model, x[:infer_batch], result, phases=phases, memory=memory, **timing)
    if "train" in phases:
        model.train()
        model.memory_saving = memory_saving
        net: Callable[[torch.Tensor], torch.Tensor] = torch.compile(model) if compile else model
        optimizer = make_optimizer(model.parameters(), lr=1e-4)
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
    result["load_average_at_end"] = load_average()
    result["peak_memory_mb"] = (
        torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else process_peak_rss_mb()
    )
    return result


def _measure_inference(
    model: torch.nn.Module,
    x: torch.Tensor,
    result: dict[str, Any],
    *,
    phases: tuple[str, ...],
    memory: PeakMemory,
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
    # the same run's best 3x3 convolution rate: how near encode and decode come to what the machine can do
    cfg, device = model.config, next(model.parameters()).device
    result.update(conv3x3_ceiling(cfg, len(x), device=device, throughput=_throughput, **timing))
    ceiling_images_per_s = result["conv3x3_ceiling_gflop_per_s"] / result["forward_gflop_per_image"]
    for phase in ("encode", "decode"):
        if phase in phases:
            result[f"{phase}_ceiling_fraction"] = result[f"{phase}_images_per_s"] / ceiling_images_per_s
