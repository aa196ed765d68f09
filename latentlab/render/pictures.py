"""Edits as pictures: labelled grids, the input / reconstruction / edit grid, sweeps as a grid or an animation.

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

from latentlab.data.pictures import (
    IMAGE_FORMATS,
    as_array,
    load_font,
    make_grid,
    plain_text,
    save_image,
    text_size,
    upscale,
)
from latentlab.directions.file import DirectionSet
from latentlab.errors import OutputError
from latentlab.flow.glow import Glow
from latentlab.render.edit import describe_edit, edit_latents, format_alpha, sweep_latents
from latentlab.render.faces import decode_images, display_size, encode_faces, model_view
from latentlab.render.interpolation import ping_pong
from latentlab.render.video import FRAME_FORMATS, FrameWriter

MIN_CELL = 160  # px per face in edit grids: large enough for the labels above each column
STILL_FORMATS = tuple(IMAGE_FORMATS)
ANIMATION_FORMATS = tuple(f for f in FRAME_FORMATS if f not in STILL_FORMATS)
SWEEP_FORMATS = STILL_FORMATS + ANIMATION_FORMATS


def label_grid(
    grid_rows: Sequence[Sequence[torch.Tensor | np.ndarray]],
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    *,
    pad: int = 2,
    pad_value: int = 255,
    font_size: int = 14,
) -> np.ndarray:
    """A grid of uint8 images (3, H, W), one list per row, with text labels in a margin -> (H', W', 3).

    Row labels go left of each row, column labels above each column (PIL's default font, shrunk
    down to 8 px until the column labels fit their columns; it has no Greek, so "α" is written
    "alpha", see `plain_text`). Short rows are filled with blank
    cells. Upscale small images first (see `upscale`) so the text is not larger than the faces.
    """
    if not grid_rows or not any(grid_rows):
        raise ValueError("label_grid needs at least one image")
    first = as_array(next(img for row in grid_rows for img in row))
    cols = max(len(row) for row in grid_rows)
    blank = np.full_like(first, pad_value)
    cells = [as_array(row[c]) if c < len(row) else blank for row in grid_rows for c in range(cols)]
    grid = make_grid(np.stack(cells), nrow=cols, pad=pad, pad_value=pad_value)
    if row_labels is not None and len(row_labels) != len(grid_rows):
        raise ValueError(f"{len(row_labels)} row labels for {len(grid_rows)} rows")
    if col_labels is not None and len(col_labels) != cols:
        raise ValueError(f"{len(col_labels)} column labels for {cols} columns")
    if row_labels is None and col_labels is None:
        return grid
    row_labels = None if row_labels is None else [plain_text(s) for s in row_labels]
    col_labels = None if col_labels is None else [plain_text(s) for s in col_labels]

    h, w = first.shape[1:]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    size = font_size
    font = load_font(size)
    while col_labels and size > 8 and max(text_size(probe, s, font)[0] for s in col_labels) > w:
        size -= 1
        font = load_font(size)
    line = text_size(probe, "Ag", font)[1]
    margin = max(4, size // 2)
    left = max(text_size(probe, s, font)[0] for s in row_labels) + 2 * margin if row_labels else 0
    top = line + 2 * margin if col_labels else 0
    ink = (0, 0, 0) if pad_value >= 128 else (255, 255, 255)
    canvas = Image.new("RGB", (grid.shape[1] + left, grid.shape[0] + top), (pad_value,) * 3)
    canvas.paste(Image.fromarray(grid), (left, top))
    draw = ImageDraw.Draw(canvas)
    for r, text in enumerate(row_labels or []):
        y = top + pad + r * (h + pad) + h // 2
        draw.text((left - margin, y), text, fill=ink, font=font, anchor="rm")
    for c, text in enumerate(col_labels or []):
        x = left + pad + c * (w + pad) + w // 2
        draw.text((x, top - margin), text, fill=ink, font=font, anchor="ms")
    return np.asarray(canvas)


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
    z: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    label: str | None = None,
) -> EditOutput:
    """One row per face: the input as the model sees it, its reconstruction, and the composed edit.

    images uint8 (B, 3, S, S); `names` label the rows (default: none for one face). Writes a PNG/JPEG.
    `z` (B, D) are the faces' latents when the caller has them already (else they are encoded here);
    `mask` restricts the edit to some levels (see `edit_latents`), `label` then names the edit's column.
    """
    out = Path(out)
    check_extension(out, STILL_FORMATS, "an edit")
    attrs, alphas = [n for n, _ in edits], [a for _, a in edits]
    z = encode_faces(model, images, batch_size=batch_size) if z is None else z
    both = torch.cat([z, edit_latents(z, dirs, attrs, alphas, units=units, mask=mask)])
    decoded = decode_images(model, both, batch_size=batch_size)
    recon, edited = decoded[: len(z)], decoded[len(z) :]
    cell = display_size(model.config.image_size, size, at_least=MIN_CELL)
    seen = _cells(model_view(model, images), cell)
    rows = [[s, r, e] for s, r, e in zip(seen, _cells(recon, cell), _cells(edited, cell), strict=True)]
    cols = ["input (as the model sees it)", "reconstruction", label or describe_edit(edits, units)]
    grid = label_grid(rows, _row_labels(names, len(rows)), cols)
    save_image(out, grid)
    return EditOutput(out, grid.shape[:2], 1)


def edited_faces(
    model: Glow,
    images: torch.Tensor,
    dirs: DirectionSet,
    edits: Sequence[tuple[str, float]],
    *,
    units: str = "raw",
    batch_size: int = 32,
    z: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 (B, 3, S, S): each face's composed edit alone, decoded in its own batch (as the studio shows it).

    `z` and `mask` as in `render_edit`.
    """
    z = encode_faces(model, images, batch_size=batch_size) if z is None else z
    edited = edit_latents(z, dirs, [n for n, _ in edits], [a for _, a in edits], units=units, mask=mask)
    return decode_images(model, edited, batch_size=batch_size)


def render_bare_edit(
    model: Glow,
    images: torch.Tensor,
    dirs: DirectionSet,
    edits: Sequence[tuple[str, float]],
    out: str | Path,
    *,
    units: str = "raw",
    size: int | None = None,
    batch_size: int = 32,
    z: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> EditOutput:
    """Only the edited faces, no labels: one face at `size` px (default the model's size), several in a row.

    `z` and `mask` as in `render_edit`.
    """
    out = Path(out)
    check_extension(out, STILL_FORMATS, "an edit")
    edited = edited_faces(model, images, dirs, edits, units=units, batch_size=batch_size, z=z, mask=mask)
    cells = np.stack(_cells(edited, display_size(model.config.image_size, size, at_least=1)))
    picture = make_grid(cells, nrow=len(cells)) if len(cells) > 1 else cells[0].transpose(1, 2, 0)
    save_image(out, picture)
    return EditOutput(out, picture.shape[:2], 1)


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
    z: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    where: str = "",
) -> EditOutput:
    """Each face moved along each attribute over `alphas` (`z` and `mask` as in `render_edit`; `where`, e.g.
    "level 3 (4x4)", follows each attribute's name).

    .png/.jpg: a grid, one row per (face, attribute): the input as the model sees it, then one
    column per alpha. .gif/.mp4/.webp: an animation going back and forth over the alphas, each
    frame a grid of faces (rows) by the input and each attribute (columns), the alpha underneath.
    """
    out = Path(out)
    suffix = check_extension(out, SWEEP_FORMATS, "a sweep")
    writer = None if suffix in STILL_FORMATS else FrameWriter(out, fps=fps)  # checks fps before the work
    for name in attrs:
        dirs.vector(name, units=units)  # unknown names and missing spreads fail before any decoding
    z = encode_faces(model, images, batch_size=batch_size) if z is None else z
    zs = sweep_latents(z, dirs, attrs, alphas, units=units, mask=mask)  # (B, A, S, D)
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
                shown = f"{attr} at {where}" if where else attr
                labels.append(shown if face_names is None else f"{face_names[b]}: {shown}")
        cols = ["input", *(f"{format_alpha(x)}{tag}" for x in alphas)]
        grid = label_grid(rows, labels, cols)
        save_image(out, grid)
        return EditOutput(out, grid.shape[:2], 1)
    order = ping_pong(n_alphas)
    with writer:
        for s in order:
            rows = [[seen[b], *_cells(decoded[b, :, s], cell)] for b in range(n_faces)]
            grid = label_grid(
                rows, _row_labels(names, n_faces), ["input", *(f"{a} at {where}" if where else a for a in attrs)]
            )
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
