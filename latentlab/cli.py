"""The latentlab command line: each command parses options, calls one library function, prints a summary.

Exit codes: 0 success, 1 a user error (one red line on stderr), 2 a usage error (as Typer does),
130 interrupted. `--debug` shows the traceback instead of the one-line message.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from latentlab import __version__
from latentlab.errors import LatentlabError

app = typer.Typer(
    name="latentlab",
    help="Glow normalizing flows for latent-space work on faces: train, encode, edit, interpolate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])
_state = {"debug": os.environ.get("LATENTLAB_DEBUG", "") not in ("", "0")}


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one red line on stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


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

    return wrapper  # type: ignore[return-value]


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
    _state["debug"] = _state["debug"] or debug


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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
