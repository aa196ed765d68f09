"""Rich progress bars with rate and ETA for long work (training, encoding, rendering)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second (images or frames), where rich's byte-rate column would mislead."""

    def __init__(self, unit: str = "img") -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} {self.unit}/s" if speed else f"– {self.unit}/s", style="progress.data.speed")


@contextlib.contextmanager
def progress_bar(
    description: str, total: int, *, enabled: bool = True, unit: str = "img"
) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr (count, rate, ETA); yields `advance(n=1)`. Disabled: a silent no-op."""
    if not enabled:
        yield lambda n=1: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


class TrainProgress:
    """The training bar: step, loss in bits/dim, images/s and ETA (by steps or by the time limit)."""

    def __init__(
        self, *, total: int | None, start: int, time_limit: float | None, enabled: bool, console: Console | None = None
    ) -> None:
        self.enabled = enabled
        self.time_limit = time_limit
        self.started = time.perf_counter()
        self.start = start
        self.console = console or Console(stderr=True)
        if not enabled:
            return
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn() if total is not None else TextColumn("step {task.completed}"),
            TextColumn("{task.fields[stats]}"),
            TaskProgressColumn() if total is not None else TextColumn(""),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            refresh_per_second=4,
        )
        # with only a time limit, the bar counts seconds so that rich's ETA means "until the limit"
        self.by_time = total is None
        self.task = self.progress.add_task(
            "train",
            total=time_limit * 60 if self.by_time and time_limit else total,
            completed=0 if self.by_time else start,
            stats="",
        )

    def __enter__(self) -> TrainProgress:
        if self.enabled:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.progress.__exit__(*exc)

    def update(self, step: int, *, bpd: float | None, rate: float, val: float | None) -> None:
        """Show the latest step and numbers."""
        if not self.enabled:
            return
        stats = f"{bpd:.3f} bits/dim" if bpd is not None else ""
        if val is not None:
            stats += f" (val {val:.3f})"
        stats += f"  {rate:.1f} img/s  step {step}"
        completed = time.perf_counter() - self.started if self.by_time else step
        self.progress.update(self.task, completed=completed, stats=stats)

    def note(self, message: str) -> None:
        """A line above the bar (skipped steps and other events)."""
        if self.enabled:
            self.progress.console.print(f"[yellow]{message}")
        else:
            self.console.print(f"[yellow]{message}")
