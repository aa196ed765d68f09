"""Edits as pictures: the input / reconstruction / edit grid, sweeps as a grid or a back-and-forth animation.

Images are uint8 (B, 3, S, S) at the model's size; each face is enlarged by a whole factor into a
cell of at least MIN_CELL pixels so that the labels above the columns fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from latentlab.data.pictures import IMAGE_FORMATS, load_font, make_grid, plain_text, save_image, text_size, upscale
from latentlab.directions.file import DirectionSet
from latentlab.errors import OutputError
from latentlab.flow.glow import Glow
from latentlab.render.edit import describe_edit, edit_latents, format_alpha, sweep_latents
from latentlab.render.faces import decode_images, display_size, encode_faces, model_view
from latentlab.render.interpolation import ping_pong
from latentlab.render.pictures import label_grid
from latentlab.render.video import FRAME_FORMATS, FrameWriter

MIN_CELL = 160  # px per face in edit grids: large enough for the labels above each column
STILL_FORMATS = tuple(IMAGE_FORMATS)
ANIMATION_FORMATS = tuple(f for f in FRAME_FORMATS if f not in STILL_FORMATS)
SWEEP_FORMATS = STILL_FORMATS + ANIMATION_FORMATS


def check_extension(out: str | Path, allowed: Sequence[str], what: str) -> str:
    """The lower-case suffix of `out`, or OutputError listing the allowed ones."""
    suffix = Path(out).suffix.lower()
    if suffix not in allowed:
        raise OutputError(
            f"cannot write {what} to {out}: unknown extension {suffix or '(none)'!r}; use {', '.join(allowed)}"
        )
    return suffix


def _cells(images: torch.Tensor, cell: int) -> list[np.ndarray]:
    """uint8 (N, 3, S, S) -> N arrays (3, cell, cell) for label_grid (whole factors repeat pixels)."""
    return [upscale(img.permute(1, 2, 0).numpy(), cell).transpose(2, 0, 1) for img in images]


def add_caption(image: np.ndarray, text: str, *, font_size: int = 16) -> np.ndarray:
    """A white strip with `text` centred under a (H, W, 3) uint8 image; its height depends only on the font."""
    font = load_font(font_size)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = text_size(draw, "Ag", font)[1]
    strip = line + font_size
    canvas = Image.new("RGB", (image.shape[1], image.shape[0] + strip), (255, 255, 255))
    canvas.paste(Image.fromarray(image), (0, 0))
    ImageDraw.Draw(canvas).text(
        (image.shape[1] // 2, image.shape[0] + strip // 2), plain_text(text), fill=(0, 0, 0), font=font, anchor="mm"
    )
    return np.asarray(canvas)


@dataclass(frozen=True)
class EditOutput:
    """What a render wrote: the file, its size (height, width) and its frame count (1 for a still)."""

    path: Path
    size: tuple[int, int]
    frames: int


def render_edit(
    model: Glow,
    images: torch.Tensor,
    dirs: DirectionSet,
    edits: Sequence[tuple[str, float]],
    out: str | Path,
    *,
    units: str = "raw",
    names: Sequence[str] | None = None,
    size: int | None = None,
    batch_size: int = 32,
) -> EditOutput:
    """One row per face: the input as the model sees it, its reconstruction, and the composed edit.

    images uint8 (B, 3, S, S); `names` label the rows (default: none for one face). Writes a PNG/JPEG.
    """
    out = Path(out)
    check_extension(out, STILL_FORMATS, "an edit")
    attrs, alphas = [n for n, _ in edits], [a for _, a in edits]
    z = encode_faces(model, images, batch_size=batch_size)
    both = torch.cat([z, edit_latents(z, dirs, attrs, alphas, units=units)])
    decoded = decode_images(model, both, batch_size=batch_size)
    recon, edited = decoded[: len(z)], decoded[len(z) :]
    cell = display_size(model.config.image_size, size, at_least=MIN_CELL)
    seen = _cells(model_view(model, images), cell)
    rows = [[s, r, e] for s, r, e in zip(seen, _cells(recon, cell), _cells(edited, cell), strict=True)]
    cols = ["input (as the model sees it)", "reconstruction", describe_edit(edits, units)]
    grid = label_grid(rows, _row_labels(names, len(rows)), cols)
    save_image(out, grid)
    return EditOutput(out, grid.shape[:2], 1)


def render_sweep(
    model: Glow,
    images: torch.Tensor,
    dirs: DirectionSet,
    attrs: Sequence[str],
    alphas: Sequence[float],
    out: str | Path,
    *,
    units: str = "raw",
    names: Sequence[str] | None = None,
    size: int | None = None,
    fps: float = 6.0,
    batch_size: int = 32,
) -> EditOutput:
    """Each face moved along each attribute over `alphas`.

    .png/.jpg: a grid, one row per (face, attribute): the input as the model sees it, then one
    column per alpha. .gif/.mp4/.webp: an animation going back and forth over the alphas, each
    frame a grid of faces (rows) by the input and each attribute (columns), the alpha underneath.
    """
    out = Path(out)
    suffix = check_extension(out, SWEEP_FORMATS, "a sweep")
    writer = None if suffix in STILL_FORMATS else FrameWriter(out, fps=fps)  # checks fps before the work
    for name in attrs:
        dirs.vector(name, units=units)  # unknown names and missing spreads fail before any decoding
    z = encode_faces(model, images, batch_size=batch_size)
    zs = sweep_latents(z, dirs, attrs, alphas, units=units)  # (B, A, S, D)
    n_faces, n_attrs, n_alphas = zs.shape[:3]
    decoded = decode_images(model, zs.reshape(-1, zs.shape[-1]), batch_size=batch_size)
    decoded = decoded.reshape(n_faces, n_attrs, n_alphas, *decoded.shape[1:])
    cell = display_size(model.config.image_size, size, at_least=MIN_CELL)
    seen = _cells(model_view(model, images), cell)
    tag = " sd" if units == "sigma" else ""
    if writer is None:
        rows, labels = [], []
        face_names = _row_labels(names, n_faces)
        for b in range(n_faces):
            for a, attr in enumerate(attrs):
                rows.append([seen[b], *_cells(decoded[b, a], cell)])
                labels.append(attr if face_names is None else f"{face_names[b]}: {attr}")
        cols = ["input", *(f"{format_alpha(x)}{tag}" for x in alphas)]
        grid = label_grid(rows, labels, cols)
        save_image(out, grid)
        return EditOutput(out, grid.shape[:2], 1)
    order = ping_pong(n_alphas)
    with writer:
        for s in order:
            rows = [[seen[b], *_cells(decoded[b, :, s], cell)] for b in range(n_faces)]
            grid = label_grid(rows, _row_labels(names, n_faces), ["input", *attrs])
            frame = add_caption(grid, f"alpha {format_alpha(alphas[s])}{tag}")
            writer.append(frame)
    return EditOutput(out, frame.shape[:2], len(order))


def _row_labels(names: Sequence[str] | None, n: int) -> list[str] | None:
    """Row labels only when there is more than one row of faces to tell apart."""
    return list(names) if names is not None and n > 1 else None


def save_model_view(model: Glow, images: torch.Tensor, out: str | Path, *, size: int | None = None) -> Path:
    """Write what the model sees of uint8 images (B, 3, S, S), in a row, each face enlarged by a whole factor."""
    cell = display_size(model.config.image_size, size, at_least=MIN_CELL)
    cells = np.stack(_cells(model_view(model, images), cell))
    return save_image(out, make_grid(cells, nrow=len(cells)) if len(cells) > 1 else cells[0].transpose(1, 2, 0))
