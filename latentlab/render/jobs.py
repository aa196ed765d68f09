"""The manipulate and interpolate jobs: from face files and a model on disk to a written picture or loop.

Each job fills in the defaults (the last trained model, the direction file that belongs to it, an
output named after the inputs), refuses a bad output path before the model is loaded and an output
that would overwrite an input before anything is written, and returns what it wrote.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from latentlab.checkpoint import load_model, model_fingerprint, resolve_model_path
from latentlab.directions.file import UNITS, DirectionSet, load_directions
from latentlab.errors import ConfigError
from latentlab.fileio import check_output_path
from latentlab.flow.glow import Glow
from latentlab.latents.likelihood import FitReport, fit_images, model_reference
from latentlab.paths import default_vectors_path, model_or_last
from latentlab.progress import progress_bar
from latentlab.render.animate import AnimationOutput, write_interpolation
from latentlab.render.edit import describe_edit
from latentlab.render.faces import encode_faces, load_faces
from latentlab.render.interpolation import METHODS
from latentlab.render.levels import levels_mask
from latentlab.render.pictures import (
    STILL_FORMATS,
    SWEEP_FORMATS,
    check_extension,
    render_bare_edit,
    render_edit,
    render_sweep,
    save_model_view,
)
from latentlab.render.video import FRAME_FORMATS
from latentlab.train.devices import resolve_device

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Sweep:
    """Each attribute in turn over a range of alphas (the other kind of manipulation is one composed edit)."""

    attrs: tuple[str, ...]
    alphas: tuple[float, ...]


Edit = Sequence[tuple[str, float]]  # (attribute, alpha) pairs that add up to one edit


@dataclass(frozen=True)
class Manipulation:
    """What `manipulate` wrote: the picture or animation, its size (height, width), its frame count (1 for a
    still), what it shows, and the picture of what the model sees of the inputs when that was asked for."""

    path: Path
    size: tuple[int, int]
    frames: int
    description: str
    model_view: Path | None = None
    fit: FitReport | None = None  # each face's bits/dim and reconstruction PSNR beside the model's own figure


def default_edit_output(inputs: Sequence[PathLike], edit: Edit | Sweep) -> Path:
    """<first input stem>_<Attr>_<alpha>[_<Attr>_<alpha>…].png, or for a sweep <stem>_<Attr>[_…]_sweep.png."""
    if isinstance(edit, Sweep):
        parts = [*edit.attrs, "sweep"]
    else:
        parts = [f"{name}_{alpha:g}" for name, alpha in edit]
    return Path("_".join([Path(inputs[0]).stem, *parts]) + ".png")


def default_loop_output(inputs: Sequence[PathLike]) -> Path:
    """<a>_<b>[_<c>][_etc]_loop.mp4 from the first three inputs' stems."""
    stems = [Path(p).stem for p in inputs]
    return Path("_".join(stems[:3] + ["etc"] * (len(stems) > 3) + ["loop"]) + ".mp4")


def _load(model: PathLike | None, device: str) -> tuple[Glow, Path]:
    """The model (given, or the last trained) on the device, and the path it came from."""
    path = model_or_last(model)
    return load_model(path, device=resolve_device(device)), path


def edit_attributes(edit: Edit | Sweep, units: str) -> list[str]:
    """The attributes an edit or sweep names; ConfigError for none or unknown units."""
    attrs = list(edit.attrs) if isinstance(edit, Sweep) else [name for name, _ in edit]
    if not attrs:
        raise ConfigError("no attribute given; name one with --attr, e.g. --attr Smiling")
    if units not in UNITS:
        raise ConfigError(f"unknown units {units!r}; choose one of {', '.join(UNITS)}")
    return attrs


def load_for_edits(
    model: PathLike | None, vectors: PathLike | None, device: str
) -> tuple[Glow, Path, DirectionSet, Path]:
    """(the model, its path, its direction file, that file's path): the defaults filled in, the pair checked."""
    glow, model_path = _load(model, device)
    vectors_path = Path(vectors) if vectors is not None else default_vectors_path(model_path)
    dirs = load_directions(vectors_path)
    dirs.check_model(model_fingerprint(glow), str(model_path))
    return glow, model_path, dirs, vectors_path


def manipulate(
    faces: Sequence[PathLike],
    edit: Edit | Sweep,
    *,
    units: str = "raw",
    out: PathLike | None = None,
    model: PathLike | None = None,
    vectors: PathLike | None = None,
    face_crop: bool = False,
    face: int | None = None,
    show_input: bool = False,
    bare: bool = False,
    size: int | None = None,
    fps: float = 6.0,
    device: str = "auto",
    levels: str | Sequence[int | str] | None = None,
) -> Manipulation:
    """Edit face images along attribute directions and write the result (see `edit` for alpha and units).

    One edit: a still grid of each face as the model sees it, its reconstruction and the edit.
    A `Sweep`: a grid with a row per (face, attribute) and a column per alpha (.png/.jpg), or an
    animation back and forth over the alphas (.gif/.mp4/.webp). `show_input` also writes what the
    model sees of the faces as <out>_input.png; `bare` writes one edit as the edited faces alone,
    at `size` px (default the model's size), as `latentlab studio` shows them. `model` defaults to
    the last trained model and `vectors` to the direction file that belongs to it; the directions
    must come from that model.
    """
    attrs = edit_attributes(edit, units)
    formats, kind = (SWEEP_FORMATS, "a sweep") if isinstance(edit, Sweep) else (STILL_FORMATS, "an edit")
    target = Path(out) if out is not None else default_edit_output(faces, edit)
    check_extension(target, formats, kind)

    glow, model_path, dirs, vectors_path = load_for_edits(model, vectors, device)
    mask, where = levels_mask(glow.latent_shapes, levels)
    check_output_path(target, [*faces, vectors_path, resolve_model_path(model_path)])
    images = load_faces(faces, glow.config.image_size, face_crop=face_crop, face=face)
    names = [Path(f).stem for f in faces]
    z = encode_faces(glow, images)
    fit = FitReport(tuple(fit_images(glow, images, z, [Path(f).name for f in faces])), model_reference(model_path))
    common = {"units": units, "size": size, "z": z, "mask": mask}
    if isinstance(edit, Sweep):
        result = render_sweep(
            glow, images, dirs, attrs, edit.alphas, target, names=names, fps=fps, where=where, **common
        )
        what = f"{len(faces)} face(s) x {len(attrs)} attribute(s) x {len(edit.alphas)} alphas"
    elif bare:
        result = render_bare_edit(glow, images, dirs, edit, target, **common)
        what = describe_edit(edit, units)
    else:
        label = describe_edit(edit, units) + (f" at {where}" if where else "")
        result = render_edit(glow, images, dirs, edit, target, names=names, label=label, **common)
        what = describe_edit(edit, units)
    what += f" at {where}" if where else ""
    view = None
    if show_input:
        view = target.with_name(f"{target.stem}_input.png")
        check_output_path(view, faces)
        view = save_model_view(glow, images, view, size=size)
    return Manipulation(result.path, result.size, result.frames, what, view, fit)


def interpolate(
    faces: Sequence[PathLike],
    *,
    out: PathLike | None = None,
    frames: int = 30,
    fps: float = 30.0,
    method: str = "slerp",
    ease: bool = True,
    size: int | None = None,
    model: PathLike | None = None,
    face_crop: bool = False,
    face: int | None = None,
    batch_size: int = 32,
    device: str = "auto",
    progress: bool = False,
    levels: str | Sequence[int | str] | None = None,
) -> AnimationOutput:
    """Write a seamless loop through every face and back to the first (see `animate` for the loop).

    The format follows the extension of `out` (.mp4, .gif, .webp or a .png strip; default
    <a>_<b>_loop.mp4 here); `model` defaults to the last trained model. `progress` shows a bar on stderr.
    `levels` moves only those levels of the latent, the others staying the first face's. The result's
    `fit` holds each face's bits/dim and reconstruction PSNR beside the model's held-out bits/dim.
    """
    if len(faces) < 2:
        raise ConfigError(f"an interpolation needs at least 2 faces, got {len(faces)}")
    if method not in METHODS:
        raise ConfigError(f"unknown path {method!r}; choose one of {', '.join(METHODS)}")
    target = Path(out) if out is not None else default_loop_output(faces)
    check_extension(target, FRAME_FORMATS, "an interpolation")
    glow, model_path = _load(model, device)
    mask, _ = levels_mask(glow.latent_shapes, levels)
    check_output_path(target, [*faces, resolve_model_path(model_path)])
    images = load_faces(faces, glow.config.image_size, face_crop=face_crop, face=face)
    z = encode_faces(glow, images, batch_size=batch_size)
    fit = FitReport(tuple(fit_images(glow, images, z, [Path(f).name for f in faces])), model_reference(model_path))
    with progress_bar("interpolate", len(faces) * frames, enabled=progress, unit="frame") as advance:
        written = write_interpolation(
            glow,
            images,
            target,
            frames=frames,
            fps=fps,
            method=method,
            ease=ease,
            size=size,
            batch_size=batch_size,
            progress=advance,
            z=z,
            mask=mask,
        )
    return dataclasses.replace(written, fit=fit)
