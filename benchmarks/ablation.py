"""What each performance change buys: configs A and B measured with one change undone at a time.

Every variant runs `latentlab.bench.run_benchmark` in fresh processes (inference and training apart, as
`latentlab bench` does) after applying its patch:

  default            the paths the commands use
  no-channels-last   activations in the contiguous (NCHW) layout
  no-weight-cache    folded inference weights recomputed at every encode/decode call
  no-gemm-1x1        inference 1x1 convolutions through conv2d instead of a GEMM over pixels
  no-padded-weights  cached inference weights as folded: output convolutions not padded to 16 channels, NCHW
  no-malloc-tuning   glibc's malloc defaults (fresh mmaps and trims: activations page-faulted in again)
  torch-adam         torch.optim.Adam with its CPU default (a loop over parameters), not the trainer's fused kernel
  before             latentlab/flow.py as it was before the performance work (commit 896db9d), run in place of
                     latentlab.flow.glow; torch.optim.Adam with its CPU default, glibc's malloc defaults

usage: python benchmarks/ablation.py [--configs A,B] [--threads 2] [--variants default,before]
Prints a markdown table (images/s and peak resident MB); run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "896db9d"  # the last commit before the performance work

NO_MALLOC_TUNING = "import latentlab.bench.measure as m; m.tune_malloc = lambda: False"
ADAM = {  # latentlab: the optimiser as the trainer builds it; torch-loop: torch.optim.Adam's CPU default
    "latentlab": "",
    "torch-loop": "import latentlab.bench.measure as m\nm.make_optimizer = lambda p, *, lr: torch.optim.Adam(p, lr=lr)",
}
PATCHES: dict[str, tuple[str, str]] = {  # variant -> (code run before the benchmark, Adam implementation)
    "default": ("", "latentlab"),
    "no-channels-last": ("import latentlab.flow.fast as f; f.ACTIVATIONS = torch.contiguous_format", "latentlab"),
    "no-weight-cache": ("import latentlab.flow.fast as f; f.use_cache = lambda module: False", "latentlab"),
    "no-gemm-1x1": (
        "import latentlab.flow.fast as f, torch.nn.functional as F\n"
        "f.conv1x1 = lambda x, w, b: F.conv2d(x, w[:, :, None, None], b)",
        "latentlab",
    ),
    "no-padded-weights": ("import latentlab.flow.folding as f; f.inference_layout = lambda net: net", "latentlab"),
    "no-malloc-tuning": (NO_MALLOC_TUNING, "latentlab"),
    "torch-adam": ("", "torch-loop"),
    "before": (
        NO_MALLOC_TUNING + "\nimport importlib, subprocess, types, latentlab.flow\n"
        "sys.modules['latentlab.quantize'] = importlib.import_module('latentlab.data.quantize')  # its old place\n"
        f"git = ['git', '-C', {str(ROOT)!r}, 'show', '{BEFORE}:latentlab/flow.py']\n"
        "src = subprocess.check_output(git, text=True)\n"
        "mod = types.ModuleType('latentlab.flow.glow'); mod.__file__ = 'flow.py@" + BEFORE + "'\n"
        "sys.modules['latentlab.flow.glow'] = latentlab.flow.glow = mod\n"
        "exec(compile(src, mod.__file__, 'exec'), mod.__dict__)",
        "torch-loop",
    ),
}


def run_variant(variant: str, config: str, threads: int, phases: str) -> dict:
    """One variant, one config, the given phases, in a fresh process; returns run_benchmark's dict."""
    patch, adam = PATCHES[variant]
    code = (
        "import json, sys, torch\n"
        f"{patch}\n{ADAM[adam]}\n"
        "from latentlab.bench import run_benchmark\n"
        f"result = run_benchmark({config!r}, threads={threads}, phases=tuple({phases!r}.split(',')))\n"
        "print(json.dumps(result))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{variant} {config} failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="A,B")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default=",".join(PATCHES))
    args = parser.parse_args()
    print("| config | variant | train img/s | encode img/s | decode img/s | train peak MB | encode/decode peak MB |")
    print("|---|---|---|---|---|---|---|")
    for config in args.configs.split(","):
        for variant in args.variants.split(","):
            infer = run_variant(variant, config, args.threads, "encode,decode")
            train = run_variant(variant, config, args.threads, "train")
            print(
                f"| {config} | {variant} | {train['train_images_per_s']:.1f} | {infer['encode_images_per_s']:.1f} "
                f"| {infer['decode_images_per_s']:.1f} | {train['peak_memory_mb']:.0f} "
                f"| {infer['peak_memory_mb']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
