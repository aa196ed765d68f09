"""Folder edits: every photo of a folder edited into another folder, in batches, skipping the ones that fail.

Each photo is written under the output folder with its own relative path and name (PNG and JPEG keep their
extension, other formats become .png), atomically, never over an input. A photo that cannot be used (not
an image, truncated, no face found with `face_crop`, an edit too far for it) is listed and skipped: the
batch goes on. The photos are read, encoded and written `batch_size` at a time, so memory stays flat.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latentlab.data.images import list_images
from latentlab.data.pictures import IMAGE_FORMATS, save_image, upscale
from latentlab.directions.file import DirectionSet
from latentlab.errors import DataError, LatentlabError, OutputError
from latentlab.flow.glow import Glow
from latentlab.latents.likelihood import FitReport, ImageFit, fit_images, model_reference
from latentlab.progress import progress_bar
from latentlab.render.edit import describe_edit
from latentlab.render.faces import display_size, encode_faces, load_faces
from latentlab.render.jobs import Edit, PathLike, Sweep, default_edit_output, edit_attributes, load_for_edits
from latentlab.render.levels import levels_mask
from latentlab.render.pictures import ANIMATION_FORMATS, edited_faces, render_edit, render_sweep

FILE_LIKE = tuple(IMAGE_FORMATS) + ANIMATION_FORMATS  # an --out ending so names a file, not a folder


@dataclass(frozen=True)
class Failure:
    """A photo that was skipped, and why (one line)."""

    path: Path
    reason: str


@dataclass(frozen=True)
class FolderEdit:
    """What a folder edit did: the output folder, how many photos it wrote, the ones it skipped, their figures."""

    out: Path
    written: int
    failed: tuple[Failure, ...]
    fit: FitReport
    description: str


def output_names(folder: Path, photos: Sequence[Path], out: Path) -> list[Path]:
    """Each photo's output: the same relative path under `out`, .png for formats latentlab does not write."""
    targets = []
    for photo in photos:
        rel = photo.relative_to(folder)
        targets.append(out / (rel if rel.suffix.lower() in IMAGE_FORMATS else rel.with_suffix(".png")))
    return targets


def check_output_folder(folder: Path, out: Path) -> None:
    """Refuse an output that is a file, looks like one, is the input folder or lies inside it."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; a folder of photos is edited into a folder: give a folder")
    if not out.exists() and out.suffix.lower() in FILE_LIKE:
        raise OutputError(
            f"{folder} is a folder of photos, so --out must be a folder, not {out}; e.g. --out {folder.name}-edited"
        )
    inside = out.resolve() == folder.resolve() or folder.resolve() in out.resolve().parents
    if inside:
        raise OutputError(
            f"--out {out} lies inside the input folder {folder}: the outputs would be taken for photos "
            "(or overwrite them); choose a folder outside it"
        )


def manipulate_folder(
    folder: PathLike,
    edit: Edit | Sweep,
    *,
    out: PathLike | None = None,
    units: str = "raw",
    model: PathLike | None = None,
    vectors: PathLike | None = None,
    face_crop: bool = False,
    grid: bool = False,
    size: int | None = None,
    levels: str | Sequence[int | str] | None = None,
    batch_size: int = 32,
    device: str = "auto",
    progress: bool = False,
) -> FolderEdit:
    """Edit every photo under `folder` (recursively) into `out` (default <folder>_<Attr>_<alpha>/ here).

    One edit writes each edited face alone at `size` px (default the model's size), or with `grid` the
    usual input / reconstruction / edit grid; a `Sweep` writes one still grid per photo. `levels`,
    `units`, `model`, `vectors` and `face_crop` as in `jobs.manipulate`. Photos that fail are listed in
    the result and skipped; nothing else stops the batch but a bad model, direction file or output folder.
    """
    folder = Path(folder)
    attrs = edit_attributes(edit, units)
    target = Path(out) if out is not None else default_edit_output([folder], edit).with_suffix("")
    check_output_folder(folder, target)
    photos = list_images(folder)
    glow, model_path, dirs, _ = load_for_edits(model, vectors, device)
    for name in attrs:
        dirs.vector(name, units=units)  # unknown names fail before any photo is read
    mask, where = levels_mask(glow.latent_shapes, levels)
    what = describe_edit(edit, units) if not isinstance(edit, Sweep) else f"{', '.join(attrs)} sweeps"
    what += f" at {where}" if where else ""
    write = _writer(glow, dirs, edit, units=units, grid=grid, size=size, mask=mask, label=what, where=where)

    inputs = {p.resolve() for p in photos}
    failed: list[Failure] = []
    fits: list[ImageFit] = []
    written = 0
    seen: set[Path] = set()
    jobs = list(zip(photos, output_names(folder, photos, target), strict=True))
    with progress_bar("manipulate", len(jobs), enabled=progress, unit="photo") as advance:
        for start in range(0, len(jobs), batch_size):
            batch = _read_batch(
                jobs[start : start + batch_size], glow.config.image_size, face_crop, inputs, seen, failed
            )
            if batch:
                images = torch.cat([img for _, _, img in batch])
                z = encode_faces(glow, images, batch_size=batch_size)
                names = [p.relative_to(folder).as_posix() for p, _, _ in batch]
                fits += fit_images(glow, images, z, names, batch_size=batch_size)
                written += _write_batch(write, images, z, [(p, d) for p, d, _ in batch], failed)
            advance(len(jobs[start : start + batch_size]))
    fit = FitReport(tuple(fits), model_reference(model_path))
    return FolderEdit(target, written, tuple(failed), fit, what)


Writer = Callable[[torch.Tensor, torch.Tensor, Sequence[Path]], None]  # (images, z, outputs): one batch written


def _writer(
    model: Glow,
    dirs: DirectionSet,
    edit: Edit | Sweep,
    *,
    units: str,
    grid: bool,
    size: int | None,
    mask: torch.Tensor | None,
    label: str,
    where: str,
) -> Writer:
    """The function that renders and writes a batch of photos for this kind of edit."""
    if isinstance(edit, Sweep):

        def sweeps(images: torch.Tensor, z: torch.Tensor, dests: Sequence[Path]) -> None:
            for i, dest in enumerate(dests):
                one = {"units": units, "size": size, "z": z[i : i + 1], "mask": mask}
                render_sweep(model, images[i : i + 1], dirs, list(edit.attrs), edit.alphas, dest, where=where, **one)

        return sweeps
    if grid:

        def grids(images: torch.Tensor, z: torch.Tensor, dests: Sequence[Path]) -> None:
            for i, dest in enumerate(dests):
                one = {"units": units, "size": size, "z": z[i : i + 1], "mask": mask}
                render_edit(model, images[i : i + 1], dirs, edit, dest, label=label, **one)

        return grids
    side = display_size(model.config.image_size, size, at_least=1)

    def faces(images: torch.Tensor, z: torch.Tensor, dests: Sequence[Path]) -> None:
        edited = edited_faces(model, images, dirs, edit, units=units, z=z, mask=mask)
        for face, dest in zip(edited, dests, strict=True):
            save_image(dest, upscale(np.ascontiguousarray(face.permute(1, 2, 0).numpy()), side))

    return faces


def _read_batch(
    jobs: Sequence[tuple[Path, Path]],
    size: int,
    face_crop: bool,
    inputs: set[Path],
    seen: set[Path],
    failed: list[Failure],
) -> list[tuple[Path, Path, torch.Tensor]]:
    """(photo, output, uint8 (1, 3, S, S)) for each photo that loads and may be written; the others go to `failed`."""
    batch = []
    for photo, dest in jobs:
        reason = _refused(dest, inputs, seen)
        if reason is None:
            try:
                batch.append((photo, dest, load_faces([photo], size, face_crop=face_crop)))
            except (DataError, OSError) as exc:  # a ConfigError (no OpenCV: every photo would fail) stops the job
                reason = str(exc)
        if reason is not None:
            failed.append(Failure(photo, reason))
        seen.add(dest.resolve())
    return batch


def _write_batch(
    write: Writer, images: torch.Tensor, z: torch.Tensor, items: Sequence[tuple[Path, Path]], failed: list[Failure]
) -> int:
    """Write a batch; if it fails, each photo alone, so one photo's failure skips only that photo. Returns the count."""
    try:
        write(images, z, [dest for _, dest in items])
        return len(items)
    except LatentlabError as exc:
        if len(items) == 1:
            failed.append(Failure(items[0][0], str(exc)))
            return 0
    done = 0
    for i, (photo, dest) in enumerate(items):
        try:
            write(images[i : i + 1], z[i : i + 1], [dest])
            done += 1
        except LatentlabError as exc:
            failed.append(Failure(photo, str(exc)))
    return done


def _refused(dest: Path, inputs: set[Path], seen: set[Path]) -> str | None:
    """Why `dest` must not be written (an input, or another photo's output), or None."""
    resolved = dest.resolve()
    if resolved in inputs:
        return f"its output {dest} is an input photo"
    if resolved in seen:
        return f"another photo is also written to {dest} (same name, another format)"
    return None
