"""Building image caches: decode every file once (in worker processes), write the rows, then the metadata."""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from latentlab.data.images import NO_SHIFT, try_load_image
from latentlab.data.mapped_rows import MappedRows, shrink_rows, sync_file
from latentlab.errors import DataError
from latentlab.fileio import atomic_write_text
from latentlab.progress import progress_bar

FORMAT_VERSION = 1
IMAGES_FILE, META_FILE, SKIPPED_FILE = "images.npy", "meta.json", "skipped.txt"
_WRITE_BLOCK = 256  # images decoded before one write to the cache file


def build_caches(
    buildings: list[Path],
    folder: Path,
    files: list[Path],
    size: int,
    keys: list[str],
    shifts: list[tuple[float, float]],
    *,
    workers: int,
    progress: bool,
) -> None:
    """Decode `files` once into each building/images.npy (one per shift) row by row, then write
    skipped.txt and (last) meta.json in each."""
    n = len(files)
    names: list[str] = []
    skipped: list[tuple[str, str]] = []
    # rows go out a block at a time, each block through its own short-lived map (see MappedRows)
    blocks = [np.empty((min(n, _WRITE_BLOCK), 3, size, size), dtype=np.uint8) for _ in buildings]
    filled = 0
    label = shift_label(shifts[0]) if len(shifts) == 1 else f" with {len(shifts)} crop shifts"
    with contextlib.ExitStack() as stack:
        rows = [
            MappedRows.create(building / IMAGES_FILE, dtype="uint8", shape=(n, 3, size, size)) for building in buildings
        ]
        advance = stack.enter_context(progress_bar(f"caching {n} images at {size}px{label}", n, enabled=progress))
        results = stack.enter_context(_decoded(files, size, shifts, workers))
        for path, (crops, reason) in zip(files, results, strict=True):
            rel = path.relative_to(folder).as_posix()
            if crops is None:
                skipped.append((rel, reason))
            else:
                for block, crop in zip(blocks, crops, strict=True):
                    block[filled] = crop
                filled += 1
                names.append(rel)
                if filled == _WRITE_BLOCK:
                    for out, block in zip(rows, blocks, strict=True):
                        out.write(len(names) - filled, block)
                    filled = 0
            advance()
        for out, block in zip(rows, blocks, strict=True):
            out.write(len(names) - filled, block[:filled])
    if not names:
        example = f" (first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DataError(f"none of the {n} images in {folder} could be read{example}")
    for building, key, shift in zip(buildings, keys, shifts, strict=True):
        _finish(building, names, skipped, size=size, key=key, shift=shift, n=n, folder=folder)


def _finish(
    building: Path,
    names: list[str],
    skipped: list[tuple[str, str]],
    *,
    size: int,
    key: str,
    shift: tuple[float, float],
    n: int,
    folder: Path,
) -> None:
    """Cut images.npy to the rows written, sync it, then write skipped.txt and (last) meta.json."""
    if len(names) < n:
        shrink_rows(building / IMAGES_FILE, len(names))
    sync_file(building / IMAGES_FILE)
    atomic_write_text(building / SKIPPED_FILE, "".join(f"{name}\t{reason}\n" for name, reason in skipped))
    meta = {
        "format_version": FORMAT_VERSION,
        "key": key,
        "size": size,
        "shift": list(shift),
        "count": len(names),
        "skipped": len(skipped),
        "source": str(folder.resolve()),
        "names": names,
    }
    atomic_write_text(building / META_FILE, json.dumps(meta, indent=0) + "\n")


@contextlib.contextmanager
def _decoded(
    files: list[Path], size: int, shifts: list[tuple[float, float]], workers: int
) -> Iterator[Iterable[tuple[list[np.ndarray] | None, str]]]:
    """(one crop per shift, or None, and a reason) per file, in order; a worker pool (imap) when workers > 1."""
    decode = functools.partial(try_load_image, size=size, shifts=shifts)
    if workers <= 1 or len(files) < 2 * workers:
        yield map(decode, files)
        return
    chunksize = max(1, min(64, len(files) // (workers * 8)))
    with multiprocessing.Pool(workers) as pool:
        yield pool.imap(decode, files, chunksize=chunksize)


def shift_label(shift: tuple[float, float]) -> str:
    """' shifted (+dx,+dy)' for progress lines, '' for the standard crop."""
    return "" if shift == NO_SHIFT else f" shifted ({shift[0]:+g},{shift[1]:+g})"
