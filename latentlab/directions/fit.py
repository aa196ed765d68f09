"""Attribute directions from labeled faces: encode once, stream the sums, fit, condition, save, report.

`fit_directions` is the maths on an (N, D) latent array (in memory or memory-mapped) and its (N, A)
labels, read in chunks so memory never grows with N. `compute_attribute_vectors` is the pipeline
behind `latentlab attribute-vectors`: defaults, the image cache, one encoding pass into a float16
latent store on disk, the fit, the direction file and the report files.

Every method gives v = u · ((mean(z | +1) - mean(z | -1)) · u) for its unit direction u, so alpha = 1
moves an average negative's projection on u to an average positive's; for the mean difference
(Glow paper) this is exactly v = mean(z | +1) - mean(z | -1).
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentlab.data.mapped_rows import MappedRows
from latentlab.directions.maths import (
    AttributeSums,
    ProjectionStats,
    cosine_matrix,
    logistic_directions,
    orthogonalize,
    save_directions,
)
from latentlab.errors import ConfigError, DataError, OutputError
from latentlab.latents import DTYPES, latent_chunks
from latentlab.progress import progress_bar

METHODS = ("mean-diff", "logistic")
LOGISTIC_MEMORY = 2**30  # bytes of float32 latents the classifiers may hold at once
_TINY = 1e-6  # a direction shorter than this (relative) after conditioning lies in the conditions' span

__all__ = ["METHODS", "AttributeResult", "Directions", "compute_attribute_vectors", "fit_directions"]


@dataclass(frozen=True)
class Directions:
    """Fitted directions: `vectors[name]` (D,) float64 for every attribute that was not skipped."""

    names: list[str]  # every attribute asked for, in order
    vectors: dict[str, torch.Tensor]
    pos_counts: np.ndarray  # (A,) int64, aligned with names
    neg_counts: np.ndarray  # (A,) int64
    skipped: dict[str, str]  # name -> reason
    probe_accuracy: dict[str, float]  # held-out accuracy of a threshold on z·v/|v|
    latent_std: dict[str, float]  # std of z·v/|v| over every encoded face (for --units sigma)
    classifier_accuracy: dict[str, float] = field(default_factory=dict)  # logistic only, held out
    fitted_rows: int | None = None  # rows the classifiers were fitted on (logistic only)


def fit_directions(
    latents: np.ndarray | MappedRows,
    labels: np.ndarray,
    names: Sequence[str],
    *,
    method: str = "mean-diff",
    orthogonal_to: Sequence[str] = (),
    min_count: int = 10,
    seed: int = 0,
    max_samples: int = 5000,
    chunk_rows: int | None = None,
    progress: bool = False,
) -> Directions:
    """Directions for `names` from latents (N, D) (an array, memmap or `MappedRows`) and labels (N, A) int8
    in {-1, +1} (0 = unknown).

    Pass 1 streams float64 sums per attribute and class (`AttributeSums`); `logistic` then fits one
    classifier per attribute on a seeded random subset of at most `max_samples` rows. Attributes with
    fewer than `min_count` positives or negatives are skipped with a reason. Each attribute not in
    `orthogonal_to` loses its projection on the span of those conditions (which stay as they are).
    Pass 2 projects every z on the final unit directions for the probe accuracy and the spread.
    """
    names = list(names)
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose {' or '.join(METHODS)}")
    missing = [c for c in orthogonal_to if c not in names]
    if missing:
        raise ConfigError(f"cannot condition on {missing[0]!r}: it is not among the attributes computed")
    n, dim = latents.shape
    labels = np.asarray(labels, dtype=np.int8)
    if labels.shape != (n, len(names)):
        raise DataError(f"labels have shape {labels.shape}; expected ({n}, {len(names)}) to match the latents")

    sums = AttributeSums(names, dim)
    with progress_bar("sums", n, enabled=progress, unit="z") as advance:
        for lo, z in latent_chunks(latents, rows=chunk_rows):
            sums.update(z, labels[lo : lo + len(z)])
            advance(len(z))
    skipped = sums.skipped(min_count)
    mean_diff = sums.mean_diff()  # (A, D)
    index = {name: a for a, name in enumerate(names)}

    units: dict[str, torch.Tensor] = {}
    classifier: dict[str, float] = {}
    fitted_rows = None
    if method == "mean-diff":
        for name in names:
            if name not in skipped:
                units[name] = mean_diff[index[name]]
    else:
        fitted_rows = _fit_logistic(latents, labels, names, skipped, units, classifier, seed, max_samples, min_count)

    for name, u in list(units.items()):
        if u.norm() == 0 or not torch.isfinite(u).all():
            skipped[name] = "the direction is zero"
            del units[name]
    conditions = list(orthogonal_to)
    for c in conditions:
        if c in skipped:
            raise DataError(f"cannot make directions orthogonal to {c}: it was skipped ({skipped[c]})")
    if conditions:
        basis = torch.stack([units[c] / units[c].norm() for c in conditions])
        for name in [m for m in units if m not in conditions]:
            u = units[name] / units[name].norm()
            rest = orthogonalize(u, basis)
            if rest.norm() < _TINY:
                skipped[name] = f"its direction lies in the span of {', '.join(conditions)}"
                del units[name]
            else:
                units[name] = rest

    vectors = {}
    for name in names:
        if name in units:
            u = units[name] / units[name].norm()
            vectors[name] = u * (mean_diff[index[name]] @ u)
            if vectors[name].norm() == 0:
                skipped[name] = "positives and negatives have the same mean along its direction"
                del vectors[name]
    probe, spread = _second_pass(latents, labels, names, vectors, chunk_rows=chunk_rows, seed=seed, progress=progress)
    return Directions(
        names=names,
        vectors=vectors,
        pos_counts=sums.pos_counts.copy(),
        neg_counts=sums.neg_counts.copy(),
        skipped={name: skipped[name] for name in names if name in skipped},
        probe_accuracy=probe,
        latent_std=spread,
        classifier_accuracy=classifier,
        fitted_rows=fitted_rows,
    )


def _fit_logistic(
    latents: np.ndarray | MappedRows, labels: np.ndarray, names: list[str], skipped: dict[str, str],
    units: dict[str, torch.Tensor], classifier: dict[str, float], seed: int, max_samples: int, min_count: int,
) -> int:  # fmt: skip
    """Fit a classifier per attribute not yet skipped on a random row subset; fill `units`, return the rows used."""
    n, dim = latents.shape
    rows = int(min(max_samples, n, max(1, LOGISTIC_MEMORY // (4 * dim))))
    subset = np.sort(np.random.default_rng(seed).choice(n, size=rows, replace=False))
    z = np.asarray(latents[subset], dtype=np.float32)  # (rows, D)
    todo = [a for a, name in enumerate(names) if name not in skipped]
    if not todo:
        return rows
    fit_names = [names[a] for a in todo]
    dirs, acc, too_few = logistic_directions(
        z, labels[subset][:, todo], attrs=fit_names, seed=seed, max_samples=rows, min_count=min_count
    )
    skipped.update(too_few)
    for i, name in enumerate(fit_names):
        if name not in too_few:
            units[name] = dirs[i]
            if math.isfinite(acc[i]):
                classifier[name] = float(acc[i])
    return rows


def _second_pass(
    latents: np.ndarray | MappedRows, labels: np.ndarray, names: list[str], vectors: dict[str, torch.Tensor], *,
    chunk_rows: int | None, seed: int, progress: bool,
) -> tuple[dict[str, float], dict[str, float]]:  # fmt: skip
    """Probe accuracy and spread of every image's projection on each final direction."""
    kept = [a for a, name in enumerate(names) if name in vectors]
    if not kept:
        return {}, {}
    stats = ProjectionStats(torch.stack([vectors[names[a]] for a in kept]))
    with progress_bar("projections", len(latents), enabled=progress, unit="z") as advance:
        for lo, z in latent_chunks(latents, rows=chunk_rows):
            stats.update(z, labels[lo : lo + len(z)][:, kept])
            advance(len(z))
    accuracy, std = stats.probe_accuracies(seed=seed), stats.std()
    return (
        {names[a]: float(accuracy[i]) for i, a in enumerate(kept)},
        {names[a]: float(std[i]) for i, a in enumerate(kept)},
    )


@dataclass(frozen=True)
class AttributeResult:
    """What `attribute-vectors` made: the direction file, the report files and their rows."""

    path: Path
    report: dict[str, Path]
    rows: list[dict[str, Any]]
    directions: Directions = field(repr=False)
    model: Path
    images: Path
    labels: Path
    method: str
    fingerprint: str
    images_used: int
    labels_without_image: int
    images_without_labels: int
    match_summary: str


def compute_attribute_vectors(
    *,
    labels_path: Path,
    model_path: Path | None = None,
    images: Path | None = None,
    out: Path | None = None,
    attrs: Sequence[str] | None = None,
    method: str = "mean-diff",
    orthogonal_to: Sequence[str] = (),
    limit: int | None = None,
    batch_size: int = 64,
    min_count: int = 10,
    seed: int = 0,
    max_samples: int = 5000,
    latents: Path | None = None,
    latent_dtype: str = "float16",
    device: str | torch.device = "cpu",
    workers: int = 2,
    progress: bool = True,
) -> AttributeResult:
    """Compute one direction per attribute and write `out` (default attributes/<model name>.safetensors).

    Defaults: the last trained model; the images next to the label file; every attribute in it.
    Conditions in `orthogonal_to` are computed too. Latents go to a temporary store on disk (float16,
    under the cache folder) unless `latents` names a folder to keep them in (and to resume from).
    The report lands beside `out`: `<stem>-report.json`, `-report.csv`, `-report-cosine.png`.
    """
    from latentlab.checkpoint import load_model, resolve_model_path
    from latentlab.data.labels import check_attributes, load_labels
    from latentlab.fileio import check_output_path, ensure_parent
    from latentlab.latents import default_image_folder, encode_to_store
    from latentlab.paths import default_vectors_path, last_trained_model

    _check_options(method=method, min_count=min_count, limit=limit, batch_size=batch_size,
                   max_samples=max_samples, latent_dtype=latent_dtype)  # fmt: skip
    labels_path = Path(labels_path)
    table = load_labels(labels_path)
    table.attrs["source"] = str(labels_path)
    known = list(table.columns)
    names = check_attributes(list(attrs) if attrs else known, known)
    conditions = check_attributes(list(dict.fromkeys(orthogonal_to)), known)
    names = list(dict.fromkeys(names)) + [c for c in conditions if c not in names]
    model_path = Path(model_path) if model_path is not None else last_trained_model()
    out = Path(out) if out is not None else default_vectors_path(model_path)
    if out.suffix != ".safetensors":
        raise OutputError(f"--out {out} must end in .safetensors")
    report_stem = out.with_name(out.stem + "-report")
    for target in (out, *(report_stem.with_name(report_stem.name + end) for end in (".json", ".csv", "-cosine.png"))):
        check_output_path(target, [labels_path, resolve_model_path(model_path)])
    ensure_parent(out)
    model = load_model(model_path, device=device)
    images = Path(images) if images is not None else default_image_folder(labels_path)

    with _latent_folder(latents) as folder:
        store = encode_to_store(
            model, images, folder, dtype=latent_dtype, batch_size=batch_size, labels=table, limit=limit,
            progress=progress, workers=workers, model_name=str(model_path),
        )  # fmt: skip
        fit = fit_directions(
            store.latents, store.labels[names].to_numpy(dtype=np.int8), names, method=method,
            orthogonal_to=conditions, min_count=min_count, seed=seed, max_samples=max_samples, progress=progress,
        )  # fmt: skip
        fingerprint, used, match, summary = store.fingerprint, len(store), store.meta["match"], store.match_summary()
        del store  # release the memmap before a temporary folder goes

    computed = [n for n in names if n in fit.vectors]
    if not computed:
        first = next(iter(fit.skipped.items()))
        raise DataError(
            f"no attribute can get a direction from {used} labeled images ({first[0]}: {first[1]}); "
            "use more images or a smaller --min-count"
        )
    probe = {n: _number(fit.probe_accuracy.get(n)) for n in computed}
    classifier = {n: _number(fit.classifier_accuracy.get(n)) for n in computed} if method == "logistic" else None
    about = {
        "model": str(model_path), "fingerprint": fingerprint, "images": str(images), "labels": str(labels_path),
        "method": method, "orthogonal_to": conditions, "images_used": used,
        "labels_without_image": match["labels_without_image"], "images_without_labels": match["images_without_labels"],
        "min_count": min_count, "seed": seed, "latent_dtype": latent_dtype, "logistic_rows": fit.fitted_rows,
    }  # fmt: skip
    path = save_directions(
        out,
        vectors={n: fit.vectors[n] for n in computed},
        pos_counts={n: int(c) for n, c in zip(names, fit.pos_counts, strict=True) if n in fit.vectors},
        neg_counts={n: int(c) for n, c in zip(names, fit.neg_counts, strict=True) if n in fit.vectors},
        method=method,
        model_fingerprint=fingerprint,
        latent_std={n: fit.latent_std[n] for n in computed},
        extra={**about, "probe_accuracy": probe, "classifier_accuracy": classifier, "skipped": fit.skipped},
    )
    rows = _rows(fit, classifier)
    cosine = cosine_matrix(torch.stack([fit.vectors[n] for n in computed]))
    from latentlab.directions.report import write_report

    report = write_report(report_stem, rows, cosine=cosine, cosine_names=computed, meta=about)
    return AttributeResult(
        path=path, report=report, rows=rows, directions=fit, model=model_path, images=images, labels=labels_path,
        method=method, fingerprint=fingerprint, images_used=used,
        labels_without_image=match["labels_without_image"], images_without_labels=match["images_without_labels"],
        match_summary=summary,
    )  # fmt: skip


def _rows(fit: Directions, classifier: dict[str, float | None] | None) -> list[dict[str, Any]]:
    from latentlab.directions.report import report_rows

    norms = {n: float(fit.vectors[n].norm()) if n in fit.vectors else math.nan for n in fit.names}
    rows = report_rows(fit.names, fit.pos_counts, fit.neg_counts, norms, accuracy=fit.probe_accuracy,
                       skipped=fit.skipped)  # fmt: skip
    if classifier is not None:
        for row in rows:
            row["classifier_accuracy"] = classifier.get(row["attribute"])
    return rows


def _number(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _check_options(
    *, method: str, min_count: int, limit: int | None, batch_size: int, max_samples: int, latent_dtype: str
) -> None:
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose {' or '.join(METHODS)}")
    if min_count < 2:
        raise ConfigError(f"min count {min_count} must be at least 2 (a probe needs a positive and a negative)")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit {limit} must be at least 1")
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size} must be at least 1")
    if max_samples < 4:
        raise ConfigError(f"max samples {max_samples} must be at least 4")
    if latent_dtype not in DTYPES:
        raise ConfigError(f"latent dtype {latent_dtype!r} is not supported; choose {' or '.join(DTYPES)}")


@contextlib.contextmanager
def _latent_folder(latents: Path | None) -> Iterator[Path]:
    """The folder to encode into: the one given (kept), else a temporary one under the cache folder (removed)."""
    if latents is not None:
        yield Path(latents)
        return
    from latentlab.data.cache import cache_root

    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {root}: {exc.strerror or exc}; set LATENTLAB_CACHE_DIR") from None
    with tempfile.TemporaryDirectory(prefix="latents-", dir=root) as tmp:
        yield Path(tmp)
