"""The latent store on disk: its files, opening a finished store, and reading its rows in chunks.

A store is a folder:
- `latents.npy`: (N, D) float16 or float32, row i the latent of image `ids[i]` (while encoding it is
  `.latents.partial.npy`, renamed when every row is written);
- `ids.json`: the N image ids (paths relative to the image folder), in row order;
- `labels.npy`: (N, A) int8 in {-1, +1} aligned with the rows, when a label file was given;
- `meta.json`: model fingerprint, data key, dtype, D, N, attribute names, how the labels matched,
  and `done`, the number of rows written so far.
Latent rows are read and written through `MappedRows` only: short-lived memory maps, so a pass over
a store of any size holds one chunk in memory, not the file.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latentlab.data.mapped_rows import MappedRows
from latentlab.errors import DataError, LatentlabError, OutputError
from latentlab.fileio import atomic_path, atomic_write_text, folder_lock

FORMAT = "latentlab-latents"
FORMAT_VERSION = 1
DTYPES = ("float16", "float32")
LATENTS_FILE, PARTIAL_FILE = "latents.npy", ".latents.partial.npy"
IDS_FILE, LABELS_FILE, META_FILE, LOCK_FILE = "ids.json", "labels.npy", "meta.json", ".lock"


@dataclass(frozen=True)
class LatentStore:
    """An opened store: `latents` its (N, D) rows on disk, indexed like an array (`MappedRows`);
    `labels` (N, A) int8 ±1 or None."""

    path: Path
    latents: MappedRows = field(repr=False)
    ids: list[str] = field(repr=False)
    labels: pd.DataFrame | None = field(repr=False)
    meta: dict[str, Any] = field(repr=False)
    resumed_from: int = 0  # rows already present when this encode started
    encoded: int = 0  # rows encoded by this call

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def match_summary(self) -> str:
        """One line: how many images were encoded and, with labels, what did not match."""
        match = self.meta.get("match")
        if not match:
            return f"{len(self)} images"
        parts = [f"{match['matched']} labeled images"]
        for key, what in (
            ("labels_without_image", "label rows without an image"),
            ("images_without_labels", "images without labels"),
        ):
            if match[key]:
                parts.append(f"{match[key]} {what} (e.g. {match['examples'][key]})")
        if match.get("limit") is not None:
            parts.append(f"limited to the first {match['limit']}")
        return "; ".join(parts)


def open_store(path: Path) -> LatentStore:
    """Open a finished store read-only; an unfinished or damaged one is a DataError saying what to do."""
    path = Path(path)
    meta = read_meta(path)
    if meta is None:
        raise DataError(f"{path} holds no encoded latents ({META_FILE} missing); run `latentlab encode` first")
    if not meta.get("complete"):
        raise DataError(
            f"latents in {path} are incomplete ({meta.get('done')} of {meta.get('count')} encoded); "
            "rerun `latentlab encode` with the same options to continue"
        )
    try:
        latents = MappedRows(path / LATENTS_FILE)
        ids = json.loads((path / IDS_FILE).read_text(encoding="utf-8"))
        labels = None
        if meta.get("attributes") is not None:
            values = np.load(path / LABELS_FILE)
            labels = pd.DataFrame(values, index=pd.Index(ids, name="image_id"), columns=meta["attributes"])
    except (OSError, ValueError, DataError) as exc:
        raise DataError(f"latent store {path} is damaged ({exc}); encode again with --force") from None
    if latents.shape != (meta["count"], meta["dim"]) or len(ids) != meta["count"]:
        raise DataError(f"latent store {path} is damaged (shape {latents.shape}); encode again with --force")
    return LatentStore(path, latents, ids, labels, meta)


def store_progress(path: Path) -> tuple[int, int] | None:
    """(rows encoded, rows in all) of the store in `path`, or None when it holds none."""
    with contextlib.suppress(LatentlabError):
        meta = read_meta(Path(path))
        if meta is not None:
            return int(meta.get("done", 0)), int(meta.get("count", 0))
    return None


def latent_chunks(
    latents: np.ndarray | MappedRows, *, rows: int | None = None, target_elements: int = 2**22
) -> Iterator[tuple[int, np.ndarray]]:
    """(start, float64 copy of the next rows) over (N, D) latents, `rows` (default: ~target_elements/D) at a time."""
    n, d = latents.shape
    step = rows or max(1, target_elements // max(d, 1))
    for lo in range(0, n, step):
        yield lo, np.asarray(latents[lo : lo + step], dtype=np.float64)


def read_meta(out_dir: Path) -> dict[str, Any] | None:
    """The store's meta.json, or None where there is none; another file of that name is an OutputError."""
    try:
        meta = json.loads((out_dir / META_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DataError(f"{out_dir / META_FILE} is unreadable ({exc}); encode again with --force") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise OutputError(f"{out_dir} holds a {META_FILE} that is not a latentlab latent store; choose another --out")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"latent store {out_dir} has format version {meta.get('format_version')}; encode again with --force"
        )
    return meta


def write_meta(out_dir: Path, meta: dict[str, Any]) -> None:
    """Replace the store's meta.json atomically."""
    atomic_write_text(out_dir / META_FILE, json.dumps(meta, indent=1) + "\n")


def clear_store(out_dir: Path) -> None:
    """Remove a store's own files (never anything else in the folder)."""
    for name in (META_FILE, LATENTS_FILE, PARTIAL_FILE, IDS_FILE, LABELS_FILE):
        with contextlib.suppress(FileNotFoundError):
            (out_dir / name).unlink()


def save_npy(path: Path, values: np.ndarray) -> None:
    """Write a small array (the labels) whole and atomically."""
    try:
        with atomic_path(path) as tmp:
            np.save(tmp, values)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def store_lock(out_dir: Path) -> contextlib.AbstractContextManager[None]:
    """An exclusive lock on the store folder, so two encoders never write the same rows."""
    return folder_lock(
        out_dir / LOCK_FILE,
        busy=f"another latentlab process is encoding into {out_dir}; wait for it or use another --out",
    )
