"""The alignment maths (data/align.py): similarity fits on synthetic landmarks, transform round trips, face choice."""

from __future__ import annotations

import numpy as np
import pytest

from latentlab.data import align
from latentlab.errors import DataError


@pytest.mark.parametrize("seed", range(5))
def test_fit_recovers_a_known_similarity_whatever_the_weights(seed):
    rng = np.random.default_rng(seed)
    truth = align.similarity(rng.uniform(0.3, 3), rng.uniform(-180, 180), rng.uniform(-200, 200, 2), (40, 70))
    src = rng.uniform(0, 300, (5, 2))
    for weights in (None, align.landmark_weights(), rng.uniform(0.1, 5, 5)):
        np.testing.assert_allclose(align.fit_similarity(src, align.apply(truth, src), weights), truth, atol=1e-9)


def test_fit_is_the_weighted_least_squares_similarity():
    rng = np.random.default_rng(1)
    src, dst = rng.uniform(0, 100, (5, 2)), rng.uniform(0, 100, (5, 2))
    w = align.landmark_weights()

    def cost(m):
        return float(w @ ((align.apply(m, src) - dst) ** 2).sum(axis=1))

    best = align.fit_similarity(src, dst, w)
    a, b = best[0, 0], best[1, 0]
    for _ in range(200):  # any nearby similarity costs more
        da, db, dx, dy = rng.normal(0, 0.01, 4)
        other = np.array([[a + da, -(b + db), best[0, 2] + dx], [b + db, a + da, best[1, 2] + dy]])
        assert cost(other) > cost(best)


def test_heavier_eyes_follow_the_eyes_when_the_mouth_moves():
    face = align.CELEBA_LANDMARKS.copy()
    face[3:] += [[0, 9], [0, 9]]  # an open mouth: the corners drop
    eyes = [0, 1]

    def eye_error(weight):
        fitted = align.apply(align.fit_similarity(face, align.CELEBA_LANDMARKS, align.landmark_weights(weight)), face)
        return np.abs(fitted[eyes] - align.CELEBA_LANDMARKS[eyes]).max()

    assert eye_error(1) > eye_error(3) > eye_error(10) > 0.1 > eye_error(1000)


def test_to_celeba_is_the_identity_on_the_layout_and_undoes_a_placement():
    np.testing.assert_allclose(
        align.to_celeba(align.CELEBA_LANDMARKS), np.hstack([np.eye(2), np.zeros((2, 1))]), atol=1e-9
    )
    placed = align.similarity(2.5, 20, (300, 100), centre=(89, 109))
    found = align.to_celeba(align.apply(placed, align.CELEBA_LANDMARKS))
    np.testing.assert_allclose(align.compose(found, placed), align.similarity(1, 0), atol=1e-9)


def test_compose_invert_apply_and_parts_agree():
    m = align.similarity(1.7, 33, (5, -8), centre=(10, 20))
    scale, degrees = align.parts(m)
    assert scale == pytest.approx(1.7) and degrees == pytest.approx(33)
    np.testing.assert_allclose(align.compose(m, align.invert(m)), align.similarity(1, 0), atol=1e-12)
    p = np.array([[3.0, 4.0], [10.0, 20.0]])
    np.testing.assert_allclose(align.apply(m, p)[1], [15, 12])  # the centre only moves by the shift
    np.testing.assert_allclose(align.apply(align.compose(align.invert(m), m), p), p, atol=1e-12)


def test_turning_follows_opencv_counter_clockwise_as_seen():
    cv2 = pytest.importorskip("cv2")
    np.testing.assert_allclose(align.similarity(0.8, 25, centre=(30, 40)), cv2.getRotationMatrix2D((30, 40), 25, 0.8))
    # counter-clockwise as seen with y down: a point right of the centre moves up (smaller y)
    assert align.apply(align.similarity(1, 90), np.array([[1.0, 0.0]]))[0] == pytest.approx([0, -1])


def test_a_degenerate_fit_is_a_clear_error():
    with pytest.raises(DataError, match="one point"):
        align.fit_similarity(np.ones((5, 2)), align.CELEBA_LANDMARKS)


def test_pick_face_largest_by_default_else_counted_from_the_left():
    areas = [400.0, 900.0, 100.0]  # listed left to right
    assert align.pick_face(areas, None) == 1
    assert [align.pick_face(areas, n) for n in (1, 2, 3)] == [0, 1, 2]
    with pytest.raises(DataError, match=r"face 4 asked for, but 3 faces found \(numbered 1 to 3 from the left\)"):
        align.pick_face(areas, 4)
    with pytest.raises(DataError, match="but 1 face found"):
        align.pick_face([5.0], 2)
    with pytest.raises(DataError, match="no face found"):
        align.pick_face([], None)
