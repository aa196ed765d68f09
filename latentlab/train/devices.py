"""Which torch device a command runs on: --device auto|cpu|cuda|cuda:N|mps, checked up front."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from latentlab.errors import ConfigError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu; an unavailable device is a clear error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA GPU is available; use --device auto or cpu")
        return torch.device("cuda", local_rank)
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps was asked for but MPS is not available; use --device auto or cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} was asked for but no CUDA GPU is available; use --device auto or cpu")
    return device


def has_fast_bf16(device: torch.device) -> bool:
    """Whether bf16 maths runs natively here: an Ampere or newer GPU (or ROCm), or a CPU with AVX512-BF16 or AMX.

    On other CPUs bf16 is emulated and slower than float32 (BENCHMARKS.md), so `--precision auto` keeps
    float32 there, as it does where torch or oneDNN is told to stay below the CPU's bf16 instructions.
    """
    if device.type == "cuda":  # bf16 tensor cores from Ampere (8.0) on; torch's is_bf16_supported counts emulation
        return bool(torch.version.hip) or torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "amx_tile"}) and not isa_capped_below_bf16()
    return False


# the variables that hold torch's CPU kernels to an older instruction set (ATen's; oneDNN's, new and old name)
ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
# oneDNN's instruction-set names that compute bf16 natively (its ONEDNN_MAX_CPU_ISA values)
_ONEDNN_BF16_ISA_MARKERS = ("ALL", "BF16", "AMX", "AVX10", "FP16")


def onednn_isa_cap(environ: Mapping[str, str] | None = None) -> str:
    """The instruction set oneDNN is held to (ONEDNN_MAX_CPU_ISA, or its old name DNNL_MAX_CPU_ISA), upper
    case; "" where neither is set."""
    env = os.environ if environ is None else environ
    return (env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA") or "").strip().upper()


def isa_capped_below_bf16(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ATEN_CPU_CAPABILITY or ONEDNN_MAX_CPU_ISA (DNNL_MAX_CPU_ISA) keeps torch below AVX512-BF16.

    Either variable restricts the kernels torch runs (ATEN_CPU_CAPABILITY=avx2 its element-wise ones,
    ONEDNN_MAX_CPU_ISA=AVX2 its convolutions), which is how an AVX2-only CPU is reproduced on a newer one;
    bf16 is then emulated, so `auto` must choose float32.
    """
    env = os.environ if environ is None else environ
    aten = env.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    if aten in ("default", "avx2", "avx", "sse", "sse4", "no avx"):
        return True
    onednn = onednn_isa_cap(env)
    return bool(onednn) and not any(marker in onednn for marker in _ONEDNN_BF16_ISA_MARKERS)


@functools.lru_cache(maxsize=1)
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags as Linux reports them; empty where there is no /proc/cpuinfo (bf16 then stays off)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def resolve_precision(name: str, device: torch.device) -> str:
    """'auto' -> 'bf16' where the device has fast bf16 (`has_fast_bf16`), else 'fp32'; others unchanged."""
    if name == "auto":
        return "bf16" if has_fast_bf16(device) else "fp32"
    return name
