"""glibc malloc tuning: activations stop being page-faulted in again, the CLI applies it, users' settings stand."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import latentlab.bench as bench
import latentlab.cli.app as cli
from latentlab._malloc import USER_SETTINGS, tune_malloc, user_has_malloc_settings
from latentlab.errors import ConfigError

# 20 passes of a 6->128 convolution at 16x16 (a 2 MiB activation, freed after each pass); prints page faults
FAULTS = """
import resource, sys, torch
from latentlab._malloc import tune_malloc
if sys.argv[1] == "tuned":
    assert tune_malloc()
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

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")


def page_faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k not in USER_SETTINGS}
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, env=env, check=True)
    return int(out.stdout.split()[-1])


@linux_only
def test_tuned_malloc_reuses_freed_activations_instead_of_faulting_them_in_again():
    default, tuned = page_faults("default"), page_faults("tuned")
    assert default > 1000  # glibc's defaults: about one fault per 4 KiB of every new 2 MiB activation
    assert tuned < default / 10


def test_users_own_malloc_settings_stand(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert user_has_malloc_settings()
    assert tune_malloc() is False
    assert not user_has_malloc_settings({"PATH": "/bin"})


def test_cli_tunes_malloc_before_running_a_command(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(cli, "tune_malloc", lambda: calls.append("tune") or True)
    monkeypatch.setattr(cli, "app", lambda: calls.append("app"))
    cli.main()
    assert calls == ["tune", "app"]


def test_bench_says_which_malloc_it_measured(monkeypatch):
    result = bench.run_benchmark("tiny", device="cpu", threads=1, repeats=1, warmup=1, phases=("train",))
    applies = sys.platform.startswith("linux") and not user_has_malloc_settings()
    assert result["malloc"] == ("tuned" if applies else "default")
    monkeypatch.setattr(bench, "tune_malloc", lambda: False)
    result = bench.run_benchmark("tiny", device="cpu", threads=1, repeats=1, warmup=1, phases=("train",))
    assert result["malloc"] == "default"
    with pytest.raises(ConfigError, match="--malloc tuned needs"):
        bench.run_benchmark("tiny", device="cpu", malloc="tuned")
    with pytest.raises(ConfigError, match="unknown malloc setting"):
        bench.run_benchmark("tiny", device="cpu", malloc="jemalloc")
