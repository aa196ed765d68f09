"""What the machine says about a benchmark run: peak memory of a phase, the CPU's name, the load average.

Each probe reads what the platform offers (/proc on Linux, getrusage on Unix) and degrades to a coarser
figure, or None, where it is missing, so the benchmark runs on every platform.
"""

from __future__ import annotations

import os
import platform
import sys

import torch

from latentlab.train.devices import onednn_isa_cap


class PeakMemory:
    """Peak memory of one phase: CUDA's allocator peak, else the process's resident-set high-water mark.

    On Linux the high-water mark (VmHWM) is reset at the start of each phase through /proc/self/clear_refs,
    so a phase's peak is its own; elsewhere it is the process peak so far.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def reset(self) -> None:
        """Start a new phase."""
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
        """The phase's peak so far, in MiB."""
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
        return process_peak_rss_mb()


def process_peak_rss_mb() -> float:
    """The process's resident-set peak in MiB (getrusage; NaN where the platform has no `resource` module)."""
    try:
        import resource  # Unix only
    except ImportError:
        return float("nan")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else what `platform` knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_instructions() -> str:
    """The vector instructions torch's CPU kernels use (ATen's, after ATEN_CPU_CAPABILITY) and oneDNN's cap.

    Setting ATEN_CPU_CAPABILITY=avx2 and ONEDNN_MAX_CPU_ISA=AVX2 reproduces an AVX2-only CPU on a newer
    one; a figure names what it ran on.
    """
    return f"ATen {torch.backends.cpu.get_cpu_capability()}, oneDNN {onednn_isa_cap() or 'no cap'}"


def load_average() -> float | None:
    """The 1-minute load average (Unix), or None."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
