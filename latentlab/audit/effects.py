"""What one direction does to the judges: pure arithmetic on their probabilities before and after the edit.

p0 (N, J) is every judge's probability on the unedited reconstructions, p_plus and p_minus the same
after adding and subtracting the direction. A judge "says" the attribute is there when p >= 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["DirectionEffect", "direction_effect"]

THRESHOLD = 0.5


@dataclass(frozen=True)
class DirectionEffect:
    """The audit of one direction over the judged attributes `judged` (J,).

    effect (J,): signed mean change of each judge's probability per step of alpha, (p+ − p−) / 2.
    moved (J,): mean absolute change of each judge's probability, over both signs.
    flips (J,): share of (face, sign) pairs whose verdict the edit turned over, in either direction.
    success: for the judged edited attribute, the share of faces whose verdict moves the edit's way
    (+α on faces judged without it, −α on faces judged with it); None without a judge or eligible faces.
    own_change: the edited judge's mean probability change the edit's way (p+ − p0 and p0 − p−, averaged).
    drift: mean absolute pixel change (0–255) of the edited faces against the reconstructions.
    worst: the other judged attribute with the largest `moved`, or None.
    """

    direction: str
    judged: list[str]
    effect: np.ndarray
    moved: np.ndarray
    flips: np.ndarray
    success: float | None
    success_plus: float | None
    success_minus: float | None
    eligible_plus: int
    eligible_minus: int
    own_change: float | None
    drift: float
    worst: str | None

    @property
    def worst_moved(self) -> float | None:
        return None if self.worst is None else float(self.moved[self.judged.index(self.worst)])

    @property
    def worst_effect(self) -> float | None:
        return None if self.worst is None else float(self.effect[self.judged.index(self.worst)])


def _share(hits: np.ndarray) -> float | None:
    return float(hits.mean()) if hits.size else None


def direction_effect(
    direction: str,
    judged: Sequence[str],
    p0: np.ndarray,
    p_plus: np.ndarray,
    p_minus: np.ndarray,
    *,
    drift: float,
    edited: str | None = None,
) -> DirectionEffect:
    """Summarise the judges' probabilities (N, J) for the direction `direction` that edits `edited`.

    `edited` defaults to the direction's own name; a direction whose attribute has no judge (a
    principal component, say) gets no success figures and every judged attribute counts as a side
    effect.
    """
    judged = list(judged)
    p0, p_plus, p_minus = (np.asarray(p, dtype=np.float64) for p in (p0, p_plus, p_minus))
    if not p0.shape == p_plus.shape == p_minus.shape or p0.ndim != 2 or p0.shape[1] != len(judged):
        raise ValueError(
            f"probabilities of shapes {p0.shape}, {p_plus.shape}, {p_minus.shape} for {len(judged)} judges"
        )
    edited = direction if edited is None else edited
    said0, said_plus, said_minus = p0 >= THRESHOLD, p_plus >= THRESHOLD, p_minus >= THRESHOLD
    effect = ((p_plus - p_minus) / 2).mean(axis=0)
    moved = (np.abs(p_plus - p0) + np.abs(p_minus - p0)).mean(axis=0) / 2
    flips = ((said_plus != said0).astype(float) + (said_minus != said0)).mean(axis=0) / 2
    success = success_plus = success_minus = own_change = None
    eligible_plus = eligible_minus = 0
    others = list(range(len(judged)))
    if edited in judged:
        j = judged.index(edited)
        others.remove(j)
        lacking, having = ~said0[:, j], said0[:, j]
        eligible_plus, eligible_minus = int(lacking.sum()), int(having.sum())
        up, down = said_plus[lacking, j], ~said_minus[having, j]
        success_plus, success_minus = _share(up), _share(down)
        success = _share(np.concatenate([up, down]))
        own_change = float(((p_plus[:, j] - p0[:, j]).mean() + (p0[:, j] - p_minus[:, j]).mean()) / 2)
    worst = judged[max(others, key=lambda k: moved[k])] if others else None
    return DirectionEffect(
        direction=direction,
        judged=judged,
        effect=effect,
        moved=moved,
        flips=flips,
        success=success,
        success_plus=success_plus,
        success_minus=success_minus,
        eligible_plus=eligible_plus,
        eligible_minus=eligible_minus,
        own_change=own_change,
        drift=float(drift),
        worst=worst,
    )
