"""The audit heat map: directions down, judged attributes across, each cell the signed change of a judge's
probability; the edited attribute's own cell outlined. Drawn with Pillow, legible up to 40 x 40 and beyond."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from latentlab.data.pictures import load_font, plain_text, text_size

_NEG = np.array([33, 102, 172], dtype=np.float64)  # the judge's probability falls: blue
_MID = np.array([247, 247, 247], dtype=np.float64)
_POS = np.array([178, 24, 43], dtype=np.float64)  # it rises: red
_NAN = (190, 190, 190)


def _colour(values: np.ndarray, scale: float) -> np.ndarray:
    """Values (...) in [-scale, scale] (clipped) -> uint8 RGB (..., 3), blue-white-red; NaN grey."""
    v = np.asarray(values, dtype=np.float64)
    k = np.clip(np.abs(np.nan_to_num(v)) / scale, 0, 1)[..., None]
    rgb = (1 - k) * _MID + k * np.where((v >= 0)[..., None], _POS, _NEG)
    rgb[np.isnan(v)] = _NAN
    return np.round(rgb).astype(np.uint8)


def audit_heatmap(
    values: np.ndarray,
    rows: Sequence[str],
    columns: Sequence[str],
    *,
    title: Sequence[str] = (),
    scale: float = 0.5,
    separate_last: bool = False,
) -> np.ndarray:
    """Draw `values` (R, C) as a uint8 (H, W, 3) picture: `rows` down the left, `columns` across the top
    (read bottom to top), a cell outlined where a row's name is its column's, a colour bar of ±`scale`.

    `title` lines go on top; `separate_last` leaves a gap above the last row (the random control).
    """
    values = np.asarray(values, dtype=np.float64)
    r, c = len(rows), len(columns)
    if values.shape != (r, c) or r == 0 or c == 0:
        raise ValueError(f"a matrix of shape {values.shape} for {r} rows and {c} columns")
    cell = int(np.clip(900 // max(r, c), 20, 48))
    font = load_font(int(np.clip(cell * 0.6, 12, 15)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    rows, columns = [plain_text(n) for n in rows], [plain_text(n) for n in columns]
    title = [plain_text(t) for t in title]
    line = text_size(probe, "Ag", font)[1] + 4
    left = max(text_size(probe, n, font)[0] for n in rows) + 12
    header = max(text_size(probe, n, font)[0] for n in columns) + 10
    top = 10 + len(title) * line + header
    gap = cell // 2 if separate_last and r > 1 else 0
    y_of = [top + i * cell + (gap if separate_last and i == r - 1 else 0) for i in range(r)]
    bar_x = left + c * cell + 18
    width = max(
        bar_x + 16 + 10 + text_size(probe, f"+{scale:.2f}", font)[0] + 10,
        *(text_size(probe, t, font)[0] + 20 for t in title),
    )
    canvas = Image.new("RGB", (width, y_of[-1] + cell + 12), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, text in enumerate(title):
        draw.text((10, 8 + k * line), text, fill=(0, 0, 0), font=font)

    colours = _colour(values, scale)
    for i in range(r):
        strip = np.repeat(np.repeat(colours[i : i + 1], cell, axis=0), cell, axis=1)
        canvas.paste(Image.fromarray(strip), (left, y_of[i]))
        for j in range(c + 1):  # thin white lines between cells
            draw.line([(left + j * cell, y_of[i]), (left + j * cell, y_of[i] + cell)], fill=(255, 255, 255))
        draw.line([(left, y_of[i]), (left + c * cell, y_of[i])], fill=(255, 255, 255))
        draw.text((left - 6, y_of[i] + cell // 2), rows[i], fill=(0, 0, 0), font=font, anchor="rm")
        if cell >= 30:
            for j in range(c):
                if not np.isnan(values[i, j]):
                    ink = (255, 255, 255) if abs(values[i, j]) > 0.6 * scale else (0, 0, 0)
                    at = (left + j * cell + cell // 2, y_of[i] + cell // 2)
                    draw.text(at, f"{values[i, j]:+.2f}", fill=ink, font=load_font(max(10, cell // 4)), anchor="mm")
        if rows[i] in columns:  # the edited attribute's own judge
            j = columns.index(rows[i])
            draw.rectangle(
                [left + j * cell, y_of[i], left + (j + 1) * cell, y_of[i] + cell], outline=(0, 0, 0), width=2
            )
    for j, name in enumerate(columns):
        w, _ = text_size(probe, name, font)
        label = Image.new("L", (w + 4, line + 2), 0)
        ImageDraw.Draw(label).text((2, 1), name, fill=255, font=font)
        label = label.rotate(90, expand=True)
        x = left + j * cell + (cell - label.width) // 2
        canvas.paste((0, 0, 0), (x, top - 4 - label.height, x + label.width, top - 4), label)

    height = y_of[-1] + cell - top
    bar = _colour(np.linspace(scale, -scale, height), scale)[:, None, :].repeat(16, axis=1)
    canvas.paste(Image.fromarray(np.ascontiguousarray(bar)), (bar_x, top))
    for value, y in ((scale, top), (0.0, top + height // 2), (-scale, top + height - 1)):
        draw.line([(bar_x + 16, y), (bar_x + 20, y)], fill=(0, 0, 0))
        draw.text((bar_x + 23, y), f"{value:+.2f}" if value else "0", fill=(0, 0, 0), font=font, anchor="lm")
    return np.asarray(canvas)
