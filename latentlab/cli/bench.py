"""The `bench` command: throughput, reconstruction error and peak memory of the standard configurations."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from latentlab.cli.common import DeviceOption, console, fail, handles_errors
from latentlab.config import PRECISIONS

ROWS = [  # (result key, label, format)
    ("parameters", "parameters", "{:,}"),
    ("train_images_per_s", "train img/s", "{:.1f}"),
    ("encode_images_per_s", "encode img/s", "{:.1f}"),
    ("decode_images_per_s", "decode img/s", "{:.1f}"),
    ("reconstruction_max_abs_error", "max |decode(encode(x)) - x|", "{:.1e}"),
    ("train_peak_memory_mb", "train peak memory (MiB)", "{:.0f}"),
    ("encode_peak_memory_mb", "encode peak memory (MiB)", "{:.0f}"),
    ("decode_peak_memory_mb", "decode peak memory (MiB)", "{:.0f}"),
    ("peak_memory_mb", "process peak memory (MiB)", "{:.0f}"),
    ("train_achieved_gflop_per_s", "train GFLOP/s (convolutions)", "{:.1f}"),
    ("encode_achieved_gflop_per_s", "encode GFLOP/s (convolutions)", "{:.1f}"),
    ("conv3x3_ceiling_gflop_per_s", "best 3x3 convolution GFLOP/s (the ceiling)", "{:.1f}"),
    ("encode_ceiling_fraction", "encode, fraction of the ceiling", "{:.0%}"),
    ("decode_ceiling_fraction", "decode, fraction of the ceiling", "{:.0%}"),
]


@handles_errors
def bench(
    config: Annotated[
        str,
        typer.Option(
            help="Configurations, comma-separated: A (32 px, L=3, K=8, width 128, "
            "batch 16), B (64 px, L=4, K=16, width 256, batch 8), tiny."
        ),
    ] = "A,B",
    device: DeviceOption = "auto",
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON list instead of a table.")] = False,
    repeats: Annotated[int, typer.Option(min=1, help="Timed runs per measurement (the median is reported).")] = 5,
    warmup: Annotated[int, typer.Option(min=1, help="Untimed iterations before timing.")] = 2,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads (default: torch's choice).")] = None,
    memory_saving: Annotated[str, typer.Option(help="none, checkpoint or invertible (training only).")] = "none",
    precision: Annotated[str, typer.Option(help="fp32, bf16 (autocast, training) or auto (bf16 if native).")] = "fp32",
    compile: Annotated[
        bool, typer.Option("--compile/--no-compile", help="torch.compile the training step (inference stays eager).")
    ] = False,
    infer_batch: Annotated[int | None, typer.Option(min=1, help="Encode/decode batch size.")] = None,
) -> None:
    """Measure parameters, training / encode / decode throughput, reconstruction error and peak memory.

    Each configuration runs in a process of its own, after warm-up; throughputs are medians of
    several runs. Training is one optimiser step (forward, bits/dim loss, backward, Adam).

    Examples:
      latentlab bench
      latentlab bench --config A --threads 2 --json
      latentlab bench --config B --memory-saving invertible
      latentlab bench --device cuda --precision bf16
    """
    from latentlab.bench import CONFIGS, run_isolated
    from latentlab.config import MEMORY_SAVING

    names = [name.strip() for name in config.split(",") if name.strip()]
    unknown = [name for name in names if name not in CONFIGS]
    if not names or unknown:
        raise fail(f"--config takes names from {', '.join(CONFIGS)}, comma-separated; got {config!r}", 2)
    if memory_saving not in MEMORY_SAVING:
        raise fail(f"--memory-saving must be one of {', '.join(MEMORY_SAVING)}, got {memory_saving!r}", 2)
    if precision not in PRECISIONS:
        raise fail(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}", 2)
    options = dict(
        device=device,
        repeats=repeats,
        warmup=warmup,
        threads=threads,
        memory_saving=memory_saving,
        precision=precision,
        compile=compile,
        infer_batch=infer_batch,
    )
    results = []
    for name in names:
        if not json_out:
            console.print(f"measuring config {name} ...", style="dim")
        results.append(run_isolated(name, **options))
    if json_out:
        console.print_json(json.dumps(results))
        return
    first = results[0]
    table = Table(
        title=f"{first['device_name']} ({first['device']}; {first['cpu_instructions']}), torch {first['torch']}, "
        f"{first['threads']} threads, memory saving {memory_saving}, {first['precision']}"
    )
    table.add_column("")
    for r in results:
        table.add_column(f"config {r['config']} (batch {r['batch_size']})", justify="right")
    for key, label, fmt in ROWS:
        table.add_row(label, *(fmt.format(r[key]) if key in r else "-" for r in results))
    console.print(table)
