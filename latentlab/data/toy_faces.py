"""Toy faces: procedurally drawn, labeled cartoon faces with CelebA attribute names, so every command runs offline.

What each label draws: a hair colour (one of four); Bangs, a scalloped fringe over the forehead; Smiling,
a wider mouth curved up at the corners; Mouth_Slightly_Open, a dark open mouth with teeth; Eyeglasses,
dark frames with tinted lenses; Male, a squarer jaw, stubble shading and heavier brows; Wearing_Hat, a
beanie or brimmed hat; Pale_Skin, the skin tone moved most of the way to a pale one.

Each image comes from its own generator, np.random.default_rng([seed, index]): the set is deterministic
and can be drawn in parallel. The generator first draws the labels (`sample_toy_attributes`), then every
unlabeled variation (`toy_drawing.Look`) in a fixed order, so switching one attribute on or off changes only that
feature of an otherwise identical face.
"""

from __future__ import annotations

import functools
import io
import multiprocessing
import re
from pathlib import Path

import numpy as np
from PIL import Image

from latentlab.data.toy_drawing import draw_face, sample_look
from latentlab.errors import DataError, OutputError
from latentlab.fileio import atomic_write_bytes, atomic_write_text
from latentlab.progress import progress_bar

HAIR_COLOURS = {  # one categorical draw: exactly one of these labels is +1
    "Black_Hair": (34, 30, 30),
    "Blond_Hair": (236, 200, 112),
    "Brown_Hair": (120, 74, 40),
    "Gray_Hair": (172, 172, 178),
}
TOY_ATTRIBUTES: tuple[str, ...] = (  # CelebA's official order
    "Bangs",
    "Black_Hair",
    "Blond_Hair",
    "Brown_Hair",
    "Eyeglasses",
    "Gray_Hair",
    "Male",
    "Mouth_Slightly_Open",
    "Pale_Skin",
    "Smiling",
    "Wearing_Hat",
)
IMAGE_FOLDER, LABEL_FILE = "img_align_celeba", "list_attr_celeba.csv"
MIN_SIZE = 16


def sample_toy_attributes(rng: np.random.Generator) -> dict[str, bool]:
    """Draw one face's labels: hair colour as one categorical, every other attribute independent, p = 0.5."""
    hair = list(HAIR_COLOURS)[int(rng.integers(len(HAIR_COLOURS)))]
    attrs = {name: False for name in TOY_ATTRIBUTES}
    attrs[hair] = True
    for name in TOY_ATTRIBUTES:
        coin = bool(rng.random() < 0.5)  # drawn for every name, so the stream does not depend on the hair
        if name not in HAIR_COLOURS:
            attrs[name] = coin
    return attrs


def render_toy_face(attrs: dict[str, bool], rng: np.random.Generator, size: int) -> Image.Image:
    """Draw one labeled face -> RGB PIL image (size, size); unlabeled variation comes from `rng`."""
    unknown = set(attrs) - set(TOY_ATTRIBUTES)
    if unknown:
        raise DataError(f"unknown toy-face attribute {sorted(unknown)[0]!r}; known: {', '.join(TOY_ATTRIBUTES)}")
    hairs = [name for name in HAIR_COLOURS if attrs.get(name)]
    if len(hairs) != 1:
        raise DataError(f"toy faces need exactly one hair colour of {', '.join(HAIR_COLOURS)}; got {hairs or 'none'}")
    on = {name: bool(attrs.get(name, False)) for name in TOY_ATTRIBUTES}
    return draw_face(sample_look(rng), on, HAIR_COLOURS[hairs[0]], size)


def _draw_one(index: int, *, seed: int, size: int, folder: Path, digits: int) -> list[int]:
    """Render image `index` (0-based) to folder/NNNNNN.png (1-based name); return its ±1 labels."""
    rng = np.random.default_rng([seed, index])
    attrs = sample_toy_attributes(rng)
    buffer = io.BytesIO()
    render_toy_face(attrs, rng, size).save(buffer, format="PNG")
    atomic_write_bytes(folder / f"{index + 1:0{digits}d}.png", buffer.getvalue())
    return [1 if attrs[name] else -1 for name in TOY_ATTRIBUTES]


def make_toy_faces(
    out: Path, *, count: int, size: int = 64, seed: int = 0, progress: bool = True, workers: int = 2
) -> Path:
    """Write `count` toy faces as out/img_align_celeba/000001.png … plus out/list_attr_celeba.csv (Kaggle format).

    The same seed gives byte-identical files. The label file is written last, atomically, so a dataset
    without one is known to be incomplete. Returns `out`.
    """
    out = Path(out)
    if count < 1:
        raise DataError(f"toy-face count {count} is too small; ask for at least 1 (for example --count 5000)")
    if size < MIN_SIZE:
        raise DataError(f"toy-face size {size} is too small; use {MIN_SIZE} px or more (for example --size 64)")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} is a file; give a folder for the toy-face dataset")
    folder = out / IMAGE_FOLDER
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {folder}: {exc.strerror or exc}") from None
    digits = max(6, len(str(count)))
    draw = functools.partial(_draw_one, seed=seed, size=size, folder=folder, digits=digits)
    rows: list[list[int]] = []
    with progress_bar(f"drawing {count} toy faces at {size}px", count, enabled=progress, unit="face") as advance:
        if workers <= 1 or count < 4 * workers:
            for index in range(count):
                rows.append(draw(index))
                advance()
        else:
            with multiprocessing.Pool(workers) as pool:
                for row in pool.imap(draw, range(count), chunksize=max(1, min(32, count // (workers * 8)))):
                    rows.append(row)
                    advance()
    _remove_extra_images(folder, count)
    names = [f"{i + 1:0{digits}d}.png" for i in range(count)]
    lines = [",".join(("image_id", *TOY_ATTRIBUTES))]
    lines += [",".join((name, *map(str, row))) for name, row in zip(names, rows, strict=True)]
    atomic_write_text(out / LABEL_FILE, "\n".join(lines) + "\n")
    return out


def _remove_extra_images(folder: Path, count: int) -> None:
    """Delete numbered toy faces past `count` left by an earlier, larger run, so labels and images agree."""
    for path in folder.glob("*.png"):
        if re.fullmatch(r"\d{6,}", path.stem) and int(path.stem) > count:
            path.unlink()
