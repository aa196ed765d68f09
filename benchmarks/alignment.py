"""Face alignment on photo-like pictures of known geometry: the landmark aligner against the Haar path.

Each CelebA aligned face (default: the shared sample's held-out split) is turned (±25°), scaled (0.5-1.5x)
and moved to a random place of a 640x480 picture, edges feathered, over the texture of another face cut
into shuffled, blurred tiles (no face in it), with a little noise; the transform used is the truth. Each
method aligns the picture back. Per method: faces found, the geometry error of the alignment against
CelebA's own (shift of the crop centre in pixels at 178x218, rotation in degrees, scale ratio), the mean
absolute pixel difference (0-255) between the re-aligned and the original model-size crops, and with
--model the bits/dim of both under that model. The "untouched" rows align the original 178x218 images:
CelebA's alignment differs a little from any landmark fit, and that floor is in every figure.

--calibrate measures the landmark layout (the detector's mean points on --images) and the fit's eye weight
(how far the fit moves the crop of --check's already-aligned faces; the least is best): data/align.py's constants.

usage: python benchmarks/alignment.py [--images DIR] [--faces 300] [--seed 0] [--model RUN] [--sheet PNG]
       python benchmarks/alignment.py --calibrate --images TRAIN_DIR --check HELD_OUT_DIR
Prints a markdown table (and the command line); --json writes every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from latentlab.data import align, landmarks  # noqa: E402
from latentlab.data.facecrop import crop_aligned, face_matrix, warp_aligned  # noqa: E402
from latentlab.data.images import list_images, load_image  # noqa: E402
from latentlab.errors import DataError  # noqa: E402
from latentlab.progress import progress_bar  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "celeba-sample"
CANVAS = (640, 480)  # width, height
CENTRE = np.array([88.5, 108.5])  # the centre of the 148 px crop square in the 178x218 layout
MAX_TURN, SCALES = 25.0, (0.5, 1.5)
GROSS = 10.0  # px: an alignment further off than this put a wrong face or a wrong place in the crop
METHODS = ("landmarks", "haar")


def background(texture: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 640x480 photo-like background from an image's texture: 40 px tiles shuffled, then blurred."""
    tile = 40
    big = cv2.resize(texture, CANVAS, interpolation=cv2.INTER_LINEAR)
    rows, cols = CANVAS[1] // tile, CANVAS[0] // tile
    tiles = big.reshape(rows, tile, cols, tile, 3).transpose(0, 2, 1, 3, 4).reshape(rows * cols, tile, tile, 3)
    tiles = tiles[rng.permutation(len(tiles))]
    shuffled = tiles.reshape(rows, cols, tile, tile, 3).transpose(0, 2, 1, 3, 4).reshape(CANVAS[1], CANVAS[0], 3)
    return cv2.GaussianBlur(shuffled, (0, 0), 6)


def make_photo(face: np.ndarray, texture: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 178x218 aligned face (H, W, 3) placed in a 640x480 picture: (the picture, the 2x3 truth taking
    aligned coordinates to picture coordinates)."""
    scale, turn = rng.uniform(*SCALES), rng.uniform(-MAX_TURN, MAX_TURN)
    h, w = face.shape[:2]
    placed = align.similarity(scale, turn, centre=CENTRE)
    corners = align.apply(placed, np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]]))
    low, high = -corners.min(axis=0), np.array(CANVAS) - 1 - corners.max(axis=0)
    truth = align.compose(align.similarity(1.0, 0.0, shift=rng.uniform(low, high)), placed)
    xs, ys = np.arange(w), np.arange(h)[:, None]
    ramp = np.minimum(np.minimum(xs + 1, w - xs), np.minimum(ys + 1, h - ys))  # px to the nearest edge
    mask = np.clip(ramp / 8.0, 0, 1).astype(np.float32)  # an 8 px feathered edge
    warped = cv2.warpAffine(face, truth, CANVAS, flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(mask, truth, CANVAS, flags=cv2.INTER_LINEAR)[..., None]
    photo = alpha * warped + (1 - alpha) * background(texture, rng) + rng.normal(0, 3, (CANVAS[1], CANVAS[0], 3))
    return np.clip(np.rint(photo), 0, 255).astype(np.uint8), truth


def geometry(found: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """How far an alignment (picture -> layout) is from undoing the truth (layout -> picture):
    (shift of the crop centre in px at 178x218, rotation in degrees, scale ratio)."""
    error = align.compose(found, truth)
    scale, degrees = align.parts(error)
    return float(np.linalg.norm(align.apply(error, CENTRE[None])[0] - CENTRE)), degrees, scale


def bits_per_dim(model, crops: np.ndarray) -> np.ndarray:
    """bits/dim of uint8 crops (N, 3, S, S) under a model, with fixed dequantisation noise."""
    import torch

    from latentlab.data.quantize import dequantize
    from latentlab.flow.glow import evaluating

    gen = torch.Generator().manual_seed(4321)
    out = []
    with evaluating(model), torch.inference_mode():
        for batch in torch.from_numpy(crops).split(64):
            x = dequantize(batch, model.config.n_bits, generator=gen)
            out.append(model.bits_per_dim_from_log_prob(model.log_likelihood(x)).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def run(paths: list[Path], *, seed: int, size: int, model=None, sheet: Path | None = None) -> dict:
    """Every figure of the table, per method, for the faces at `paths`."""
    rng = np.random.default_rng(seed)
    faces = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    original = np.stack([load_image(p, size) for p in paths])
    rows: dict[str, dict] = {}
    shown = []
    with progress_bar("align", len(paths) * len(METHODS)) as advance:
        photos = [make_photo(face, faces[(i + 1) % len(faces)], rng) for i, face in enumerate(faces)]
        for method in METHODS:
            for untouched in (True, False):
                found, geo, crops = [], [], []
                for i, (photo, truth) in enumerate(photos):
                    picture, known = (
                        (faces[i], np.hstack([np.eye(2), np.zeros((2, 1))])) if untouched else (photo, truth)
                    )
                    advance(0 if untouched else 1)
                    try:
                        matrix = face_matrix(picture, method=method)
                    except DataError:
                        continue
                    found.append(i)
                    geo.append(geometry(matrix, known))
                    crops.append(crop_aligned(warp_aligned(picture, matrix), size))
                rows[f"{method}, {'untouched' if untouched else 'photos'}"] = summary(
                    found, geo, crops, original, len(photos), model
                )
                if sheet is not None and not untouched:
                    shown.append((method, dict(zip(found, crops, strict=True))))
    if sheet is not None:
        contact_sheet(sheet, [p[0] for p in photos], original, shown)
    return rows


def summary(found, geo, crops, original, total, model) -> dict:
    geo = np.array(geo).reshape(-1, 3)
    shift, turn, scale = geo[:, 0], np.abs(geo[:, 1]), geo[:, 2]
    crops = np.stack(crops) if crops else np.zeros((0, *original.shape[1:]), np.uint8)
    row = {
        "faces": total,
        "found": len(found) / total,
        "within_10px": float((shift <= GROSS).sum() / total),
        "shift_median": float(np.median(shift)) if len(shift) else math.nan,
        "shift_p90": float(np.percentile(shift, 90)) if len(shift) else math.nan,
        "rotation_median": float(np.median(turn)) if len(turn) else math.nan,
        "rotation_p90": float(np.percentile(turn, 90)) if len(turn) else math.nan,
        "scale_error_median": float(np.median(np.abs(scale - 1))) if len(scale) else math.nan,
        "pixel_mad": float(np.abs(crops.astype(float) - original[found].astype(float)).mean()) if found else math.nan,
    }
    if model is not None and found:
        row["bpd_realigned"] = float(bits_per_dim(model, crops).mean())
        row["bpd_untouched"] = float(bits_per_dim(model, original[found]).mean())
    return row


def contact_sheet(path: Path, photos, original, shown, count: int = 8, side: int = 96) -> None:
    """Rows of: the picture, the original crop, then each method's re-aligned crop (grey: not found)."""
    count = min(count, len(photos))
    cells = []
    for i in range(count):
        photo = cv2.resize(photos[i], (side * 4 // 3, side), interpolation=cv2.INTER_AREA)
        row = [photo, cv2.resize(original[i].transpose(1, 2, 0), (side, side), interpolation=cv2.INTER_NEAREST)]
        for _, crops in shown:
            crop = crops.get(i)
            grey = np.full((side, side, 3), 128, np.uint8)
            crop = grey if crop is None else crop.transpose(1, 2, 0)
            row.append(cv2.resize(crop, (side, side), interpolation=cv2.INTER_NEAREST))
        cells.append(np.hstack([np.pad(c, ((2, 2), (2, 2), (0, 0)), constant_values=255) for c in row]))
    Image.fromarray(np.vstack(cells)).save(path)


def calibrate(train: list[Path], check: list[Path]) -> None:
    """Print the detector's mean landmarks on `train` and, per eye weight, how far the fit moves `check`'s crops."""

    def points(paths):
        out = []
        for p in paths:
            found = landmarks.detect_landmarks(np.asarray(Image.open(p).convert("RGB")))
            if found:
                out.append(max(found, key=lambda d: d.area).points)
        return np.array(out)

    mean = points(train).mean(axis=0)
    print("layout:", np.round(mean, 1).tolist())
    held = points(check)
    grid = np.stack(np.meshgrid(np.linspace(15, 162, 8), np.linspace(35, 182, 8)), -1).reshape(-1, 2)
    print("| eye weight | crop moved, median px | mean px | mean scale |\n|---|---|---|---|")
    for weight in (1, 2, 3, 4, 6, 8, 16):
        moved, scales = [], []
        for p in held:
            matrix = align.invert(align.fit_similarity(np.round(mean, 1), p, align.landmark_weights(weight)))
            moved.append(np.sqrt(((align.apply(matrix, grid) - grid) ** 2).sum(axis=1).mean()))
            scales.append(align.parts(matrix)[0])
        print(f"| {weight} | {np.median(moved):.2f} | {np.mean(moved):.2f} | {np.mean(scales):.4f} |")


def table(rows: dict) -> str:
    with_bpd = any("bpd_realigned" in r for r in rows.values())
    head = (
        "| method | found | within 10 px | shift px, median / p90 | rotation °, median / p90 | scale error | pixel MAD"
    )
    lines = [head + (" | bits/dim re-aligned / untouched |" if with_bpd else " |")]
    lines.append("|---" * (8 if with_bpd else 7) + "|")
    for name, r in rows.items():
        line = (
            f"| {name} | {100 * r['found']:.1f}% | {100 * r['within_10px']:.1f}% | {r['shift_median']:.2f} / "
            f"{r['shift_p90']:.2f} | {r['rotation_median']:.2f} / {r['rotation_p90']:.2f} | "
            f"{100 * r['scale_error_median']:.1f}% | {r['pixel_mad']:.2f}"
        )
        if with_bpd:
            line += f" | {r.get('bpd_realigned', math.nan):.3f} / {r.get('bpd_untouched', math.nan):.3f}"
        lines.append(line + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, default=ROOT / "celeba" / "held_out", help="(else the sample's images)")
    parser.add_argument("--faces", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=32, help="crop size for the pixel difference without --model")
    parser.add_argument("--model", type=Path, help="a run folder: bits/dim of the crops (and its image size)")
    parser.add_argument("--sheet", type=Path, help="write a contact sheet of the first 8 faces here (PNG)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--calibrate", action="store_true")
    parser.add_argument("--check", type=Path, help="with --calibrate: the already-aligned faces to check the fit on")
    args = parser.parse_args(argv)
    if not args.images.is_dir():
        args.images = SAMPLE / "images"
    paths = list_images(args.images)[: args.faces]
    if not landmarks.available():
        raise SystemExit("the landmark detector is not installed: pip install 'latentlab[face]'")
    if args.calibrate:
        calibrate(paths, list_images(args.check or args.images)[: args.faces])
        return
    model, size = None, args.size
    if args.model is not None:
        from latentlab.checkpoint import load_model

        model = load_model(args.model)
        size = model.config.image_size
    rows = run(paths, seed=args.seed, size=size, model=model, sheet=args.sheet)
    print(f"`python benchmarks/alignment.py {' '.join(sys.argv[1:] if argv is None else argv)}`, {len(paths)} faces\n")
    print(table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
