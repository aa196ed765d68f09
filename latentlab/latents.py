"""Batched encoding of image folders into a resumable latent store on disk.

A store is a folder:
- `latents.npy`: (N, D) float16 or float32, row i the latent of image `ids[i]`; `open_store` maps it
  read-only (while encoding it is `.latents.partial.npy`, renamed when every row is written);
- `ids.json`: the N image ids (paths relative to the image folder), in row order;
- `labels.npy`: (N, A) int8 in {-1, +1} aligned with the rows, when a label file was given;
- `meta.json`: model fingerprint, data key, dtype, D, N, attribute names, how the labels matched,
  and `done`, the number of rows written so far.

`done` is advanced (atomically, after an fsync of the rows) every few batches and when encoding stops
on an error or Ctrl-C, so rerunning with the same model and images continues where it stopped.
Memory stays flat: one batch of images and latents at a time, whatever N. Big arrays are read and
written through `NpyRows` (pread/pwrite) rather than memory maps, so not even file pages pile up in
the process's resident memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from latentlab.data.cache import IMAGES_FILE, ImageCache, prepare_cache
from latentlab.data.npyrows import NpyRows
from latentlab.errors import ConfigError, DataError, LatentlabError, OutputError
from latentlab.fileio import atomic_path, atomic_write_text, folder_lock
from latentlab.flow.glow import Glow, evaluating
from latentlab.progress import progress_bar

FORMAT = "latentlab-latents"
FORMAT_VERSION = 1
DTYPES = ("float16", "float32")
LATENTS_FILE, PARTIAL_FILE = "latents.npy", ".latents.partial.npy"
IDS_FILE, LABELS_FILE, META_FILE, LOCK_FILE = "ids.json", "labels.npy", "meta.json", ".lock"
CHECKPOINT_EVERY = 8  # batches between progress records (fsync + meta.json)
_FLOAT16_MAX = float(np.finfo(np.float16).max)

__all__ = ["DTYPES", "LatentStore", "NpyRows", "default_image_folder", "encode_images", "encode_to_store",
           "latent_chunks", "open_store", "store_progress"]  # fmt: skip


@dataclass(frozen=True)
class LatentStore:
    """An opened store: `latents` is a read-only (N, D) memmap; `labels` (N, A) int8 ±1 or None."""

    path: Path
    latents: np.ndarray = field(repr=False)
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
        for key, what in (("labels_without_image", "label rows without an image"),
                          ("images_without_labels", "images without labels")):  # fmt: skip
            if match[key]:
                parts.append(f"{match[key]} {what} (e.g. {match['examples'][key]})")
        if match.get("limit") is not None:
            parts.append(f"limited to the first {match['limit']}")
        return "; ".join(parts)


def default_image_folder(labels: Path) -> Path:
    """The images next to a label file: Kaggle's img_align_celeba/img_align_celeba/, else img_align_celeba/, else
    the label file's own folder (searched recursively, matched by file name)."""
    parent = Path(labels).parent
    for candidate in (parent / "img_align_celeba" / "img_align_celeba", parent / "img_align_celeba"):
        if candidate.is_dir():
            return candidate
    return parent


def encode_images(
    model: Glow,
    images: ImageCache | np.ndarray,
    *,
    rows: np.ndarray | None = None,
    start: int = 0,
    batch_size: int = 64,
    progress: bool = True,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Encode uint8 images (N, 3, S, S) batch by batch -> (position, z (B, D) on the CPU, model dtype).

    `rows` picks (and orders) the images to encode; positions count along `rows` from `start`.
    Pixels go through `model.preprocess` (bin centres, no noise), on the model's device, in eval mode
    under inference_mode (entered per batch, so the caller's code never runs inside it).
    """
    reader = NpyRows(images.path / IMAGES_FILE) if isinstance(images, ImageCache) else None
    array = reader if reader is not None else images
    size = model.config.image_size
    try:
        if len(array.shape) != 4 or tuple(array.shape[1:]) != (3, size, size) or array.dtype != np.uint8:
            raise ConfigError(
                f"images are {array.dtype} {tuple(array.shape)}; this model needs uint8 (N, 3, {size}, {size})"
            )
        if batch_size < 1:
            raise ConfigError(f"batch size {batch_size} must be at least 1")
        n = len(array) if rows is None else len(rows)
        with progress_bar("encode", n - start, enabled=progress) as advance:
            for lo in range(start, n, batch_size):
                hi = min(n, lo + batch_size)
                batch = array[lo:hi] if rows is None else array[np.asarray(rows[lo:hi])]
                x8 = torch.from_numpy(batch if reader is not None else np.array(batch))  # a writable copy
                with evaluating(model):
                    z = model.encode(model.preprocess(x8)).cpu()
                if not torch.isfinite(z).all():
                    raise DataError(
                        f"the model gave NaN or inf latents for images {lo}..{hi - 1}; the checkpoint is broken"
                    )
                yield lo, z
                advance(hi - lo)
    finally:
        if reader is not None:
            reader.close()


def encode_to_store(
    model: Glow,
    folder: Path,
    out_dir: Path,
    *,
    dtype: str = "float16",
    batch_size: int = 64,
    labels: Path | pd.DataFrame | None = None,
    limit: int | None = None,
    force: bool = False,
    progress: bool = True,
    workers: int = 2,
    model_name: str | None = None,
) -> LatentStore:
    """Encode the images under `folder` (only those with a label row when `labels` is given) into `out_dir`.

    Rerunning with the same model, images, labels, limit and dtype continues an interrupted run; a
    finished store is returned as it is. A store made with anything else is refused unless `force`.
    """
    from latentlab.checkpoint import model_fingerprint

    if dtype not in DTYPES:
        raise ConfigError(f"latent dtype {dtype!r} is not supported; choose {' or '.join(DTYPES)}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit {limit} must be at least 1")
    out_dir = Path(out_dir)
    if labels is not None and not isinstance(labels, pd.DataFrame):
        from latentlab.data.labels import load_labels

        source, labels = str(labels), load_labels(Path(labels))  # a bad label file fails before any decoding
        labels.attrs["source"] = source
    cache = prepare_cache(Path(folder), model.config.image_size, workers=workers, progress=progress)
    rows, ids, label_table, match = _select_rows(cache, folder, labels, limit)
    identity = {
        "fingerprint": model_fingerprint(model),
        "data_key": cache.key,
        "dtype": dtype,
        "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
    }
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, **identity, "model": model_name,
        "source": str(Path(folder).resolve()), "dim": model.latent_dim, "count": len(ids), "done": 0,
        "complete": False, "attributes": None if label_table is None else list(label_table.columns), "match": match,
    }  # fmt: skip
    with _store_lock(out_dir):
        array, complete = (None, False) if force else _resume(out_dir, _read_meta(out_dir), identity, meta)
        if array is None and not complete:
            _clear(out_dir)
            shape = (len(ids), meta["dim"])
            array = NpyRows.create(out_dir / PARTIAL_FILE, dtype=dtype, shape=shape)
            atomic_write_text(out_dir / IDS_FILE, json.dumps(ids) + "\n")
        if label_table is not None:
            _save_npy(out_dir / LABELS_FILE, label_table.to_numpy(dtype=np.int8))
        start = int(meta["done"])
        if complete:
            atomic_write_text(out_dir / META_FILE, json.dumps(meta, indent=1) + "\n")
        else:
            try:
                _write_rows(model, cache, rows, array, meta, out_dir, batch_size=batch_size, progress=progress)
                array.sync()
            finally:
                array.close()
            _finish(out_dir, meta)
    store = open_store(out_dir)
    return LatentStore(store.path, store.latents, store.ids, store.labels, store.meta, start, len(ids) - start)


def open_store(path: Path) -> LatentStore:
    """Open a finished store read-only; an unfinished or damaged one is a DataError saying what to do."""
    path = Path(path)
    meta = _read_meta(path)
    if meta is None:
        raise DataError(f"{path} holds no encoded latents ({META_FILE} missing); run `latentlab encode` first")
    if not meta.get("complete"):
        raise DataError(
            f"latents in {path} are incomplete ({meta.get('done')} of {meta.get('count')} encoded); "
            "rerun `latentlab encode` with the same options to continue"
        )
    try:
        latents = np.load(path / LATENTS_FILE, mmap_mode="r")
        ids = json.loads((path / IDS_FILE).read_text(encoding="utf-8"))
        labels = None
        if meta.get("attributes") is not None:
            values = np.load(path / LABELS_FILE, mmap_mode="r")
            labels = pd.DataFrame(np.asarray(values), index=pd.Index(ids, name="image_id"), columns=meta["attributes"])
    except (OSError, ValueError) as exc:
        raise DataError(f"latent store {path} is damaged ({exc}); encode again with --force") from None
    if latents.shape != (meta["count"], meta["dim"]) or len(ids) != meta["count"]:
        raise DataError(f"latent store {path} is damaged (shape {latents.shape}); encode again with --force")
    return LatentStore(path, latents, ids, labels, meta)


def store_progress(path: Path) -> tuple[int, int] | None:
    """(rows encoded, rows in all) of the store in `path`, or None when it holds none."""
    with contextlib.suppress(LatentlabError):
        meta = _read_meta(Path(path))
        if meta is not None:
            return int(meta.get("done", 0)), int(meta.get("count", 0))
    return None


def _select_rows(
    cache: ImageCache, folder: Path, labels: Path | pd.DataFrame | None, limit: int | None
) -> tuple[np.ndarray | None, list[str], pd.DataFrame | None, dict[str, Any] | None]:
    """(cache rows to encode or None for all, their ids, aligned labels or None, match report or None)."""
    if labels is None:
        n = len(cache) if limit is None else min(limit, len(cache))
        return (None if n == len(cache) else np.arange(n)), list(cache.names[:n]), None, None
    from latentlab.data.labels import load_labels, match_labels

    if isinstance(labels, pd.DataFrame):
        table, source = labels, labels.attrs.get("source", "the labels")
    else:
        table, source = load_labels(Path(labels)), str(labels)
    match = match_labels(table, cache.names)
    if len(match) == 0:
        raise DataError(
            f"none of the {len(cache)} images in {folder} has a row in {source} "
            f"(e.g. image {cache.names[0]!r}, label row {str(table.index[0])!r}); check --images and --labels"
        )
    n = len(match) if limit is None else min(limit, len(match))
    report = {
        "labels_file": source,
        "matched": len(match),
        "labels_without_image": len(match.labels_without_image),
        "images_without_labels": len(match.images_without_labels),
        "examples": {
            "labels_without_image": match.labels_without_image[0] if match.labels_without_image else None,
            "images_without_labels": match.images_without_labels[0] if match.images_without_labels else None,
        },
        "limit": None if n == len(match) else n,
    }
    return match.indices[:n], [str(i) for i in match.labels.index[:n]], match.labels.iloc[:n], report


def _resume(
    out_dir: Path, old: dict[str, Any] | None, identity: dict[str, Any], meta: dict[str, Any]
) -> tuple[NpyRows | None, bool]:
    """(partial array to continue or None, whether the store is already complete); sets meta['done']."""
    if old is None:
        return None, False
    differs = [key for key, value in identity.items() if old.get(key) != value]
    if differs:
        what = {"fingerprint": "model", "data_key": "image folder (or its files changed)", "dtype": "dtype",
                "ids_sha256": "set of images (labels or --limit differ)"}[differs[0]]  # fmt: skip
        raise OutputError(
            f"{out_dir} holds latents made with another {what}; pass --force to start over or choose another --out"
        )
    partial, final = out_dir / PARTIAL_FILE, out_dir / LATENTS_FILE
    if final.exists() and not partial.exists() and (old.get("complete") or old.get("done") == meta["count"]):
        meta.update(done=meta["count"], complete=True)  # also a run killed between the rename and the last meta
        return None, True
    try:
        array = NpyRows(partial, write=True)
    except (OSError, DataError):
        return None, False
    if array.shape != (meta["count"], meta["dim"]) or array.dtype != np.dtype(meta["dtype"]):
        array.close()
        return None, False
    meta["done"] = min(int(old.get("done", 0)), meta["count"])
    return array, False


def _write_rows(
    model: Glow, cache: ImageCache, rows: np.ndarray | None, array: NpyRows, meta: dict[str, Any], out_dir: Path,
    *, batch_size: int, progress: bool,
) -> None:  # fmt: skip
    """Encode from meta['done'] on into `array`, recording progress every CHECKPOINT_EVERY batches and on errors."""
    atomic_write_text(out_dir / META_FILE, json.dumps(meta, indent=1) + "\n")
    batches = 0
    try:
        for lo, z in encode_images(model, cache, rows=rows, start=int(meta["done"]), batch_size=batch_size,
                                   progress=progress):  # fmt: skip
            values = z.numpy()
            if array.dtype == np.float16 and np.abs(values).max() > _FLOAT16_MAX:
                raise DataError(f"latents of images {lo}..{lo + len(values) - 1} overflow float16; use --dtype float32")
            array.write(lo, values)
            meta["done"] = lo + len(values)
            batches += 1
            if batches % CHECKPOINT_EVERY == 0:
                _record(array, meta, out_dir)
    except BaseException:
        with contextlib.suppress(OSError, LatentlabError):
            _record(array, meta, out_dir)  # keep what was written: the next run continues from here
        raise


def _record(array: NpyRows, meta: dict[str, Any], out_dir: Path) -> None:
    """Make the rows written so far durable, then (only then) advance `done` on disk."""
    array.sync()
    atomic_write_text(out_dir / META_FILE, json.dumps(meta, indent=1) + "\n")


def _finish(out_dir: Path, meta: dict[str, Any]) -> None:
    """Rename the complete (synced) array to latents.npy, then mark the store complete."""
    os.replace(out_dir / PARTIAL_FILE, out_dir / LATENTS_FILE)
    meta["complete"] = True
    atomic_write_text(out_dir / META_FILE, json.dumps(meta, indent=1) + "\n")


def _read_meta(out_dir: Path) -> dict[str, Any] | None:
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


def _clear(out_dir: Path) -> None:
    """Remove a store's own files (never anything else in the folder)."""
    for name in (META_FILE, LATENTS_FILE, PARTIAL_FILE, IDS_FILE, LABELS_FILE):
        with contextlib.suppress(FileNotFoundError):
            (out_dir / name).unlink()


def _save_npy(path: Path, values: np.ndarray) -> None:
    try:
        with atomic_path(path) as tmp:
            np.save(tmp, values)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def _store_lock(out_dir: Path) -> contextlib.AbstractContextManager[None]:
    """An exclusive lock on the store folder, so two encoders never write the same rows."""
    return folder_lock(
        out_dir / LOCK_FILE,
        busy=f"another latentlab process is encoding into {out_dir}; wait for it or use another --out",
    )


def latent_chunks(
    latents: np.ndarray | NpyRows, *, rows: int | None = None, target_elements: int = 2**22
) -> Iterator[tuple[int, np.ndarray]]:
    """(start, float64 copy of the next rows) over (N, D) latents, `rows` (default: ~target_elements/D) at a time."""
    n, d = latents.shape
    step = rows or max(1, target_elements // max(d, 1))
    for lo in range(0, n, step):
        yield lo, np.asarray(latents[lo : lo + step], dtype=np.float64)
