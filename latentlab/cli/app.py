"""The latentlab command line: the Typer app, its global options, and every command registered in pipeline order.

Each command lives in a module of its stage (data, train, latents, render, bench) and imports only
`common`; this module imports them all. Importing it stays light (no torch) so that --help is fast.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from latentlab import __version__
from latentlab._malloc import tune_malloc
from latentlab.cli import audit, bench, data, latents, render, studio, train
from latentlab.cli.common import OneLineErrorsGroup, console, set_debug

app = typer.Typer(
    name="latentlab",
    help="Glow normalizing flows for latent-space work on faces: train, encode, edit, interpolate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    cls=OneLineErrorsGroup,
)


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
    set_debug(debug or os.environ.get("LATENTLAB_DEBUG", "") not in ("", "0"))


app.command()(train.info)
app.command()(train.train)
app.command()(train.sample)
app.command()(train.evaluate)
app.command("toy-faces")(data.toy_faces)
app.command()(data.prepare)
app.command()(bench.bench)
app.command()(latents.encode)
app.command("attribute-vectors")(latents.attribute_vectors)
app.command()(render.manipulate)
app.command()(render.interpolate)
app.command()(audit.audit)
app.command()(studio.studio)


def main() -> None:
    """Console-script entry point; glibc's malloc keeps freed activations for reuse (see latentlab._malloc)."""
    tune_malloc()
    app()


if __name__ == "__main__":
    main()
