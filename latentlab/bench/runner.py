"""Benchmarks in processes of their own: `run_isolated` (what `latentlab bench` calls) starts
`python -m latentlab.bench CONFIG ...` (`main`) once for inference and once for training, so that no
phase's peak memory hides another's, and merges the JSON lines they print.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from latentlab.bench.measure import CONFIGS, MALLOC_SETTINGS, run_benchmark
from latentlab.config import MEMORY_SAVING, PRECISIONS
from latentlab.errors import ConfigError, LatentlabError


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
    parser.add_argument("--malloc", default="auto", choices=MALLOC_SETTINGS)
    parser.add_argument("--phases", default="encode,decode,train")
    options = vars(parser.parse_args(argv))
    config = options.pop("config")
    options["phases"] = tuple(p for p in options["phases"].split(",") if p)
    print(json.dumps(run_benchmark(config, **options)))
