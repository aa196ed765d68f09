"""Streaming statistics behind the fit: per-attribute class sums over z, then projections on the directions.

Both read (B, D) batches and (B, A) labels in {-1, +1} (0 = unknown), so memory never grows with the
number of faces as D does (`AttributeSums`) and grows only as N·A (`ProjectionStats`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from latentlab.directions.maths import DEFAULT_MIN_COUNT, as_float64, check_labels, skipped_attributes
from latentlab.directions.probe import ProbeScore, probe_score
from latentlab.errors import DataError

__all__ = ["AttributeSums", "ProjectionStats"]


class AttributeSums:
    """Streaming per-attribute sums of z over positives and negatives, every attribute at once.

    Memory is (4A, D) float64 whatever the number of images (sums and sums of squares, for the standard
    errors behind the shrunk mean difference); each `update` is two matmuls. The result equals the
    in-memory computation up to float64 rounding, in any order or batching.
    """

    def __init__(self, names: Sequence[str], dim: int) -> None:
        self.names = tuple(names)
        self.dim = int(dim)
        a = len(self.names)
        self.pos_sums = torch.zeros(a, self.dim, dtype=torch.float64)  # (A, D)
        self.neg_sums = torch.zeros(a, self.dim, dtype=torch.float64)  # (A, D)
        self.pos_squares = torch.zeros(a, self.dim, dtype=torch.float64)  # (A, D): sums of z²
        self.neg_squares = torch.zeros(a, self.dim, dtype=torch.float64)  # (A, D)
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
        squares = masks.T @ z64.square()  # (2A, D)
        a = len(self.names)
        self.pos_sums += sums[:a]
        self.neg_sums += sums[a:]
        self.pos_squares += squares[:a]
        self.neg_squares += squares[a:]
        self.pos_counts += pos.sum(axis=0)
        self.neg_counts += neg.sum(axis=0)

    def mean_diff(self) -> torch.Tensor:
        """(A, D) float64: mean(z | +1) - mean(z | -1); NaN rows where a class is empty."""
        with np.errstate(divide="ignore", invalid="ignore"):
            pos_n = torch.from_numpy(self.pos_counts.astype(np.float64))[:, None]
            neg_n = torch.from_numpy(self.neg_counts.astype(np.float64))[:, None]
            return self.pos_sums / pos_n - self.neg_sums / neg_n

    def stderr(self) -> torch.Tensor:
        """(A, D) float64: the standard error of each coordinate of `mean_diff`, sqrt(var+/n+ + var-/n-)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            pos_n = torch.from_numpy(self.pos_counts.astype(np.float64))[:, None]
            neg_n = torch.from_numpy(self.neg_counts.astype(np.float64))[:, None]
            pos_var = (self.pos_squares / pos_n - (self.pos_sums / pos_n).square()).clamp(min=0)
            neg_var = (self.neg_squares / neg_n - (self.neg_sums / neg_n).square()).clamp(min=0)
            return (pos_var / pos_n + neg_var / neg_n).sqrt()

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
