"""Similarity transforms for face alignment: the weighted fit of landmarks onto CelebA's aligned layout.

Pure numpy maths. A transform is a 2x3 matrix [[a, -b, tx], [b, a, ty]] taking (x, y, 1) in one image
to the other (scale sqrt(a² + b²), rotation atan2(b, a)); pixel centres sit at whole numbers, as in
OpenCV. CelebA's aligned images were made by a similarity transform driven by the eyes, so the fit
weighs the eyes above the nose and mouth, which move with expression.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from latentlab.errors import DataError

# CelebA's aligned 178x218 layout of the five landmarks, in the order of landmarks.LANDMARKS: the mean
# of the landmark detector's own points on the shared sample's training faces (see
# benchmarks/alignment.py --calibrate), close to CelebA's annotated means (69, 111), (108, 111),
# (88, 136), (72, 152), (105, 152).
CELEBA_LANDMARKS = np.array([(69.8, 111.6), (108.5, 111.6), (88.7, 135.7), (71.6, 153.3), (106.4, 153.1)])
EYE_WEIGHT = 3.0  # each eye counts this many times a nose or mouth point (the fit that reproduces CelebA best)


def landmark_weights(eye_weight: float = EYE_WEIGHT) -> np.ndarray:
    """(5,) weights of the five landmarks in the fit: the eyes `eye_weight`, the others 1."""
    return np.array([eye_weight, eye_weight, 1.0, 1.0, 1.0])


def fit_similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, shift; no mirror) taking points src (N, 2) closest
    to dst (N, 2) in weighted least squares; N >= 2 distinct points.

    In complex numbers the fit is z -> c·z + t: with both sets centred on their weighted means,
    c = Σ w conj(s) d / Σ w |s|², exact for any weights.
    """
    src, dst = np.asarray(src, dtype=float), np.asarray(dst, dtype=float)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=float)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or w.shape != (len(src),):
        raise ValueError(f"need matching (N, 2) point sets and (N,) weights, got {src.shape}, {dst.shape}, {w.shape}")
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    s = (src - mu_s) @ np.array([1, 1j])
    d = (dst - mu_d) @ np.array([1, 1j])
    spread = float(w @ np.abs(s) ** 2)
    if spread <= 1e-12:
        raise DataError("the landmarks all fall on one point; no alignment can be fitted")
    c = complex(w @ (np.conj(s) * d)) / spread
    linear = np.array([[c.real, -c.imag], [c.imag, c.real]])
    return np.hstack([linear, (mu_d - linear @ mu_s)[:, None]])


def similarity(scale: float, degrees: float, shift: Sequence[float] = (0.0, 0.0), centre=(0.0, 0.0)) -> np.ndarray:
    """2x3 matrix: turn by `degrees` (counter-clockwise as seen, y pointing down) and scale about
    `centre`, then move by `shift`."""
    t = math.radians(degrees)
    a, b = scale * math.cos(t), -scale * math.sin(t)
    linear = np.array([[a, -b], [b, a]])
    centre = np.asarray(centre, dtype=float)
    return np.hstack([linear, (centre - linear @ centre + np.asarray(shift, dtype=float))[:, None]])


def parts(matrix: np.ndarray) -> tuple[float, float]:
    """(scale, degrees turned counter-clockwise as seen) of a 2x3 similarity."""
    a, b = matrix[0, 0], matrix[1, 0]
    return math.hypot(a, b), -math.degrees(math.atan2(b, a))


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of applying `inner`, then `outer`."""
    full = np.vstack([outer, [0.0, 0.0, 1.0]]) @ np.vstack([inner, [0.0, 0.0, 1.0]])
    return full[:2]


def invert(matrix: np.ndarray) -> np.ndarray:
    """The 2x3 matrix undoing an invertible 2x3 affine matrix."""
    return np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (N, 2) moved by a 2x3 matrix."""
    return np.asarray(points, dtype=float) @ matrix[:, :2].T + matrix[:, 2]


def to_celeba(points: np.ndarray, *, eye_weight: float = EYE_WEIGHT) -> np.ndarray:
    """The 2x3 similarity taking a face's five landmarks (5, 2) onto CelebA's aligned 178x218 layout.

    Fitted the way CelebA's alignment ran, from the layout onto the face, then inverted: a least-squares
    fit shrinks the scale of the side whose points scatter (the face's), so fitting the other way round
    would make faces about 1% too small on average.
    """
    return invert(fit_similarity(CELEBA_LANDMARKS, points, landmark_weights(eye_weight)))


def pick_face(areas: Sequence[float], face: int | None) -> int:
    """Index of the face to align among faces listed left to right: the largest when `face` is None,
    else the face-th from the left (counting from 1). Raises DataError when there is no such face."""
    if not areas:
        raise DataError("no face found")
    if face is None:
        return int(np.argmax(areas))
    if not 1 <= face <= len(areas):
        count = (
            "1 face found"
            if len(areas) == 1
            else f"{len(areas)} faces found (numbered 1 to {len(areas)} from the left)"
        )
        raise DataError(f"face {face} asked for, but {count}")
    return face - 1
