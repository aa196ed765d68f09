"""The probe that judges a direction: a threshold fitted on the training split, scored on held-out faces.

Plain accuracy flatters rare attributes (always answering "no" scores the negatives' share), so the
score is the balanced accuracy (mean of the true-positive and true-negative rates), given beside the
majority-class rate of the same held-out faces; plain accuracy stays as a secondary figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from latentlab.directions.maths import best_threshold
from latentlab.errors import ConfigError, DataError

__all__ = [
    "DEFAULT_HELD_OUT",
    "MAX_HELD_OUT",
    "ProbeScore",
    "check_held_out_fraction",
    "held_out_rows",
    "probe_description",
    "probe_score",
]

DEFAULT_HELD_OUT = 0.2
MAX_HELD_OUT = 0.9  # beyond this the fit sees too few faces for its directions to mean much
NO_HELD_OUT = "no faces were held out (held-out fraction 0), so the direction has no probe figures"


def check_held_out_fraction(fraction: float) -> float:
    """`fraction` as a float: 0 (fit on every face, no probe) or in (0, MAX_HELD_OUT]; else ConfigError."""
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise ConfigError(f"held-out fraction {fraction!r} is not a number; give e.g. 0.2") from None
    if not (value == 0.0 or 0.0 < value <= MAX_HELD_OUT):
        raise ConfigError(
            f"held-out fraction {fraction} must be 0 (no probe) or between 0 and {MAX_HELD_OUT}, e.g. 0.2"
        )
    return value


def held_out_rows(n: int, fraction: float = DEFAULT_HELD_OUT, *, seed: int = 0) -> np.ndarray:
    """(n,) bool: a seeded random `fraction` of the rows (at least one, never all) kept out of every fit.

    A fraction of 0 holds nothing out (every row is fitted; no probe)."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"held-out fraction {fraction} must be at least 0 and below 1")
    mask = np.zeros(n, dtype=bool)
    if n < 2 or fraction == 0.0:
        return mask
    k = min(max(int(round(fraction * n)), 1), n - 1)
    mask[np.random.default_rng((seed, 1)).permutation(n)[:k]] = True
    return mask


@dataclass(frozen=True)
class ProbeScore:
    """One attribute's probe on its held-out faces; None figures come with a `note` saying why."""

    balanced_accuracy: float | None
    majority_rate: float | None
    accuracy: float | None
    held_out: int  # labeled held-out faces the figures are measured on
    note: str = ""


def probe_score(proj: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, held_out: np.ndarray) -> ProbeScore:
    """Fit a threshold on the training rows' projections (N,), score it on the `held_out` rows (N,) bool.

    The threshold maximises the balanced accuracy on the training rows (the figure it is judged by:
    maximising plain accuracy would give up a rare class); only the natural polarity counts (above the
    threshold = positive). Rows labeled 0 are ignored.
    """
    proj = np.asarray(proj.cpu() if isinstance(proj, torch.Tensor) else proj, dtype=np.float64).ravel()
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).ravel()
    held_out = np.asarray(held_out, dtype=bool).ravel()
    if not proj.shape == labels.shape == held_out.shape:
        raise DataError(f"{proj.shape[0]} projections, {labels.shape[0]} labels and {held_out.shape[0]} split flags")
    if not np.isfinite(proj).all():
        raise DataError("projections contain NaN or inf")
    labeled = labels != 0
    train, test = labeled & ~held_out, labeled & held_out
    y_train, y_test = labels[train] > 0, labels[test] > 0
    n_test = int(test.sum())
    if not held_out.any():
        return ProbeScore(None, None, None, 0, NO_HELD_OUT)
    for split, y in (("held-out", y_test), ("training", y_train)):
        pos = int(y.sum())
        if pos == 0 or pos == y.shape[0]:
            note = f"the {split} split has {pos} positives and {y.shape[0] - pos} negatives; a probe needs both"
            return ProbeScore(None, None, None, n_test, note)
    predicted = proj[test] > best_threshold(proj[train], y_train, balanced=True)
    tpr, tnr = predicted[y_test].mean(), (~predicted[~y_test]).mean()
    majority = max(int(y_test.sum()), n_test - int(y_test.sum())) / n_test
    return ProbeScore(float((tpr + tnr) / 2), float(majority), float((predicted == y_test).mean()), n_test)


def probe_description(held_out: int | None) -> str:
    """What the report's probe figures are, for its title and JSON."""
    if held_out == 0:
        return "probe: none (no faces were held out: every face was used to fit the directions)"
    faces = "held-out faces" if held_out is None else f"{held_out} held-out faces"
    return (
        f"probe: threshold fitted on the training split (for balanced accuracy), scored on {faces}; "
        "balanced accuracy = mean of TPR and TNR; majority = always answering the commoner class"
    )
