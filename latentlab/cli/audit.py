"""`latentlab audit`: what each direction really changes, judged by pixel classifiers independent of the model."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from latentlab.cli.common import DeviceOption, console, handles_errors, parse_names, wrote


class Units(str, Enum):
    """What alpha = 1 means."""

    raw = "raw"
    sigma = "sigma"


@handles_errors
def audit(
    vectors: Annotated[
        Path | None, typer.Option(help="Direction file (default: the model's, attributes/<model>.safetensors).")
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(help="Run folder or checkpoint (default: the one --vectors names, else the last trained)."),
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Label file (default: the one the directions were fitted on).")
    ] = None,
    images: Annotated[
        Path | None, typer.Option(help="Image folder (default: the directions' own, else next to the labels).")
    ] = None,
    attrs: Annotated[str | None, typer.Option(help="Comma-separated directions to audit (default: all).")] = None,
    faces: Annotated[int, typer.Option(min=1, help="Held-out faces to edit.")] = 200,
    units: Annotated[
        Units, typer.Option(help="raw (the stored vector) or sigma (one spread of the data).")
    ] = Units.raw,
    alpha: Annotated[float, typer.Option(help="Edit strength (> 0): each face at +alpha and -alpha.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed for the face sample, the judges and the random control.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Output prefix (default: <direction file>-audit beside it).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Faces per decoding batch.")] = 64,
    device: DeviceOption = "auto",
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Edit held-out faces with every direction at ±alpha and measure, with pixel classifiers trained on the
    labeled images (one judge per attribute), how often the edited attribute flips and how much every
    other attribute and the pixels move.

    Writes <prefix>.json, <prefix>.csv and a heat map <prefix>.png (directions x judged attributes);
    the table names each direction's success and its worst side effect. The last row edits along a
    random direction of the same length: what any edit this large does by chance.

    Examples:
      latentlab audit
      latentlab audit --vectors attributes/celeba32.safetensors --attrs Eyeglasses,Smiling --faces 300
      latentlab audit --units sigma --alpha 2 --out audits/celeba32-sigma2
    """
    from latentlab.audit import run_audit
    from latentlab.audit.report import audit_rows, audit_table
    from latentlab.audit.run import CONTROL
    from latentlab.train.devices import resolve_device

    result = run_audit(
        model_path=model,
        vectors=vectors,
        labels=labels,
        images=images,
        attrs=parse_names(attrs, "--attrs") or None,
        faces=faces,
        units=units.value,
        alpha=alpha,
        seed=seed,
        out=out,
        batch_size=batch_size,
        device=resolve_device(device),
        progress=not quiet,
    )
    meta, judges = result.meta, result.judges
    title = (
        f"audit: alpha = ±{alpha:g} ({units.value}) on {meta['faces']} held-out faces; judges fitted on "
        f"{judges.trained_on} faces, their balanced accuracy on {judges.tested_on} held-out ones\n"
        "success: share of faces whose judged attribute moves the edit's way (+α on faces judged without it, "
        "−α on those with it; each sign in the files); random: how often a random edit as long flips that judge; "
        "Δp: change of a judge's probability; drift: mean |pixel change| (0–255)"
    )
    if any(e.direction not in judges.names and e.direction != CONTROL for e in result.effects):
        title += "\ndirections without a judge of their own (pc1, ...): the worst side effect is what they move most"
    console.print(audit_table(audit_rows(result.effects, judges), title=title))
    console.print(f"faces: {meta['split']}", highlight=False, soft_wrap=True)
    wrote(result.paths["png"], f"heat map, {len(result.effects)} directions x {len(judges.names)} judges")
    console.print(
        "figures: " + ", ".join(str(result.paths[k]) for k in ("json", "csv")), highlight=False, soft_wrap=True
    )
