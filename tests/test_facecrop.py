"""Face alignment of photos (data/facecrop.py, data/landmarks.py): geometry recovered through the whole pipeline,
the face chosen among several, no face as a clear error, and the alignment benchmark on a handful of faces."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentlab.data import align, facecrop, landmarks
from latentlab.data.images import list_images, load_image
from latentlab.errors import DataError
from tests.conftest import SHARED_CELEBA

cv2 = pytest.importorskip("cv2")
needs_detector = pytest.mark.skipif(not landmarks.available(), reason="the landmark detector is not installed")
ROOT = Path(__file__).resolve().parent.parent
DOT_COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)])


def dot_detector(image: np.ndarray, **_) -> list[landmarks.Detection]:
    """Stands in for the landmark detector: the centroids of five pure-coloured dots."""
    points = []
    for colour in DOT_COLOURS:
        closeness = np.clip(1 - np.abs(image.astype(float) - colour).sum(axis=-1) / 255, 0, None)
        ys, xs = np.mgrid[: image.shape[0], : image.shape[1]]
        points.append(((xs * closeness).sum() / closeness.sum(), (ys * closeness).sum() / closeness.sum()))
    points = np.array(points)
    return [landmarks.Detection((*points.min(axis=0), *points.max(axis=0)), 1.0, points)]


def geometry(found: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(px the crop centre lands off, degrees turned) of an alignment against the truth it should undo."""
    error = align.compose(found, truth)
    centre = np.array([88.5, 108.5])
    return float(np.linalg.norm(align.apply(error, centre[None])[0] - centre)), abs(align.parts(error)[1])


def test_the_fit_undoes_a_known_placement_through_the_downscaled_search(monkeypatch):
    """Dots drawn where a placed face's landmarks fall, in a photo larger than the search size: the alignment
    found in the downscaled copy maps back onto the full-size photo exactly (pixel centres kept)."""
    monkeypatch.setattr(landmarks, "available", lambda: True)
    monkeypatch.setattr(landmarks, "detect_landmarks", dot_detector)
    truth = align.similarity(4.0, -17, (1100, 700), centre=(88.5, 108.5))  # the layout -> a 2400x1600 photo
    photo = np.full((1600, 2400, 3), 40, np.uint8)
    for colour, (x, y) in zip(DOT_COLOURS, align.apply(truth, align.CELEBA_LANDMARKS), strict=True):
        cv2.circle(photo, (round(x * 16), round(y * 16)), 8 * 16, tuple(int(c) for c in colour), -1, cv2.LINE_AA, 4)
    assert max(photo.shape) > facecrop.DETECT_SIDE
    shift, degrees = geometry(facecrop.face_matrix(photo), truth)
    assert shift < 0.3 and degrees < 0.2


def test_warping_back_a_placed_picture_gives_its_crop_again():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (28, 23, 3), dtype=np.uint8)
    aligned = cv2.resize(small, (178, 218), interpolation=cv2.INTER_CUBIC)  # smooth, every part different
    truth = align.similarity(2.6, 24, (300, 260), centre=(88.5, 108.5))
    photo = cv2.warpAffine(aligned, truth, (800, 700), flags=cv2.INTER_CUBIC, borderValue=(0, 0, 0))
    back = facecrop.warp_aligned(photo, align.invert(truth))
    assert back.size == (178 * 2, 218 * 2)  # a large face keeps its detail until the final crop
    original = facecrop.crop_aligned(Image.fromarray(aligned), 16)
    assert np.abs(facecrop.crop_aligned(back, 16).astype(float) - original).mean() < 1.5


def test_the_largest_sure_face_or_the_nth_from_the_left(monkeypatch):
    def box(x, side, score=1.0):
        pts = np.array(
            [[x + 0.3 * side, 50], [x + 0.7 * side, 50], [x + 0.5 * side, 60], [x + 0.35, 70], [x + 0.65, 70]]
        )
        return landmarks.Detection((x, 20, x + side, 20 + side), score, pts)

    found = [box(0, 60), box(100, 90), box(300, 40), box(400, 200, score=0.95)]  # left to right
    monkeypatch.setattr(landmarks, "available", lambda: True)
    monkeypatch.setattr(landmarks, "detect_landmarks", lambda image, **_: found)
    photo = np.zeros((300, 700, 3), np.uint8)

    def chosen(face):
        return align.invert(facecrop.face_matrix(photo, face=face))

    # the 0.95 face is left out: clutter that looks a little like a face, though the largest
    np.testing.assert_allclose(chosen(None), chosen(2))
    assert align.apply(chosen(None), align.CELEBA_LANDMARKS)[0, 0] == pytest.approx(100 + 0.3 * 90, abs=10)
    assert align.apply(chosen(3), align.CELEBA_LANDMARKS)[0, 0] == pytest.approx(300 + 0.3 * 40, abs=6)
    with pytest.raises(DataError, match="face 4 asked for, but 3 faces found"):
        facecrop.face_matrix(photo, face=4)


def test_face_n_implies_the_face_crop(monkeypatch, tmp_path):
    from latentlab.render.faces import load_faces

    calls = []

    def load_face(path, size, *, face=None):
        calls.append(face)
        return np.zeros((3, size, size), np.uint8)

    monkeypatch.setattr(facecrop, "load_face", load_face)
    assert load_faces([tmp_path / "a.png"], 8, face=2).shape == (1, 3, 8, 8) and calls == [2]


def test_without_the_detector_weights_the_haar_path_runs(monkeypatch, tmp_path):
    monkeypatch.setattr(landmarks, "weights_folder", lambda: None)
    assert not landmarks.available() and facecrop.detector_name() == "haar"
    Image.new("RGB", (200, 160), (90, 120, 150)).save(tmp_path / "wall.png")
    with pytest.raises(DataError, match="Haar cascade"):
        facecrop.load_face(tmp_path / "wall.png", 16)


@needs_detector
def test_a_photo_without_a_face_is_one_clear_line(tmp_path):
    y, x = np.mgrid[0:240, 0:320]
    wall = np.stack([x % 256, y, (x + y) % 256], -1).astype(np.uint8)
    Image.fromarray(wall).save(tmp_path / "wall.png")
    with pytest.raises(DataError) as caught:
        facecrop.load_face(tmp_path / "wall.png", 16)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'wall.png'}: no face found (MTCNN landmarks)") and "--face-crop" in message


@needs_detector
def test_a_drawn_face_turned_and_scaled_is_aligned_as_upright(tmp_path):
    """A toy face (drawn by the project) that the detector finds, placed turned and scaled in a larger
    picture: its alignment there agrees with the alignment of the untouched drawing."""
    from latentlab.data.toy_faces import render_toy_face, sample_toy_attributes

    rng = np.random.default_rng(0)
    drawing = np.asarray(render_toy_face(sample_toy_attributes(rng), rng, 128).convert("RGB"))
    drawing = np.pad(drawing, ((60, 60), (80, 80), (0, 0)), mode="edge")
    upright = facecrop.face_matrix(drawing)
    for scale, degrees in ((1.5, 15), (0.9, -12)):
        truth = align.similarity(scale, degrees, (150, 90), centre=(144, 124))
        photo = cv2.warpAffine(drawing, truth, (600, 450), borderMode=cv2.BORDER_REPLICATE)
        shift, turned = geometry(facecrop.face_matrix(photo), align.compose(truth, align.invert(upright)))
        assert shift < 3 and turned < 3


def sample_faces(count: int) -> list[Path]:
    images = SHARED_CELEBA / "images"
    if not images.is_dir():
        pytest.skip("the shared CelebA sample is not here")
    return list_images(images)[:count]


@needs_detector
def test_sample_faces_placed_in_photos_are_aligned_back_as_when_untouched(tmp_path):
    """CelebA faces turned, scaled and moved into a noisy picture: the alignment found there agrees
    with the alignment of the untouched 178x218 image (CelebA's own leaves some heads a few degrees
    tilted, which the landmark fit levels), and the crop is the untouched image's crop."""
    rng = np.random.default_rng(3)
    for path in sample_faces(6):
        face = np.asarray(Image.open(path).convert("RGB"))
        untouched = facecrop.face_matrix(face)
        truth = align.similarity(rng.uniform(0.6, 1.5), rng.uniform(-22, 22), rng.uniform(150, 250, 2), (88.5, 108.5))
        photo = np.clip(rng.normal(110, 25, (480, 640, 3)), 0, 255).astype(np.uint8)
        photo = cv2.GaussianBlur(photo, (0, 0), 3)
        inside = cv2.warpAffine(np.ones((218, 178), np.float32), truth, (640, 480))[..., None]
        photo = (inside * cv2.warpAffine(face, truth, (640, 480)) + (1 - inside) * photo).astype(np.uint8)
        shift, degrees = geometry(facecrop.face_matrix(photo), align.compose(truth, align.invert(untouched)))
        assert shift < 3 and degrees < 3, path.name
        Image.fromarray(photo).save(tmp_path / "photo.png")
        crop = facecrop.load_face(tmp_path / "photo.png", 32).astype(float)
        assert np.abs(crop - load_image(path, 32)).mean() < 25


@needs_detector
def test_the_alignment_benchmark_runs_on_a_handful_of_faces(tmp_path):
    sample_faces(4)
    out = tmp_path / "figures.json"
    script = [sys.executable, str(ROOT / "benchmarks" / "alignment.py"), "--images", str(SHARED_CELEBA / "images")]
    done = subprocess.run([*script, "--faces", "4", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| landmarks, photos | 100.0% |" in done.stdout
    rows = json.loads(out.read_text())
    assert set(rows) == {f"{m}, {k}" for m in ("landmarks", "haar") for k in ("untouched", "photos")}
    assert rows["landmarks, photos"]["shift_median"] < 4 and rows["landmarks, photos"]["faces"] == 4
