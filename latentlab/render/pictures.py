"""Pictures of edits: grids of faces with text labels in a margin (rows of edits, columns of alphas)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from latentlab.data.pictures import as_array, load_font, make_grid, plain_text, text_size


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
