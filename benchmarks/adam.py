"""Adam implementations side by side: training-step throughput at the bench configs, and what torch.optim costs.

Speed: one process builds one model per implementation (the same weights) and times them in alternating
windows (old, torch, torch-foreach, torch-fused, old, ...), so a machine whose speed drifts moves all alike;
each figure is the median over the rounds, and the ratio to `old` is the median of the per-round ratios.
A training step is what `latentlab bench` times: forward, bits/dim loss, backward, Adam at 1e-4; each
round also times the Adam step alone (on the last step's gradients).

  old            latentlab's former Adam (torch's private fused kernel without torch.optim), read from git
  torch          torch.optim.Adam as the trainer builds it (its CPU default: a loop over parameters)
  torch-foreach  torch.optim.Adam(foreach=True): one op per step over lists of tensors
  torch-fused    torch.optim.Adam(fused=True): torch's fused kernel through the public API

Memory: a fresh process steps torch.optim.Adam once and prints whether that imported torch._dynamo and
how much the resident set grew (MiB, Linux).

usage: python benchmarks/adam.py [--configs A,B] [--rounds 7] [--threads 2] [--seconds 2]
Prints a markdown table; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from latentlab.bench import CONFIGS, bench_images, perturb_output_convs  # noqa: E402
from latentlab.flow.glow import Glow  # noqa: E402

OLD_ADAM = "f84125e:latentlab/train/adam.py"  # the last commit with latentlab's own Adam
VARIANTS: dict[str, dict[str, bool] | None] = {
    "old": None,
    "torch": {},
    "torch-foreach": {"foreach": True},
    "torch-fused": {"fused": True},
}

DYNAMO_COST = """
import sys, torch
def rss():
    return next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmRSS')) / 1024
p = torch.nn.Parameter(torch.ones(3))
before = rss()
optimizer = torch.optim.Adam([p], lr=0.1)
p.grad = torch.ones(3)
optimizer.step()
print('torch._dynamo' in sys.modules, rss() - before)
"""


def old_adam_class() -> type:
    """latentlab's former Adam, compiled from its source in git history."""
    source = subprocess.check_output(["git", "-C", str(ROOT), "show", OLD_ADAM], text=True)
    module = types.ModuleType("old_adam")
    exec(compile(source, OLD_ADAM, "exec"), module.__dict__)
    return module.Adam


def train_step(variant: str, model: Glow, x: torch.Tensor) -> tuple[Callable[[], None], Callable[[], None]]:
    """(one training step of `model` on `x`, the optimiser step alone) with the Adam named `variant`."""
    params = list(model.parameters())
    kernels = VARIANTS[variant]
    optimizer = old_adam_class()(params, lr=1e-4) if kernels is None else torch.optim.Adam(params, lr=1e-4, **kernels)

    def step() -> None:
        loss = model.bits_per_dim_from_log_prob(model(x)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, optimizer.step


def window(fn: Callable[[], None], images: int, seconds: float) -> float:
    """Images/s of `fn` over a window of at least `seconds`."""
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n * images / (time.perf_counter() - start)


def speed(config: str, *, rounds: int, seconds: float) -> dict[str, dict[str, float]]:
    """Per variant: median train img/s, its median per-round ratio to `old`, and the median Adam step in ms."""
    bench = CONFIGS[config]
    torch.manual_seed(0)
    x = bench_images(bench.batch_size, bench.model.image_size, n_bits=bench.model.n_bits)
    base = Glow(bench.model)
    base.initialize(x)
    perturb_output_convs(base, seed=1)
    steps = {}
    for variant in VARIANTS:
        steps[variant] = train_step(variant, copy.deepcopy(base).train(), x)
        for _ in range(2):
            steps[variant][0]()  # the gradients of the last step stay for timing the Adam step alone
    rates: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    adam_ms: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for _ in range(rounds):
        for variant, (step, adam_step) in steps.items():
            rates[variant].append(window(step, bench.batch_size, seconds))
            adam_ms[variant].append(1000 / window(adam_step, 1, seconds / 4))
    return {
        variant: {
            "median": statistics.median(runs),
            "ratio": statistics.median(r / o for r, o in zip(runs, rates["old"], strict=True)),
            "adam_ms": statistics.median(adam_ms[variant]),
        }
        for variant, runs in rates.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="A,B")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one timed window")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cost = subprocess.run([sys.executable, "-c", DYNAMO_COST], capture_output=True, text=True, check=True)
    dynamo, grown = cost.stdout.split()
    print(
        f"torch {torch.__version__}, {args.threads} threads; the first torch.optim.Adam step imports "
        f"torch._dynamo: {dynamo}, resident set +{float(grown):.0f} MiB",
        file=sys.stderr,
    )
    print("| config | Adam | train img/s (median) | ratio to old (median per round) | Adam step alone, ms (median) |")
    print("|---|---|---|---|---|")
    for config in args.configs.split(","):
        for variant, figures in speed(config, rounds=args.rounds, seconds=args.seconds).items():
            median, ratio, adam_ms = figures["median"], figures["ratio"], figures["adam_ms"]
            print(f"| {config} | {variant} | {median:.1f} | {ratio:.3f} | {adam_ms:.2f} |", flush=True)


if __name__ == "__main__":
    main()
