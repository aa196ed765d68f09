"""The latentlab command line: each command parses options, calls one library function, prints a summary.

Exit codes: 0 success, 1 a user error (one red line on stderr), 2 a usage error (as Typer does, but also
one red line), 130 interrupted. `--debug` shows the traceback instead of the one-line message.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from latentlab import __version__
from latentlab.errors import LatentlabError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])
_state = {"debug": False}


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one red line on stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def _usage_errors_as_one_line() -> Iterator[None]:
    """Typer's usage errors (a usage line, a hint and a boxed message) as one red line; the exit code stays 2."""
    try:
        yield
    except typer.TyperException as exc:  # click's ClickException family: usage errors, bad parameters
        if type(exc).__name__ == "NoArgsIsHelpError":  # `latentlab` alone prints the help
            raise
        ctx = getattr(exc, "ctx", None)
        hint = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
        raise fail(exc.format_message().rstrip(".") + hint, exc.exit_code) from None


class _OneLineErrorsGroup(TyperGroup):
    """The app's group: parsing errors of the app and of every command print as one line, like library errors."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        with _usage_errors_as_one_line():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        with _usage_errors_as_one_line():
            return super().invoke(ctx)


app = typer.Typer(
    name="latentlab",
    help="Glow normalizing flows for latent-space work on faces: train, encode, edit, interpolate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    cls=_OneLineErrorsGroup,
)


def handles_errors(func: F) -> F:
    """Turn library errors into one red line and exit code 1 (the traceback only with --debug)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LatentlabError as exc:
            if _state["debug"]:
                raise
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except MemoryError:
            if _state["debug"]:
                raise
            raise fail("out of memory; try a smaller --batch-size") from None

    wrapper.__doc__ = reflow_help(func.__doc__ or "")
    return wrapper  # type: ignore[return-value]


def reflow_help(doc: str) -> str:
    """Join the wrapped lines of prose paragraphs so --help fills the terminal; indented examples stay as written."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    out = []
    for para in paragraphs:
        lines = para.splitlines()
        out.append(para if any(line.startswith(" ") for line in lines) else " ".join(lines))
    return "\n\n".join(out)


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"latentlab {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")] = False,
) -> None:
    """Glow normalizing flows for latent-space work on faces."""
    _state["debug"] = debug or os.environ.get("LATENTLAB_DEBUG", "") not in ("", "0")


@app.command()
@handles_errors
def info(
    model: Annotated[Path, typer.Argument(help="A run folder or a .safetensors checkpoint.")],
) -> None:
    """Show a model's config, parameter count, training step and recorded bits/dim.

    Example: latentlab info models/toy32
    """
    from latentlab.checkpoint import checkpoint_summary, load_model, read_model_metadata, resolve_model_path

    meta = read_model_metadata(model)
    summary = checkpoint_summary(meta)
    glow = load_model(model)
    table = Table(title=str(resolve_model_path(model)), show_header=False)
    for key, value in summary["config"].items():
        table.add_row(key, str(value))
    table.add_row("parameters", f"{sum(p.numel() for p in glow.parameters()):,}")
    table.add_row("latent dim", f"{glow.latent_dim:,}")
    table.add_row("training step", str(summary["step"]))
    bpd = summary["bits_per_dim"]
    table.add_row("bits/dim", "not recorded" if bpd is None else f"{bpd:.4f}")
    table.add_row("actnorm initialised", str(summary["initialized"]))
    table.add_row("fingerprint", str(summary["fingerprint"]))
    table.add_row("written by", f"latentlab {summary['latentlab_version']} at {summary['saved_at']}")
    console.print(table)


def _model_or_last(model: Path | None) -> Path:
    from latentlab.paths import last_trained_model

    return model if model is not None else last_trained_model()


def _parse_floats(text: str, what: str) -> list[float]:
    import math

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise fail(f"{what} must be a number or comma-separated numbers, got {text!r}", 2) from None
    if not values or not all(math.isfinite(v) for v in values):
        raise fail(f"{what} must be finite numbers, got {text!r}", 2)
    return values


@app.command()
@handles_errors
def train(
    data: Annotated[Path | None, typer.Option(help="Folder of face images (default: the embedded toy faces).")] = None,
    preset: Annotated[
        str, typer.Option(help="Preset in models/NAME.toml: toy32, celeba32, celeba64, celebahq256.")
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


@app.command()
@handles_errors
def sample(
    model: Annotated[Path | None, typer.Option(help="Run folder or checkpoint (default: the last trained).")] = None,
    n: Annotated[int, typer.Option(min=1, max=1024, help="Samples per temperature.")] = 36,
    temperature: Annotated[str, typer.Option(help="Temperature, or several as rows: 0,0.5,0.7,1.")] = "0.7",
    out: Annotated[Path, typer.Option(help="PNG file to write.")] = Path("samples.png"),
    seed: Annotated[int, typer.Option(help="Seed for the latent draws.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
) -> None:
    """Draw samples as decode(T·ε), ε ~ N(0, I), into a grid PNG.

    Examples:
      latentlab sample --n 64 --temperature 0.7 --out samples.png
      latentlab sample --model models/celeba64 --n 8 --temperature 0,0.5,0.7,1 --out temps.png
    """
    from latentlab.checkpoint import load_model
    from latentlab.data.pictures import save_image
    from latentlab.train.devices import resolve_device
    from latentlab.train.evaluate import sample_grid

    temps = _parse_floats(temperature, "--temperature")
    if any(t < 0 for t in temps):
        raise fail(f"--temperature must be >= 0, got {temperature}", 2)
    glow = load_model(_model_or_last(model), device=resolve_device(device))
    grid = sample_grid(glow, n=n, temperatures=temps, seed=seed)
    path = save_image(out, grid)
    console.print(f"[green]wrote[/] {path} ({n} samples x {len(temps)} temperature(s))")


@app.command()
@handles_errors
def evaluate(
    data: Annotated[Path, typer.Option(help="Folder of held-out images.")],
    model: Annotated[Path | None, typer.Option(help="Run folder or checkpoint (default: the last trained).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 64,
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate only the first N images.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Bits per dimension (as in the Glow paper) of a folder of images under a trained model.

    A model with a learned dequantiser (Flow++) is scored with it, and with uniform noise as well.

    Example: latentlab evaluate --model models/celeba64 --data held_out/
    """
    from latentlab.checkpoint import load_model
    from latentlab.train.devices import resolve_device
    from latentlab.train.evaluate import evaluate_folder

    glow = load_model(_model_or_last(model), device=resolve_device(device))
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


@app.command("toy-faces")
@handles_errors
def toy_faces(
    out: Annotated[Path, typer.Argument(help="Folder to write (img_align_celeba/ and list_attr_celeba.csv).")],
    count: Annotated[int, typer.Option(min=1, help="Number of faces.")] = 5000,
    size: Annotated[int, typer.Option(min=16, max=1024, help="Image side in pixels.")] = 64,
    seed: Annotated[int, typer.Option(help="The same seed gives byte-identical files.")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="Processes drawing faces.")] = 2,
) -> None:
    """Draw the synthetic labeled toy-faces set (CelebA attribute names, Kaggle label format).

    Example: latentlab toy-faces data/toy --count 5000 --size 64 --seed 0
    """
    from latentlab.data.toy_faces import TOY_ATTRIBUTES, make_toy_faces

    folder = make_toy_faces(out, count=count, size=size, seed=seed, workers=workers)
    console.print(f"[green]wrote[/] {count} toy faces to {folder} with labels for {', '.join(TOY_ATTRIBUTES)}")


@app.command()
@handles_errors
def prepare(
    data: Annotated[Path, typer.Argument(help="Folder of images (searched recursively).")],
    size: Annotated[int, typer.Option(min=8, max=4096, help="Side of the cached square images.")] = 64,
    workers: Annotated[int, typer.Option(min=1, help="Processes decoding images.")] = 2,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Decode every image once into a uint8 memory-mapped cache that training and encoding reuse.

    Unreadable files are skipped and listed in skipped.txt next to the cache.
    Example: latentlab prepare img_align_celeba/ --size 64
    """
    from latentlab.data.cache import prepare_cache

    cache = prepare_cache(data, size, workers=workers, progress=not quiet)
    console.print(
        f"[green]cached[/] {len(cache)} images at {size}px in {cache.path}"
        + (f" ({cache.skipped} unreadable files skipped, listed in skipped.txt)" if cache.skipped else "")
    )


# The later pipeline stages keep their commands beside their library code; importing registers them.
from latentlab._malloc import tune_malloc  # noqa: E402
from latentlab.cli import bench, latents, render  # noqa: E402, F401


def main() -> None:
    """Console-script entry point; glibc's malloc keeps freed activations for reuse (malloc_tuning.py)."""
    tune_malloc()
    app()


if __name__ == "__main__":
    main()
