"""The data commands: `toy-faces` draws the embedded labeled set, `prepare` caches a folder of images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from latentlab.cli.common import console, handles_errors


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
