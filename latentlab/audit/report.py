"""The audit's outputs: a rich table, JSON (every figure), CSV (one row per direction) and the heat map PNG."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich import box
from rich.table import Table

from latentlab.audit.effects import DirectionEffect
from latentlab.audit.heatmap import audit_heatmap
from latentlab.audit.judges import Judges
from latentlab.data.pictures import save_image
from latentlab.directions.maths import finite_or_none
from latentlab.errors import OutputError
from latentlab.fileio import atomic_write_text

__all__ = ["audit_rows", "audit_table", "output_paths", "write_audit"]


def output_paths(vectors: Path, out: Path | None, units: str) -> dict[str, Path]:
    """{json, csv, png}: `<out>.<ext>`, by default `<vectors stem>-audit[-sigma]` beside the direction file."""
    if out is None:
        out = vectors.with_name(vectors.stem + "-audit" + ("" if units == "raw" else f"-{units}"))
    out = Path(out)
    if out.suffix in (".json", ".csv", ".png"):
        out = out.with_suffix("")
    if out.is_dir() or not out.name:
        raise OutputError(f"--out {out} is a folder; give a file name prefix, e.g. {out / 'audit'}")
    return {ext: out.with_name(out.name + "." + ext) for ext in ("json", "csv", "png")}


def audit_rows(effects: Sequence[DirectionEffect], judges: Judges) -> list[dict[str, Any]]:
    """One dict per direction: judge accuracy, success (both signs and each), own change, drift, worst side
    effect, and how often the random control flips the same judge (chance)."""
    control = effects[-1]
    rows = []
    for e in effects:
        own = e.direction if e.direction in judges.names else None
        rows.append(
            {
                "direction": e.direction,
                "judge_balanced_accuracy": judges.balanced_accuracy.get(own) if own else None,
                "success": finite_or_none(e.success),
                "success_plus": finite_or_none(e.success_plus),
                "success_minus": finite_or_none(e.success_minus),
                "faces_plus": e.eligible_plus,
                "faces_minus": e.eligible_minus,
                "random_flips": float(control.flips[control.judged.index(own)]) if own else None,
                "own_change": finite_or_none(e.own_change),
                "drift": e.drift,
                "worst_side_effect": e.worst,
                "worst_moved": finite_or_none(e.worst_moved),
                "worst_effect": finite_or_none(e.worst_effect),
            }
        )
    return rows


def _cell(x: float | None, fmt: str = "{:.2f}") -> str:
    return "—" if x is None else fmt.format(x)


def audit_table(rows: Sequence[Mapping[str, Any]], *, title: str) -> Table:
    """A rich Table of each direction's success (beside the random control's flips) and worst side effect."""
    table = Table(title=title, box=box.SIMPLE_HEAD)
    table.add_column("direction", no_wrap=True)
    table.add_column("judge", justify="right")
    table.add_column("success", justify="right")
    table.add_column("random", justify="right")
    table.add_column("own Δp", justify="right")
    table.add_column("drift", justify="right")
    table.add_column("worst side effect, |Δp|", overflow="fold")
    for row in rows:
        worst = "—"
        if row["worst_side_effect"]:
            worst = f"{row['worst_side_effect']} {row['worst_moved']:.2f}"
        table.add_row(
            row["direction"],
            _cell(row["judge_balanced_accuracy"]),
            _cell(row["success"]),
            _cell(row["random_flips"]),
            _cell(row["own_change"], "{:+.2f}"),
            f"{row['drift']:.1f}",
            worst,
        )
    return table


def _matrix(effects: Sequence[DirectionEffect], key: str) -> list[list[float | None]]:
    return [[finite_or_none(x) for x in getattr(e, key).tolist()] for e in effects]


def write_audit(
    paths: Mapping[str, Path], effects: Sequence[DirectionEffect], judges: Judges, meta: Mapping[str, Any]
) -> dict[str, Path]:
    """Write the JSON, CSV and heat map PNG named in `paths` (each atomically) and return them."""
    import pandas as pd

    rows = audit_rows(effects, judges)
    doc = {
        **dict(meta),
        "judges": {
            "features": f"whitened principal components of colour pixels at {judges.size} px; logistic regression",
            "trained_on": judges.trained_on,
            "tested_on": judges.tested_on,
            "balanced_accuracy": judges.balanced_accuracy,
            "majority_rate": judges.majority_rate,
            "skipped": judges.skipped,
        },
        "directions": rows,
        "matrix": {
            "directions": [e.direction for e in effects],
            "judged": list(judges.names),
            "effect": _matrix(effects, "effect"),
            "mean_abs_change": _matrix(effects, "moved"),
            "flip_rate": _matrix(effects, "flips"),
        },
    }
    table = pd.DataFrame(rows)
    effect = pd.DataFrame([e.effect for e in effects], columns=[f"effect:{n}" for n in judges.names])
    units = "raw" if meta.get("units") == "raw" else "σ"
    title = [
        f"audit of {Path(str(meta.get('vectors', ''))).name}: alpha = ±{meta.get('alpha', 1):g} ({units} units), "
        f"{meta.get('faces')} held-out faces",
        "cell: mean change of the column judge's probability, (p(+alpha) - p(-alpha)) / 2; outlined: the edited one",
    ]
    picture = audit_heatmap(
        np.array([e.effect for e in effects]),
        [e.direction for e in effects],
        judges.names,
        title=title,
        separate_last=True,
    )
    text = json.dumps(doc, indent=2, allow_nan=False) + "\n"  # everything is made before anything is written
    atomic_write_text(paths["json"], text)
    atomic_write_text(paths["csv"], pd.concat([table, effect], axis=1).to_csv(index=False))
    save_image(paths["png"], picture)
    return dict(paths)
