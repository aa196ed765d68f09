"""Minor page faults of a repeated convolution with glibc's malloc defaults and with latentlab's tuning.

Each mode runs in a fresh process (the users' own MALLOC_* variables removed): 20 passes of a 6->128
convolution at 16x16, whose 2 MiB activation is freed after every pass, after 3 untimed passes. With glibc's
defaults every new activation comes from a fresh mmap and is faulted in again, 4 KiB at a time; with the
settings the CLI applies at start-up (latentlab._malloc) the heap keeps it for reuse. Linux (glibc) only.

usage: python benchmarks/malloc_faults.py
Prints a markdown table.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from latentlab._malloc import USER_SETTINGS  # noqa: E402

FAULTS = """
import resource, sys, torch
from latentlab._malloc import tune_malloc
if sys.argv[1] == "tuned" and not tune_malloc():
    raise SystemExit("the malloc settings could not be applied here (glibc's mallopt is needed)")
torch.set_num_threads(1)
x, w = torch.randn(16, 6, 16, 16), torch.randn(128, 6, 3, 3)
def work():
    return (torch.relu(torch.nn.functional.conv2d(x, w, padding=1)) * 2).sum()
for _ in range(3):
    work()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    work()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    """Minor page faults of the 20 passes in a fresh process, malloc 'default' or 'tuned'."""
    env = {k: v for k, v in os.environ.items() if k not in USER_SETTINGS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{mode}: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    return int(out.stdout.split()[-1])


def main() -> None:
    print("| malloc | minor page faults, 20 passes of a 2 MiB activation |")
    print("|---|---|")
    for mode in ("default", "tuned"):
        print(f"| {mode} | {page_faults(mode)} |", flush=True)


if __name__ == "__main__":
    main()
