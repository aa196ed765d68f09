"""The commands of the model itself: `train`, `sample`, `evaluate` and `info`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from latentlab.cli.common import DeviceOption, ModelOption, console, err_console, fail, handles_errors, parse_floats


@handles_errors
def train(
    data: Annotated[Path | None, typer.Option(help="Folder of face images (default: the embedded toy faces).")] = None,
    preset: Annotated[
        str,
        typer.Option(
            help="A shipped preset (toy32, celeba32, celeba64, celebahq256), a NAME.toml in models/, or a .toml path."
        ),
    ] = "toy32",
    out: Annotated[Path | None, typer.Option(help="Run folder (default: models/<preset>).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Images per step per process.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (after warm-up).")] = None,
    warmup_steps: Annotated[int | None, typer.Option(min=0, help="Linear warm-up steps.")] = None,
    schedule: Annotated[str | None, typer.Option(help="constant or cosine (cosine needs --max-steps).")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Stop after this many steps.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Stop after this many passes over the data.")] = None,
    time_limit: Annotated[float | None, typer.Option(help="Stop cleanly after this many minutes.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for initialisation, data order and noise.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or mps.")] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="fp32, bf16 (autocast; log-dets stay float32), or auto: bf16 where the CPU or GPU has it."),
    ] = None,
    compile: Annotated[bool | None, typer.Option("--compile/--no-compile", help="Use torch.compile.")] = None,
    grad_clip: Annotated[float | None, typer.Option(help="Clip the gradient norm to this.")] = None,
    memory_saving: Annotated[
        str | None,
        typer.Option(help="none, checkpoint (recompute each flow step) or invertible (rebuild inputs from outputs)."),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override any model or training field: --set width=64.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    force: Annotated[bool, typer.Option(help="Overwrite a finished run in --out.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Train Glow. With no arguments: generate the toy faces and train the toy32 preset into models/toy32.

    Examples:
      latentlab train
      latentlab train --data img_align_celeba/ --preset celeba64 --out models/celeba64
      latentlab train --data faces/ --preset toy32 --batch-size 32 --max-steps 2000 --time-limit 15 --seed 0 --resume
      torchrun --nproc_per_node=2 -m latentlab train --data faces/ --preset celeba32
    """
    from latentlab.config import apply_overrides, load_preset, parse_override
    from latentlab.train.recipe import default_out
    from latentlab.train.recipe import train as run_training

    flags = {
        "data": None if data is None else str(data),
        "batch_size": batch_size,
        "lr": lr,
        "warmup_steps": warmup_steps,
        "schedule": schedule,
        "max_steps": max_steps,
        "epochs": epochs,
        "time_limit": time_limit,
        "seed": seed,
        "device": device,
        "precision": precision,
        "compile": compile,
        "grad_clip": grad_clip,
        "memory_saving": memory_saving,
    }
    overrides = {k: v for k, v in flags.items() if v is not None}
    overrides.update(dict(parse_override(item) for item in set_ or []))
    cfg = load_preset(preset)
    run = out if out is not None else default_out(cfg, preset)
    if resume:
        from latentlab.config import TrainConfig
        from latentlab.train.runs import check_run_folder, load_train_state

        check_run_folder(run, resume=True, force=force)
        cfg = TrainConfig.from_dict(load_train_state(run)[1]["config"])
    cfg = apply_overrides(cfg, overrides).replace(out=str(run))
    result = run_training(cfg, out=run, resume=resume, force=force, progress=not quiet, console=err_console)
    val = "n/a" if result.val_bpd is None else f"{result.val_bpd:.4f}"
    console.print(
        f"[green]trained[/] {result.step} steps ({result.stopped_by}): train {result.train_bpd:.4f} bits/dim, "
        f"held-out {val} bits/dim, {result.images_per_second:.1f} img/s, {result.precision}"
        + (f", {result.skipped_steps} non-finite steps skipped" if result.skipped_steps else "")
    )
    console.print(f"run folder: {result.out}  (samples in {result.out / 'samples'})")


@handles_errors
def sample(
    model: ModelOption = None,
    n: Annotated[int, typer.Option(min=1, max=1024, help="Samples per temperature.")] = 36,
    temperature: Annotated[str, typer.Option(help="Temperature, or several as rows: 0,0.5,0.7,1.")] = "0.7",
    out: Annotated[Path, typer.Option(help="PNG file to write.")] = Path("samples.png"),
    seed: Annotated[int, typer.Option(help="Seed for the latent draws.")] = 0,
    device: DeviceOption = "auto",
) -> None:
    """Draw samples as decode(T·ε), ε ~ N(0, I), into a grid PNG.

    Examples:
      latentlab sample --n 64 --temperature 0.7 --out samples.png
      latentlab sample --model models/celeba64 --n 8 --temperature 0,0.5,0.7,1 --out temps.png
    """
    from latentlab.checkpoint import load_model
    from latentlab.data.pictures import save_image
    from latentlab.paths import model_or_last
    from latentlab.train.devices import resolve_device
    from latentlab.train.evaluate import sample_grid

    temps = parse_floats(temperature, "--temperature")
    if any(t < 0 for t in temps):
        raise fail(f"--temperature must be >= 0, got {temperature}", 2)
    glow = load_model(model_or_last(model), device=resolve_device(device))
    grid = sample_grid(glow, n=n, temperatures=temps, seed=seed)
    path = save_image(out, grid)
    console.print(f"[green]wrote[/] {path} ({n} samples x {len(temps)} temperature(s))")


@handles_errors
def evaluate(
    data: Annotated[Path, typer.Option(help="Folder of held-out images.")],
    model: ModelOption = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 64,
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate only the first N images.")] = None,
    device: DeviceOption = "auto",
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Bits per dimension (as in the Glow paper) of a folder of images under a trained model.

    A model with a learned dequantiser (Flow++) is scored with it, and with uniform noise as well.

    Example: latentlab evaluate --model models/celeba64 --data held_out/
    """
    from latentlab.checkpoint import load_model
    from latentlab.paths import model_or_last
    from latentlab.train.devices import resolve_device
    from latentlab.train.evaluate import evaluate_folder

    glow = load_model(model_or_last(model), device=resolve_device(device))
    result = evaluate_folder(glow, data, batch_size=batch_size, limit=limit, progress=not quiet)
    console.print(
        f"{result.bits_per_dim:.4f} ± {result.std_error:.4f} bits/dim over {result.images} images"
        + (f" ({result.skipped} unreadable files skipped)" if result.skipped else "")
    )
    if glow.dequantizer is not None:
        console.print(
            f"with the model's learned dequantiser; {result.uniform_bits_per_dim:.4f} ± "
            f"{result.uniform_std_error:.4f} with uniform noise in each bin, as in the Glow paper"
        )


@handles_errors
def info(
    model: Annotated[Path, typer.Argument(help="A run folder or a .safetensors checkpoint.")],
) -> None:
    """Show a model's config, parameter count, training step and recorded bits/dim.

    Example: latentlab info models/toy32
    """
    from latentlab.checkpoint import checkpoint_summary, load_model, read_model_metadata, resolve_model_path
    from latentlab.render.levels import describe_latent_levels

    meta = read_model_metadata(model)
    summary = checkpoint_summary(meta)
    glow = load_model(model)
    table = Table(title=str(resolve_model_path(model)), show_header=False)
    for key, value in summary["config"].items():
        table.add_row(key, str(value))
    table.add_row("parameters", f"{sum(p.numel() for p in glow.parameters()):,}")
    table.add_row("latent dim", f"{glow.latent_dim:,}")
    table.add_row("latent levels (--levels)", describe_latent_levels(glow.latent_shapes))
    table.add_row("training step", str(summary["step"]))
    bpd = summary["bits_per_dim"]
    table.add_row("bits/dim", "not recorded" if bpd is None else f"{bpd:.4f}")
    table.add_row("actnorm initialised", str(summary["initialized"]))
    table.add_row("fingerprint", str(summary["fingerprint"]))
    table.add_row("written by", f"latentlab {summary['latentlab_version']} at {summary['saved_at']}")
    console.print(table)
