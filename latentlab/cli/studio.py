"""`latentlab studio`: the edits of `manipulate` and `interpolate` with sliders in a local browser page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from latentlab.cli.common import console, err_console, fail, handles_errors
from latentlab.cli.render import RenderModelOption


@handles_errors
def studio(
    model: RenderModelOption = None,
    vectors: Annotated[
        Path | None,
        typer.Option(
            help="Direction file (default: attributes/<model name>.safetensors, when there is one).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    faces: Annotated[
        Path | None,
        typer.Option(
            help="Folder of face images for the gallery (default: the run's training images, else toy faces).",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 lets anyone on the network in.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port, or the first free one after it.")] = 8000,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the page in the default browser.")] = False,
) -> None:
    """Edit faces with sliders in a local web page: pick or upload a face, move attribute sliders, mix two
    faces, draw samples, and copy the command that reproduces the picture. Runs until Ctrl-C.

    Examples:
      latentlab studio
      latentlab studio --model models/celeba64 --faces photos/ --open
      latentlab studio --port 8080
    """
    try:
        from latentlab.studio.serve import LOOPBACK, serve
    except ImportError as exc:
        raise fail(f"the studio needs its extra ({exc.name} is missing): pip install 'latentlab[studio]'") from None
    if host not in LOOPBACK:
        err_console.print(
            f"[bold yellow]warning:[/] listening on {host}: anyone who can reach this machine can use the studio",
            highlight=False,
        )
    try:
        serve(
            model=model,
            vectors=vectors,
            faces=faces,
            host=host,
            port=port,
            open_browser=open_browser,
            say=lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True),
        )
    except KeyboardInterrupt:
        pass
    console.print("studio stopped", highlight=False)
