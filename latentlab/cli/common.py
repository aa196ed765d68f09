"""What every command shares: the consoles, one-line errors and their exit codes, shared options and parsers.

Exit codes: 0 success, 1 a user error (one red line on stderr), 2 a usage error (as Typer does, but also
one red line), 130 interrupted. `--debug` shows the traceback instead of the one-line message.
Command modules import this module, never `app`, so that `app` can import them without a circle.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from latentlab.errors import LatentlabError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])
_state = {"debug": False}

DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
ModelOption = Annotated[Path | None, typer.Option(help="Run folder or checkpoint (default: the last trained).")]


def set_debug(debug: bool) -> None:
    """Whether library errors show their traceback (--debug) instead of one red line."""
    _state["debug"] = debug


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one red line on stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def wrote(path: Path, details: str) -> None:
    """One green line naming the file written (paths and details are printed as they are, not as markup)."""
    console.print(f"[green]wrote[/] {escape(str(path))} ({escape(details)})", highlight=False, soft_wrap=True)


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


class OneLineErrorsGroup(TyperGroup):
    """The app's group: parsing errors of the app and of every command print as one line, like library errors."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        with _usage_errors_as_one_line():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        with _usage_errors_as_one_line():
            return super().invoke(ctx)


def parse_floats(text: str, what: str) -> list[float]:
    """Comma-separated finite numbers for the option `what`, or a usage error (exit 2)."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise fail(f"{what} must be a number or comma-separated numbers, got {text!r}", 2) from None
    if not values or not all(math.isfinite(v) for v in values):
        raise fail(f"{what} must be finite numbers, got {text!r}", 2)
    return values


def parse_names(text: str | None, option: str) -> list[str]:
    """Comma-separated attribute names for `option` (none when it is not given), or a usage error (exit 2)."""
    if text is None:
        return []
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise fail(f"{option} needs comma-separated attribute names, e.g. Blond_Hair,Smiling; got {text!r}", 2)
    return names
