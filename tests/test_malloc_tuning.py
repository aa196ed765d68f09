"""glibc malloc tuning: the CLI applies it at start-up, users' own settings stand, the benchmark says which it ran.

How many page faults it saves is measured by benchmarks/malloc_faults.py, not asserted here.
"""

from __future__ import annotations

import sys

import pytest

import latentlab.bench.measure as bench
import latentlab.cli.app as cli
from latentlab._malloc import tune_malloc, user_has_malloc_settings
from latentlab.errors import ConfigError


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
