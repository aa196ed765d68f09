"""Fitting attribute directions in one streaming pass over an (N, D) latent array and its (N, A) labels.

The latents are read in chunks (in memory, memory-mapped or `MappedRows`), so memory never grows with N.
A seeded random share of the rows is held out: every direction is fitted on the rest (pass 1 streams
per-attribute class sums, `AttributeSums`, which the shrunk mean difference also takes its standard
errors from; the logistic method fits its classifiers on a bounded random
subset of the training rows); pass 2 projects every z on the final directions (`ProjectionStats`) for
the probe (threshold fitted on training rows, scored on held-out ones) and the spread behind --units sigma.

Every method gives v = u · ((mean(z | +1) - mean(z | -1)) · u) for its unit direction u, so alpha = 1
moves an average negative's projection on u to an average positive's; for the mean difference
(Glow paper) this is exactly v = mean(z | +1) - mean(z | -1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from latentlab.data.mapped_rows import MappedRows
from latentlab.directions.file import DirectionSet
from latentlab.directions.maths import (
    DEFAULT_SHRINK,
    condition_directions,
    finite_or_none,
    logistic_directions,
    scale_to_class_gap,
    shrink_mean_diff,
)
from latentlab.directions.probe import DEFAULT_HELD_OUT, ProbeScore, check_held_out_fraction, held_out_rows
from latentlab.directions.sums import AttributeSums, ProjectionStats
from latentlab.errors import ConfigError, DataError
from latentlab.latents import latent_chunks
from latentlab.progress import progress_bar

METHODS = ("mean-diff", "mean-diff-shrunk", "logistic")
LOGISTIC_MEMORY = 2**30  # bytes of float32 latents the classifiers may hold at once

__all__ = ["METHODS", "AttributeSums", "ProjectionStats", "fit_directions"]


def fit_directions(
    latents: np.ndarray | MappedRows,
    labels: np.ndarray,
    names: Sequence[str],
    *,
    method: str = "mean-diff",
    orthogonal_to: Sequence[str] = (),
    shrink: float = DEFAULT_SHRINK,
    min_count: int = 10,
    seed: int = 0,
    max_samples: int = 5000,
    held_out_fraction: float = DEFAULT_HELD_OUT,
    chunk_rows: int | None = None,
    progress: bool = False,
    mirrored: np.ndarray | MappedRows | None = None,
) -> DirectionSet:
    """Directions for `names` from latents (N, D) (an array, memmap or `MappedRows`) and labels (N, A) int8
    in {-1, +1} (0 = unknown).

    A seeded random `held_out_fraction` of the rows (`held_out_rows`) is used for nothing but the probe
    (0: every row is fitted and no probe is made).
    Pass 1 streams float64 sums per attribute and class over the training rows (`AttributeSums`);
    `mean-diff-shrunk` moves every coordinate of the mean difference `shrink` standard errors toward 0
    (`shrink_mean_diff`); `logistic` then fits one classifier per attribute on a seeded random subset of
    at most `max_samples` training rows. Attributes with fewer than `min_count` training positives or
    negatives are skipped with a reason. Each attribute not in `orthogonal_to` loses its projection on
    the span of those conditions (which stay as they are). Pass 2 projects every z on the final unit
    directions: the probe's threshold is fitted on the training rows, scored on the held-out ones; the
    spread is over all.

    `mirrored` (N, D), row i the latent of image i's left-right mirror image, doubles the training faces
    for attributes a mirror image keeps (all of CelebA's): the class sums (and the shrunk method's
    standard errors) are taken over each face's pair average (z + z_mirrored) / 2, which gives exactly the
    mean difference over faces and mirrors together with errors that count a pair as one face; logistic
    fits on both rows of each sampled face. The probe and the spread use the faces as they are.

    The set's vectors are float64; its counts (all labeled rows) cover every name, skipped ones included;
    `extra` holds probe_balanced_accuracy, probe_majority_rate, probe_accuracy (plain), probe_held_out,
    probe_notes (why a probe has no figures), held_out_fraction, held_out_rows, classifier_accuracy
    (None but for logistic), shrink (None but for mean-diff-shrunk), skipped and logistic_rows.
    """
    names = list(names)
    held_out_fraction = check_held_out_fraction(held_out_fraction)
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose {', '.join(METHODS)}")
    missing = [c for c in orthogonal_to if c not in names]
    if missing:
        raise ConfigError(f"cannot condition on {missing[0]!r}: it is not among the attributes computed")
    n, dim = latents.shape
    if mirrored is not None and tuple(mirrored.shape) != (n, dim):
        raise DataError(f"mirrored latents have shape {tuple(mirrored.shape)}; expected ({n}, {dim}) like the faces'")
    labels = np.asarray(labels, dtype=np.int8)
    if labels.shape != (n, len(names)):
        raise DataError(f"labels have shape {labels.shape}; expected ({n}, {len(names)}) to match the latents")
    held = held_out_rows(n, held_out_fraction, seed=seed)
    train_labels = np.where(held[:, None], np.int8(0), labels).astype(np.int8)  # held-out rows: unknown

    sums = AttributeSums(names, dim)
    with progress_bar("sums", n, enabled=progress, unit="z") as advance:
        for lo, z in latent_chunks(latents, rows=chunk_rows):
            if mirrored is not None:
                z = (z + np.asarray(mirrored[lo : lo + len(z)], dtype=np.float64)) / 2
            sums.update(z, train_labels[lo : lo + len(z)])
            advance(len(z))
    skipped = {name: reason + " in the training split" for name, reason in sums.skipped(min_count).items()}
    mean_diff = sums.mean_diff()  # (A, D)
    index = {name: a for a, name in enumerate(names)}

    units: dict[str, torch.Tensor] = {}
    classifier: dict[str, float] = {}
    fitted_rows = None
    if method in ("mean-diff", "mean-diff-shrunk"):
        if method == "mean-diff-shrunk":
            units_from = shrink_mean_diff(mean_diff, sums.stderr(), shrink)
        else:
            units_from = mean_diff
        for name in names:
            if name not in skipped:
                units[name] = units_from[index[name]]
    else:
        fitted_rows = _fit_logistic(
            latents, train_labels, ~held, names, skipped, units, classifier, seed, max_samples, min_count, mirrored
        )

    for name, u in list(units.items()):
        if u.norm() == 0 or not torch.isfinite(u).all():
            skipped[name] = "the direction is zero"
            del units[name]
    for c in orthogonal_to:
        if c in skipped:
            raise DataError(f"cannot make directions orthogonal to {c}: it was skipped ({skipped[c]})")
    units, in_span = condition_directions(units, list(orthogonal_to))
    skipped.update(in_span)

    vectors = {}
    for name in names:
        if name in units:
            vectors[name] = scale_to_class_gap(units[name], mean_diff[index[name]])
            if vectors[name].norm() == 0:
                skipped[name] = "positives and negatives have the same mean along its direction"
                del vectors[name]
    probe, spread = _second_pass(latents, labels, held, names, vectors, chunk_rows=chunk_rows, progress=progress)
    return DirectionSet(
        vectors=vectors,
        method=method,
        pos_counts={name: int(c) for name, c in zip(names, (labels > 0).sum(axis=0), strict=True)},
        neg_counts={name: int(c) for name, c in zip(names, (labels < 0).sum(axis=0), strict=True)},
        latent_std=spread,
        extra={
            "probe_balanced_accuracy": {name: finite_or_none(probe[name].balanced_accuracy) for name in vectors},
            "probe_majority_rate": {name: finite_or_none(probe[name].majority_rate) for name in vectors},
            "probe_accuracy": {name: finite_or_none(probe[name].accuracy) for name in vectors},
            "probe_held_out": {name: probe[name].held_out for name in vectors},
            "probe_notes": {name: probe[name].note for name in vectors if probe[name].note},
            "held_out_fraction": float(held_out_fraction),
            "held_out_rows": int(held.sum()),
            "classifier_accuracy": (
                None if method != "logistic" else {name: finite_or_none(classifier.get(name)) for name in vectors}
            ),
            "shrink": float(shrink) if method == "mean-diff-shrunk" else None,
            "skipped": {name: skipped[name] for name in names if name in skipped},
            "logistic_rows": fitted_rows,
        },
    )


def _fit_logistic(
    latents: np.ndarray | MappedRows,
    labels: np.ndarray,
    training: np.ndarray,
    names: list[str],
    skipped: dict[str, str],
    units: dict[str, torch.Tensor],
    classifier: dict[str, float],
    seed: int,
    max_samples: int,
    min_count: int,
    mirrored: np.ndarray | MappedRows | None = None,
) -> int:
    """Fit a classifier per attribute not yet skipped on a random subset of the `training` rows (N,) bool
    (each with its mirror image's row when `mirrored` is given); fill `units`, return the faces used."""
    pool = np.flatnonzero(training)
    dim = latents.shape[1]
    copies = 1 if mirrored is None else 2
    rows = int(min(max_samples, pool.shape[0], max(1, LOGISTIC_MEMORY // (4 * dim * copies))))
    subset = np.sort(np.random.default_rng(seed).choice(pool, size=rows, replace=False))
    z = np.asarray(latents[subset], dtype=np.float32)  # (rows, D)
    fit_labels = labels[subset]
    if mirrored is not None:
        z = np.concatenate([z, np.asarray(mirrored[subset], dtype=np.float32)])
        fit_labels = np.concatenate([fit_labels, fit_labels])
    todo = [a for a, name in enumerate(names) if name not in skipped]
    if not todo:
        return rows
    fit_names = [names[a] for a in todo]
    dirs, acc, too_few = logistic_directions(
        z,
        fit_labels[:, todo],
        attrs=fit_names,
        seed=seed,
        max_samples=len(z),
        min_count=min_count,
        mirrored_half=mirrored is not None,
    )
    skipped.update(too_few)
    for i, name in enumerate(fit_names):
        if name not in too_few:
            units[name] = dirs[i]
            if math.isfinite(acc[i]):
                classifier[name] = float(acc[i])
    return rows


def _second_pass(
    latents: np.ndarray | MappedRows,
    labels: np.ndarray,
    held: np.ndarray,
    names: list[str],
    vectors: dict[str, torch.Tensor],
    *,
    chunk_rows: int | None,
    progress: bool,
) -> tuple[dict[str, ProbeScore], dict[str, float]]:
    """The probe (fitted off the `held` rows, scored on them) and the spread of every image's projection."""
    kept = [a for a, name in enumerate(names) if name in vectors]
    if not kept:
        return {}, {}
    stats = ProjectionStats(torch.stack([vectors[names[a]] for a in kept]))
    with progress_bar("projections", len(latents), enabled=progress, unit="z") as advance:
        for lo, z in latent_chunks(latents, rows=chunk_rows):
            stats.update(z, labels[lo : lo + len(z)][:, kept])
            advance(len(z))
    scores, std = stats.probe_scores(held), stats.std()
    return (
        {names[a]: scores[i] for i, a in enumerate(kept)},
        {names[a]: float(std[i]) for i, a in enumerate(kept)},
    )
