"""Batched encoding of image folders into a resumable latent store (the files: see `latents.store`).

`done` in meta.json is advanced (atomically, after an fsync of the rows) every few batches and when
encoding stops on an error or Ctrl-C, so rerunning with the same model and images continues where it
stopped. Memory stays flat: one batch of images and latents at a time, whatever N, read from the
image cache and written to the store through short-lived maps (`MappedRows`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from latentlab.data.cache import IMAGES_FILE, ImageCache, prepare_cache
from latentlab.data.mapped_rows import MappedRows
from latentlab.errors import ConfigError, DataError, LatentlabError, OutputError
from latentlab.fileio import atomic_write_text
from latentlab.flow.glow import Glow, evaluating
from latentlab.latents.likelihood import FitReport, Reference, fit_images
from latentlab.latents.store import (
    DTYPES,
    FORMAT,
    FORMAT_VERSION,
    IDS_FILE,
    LABELS_FILE,
    LATENTS_FILE,
    PARTIAL_FILE,
    LatentStore,
    clear_store,
    open_store,
    read_meta,
    save_npy,
    store_lock,
    write_meta,
)
from latentlab.progress import progress_bar

CHECKPOINT_EVERY = 8  # batches between progress records (fsync + meta.json)
FIT_SAMPLE = 128  # images whose bits/dim `encode` reports by default
_FLOAT16_MAX = float(np.finfo(np.float16).max)


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
    mirror: bool = False,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Encode uint8 images (N, 3, S, S) batch by batch -> (position, z (B, D) on the CPU, model dtype).

    `rows` picks (and orders) the images to encode; positions count along `rows` from `start`.
    `mirror` encodes each image's left-right mirror image instead.
    Pixels go through `model.preprocess` (bin centres, no noise), on the model's device, in eval mode
    under inference_mode (entered per batch, so the caller's code never runs inside it).
    """
    array = MappedRows(images.path / IMAGES_FILE) if isinstance(images, ImageCache) else images
    size = model.config.image_size
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
            x8 = torch.from_numpy(batch if isinstance(array, MappedRows) else np.array(batch))  # a writable copy
            if mirror:
                x8 = x8.flip(-1)
            with evaluating(model):
                z = model.encode(model.preprocess(x8)).cpu()
            if not torch.isfinite(z).all():
                raise DataError(
                    f"the model gave NaN or inf latents for images {lo}..{hi - 1}; the checkpoint is broken"
                )
            yield lo, z
            advance(hi - lo)


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
    mirror: bool = False,
) -> LatentStore:
    """Encode the images under `folder` (only those with a label row when `labels` is given) into `out_dir`.

    Rerunning with the same model, images, labels, limit, dtype and `mirror` (the images' left-right
    mirror images encoded instead) continues an interrupted run; a finished store is returned as it is.
    A store made with anything else is refused unless `force`.
    """
    store, _, _ = _encode_store(
        model,
        folder,
        out_dir,
        dtype=dtype,
        batch_size=batch_size,
        labels=labels,
        limit=limit,
        force=force,
        progress=progress,
        workers=workers,
        model_name=model_name,
        mirror=mirror,
    )
    return store


def encode_and_fit(
    model: Glow, folder: Path, out_dir: Path, *, sample: int = FIT_SAMPLE, reference: Reference | None = None, **options
) -> tuple[LatentStore, FitReport | None]:
    """`encode_to_store` (same `options`), then the bits/dim and reconstruction PSNR of `sample` of its images.

    The sample is spread evenly over the store (all of it when smaller) and encoded again in the model's
    own precision, so the write path keeps its speed whatever the folder's size. `sample=0`: no figures.
    """
    store, cache, rows = _encode_store(model, folder, out_dir, **options)
    if sample < 1 or len(store) == 0:
        return store, None
    picks = np.unique(np.linspace(0, len(store) - 1, min(sample, len(store))).round().astype(np.int64))
    cache_rows = picks if rows is None else np.asarray(rows)[picks]
    batch = int(options.get("batch_size", 64))
    z = torch.cat([z for _, z in encode_images(model, cache, rows=cache_rows, batch_size=batch, progress=False)])
    images = torch.from_numpy(np.ascontiguousarray(MappedRows(cache.path / IMAGES_FILE)[cache_rows]))
    fits = fit_images(model, images, z, [store.ids[i] for i in picks], batch_size=batch)
    return store, FitReport(tuple(fits), reference)


def _encode_store(
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
    mirror: bool = False,
) -> tuple[LatentStore, ImageCache, np.ndarray | None]:
    """`encode_to_store`, also returning the image cache and the cache rows encoded (None: all, in order)."""
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
        "mirror": bool(mirror),
    }
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **identity,
        "model": model_name,
        "source": str(Path(folder).resolve()),
        "dim": model.latent_dim,
        "count": len(ids),
        "done": 0,
        "complete": False,
        "attributes": None if label_table is None else list(label_table.columns),
        "match": match,
    }
    with store_lock(out_dir):
        array, complete = (None, False) if force else _resume(out_dir, read_meta(out_dir), identity, meta)
        if array is None and not complete:
            clear_store(out_dir)
            shape = (len(ids), meta["dim"])
            array = MappedRows.create(out_dir / PARTIAL_FILE, dtype=dtype, shape=shape)
            atomic_write_text(out_dir / IDS_FILE, json.dumps(ids) + "\n")
        if label_table is not None:
            save_npy(out_dir / LABELS_FILE, label_table.to_numpy(dtype=np.int8))
        start = int(meta["done"])
        if complete:
            write_meta(out_dir, meta)
        else:
            _write_rows(
                model, cache, rows, array, meta, out_dir, batch_size=batch_size, progress=progress, mirror=mirror
            )
            array.sync()
            _finish(out_dir, meta)
    store = open_store(out_dir)
    opened = LatentStore(store.path, store.latents, store.ids, store.labels, store.meta, start, len(ids) - start)
    return opened, cache, rows


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
) -> tuple[MappedRows | None, bool]:
    """(partial array to continue or None, whether the store is already complete); sets meta['done']."""
    if old is None:
        return None, False
    # stores written before mirroring existed have no "mirror" key: they hold the images as they are
    differs = [key for key, value in identity.items() if old.get(key, False if key == "mirror" else None) != value]
    if differs:
        what = {
            "fingerprint": "model",
            "data_key": "image folder (or its files changed)",
            "dtype": "dtype",
            "ids_sha256": "set of images (labels or --limit differ)",
            "mirror": "choice of mirroring (--mirror)",
        }[differs[0]]
        raise OutputError(
            f"{out_dir} holds latents made with another {what}; pass --force to start over or choose another --out"
        )
    partial, final = out_dir / PARTIAL_FILE, out_dir / LATENTS_FILE
    if final.exists() and not partial.exists() and (old.get("complete") or old.get("done") == meta["count"]):
        meta.update(done=meta["count"], complete=True)  # also a run killed between the rename and the last meta
        return None, True
    try:
        array = MappedRows(partial)
    except DataError:
        return None, False
    if array.shape != (meta["count"], meta["dim"]) or array.dtype != np.dtype(meta["dtype"]):
        return None, False
    meta["done"] = min(int(old.get("done", 0)), meta["count"])
    return array, False


def _write_rows(
    model: Glow,
    cache: ImageCache,
    rows: np.ndarray | None,
    array: MappedRows,
    meta: dict[str, Any],
    out_dir: Path,
    *,
    batch_size: int,
    progress: bool,
    mirror: bool = False,
) -> None:
    """Encode from meta['done'] on into `array`, recording progress every CHECKPOINT_EVERY batches and on errors."""
    write_meta(out_dir, meta)
    batches = 0
    try:
        for lo, z in encode_images(
            model, cache, rows=rows, start=int(meta["done"]), batch_size=batch_size, progress=progress, mirror=mirror
        ):
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


def _record(array: MappedRows, meta: dict[str, Any], out_dir: Path) -> None:
    """Make the rows written so far durable, then (only then) advance `done` on disk."""
    array.sync()
    write_meta(out_dir, meta)


def _finish(out_dir: Path, meta: dict[str, Any]) -> None:
    """Rename the complete (synced) array to latents.npy, then mark the store complete."""
    os.replace(out_dir / PARTIAL_FILE, out_dir / LATENTS_FILE)
    meta["complete"] = True
    write_meta(out_dir, meta)
