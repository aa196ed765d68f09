"""Attribute directions in latent space, pure maths: probes, logistic directions, conditioning, edits.

Latents z are (N, D) and labels (N, A) in {-1, +1} (0 = unknown, counted in neither class).
No model and no files here: the streaming pass lives in `fit`, the direction file in `file`.

Conventions, shared by every method so that alphas mean the same thing:
- a direction v points from the attribute's negatives to its positives;
- `decode(z + 1.0 * v)` moves an average negative's projection on v to an average positive's
  (for mean-difference vectors that is exactly v = mean(z | +1) - mean(z | -1)).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from latentlab.errors import CheckpointError, ConfigError, DataError

__all__ = [
    "apply_edits",
    "as_float64",
    "best_threshold",
    "check_alpha",
    "check_labels",
    "condition_directions",
    "cosine_matrix",
    "logistic_directions",
    "orthogonalize",
    "scale_to_class_gap",
    "shrink_mean_diff",
    "skipped_attributes",
    "sweep_alphas",
]

DEFAULT_MIN_COUNT = 10
DEFAULT_SHRINK = 1.5  # standard errors: the shrunk mean difference's default (BENCHMARKS.md compares them)
MAX_SWEEP = 256
_TINY = 1e-6  # a direction shorter than this (relative) after conditioning lies in the conditions' span


def as_float64(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A float64 CPU tensor of `x` (the sums and projections are exact to float64 whatever z's dtype)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64)
    return torch.from_numpy(np.asarray(x, dtype=np.float64))


def check_labels(labels: torch.Tensor | np.ndarray, n_rows: int, n_attrs: int) -> np.ndarray:
    """Labels as int8 (n_rows, n_attrs) in {-1, 0, +1}, or a DataError saying what is wrong."""
    labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.shape != (n_rows, n_attrs):
        raise DataError(f"labels have shape {labels.shape}; expected ({n_rows}, {n_attrs}) to match the latents")
    bad = ~np.isin(labels, (-1, 0, 1))
    if bad.any():
        raise DataError(f"labels must be -1 or +1 (0 = unknown); found {labels[bad].flat[0]!r}")
    return labels.astype(np.int8, copy=False)


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
    v64 = as_float64(v)
    basis = as_float64(others)
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


def condition_directions(
    units: Mapping[str, torch.Tensor], conditions: Sequence[str]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Remove the span of the conditions' directions from every other direction in `units` (name -> (D,)).

    The conditions stay as they are. Returns (the directions in their order, {name: reason} for those
    left (nearly) zero: a direction inside the conditions' span says nothing they do not).
    """
    if not conditions:
        return dict(units), {}
    basis = torch.stack([units[c] / units[c].norm() for c in conditions])
    kept: dict[str, torch.Tensor] = {}
    skipped: dict[str, str] = {}
    for name, u in units.items():
        if name in conditions:
            kept[name] = u
            continue
        rest = orthogonalize(u / u.norm(), basis)
        if rest.norm() < _TINY:
            skipped[name] = f"its direction lies in the span of {', '.join(conditions)}"
        else:
            kept[name] = rest
    return kept, skipped


def scale_to_class_gap(u: torch.Tensor, mean_diff: torch.Tensor) -> torch.Tensor:
    """The direction of u (D,) with length (mean(z | +1) - mean(z | -1)) · u/|u|, from the mean difference (D,).

    This is the alpha convention: alpha = 1 moves an average negative's projection on u to an
    average positive's; for u along the mean difference the result is the mean difference itself.
    """
    unit = u / u.norm()
    return unit * (mean_diff @ unit)


def shrink_mean_diff(mean_diff: torch.Tensor, stderr: torch.Tensor, shrink: float = DEFAULT_SHRINK) -> torch.Tensor:
    """The mean difference (..., D) with each coordinate moved `shrink` standard errors (..., D) toward 0, and
    those within that many of it set to 0 (soft thresholding): most of a D-dimensional mean difference
    estimated from a few thousand faces is noise, which this removes. `shrink` 0 gives it back unchanged.
    """
    if not (math.isfinite(shrink) and shrink >= 0):
        raise ConfigError(f"shrink {shrink} must be a finite number of standard errors, 0 or more")
    return mean_diff.sign() * (mean_diff.abs() - shrink * stderr).clamp(min=0)


def best_threshold(proj: np.ndarray, positive: np.ndarray, *, balanced: bool = False) -> float:
    """The threshold t maximising the accuracy of `proj > t` -> positive, in O(N log N).

    With `balanced`, t maximises the balanced accuracy (mean of the true-positive and true-negative
    rates) instead, so a rare class is not given up for the commoner one's sake.
    """
    order = np.argsort(proj, kind="stable")
    p, y = proj[order], positive[order]
    n = p.shape[0]
    # Split i predicts negative for p[:i], positive for p[i:].
    neg_below = np.concatenate([[0], np.cumsum(~y)])
    pos_above = np.concatenate([np.cumsum(y[::-1])[::-1], [0]])
    if balanced:
        correct = neg_below / max(int((~y).sum()), 1) + pos_above / max(int(y.sum()), 1)  # (n + 1,)
    else:
        correct = (neg_below + pos_above).astype(np.float64)  # (n + 1,)
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = p[1:] > p[:-1]  # no split between equal projections
    i = int(np.argmax(np.where(valid, correct, -1.0)))
    if i == 0:
        return -math.inf
    if i == n:
        return math.inf
    return float((p[i - 1] + p[i]) / 2)


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
    mirrored_half: bool = False,
) -> tuple[torch.Tensor, np.ndarray, dict[str, str]]:
    """One L2 logistic regression per attribute on a seeded random subset of z (N, D).

    `mirrored_half`: rows N/2.. are the mirror images of rows ..N/2 (same order, same labels); a face
    and its mirror then go to the same side of the accuracy's hold-out, which scores faces only.

    Returns (directions (A, D) float64, held-out accuracy (A,), skipped {name: reason});
    skipped attributes have NaN rows and NaN accuracy.

    Scaling: with u the unit coefficient vector, v = u * (mean(z·u | +1) - mean(z·u | -1))
    over every labeled row of z. So, as for mean-difference vectors, alpha = 1 moves an average
    negative's projection on u to an average positive's. Features are used as they are: under the
    model z ~ N(0, I), already standardised. At most `max_samples` rows are fitted (memory
    max_samples x D float32), `held_out_fraction` of them held out for the accuracy.

    `C` (sklearn's inverse L2 strength, default 0.01) is small because with N not much larger than D
    the classes are nearly separable and weakly regularised fits chase noise; as C -> 0 the
    direction tends to the mean difference.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    z_np = (z.detach().cpu().numpy() if isinstance(z, torch.Tensor) else np.asarray(z)).astype(np.float32, copy=False)
    if z_np.ndim != 2:
        raise DataError(f"latents must be (N, D); got shape {z_np.shape}")
    lab = check_labels(labels, z_np.shape[0], len(attrs))
    n, d = z_np.shape
    train_rows, test_rows = logistic_split(n, max_samples, held_out_fraction, seed=seed, mirrored_half=mirrored_half)

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


def logistic_split(
    n: int, max_samples: int, held_out_fraction: float, *, seed: int = 0, mirrored_half: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, accuracy rows) of `logistic_directions`: a seeded subset of at most `max_samples` rows.

    With `mirrored_half` (rows n/2.. mirror rows ..n/2) faces are drawn, a face's mirror follows it into
    training, and the accuracy is scored on faces only, none of whose mirrors was fitted.
    """
    faces = n // 2 if mirrored_half else n
    if mirrored_half and n % 2:
        raise DataError(f"mirrored_half needs an even number of rows (faces, then their mirrors); got {n}")
    subset = np.random.default_rng(seed).permutation(faces)[: min(max_samples // (2 if mirrored_half else 1), faces)]
    n_test = max(1, int(round(held_out_fraction * subset.shape[0])))
    test_rows, train_rows = subset[:n_test], subset[n_test:]
    if mirrored_half:
        train_rows = np.concatenate([train_rows, train_rows + faces])
    return train_rows, test_rows


def cosine_matrix(v: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(A, D) -> (A, A) float64 cosine similarities; rows for zero vectors are NaN."""
    v64 = as_float64(v)
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


def finite_or_none(x: float | None) -> float | None:
    """x as a float, or None where it is missing or not finite (the JSON files hold no NaN)."""
    return None if x is None or not math.isfinite(float(x)) else float(x)
