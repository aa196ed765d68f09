"""Fitting attribute directions in one streaming pass over an (N, D) latent array and its (N, A) labels.

The latents are read in chunks (in memory, memory-mapped or `MappedRows`), so memory never grows with N.
A seeded random share of the rows is held out: every direction is fitted on the rest (pass 1 streams
per-attribute class sums, `AttributeSums`; the logistic method fits its classifiers on a bounded random
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
    DEFAULT_MIN_COUNT,
    as_float64,
    check_labels,
    condition_directions,
    finite_or_none,
    logistic_directions,
    scale_to_class_gap,
    skipped_attributes,
)
from latentlab.directions.probe import (
    DEFAULT_HELD_OUT,
    ProbeScore,
    check_held_out_fraction,
    held_out_rows,
    probe_score,
)
from latentlab.errors import ConfigError, DataError
from latentlab.latents import latent_chunks
from latentlab.progress import progress_bar

METHODS = ("mean-diff", "logistic")
LOGISTIC_MEMORY = 2**30  # bytes of float32 latents the classifiers may hold at once

__all__ = ["METHODS", "AttributeSums", "ProjectionStats", "fit_directions"]


class AttributeSums:
    """Streaming per-attribute sums of z over positives and negatives, every attribute at once.

    Memory is (2A, D) float64 whatever the number of images; each `update` is one matmul.
    The result equals the in-memory computation up to float64 rounding, in any order or batching.
    """

    def __init__(self, names: Sequence[str], dim: int) -> None:
        self.names = tuple(names)
        self.dim = int(dim)
        a = len(self.names)
        self.pos_sums = torch.zeros(a, self.dim, dtype=torch.float64)  # (A, D)
        self.neg_sums = torch.zeros(a, self.dim, dtype=torch.float64)  # (A, D)
        self.pos_counts = np.zeros(a, dtype=np.int64)  # (A,)
        self.neg_counts = np.zeros(a, dtype=np.int64)  # (A,)

    def update(self, z: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> None:
        """Add a batch: z (B, D), labels (B, A) int8 in {-1, +1} (0 = unknown)."""
        z64 = as_float64(z)
        if z64.ndim != 2 or z64.shape[1] != self.dim:
            raise DataError(f"latents have shape {tuple(z64.shape)}; expected (B, {self.dim})")
        if not torch.isfinite(z64).all():
            raise DataError("latents contain NaN or inf; the model or the images are broken")
        lab = check_labels(labels, z64.shape[0], len(self.names))
        pos = lab == 1
        neg = lab == -1
        masks = torch.from_numpy(np.concatenate([pos, neg], axis=1).astype(np.float64))  # (B, 2A)
        sums = masks.T @ z64  # (2A, D): one matmul for every attribute and both classes
        a = len(self.names)
        self.pos_sums += sums[:a]
        self.neg_sums += sums[a:]
        self.pos_counts += pos.sum(axis=0)
        self.neg_counts += neg.sum(axis=0)

    def mean_diff(self) -> torch.Tensor:
        """(A, D) float64: mean(z | +1) - mean(z | -1); NaN rows where a class is empty."""
        with np.errstate(divide="ignore", invalid="ignore"):
            pos_n = torch.from_numpy(self.pos_counts.astype(np.float64))[:, None]
            neg_n = torch.from_numpy(self.neg_counts.astype(np.float64))[:, None]
            return self.pos_sums / pos_n - self.neg_sums / neg_n

    def skipped(self, min_count: int = DEFAULT_MIN_COUNT) -> dict[str, str]:
        """Attributes with too few positives or negatives, each with the reason."""
        return skipped_attributes(self.names, self.pos_counts, self.neg_counts, min_count=min_count)


class ProjectionStats:
    """Streaming projections of z onto fixed directions, for probe accuracy and the spread (--units sigma).

    Keeps the (N, A) float32 projections and int8 labels: memory grows with N·A, not N·D
    (200k images x 40 attributes is 40 MB). Feed it a second pass over the latents once the
    directions are known.
    """

    def __init__(self, vectors: torch.Tensor | np.ndarray) -> None:
        v = as_float64(vectors)
        self.units = v / v.norm(dim=1, keepdim=True)  # (A, D)
        self._proj: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def update(self, z: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> None:
        """Add a batch: z (B, D), labels (B, A) in {-1, +1} (0 = unknown)."""
        z64 = as_float64(z)
        self._labels.append(check_labels(labels, z64.shape[0], self.units.shape[0]).copy())
        self._proj.append((z64 @ self.units.T).numpy().astype(np.float32))

    def projections(self) -> tuple[np.ndarray, np.ndarray]:
        """(projections (N, A) float32, labels (N, A) int8)."""
        a = self.units.shape[0]
        if not self._proj:
            return np.zeros((0, a), np.float32), np.zeros((0, a), np.int8)
        return np.concatenate(self._proj), np.concatenate(self._labels)

    def std(self) -> np.ndarray:
        """(A,) standard deviation of every image's projection on each unit direction."""
        proj, _ = self.projections()
        return proj.astype(np.float64).std(axis=0)

    def probe_scores(self, held_out: np.ndarray) -> list[ProbeScore]:
        """Per direction, a threshold fitted on the rows not in `held_out` (N,) bool, scored on those in it."""
        proj, labels = self.projections()
        return [probe_score(proj[:, a], labels[:, a], held_out) for a in range(proj.shape[1])]


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
    held_out_fraction: float = DEFAULT_HELD_OUT,
    chunk_rows: int | None = None,
    progress: bool = False,
) -> DirectionSet:
    """Directions for `names` from latents (N, D) (an array, memmap or `MappedRows`) and labels (N, A) int8
    in {-1, +1} (0 = unknown).

    A seeded random `held_out_fraction` of the rows (`held_out_rows`) is used for nothing but the probe
    (0: every row is fitted and no probe is made).
    Pass 1 streams float64 sums per attribute and class over the training rows (`AttributeSums`);
    `logistic` then fits one classifier per attribute on a seeded random subset of at most `max_samples`
    training rows. Attributes with fewer than `min_count` training positives or negatives are skipped
    with a reason. Each attribute not in `orthogonal_to` loses its projection on the span of those
    conditions (which stay as they are). Pass 2 projects every z on the final unit directions: the
    probe's threshold is fitted on the training rows, scored on the held-out ones; the spread is over all.

    The set's vectors are float64; its counts (all labeled rows) cover every name, skipped ones included;
    `extra` holds probe_balanced_accuracy, probe_majority_rate, probe_accuracy (plain), probe_held_out,
    probe_notes (why a probe has no figures), held_out_fraction, held_out_rows, classifier_accuracy
    (None for mean-diff), skipped and logistic_rows.
    """
    names = list(names)
    held_out_fraction = check_held_out_fraction(held_out_fraction)
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose {' or '.join(METHODS)}")
    missing = [c for c in orthogonal_to if c not in names]
    if missing:
        raise ConfigError(f"cannot condition on {missing[0]!r}: it is not among the attributes computed")
    n, dim = latents.shape
    labels = np.asarray(labels, dtype=np.int8)
    if labels.shape != (n, len(names)):
        raise DataError(f"labels have shape {labels.shape}; expected ({n}, {len(names)}) to match the latents")
    held = held_out_rows(n, held_out_fraction, seed=seed)
    train_labels = np.where(held[:, None], np.int8(0), labels).astype(np.int8)  # held-out rows: unknown

    sums = AttributeSums(names, dim)
    with progress_bar("sums", n, enabled=progress, unit="z") as advance:
        for lo, z in latent_chunks(latents, rows=chunk_rows):
            sums.update(z, train_labels[lo : lo + len(z)])
            advance(len(z))
    skipped = {name: reason + " in the training split" for name, reason in sums.skipped(min_count).items()}
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
        fitted_rows = _fit_logistic(
            latents, train_labels, ~held, names, skipped, units, classifier, seed, max_samples, min_count
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
                None if method == "mean-diff" else {name: finite_or_none(classifier.get(name)) for name in vectors}
            ),
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
) -> int:
    """Fit a classifier per attribute not yet skipped on a random subset of the `training` rows (N,) bool;
    fill `units`, return the rows used."""
    pool = np.flatnonzero(training)
    dim = latents.shape[1]
    rows = int(min(max_samples, pool.shape[0], max(1, LOGISTIC_MEMORY // (4 * dim))))
    subset = np.sort(np.random.default_rng(seed).choice(pool, size=rows, replace=False))
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
