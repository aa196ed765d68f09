"""The attribute-vectors report: a rich table, JSON and CSV tables, and a cosine-similarity heat map.

Rows are plain dicts made from a `DirectionSet` (one per attribute, skipped ones included with
their reason), so the same data feeds the terminal, the files and tests. The heat map is drawn
with Pillow (no matplotlib).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from rich import box
from rich.table import Table

from latentlab.data.pictures import load_font, plain_text, save_image, text_size
from latentlab.directions.file import DirectionSet
from latentlab.directions.maths import finite_or_none
from latentlab.directions.probe import probe_description
from latentlab.fileio import atomic_write_text

_NEG = np.array([33, 102, 172], dtype=np.float64)  # cosine -1: blue
_MID = np.array([247, 247, 247], dtype=np.float64)  # cosine 0: near white
_POS = np.array([178, 24, 43], dtype=np.float64)  # cosine +1: red
_NAN = (190, 190, 190)


def report_rows(dirs: DirectionSet) -> list[dict[str, Any]]:
    """One dict per attribute counted in `dirs`, skipped ones included with their reason.

    Keys: attribute, positives, negatives, norm, probe_balanced_accuracy, probe_majority_rate,
    probe_accuracy (plain), probe_held_out (labeled held-out faces), skipped, probe_note, and
    classifier_accuracy where the set has classifier accuracies (the logistic method); a skipped
    attribute, or a file written before these figures existed, has None values.
    Principal components (method "pca") get `component_rows` instead.
    """
    if dirs.method == "pca":
        return component_rows(dirs)
    skipped = dirs.skipped
    norms = dirs.norms
    extra = dirs.extra
    figures = {
        key: extra.get(key) or {} for key in ("probe_balanced_accuracy", "probe_majority_rate", "probe_accuracy")
    }
    held_out = extra.get("probe_held_out") or {}
    notes = extra.get("probe_notes") or {}
    classifier = extra.get("classifier_accuracy")
    rows = []
    for name in dirs.pos_counts:
        out = name not in dirs.vectors
        row = {
            "attribute": name,
            "positives": int(dirs.pos_counts[name]),
            "negatives": int(dirs.neg_counts[name]),
            "norm": None if out else finite_or_none(norms[name]),
            **{key: None if out else finite_or_none(values.get(name)) for key, values in figures.items()},
            "probe_held_out": None if out or held_out.get(name) is None else int(held_out[name]),
            "skipped": skipped.get(name, ""),
            "probe_note": "" if out else str(notes.get(name, "")),
        }
        if classifier is not None:
            row["classifier_accuracy"] = classifier.get(name)
        rows.append(row)
    return rows


def component_rows(dirs: DirectionSet) -> list[dict[str, Any]]:
    """One dict per principal component: attribute (pc1, ...), positives/negatives (faces above/below the
    mean), norm (|v|: the gap between the two halves' means), sigma, explained_variance (latent units²),
    explained_variance_ratio, cumulative_ratio, and, where labels were given, tracks (the attribute most
    correlated with it) and tracks_correlation (Pearson r), else None; skipped is "" (kept for one CSV shape).
    """
    extra = dirs.extra
    variance = extra.get("explained_variance") or {}
    ratio = extra.get("explained_variance_ratio") or {}
    tracks = extra.get("pca_tracks") or {}
    std = dirs.latent_std or {}
    rows, cumulative = [], 0.0
    for name, v in dirs.vectors.items():
        share = finite_or_none(ratio.get(name))
        cumulative += share or 0.0
        attribute, r = tracks.get(name) or (None, None)
        rows.append(
            {
                "attribute": name,
                "positives": int(dirs.pos_counts[name]),
                "negatives": int(dirs.neg_counts[name]),
                "norm": finite_or_none(float(v.double().norm())),
                "sigma": finite_or_none(std.get(name)),
                "explained_variance": finite_or_none(variance.get(name)),
                "explained_variance_ratio": share,
                "cumulative_ratio": cumulative if share is not None else None,
                "tracks": attribute,
                "tracks_correlation": finite_or_none(r),
                "skipped": "",
            }
        )
    return rows


def component_table(rows: Sequence[Mapping[str, Any]], *, title: str = "principal components") -> Table:
    """A rich Table of `component_rows`: share of the variance (and cumulative), σ, |v| and what each tracks."""
    table = Table(
        title=f"{title}\nshare = explained variance ratio; alpha = 1 moves a face by |v| (about 1.6 σ)",
        box=box.SIMPLE_HEAD,
    )
    for header in ("component", "share", "cumulative", "σ", "|v|"):
        table.add_column(header, justify="left" if header == "component" else "right", no_wrap=True)
    labeled = any(row.get("tracks") for row in rows)
    if labeled:
        table.add_column("most correlated attribute (r)")
    for row in rows:
        cells = [row["attribute"]]
        for key, fmt in (("explained_variance_ratio", ".4f"), ("cumulative_ratio", ".4f"), ("sigma", ".3f")):
            cells.append("—" if row.get(key) is None else format(row[key], fmt))
        cells.append("—" if row.get("norm") is None else f"{row['norm']:.3f}")
        if labeled:
            r = row.get("tracks_correlation")
            cells.append("—" if not row.get("tracks") else f"{row['tracks']} ({r:+.2f})")
        table.add_row(*cells)
    return table


def attribute_table(
    rows: Sequence[Mapping[str, Any]], *, title: str = "attribute directions", held_out: int | None = None
) -> Table:
    """A rich Table of the rows: positives, negatives, |v|, and the probe's balanced accuracy, majority
    rate and plain accuracy on the `held_out` faces, its title saying what those figures are."""
    table = Table(title=f"{title}\n{probe_description(held_out)}", box=box.SIMPLE_HEAD)
    table.add_column("attribute", no_wrap=True)
    table.add_column("pos.", justify="right")
    table.add_column("neg.", justify="right")
    table.add_column("|v|", justify="right")
    table.add_column("balanced\nacc.", justify="right")
    table.add_column("majority", justify="right")
    table.add_column("plain\nacc.", justify="right")
    notes = any(row["skipped"] or row.get("probe_note") for row in rows)
    if notes:
        table.add_column("note", style="yellow")
    for row in rows:
        cells = [row["attribute"], str(row["positives"]), str(row["negatives"])]
        for key in ("norm", "probe_balanced_accuracy", "probe_majority_rate", "probe_accuracy"):
            cells.append("—" if row.get(key) is None else f"{row[key]:.3f}")
        note = (
            f"skipped: {row['skipped']}"
            if row["skipped"]
            else f"probe: {row['probe_note']}"
            if row.get("probe_note")
            else ""
        )
        table.add_row(*cells, *([note] if notes else []))
    return table


def _colour(c: np.ndarray) -> np.ndarray:
    """Cosines (...) in [-1, 1] -> uint8 RGB (..., 3) on a blue-white-red scale; NaN grey."""
    c = np.asarray(c, dtype=np.float64)
    k = np.clip(np.abs(np.nan_to_num(c)), 0, 1)[..., None]
    end = np.where((c >= 0)[..., None], _POS, _NEG)
    rgb = (1 - k) * _MID + k * end
    rgb[np.isnan(c)] = _NAN
    return np.round(rgb).astype(np.uint8)


def cosine_heatmap(cosine: torch.Tensor | np.ndarray, names: Sequence[str], *, title: str | None = None) -> np.ndarray:
    """Draw an (A, A) cosine matrix as a uint8 (H, W, 3) heat map, names on both axes, with a colour bar."""
    cos = np.asarray(cosine.detach().cpu() if isinstance(cosine, torch.Tensor) else cosine, dtype=np.float64)
    a = len(names)
    if cos.shape != (a, a) or a == 0:
        raise ValueError(f"cosine matrix of shape {cos.shape} for {a} names")
    cell = int(np.clip(720 // a, 14, 48))
    font = load_font(int(np.clip(cell * 0.6, 9, 14)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(text_size(probe, n, font)[0] for n in names) + 10
    line = text_size(probe, "Ag", font)[1]
    names = [plain_text(n) for n in names]
    title = plain_text(title or "cosine similarity between attribute directions")
    top = label_w + 2 * line + 10
    bar_x = label_w + a * cell + 16
    width = bar_x + 16 + 8 + text_size(probe, "-1.0", font)[0] + 10
    height = top + a * cell + 10
    canvas = Image.new("RGB", (max(width, text_size(probe, title, font)[0] + 20), height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((10, 6), title, fill=(0, 0, 0), font=font)

    cells = np.repeat(np.repeat(_colour(cos), cell, axis=0), cell, axis=1)
    canvas.paste(Image.fromarray(cells), (label_w, top))
    for i in range(a + 1):  # thin white lines between cells
        draw.line([(label_w + i * cell, top), (label_w + i * cell, top + a * cell)], fill=(255, 255, 255))
        draw.line([(label_w, top + i * cell), (label_w + a * cell, top + i * cell)], fill=(255, 255, 255))
    if cell >= 30:  # room for the numbers themselves
        for i in range(a):
            for j in range(a):
                value = "" if math.isnan(cos[i, j]) else f"{cos[i, j]:.2f}"
                ink = (255, 255, 255) if abs(cos[i, j]) > 0.6 else (0, 0, 0)
                centre = (label_w + j * cell + cell // 2, top + i * cell + cell // 2)
                draw.text(centre, value, fill=ink, font=font, anchor="mm")
    for i, name in enumerate(names):
        draw.text((label_w - 5, top + i * cell + cell // 2), name, fill=(0, 0, 0), font=font, anchor="rm")
        w, _ = text_size(probe, name, font)
        label = Image.new("L", (w + 4, line + 6), 0)
        ImageDraw.Draw(label).text((2, 3), name, fill=255, font=font)
        label = label.rotate(90, expand=True)  # reads bottom to top, ending just above its column
        x = label_w + i * cell + (cell - label.width) // 2
        canvas.paste((0, 0, 0), (x, top - 4 - label.height, x + label.width, top - 4), label)

    bar = _colour(np.linspace(1, -1, a * cell))[:, None, :].repeat(16, axis=1)
    canvas.paste(Image.fromarray(np.ascontiguousarray(bar)), (bar_x, top))
    for value, y in ((1.0, top), (0.0, top + a * cell // 2), (-1.0, top + a * cell - 1)):
        draw.line([(bar_x + 16, y), (bar_x + 20, y)], fill=(0, 0, 0))
        draw.text((bar_x + 23, y), f"{value:+.1f}" if value else "0", fill=(0, 0, 0), font=font, anchor="lm")
    return np.asarray(canvas)


def write_report(
    stem: str | os.PathLike[str],
    rows: Sequence[Mapping[str, Any]],
    *,
    cosine: torch.Tensor | np.ndarray | None = None,
    cosine_names: Sequence[str] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write `<stem>.json`, `<stem>.csv` and (with `cosine`) `<stem>-cosine.png`, each atomically.

    `cosine` (A, A) is over `cosine_names` (the attributes that got a direction). Returns the paths.
    """
    import pandas as pd

    stem = Path(stem)
    paths = {"json": stem.with_name(stem.name + ".json"), "csv": stem.with_name(stem.name + ".csv")}
    doc: dict[str, Any] = {**dict(meta or {}), "attributes": [dict(r) for r in rows]}
    if cosine is not None:
        names = list(cosine_names or [])
        cos = np.asarray(cosine.detach().cpu() if isinstance(cosine, torch.Tensor) else cosine, dtype=np.float64)
        matrix = [[finite_or_none(x) for x in row] for row in cos.tolist()]
        doc["cosine"] = {"names": names, "matrix": matrix}
        paths["heatmap"] = stem.with_name(stem.name + "-cosine.png")
        save_image(paths["heatmap"], cosine_heatmap(cos, names))
    atomic_write_text(paths["json"], json.dumps(doc, indent=2, allow_nan=False) + "\n")
    atomic_write_text(paths["csv"], pd.DataFrame(list(rows)).to_csv(index=False))
    return paths
