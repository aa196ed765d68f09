"""Attribute directions in latent space: mean differences, linear probes, conditioning, edits.

Pure maths on latents z of shape (N, D) and labels of shape (N, A) in {-1, +1} (0 = unknown,
counted in neither class). No model, no files: the direction file lives in `direction_file`
(its names are re-exported here).

Conventions, shared by every method so that alphas mean the same thing:
- a direction v points from the attribute's negatives to its positives;
- `decode(z + 1.0 * v)` moves an average negative's projection on v to an average positive's
  (for mean-difference vectors that is exactly v = mean(z | +1) - mean(z | -1)).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from latentlab.directions.file import DirectionSet, get_vector, load_directions, save_directions
from latentlab.errors import CheckpointError, ConfigError, DataError

__all__ = [
    "AttributeSums",
    "ProjectionStats",
    "DirectionSet",
    "apply_edits",
    "best_threshold",
    "check_alpha",
    "cosine_matrix",
    "get_vector",
    "load_directions",
    "logistic_directions",
    "orthogonalize",
    "probe_accuracy",
    "project",
    "save_directions",
    "skipped_attributes",
    "sweep_alphas",
]

DEFAULT_MIN_COUNT = 10
MAX_SWEEP = 256


def _as_tensor64(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64)
    return torch.from_numpy(np.asarray(x, dtype=np.float64))


def _check_labels(labels: torch.Tensor | np.ndarray, n_rows: int, n_attrs: int) -> np.ndarray:
    labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.shape != (n_rows, n_attrs):
        raise DataError(f"labels have shape {labels.shape}; expected ({n_rows}, {n_attrs}) to match the latents")
    bad = ~np.isin(labels, (-1, 0, 1))
    if bad.any():
        raise DataError(f"labels must be -1 or +1 (0 = unknown); found {labels[bad].flat[0]!r}")
    return labels.astype(np.int8, copy=False)


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
        z64 = _as_tensor64(z)
        if z64.ndim != 2 or z64.shape[1] != self.dim:
            raise DataError(f"latents have shape {tuple(z64.shape)}; expected (B, {self.dim})")
        if not torch.isfinite(z64).all():
            raise DataError("latents contain NaN or inf; the model or the images are broken")
        lab = _check_labels(labels, z64.shape[0], len(self.names))
        pos = lab == 1
        neg = lab == -1
        masks = torch.from_numpy(np.concatenate([pos, neg], axis=1).astype(np.float64))  # (B, 2A)
        sums = masks.T @ z64  # (2A, D): one matmul for every attribute and both classes
        a = len(self.names)
        self.pos_sums += sums[:a]
        self.neg_sums += sums[a:]
        self.pos_counts += pos.sum(axis=0)
        self.neg_counts += neg.sum(axis=0)

    def merge(self, other: AttributeSums) -> AttributeSums:
        """Add another shard's sums into this one (in place) and return self."""
        if other.names != self.names or other.dim != self.dim:
            raise DataError("cannot merge attribute sums over different attributes or latent sizes")
        self.pos_sums += other.pos_sums
        self.neg_sums += other.neg_sums
        self.pos_counts += other.pos_counts
        self.neg_counts += other.neg_counts
        return self

    def mean_diff(self) -> torch.Tensor:
        """(A, D) float64: mean(z | +1) - mean(z | -1); NaN rows where a class is empty."""
        with np.errstate(divide="ignore", invalid="ignore"):
            pos_n = torch.from_numpy(self.pos_counts.astype(np.float64))[:, None]
            neg_n = torch.from_numpy(self.neg_counts.astype(np.float64))[:, None]
            return self.pos_sums / pos_n - self.neg_sums / neg_n

    def skipped(self, min_count: int = DEFAULT_MIN_COUNT) -> dict[str, str]:
        """Attributes with too few positives or negatives, each with the reason."""
        return skipped_attributes(self.names, self.pos_counts, self.neg_counts, min_count=min_count)


def skipped_attributes(
    names: Sequence[str], pos_counts: Sequence[int], neg_counts: Sequence[int], *, min_count: int = DEFAULT_MIN_COUNT
) -> dict[str, str]:
    """{name: reason} for each attribute with fewer than `min_count` positives or negatives."""
    skipped = {}
    for name, pos, neg in zip(names, pos_counts, neg_counts, strict=True):
        if pos < min_count or neg < min_count:
            skipped[name] = f"{int(pos)} positives and {int(neg)} negatives; need at least {min_count} of each"
    return skipped


def orthogonalize(v: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """v (D,) minus its least-squares projection onto the span of `others` (k, D).

    Works in float64 through an SVD of `others`, so non-orthogonal and nearly collinear
    conditions are fine: singular values below max(k, D) * eps * s_max are treated as zero
    (numpy's matrix_rank rule). The projection is removed twice ("twice is enough") so the
    result is orthogonal to every condition to float64 precision. Returned in v's dtype.
    """
    v64 = _as_tensor64(v)
    basis = _as_tensor64(others)
    if basis.ndim == 1:
        basis = basis[None]
    if basis.shape[0] == 0:
        return v.clone()
    if basis.shape[1] != v64.shape[0]:
        raise DataError(f"cannot orthogonalize a vector of {v64.shape[0]} values against vectors of {basis.shape[1]}")
    _, s, vh = torch.linalg.svd(basis, full_matrices=False)  # vh (k, D) orthonormal rows
    tol = max(basis.shape) * torch.finfo(torch.float64).eps * (s.max() if s.numel() else 0.0)
    q = vh[s > tol]  # (r, D)
    out = v64
    for _ in range(2):
        out = out - q.T @ (q @ out)
    return out.to(dtype=v.dtype if isinstance(v, torch.Tensor) else torch.float64)


def project(z: torch.Tensor | np.ndarray, vectors: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Projections of z (N, D) onto the unit directions of `vectors` (A, D) -> (N, A) float64."""
    z64, v64 = _as_tensor64(z), _as_tensor64(vectors)
    if v64.ndim == 1:
        v64 = v64[None]
    return z64 @ (v64 / v64.norm(dim=1, keepdim=True)).T


class ProjectionStats:
    """Streaming projections of z onto fixed directions, for probe accuracy and the spread (--units sigma).

    Keeps the (N, A) float32 projections and int8 labels: memory grows with N·A, not N·D
    (200k images x 40 attributes is 40 MB). Feed it a second pass over the latents once the
    directions are known.
    """

    def __init__(self, vectors: torch.Tensor | np.ndarray) -> None:
        v = _as_tensor64(vectors)
        self.units = v / v.norm(dim=1, keepdim=True)  # (A, D)
        self._proj: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def update(self, z: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> None:
        """Add a batch: z (B, D), labels (B, A) in {-1, +1} (0 = unknown)."""
        z64 = _as_tensor64(z)
        self._labels.append(_check_labels(labels, z64.shape[0], self.units.shape[0]).copy())
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

    def probe_accuracies(self, *, seed: int = 0) -> np.ndarray:
        """(A,) held-out accuracy of a threshold on each projection (see `probe_accuracy`)."""
        proj, labels = self.projections()
        return np.array([probe_accuracy(proj[:, a], labels[:, a], seed=seed) for a in range(proj.shape[1])])


def best_threshold(proj: np.ndarray, positive: np.ndarray) -> float:
    """The threshold t maximising accuracy of `proj > t` -> positive, in O(N log N)."""
    order = np.argsort(proj, kind="stable")
    p, y = proj[order], positive[order]
    n = p.shape[0]
    # Split i predicts negative for p[:i], positive for p[i:].
    neg_below = np.concatenate([[0], np.cumsum(~y)])
    pos_above = np.concatenate([np.cumsum(y[::-1])[::-1], [0]])
    correct = neg_below + pos_above  # (n + 1,)
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = p[1:] > p[:-1]  # no split between equal projections
    i = int(np.argmax(np.where(valid, correct, -1)))
    if i == 0:
        return -math.inf
    if i == n:
        return math.inf
    return float((p[i - 1] + p[i]) / 2)


def probe_accuracy(
    proj: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    *,
    train_fraction: float = 0.5,
    seed: int = 0,
) -> float:
    """Held-out accuracy of a one-threshold probe on projections `proj` (N,) with labels (N,) in {-1, +1}.

    The threshold is fitted on a random `train_fraction` of the labeled rows; accuracy is measured
    on the rest. Only the natural polarity counts (projection above threshold = positive), so a
    direction pointing the wrong way scores below 0.5. Rows labeled 0 are ignored.
    """
    proj = np.asarray(proj.cpu() if isinstance(proj, torch.Tensor) else proj, dtype=np.float64).ravel()
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).ravel()
    if proj.shape != labels.shape:
        raise DataError(f"{proj.shape[0]} projections but {labels.shape[0]} labels")
    keep = labels != 0
    proj, positive = proj[keep], labels[keep] > 0
    n = proj.shape[0]
    if n < 2:
        raise DataError(f"a probe needs at least 2 labeled examples, got {n}")
    if not np.isfinite(proj).all():
        raise DataError("projections contain NaN or inf")
    if not 0.0 < train_fraction < 1.0:
        raise ConfigError(f"train_fraction {train_fraction} must be between 0 and 1 (exclusive)")
    perm = np.random.default_rng(seed).permutation(n)
    n_train = min(max(int(round(train_fraction * n)), 1), n - 1)
    train, test = perm[:n_train], perm[n_train:]
    t = best_threshold(proj[train], positive[train])
    return float(np.mean((proj[test] > t) == positive[test]))


def logistic_directions(
    z: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    *,
    attrs: Sequence[str],
    seed: int = 0,
    max_samples: int = 5000,
    held_out_fraction: float = 0.25,
    min_count: int = DEFAULT_MIN_COUNT,
    C: float = 0.01,
    max_iter: int = 500,
) -> tuple[torch.Tensor, np.ndarray, dict[str, str]]:
    """One L2 logistic regression per attribute on a seeded random subset of z (N, D).

    Returns (directions (A, D) float64, held-out accuracy (A,), skipped {name: reason});
    skipped attributes have NaN rows and NaN accuracy.

    Scaling: with u the unit coefficient vector, v = u * (mean(z·u | +1) - mean(z·u | -1))
    over every labeled row of z. So, as for mean-difference vectors, alpha = 1 moves an average
    negative's projection on u to an average positive's. Features are used as they are: under the
    model z ~ N(0, I), already standardised. At most `max_samples` rows are fitted (memory
    max_samples x D float32), `held_out_fraction` of them held out for the accuracy.

    `C` (sklearn's inverse L2 strength, default 0.01): with N not much larger than D the classes
    are nearly separable and weakly regularised fits chase noise. On planted directions in
    isotropic noise (D = 256, N = 2000) the cosine to the truth is 0.85 at C = 1 and 0.95 at
    C = 0.01, at equal held-out accuracy. As C -> 0 the direction tends to the mean difference.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    z_np = (z.detach().cpu().numpy() if isinstance(z, torch.Tensor) else np.asarray(z)).astype(np.float32, copy=False)
    if z_np.ndim != 2:
        raise DataError(f"latents must be (N, D); got shape {z_np.shape}")
    lab = _check_labels(labels, z_np.shape[0], len(attrs))
    n, d = z_np.shape
    rng = np.random.default_rng(seed)
    subset = rng.permutation(n)[: min(max_samples, n)]
    n_test = max(1, int(round(held_out_fraction * subset.shape[0])))
    test_rows, train_rows = subset[:n_test], subset[n_test:]

    directions = torch.full((len(attrs), d), math.nan, dtype=torch.float64)
    accuracy = np.full(len(attrs), math.nan)
    skipped: dict[str, str] = {}
    for a, name in enumerate(attrs):
        y_train = lab[train_rows, a]
        train = train_rows[y_train != 0]
        y_train = y_train[y_train != 0] > 0
        reason = skipped_attributes([name], [y_train.sum()], [(~y_train).sum()], min_count=min_count)
        if reason:
            skipped[name] = reason[name] + " in the classifier's training subset"
            continue
        clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
        with warnings.catch_warnings():
            # Held-out accuracy below reports the probe's quality whether or not lbfgs converged.
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(z_np[train], y_train)
        u = torch.from_numpy(clf.coef_[0].astype(np.float64))
        if not torch.isfinite(u).all() or u.norm() == 0:
            skipped[name] = "the classifier learned no direction"
            continue
        u = u / u.norm()
        labeled = lab[:, a] != 0
        proj = torch.from_numpy(z_np[labeled].astype(np.float64)) @ u
        is_pos = torch.from_numpy(lab[labeled, a] > 0)
        directions[a] = u * (proj[is_pos].mean() - proj[~is_pos].mean())
        y_test = lab[test_rows, a]
        if (y_test != 0).any():
            accuracy[a] = clf.score(z_np[test_rows[y_test != 0]], y_test[y_test != 0] > 0)
    return directions, accuracy, skipped


def cosine_matrix(v: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(A, D) -> (A, A) float64 cosine similarities; rows for zero vectors are NaN."""
    v64 = _as_tensor64(v)
    unit = v64 / v64.norm(dim=1, keepdim=True)
    return (unit @ unit.T).clamp(-1.0, 1.0)


def check_alpha(alpha: float, *, name: str = "alpha") -> float:
    """`alpha` as a float, or ConfigError if it is not a finite number."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} {alpha!r} is not a number; give a finite value such as 0.8") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} {alpha!r} is not finite; give a finite value such as 0.8")
    return value


def apply_edits(z: torch.Tensor, vectors: Sequence[torch.Tensor], alphas: Sequence[float]) -> torch.Tensor:
    """z (B, D) or (D,) plus sum_i alphas[i] * vectors[i] (each (D,)); edits compose by addition."""
    if len(vectors) != len(alphas):
        raise ConfigError(f"{len(vectors)} attributes but {len(alphas)} alphas; give one alpha per attribute")
    out = z.clone()
    for v, alpha in zip(vectors, alphas, strict=True):
        alpha = check_alpha(alpha)
        if v.shape != (z.shape[-1],):
            raise CheckpointError(
                f"a direction has shape {tuple(v.shape)} but the latents have {z.shape[-1]} values; "
                "the vectors belong to another model"
            )
        out = out + alpha * v.to(dtype=z.dtype, device=z.device)
    return out


def sweep_alphas(spec: str) -> list[float]:
    """Parse "START,STOP,COUNT" (e.g. "-1,1,7") into COUNT evenly spaced alphas, ends included."""
    hint = "give START,STOP,COUNT, e.g. -1,1,7"
    parts = [p.strip() for p in str(spec).split(",")]
    if len(parts) != 3:
        raise ConfigError(f"sweep {spec!r} has {len(parts)} fields; {hint}")
    start = check_alpha(parts[0], name="sweep start")
    stop = check_alpha(parts[1], name="sweep stop")
    try:
        count = int(parts[2])
    except ValueError:
        raise ConfigError(f"sweep count {parts[2]!r} is not a whole number; {hint}") from None
    if not 2 <= count <= MAX_SWEEP:
        raise ConfigError(f"sweep count {count} must be between 2 and {MAX_SWEEP}; {hint}")
    alphas = [start + (stop - start) * i / (count - 1) for i in range(count)]
    alphas[-1] = stop  # exact, whatever the rounding of the steps
    return alphas
