"""A studio request as a picture, an animation, or the command line that reproduces it.

The latent is built as the CLI builds it: mix first (z = path(z_a, z_b, t), as `interpolate`), then the
edits added in order with `edit_latents` (as repeated --attr/--alpha), decoded with `decode_images`;
so the picture of a plain face equals `latentlab manipulate FACE ... --bare` pixel for pixel.
"""

from __future__ import annotations

import io
import shlex
import uuid

import numpy as np
import torch
from PIL import Image

from latentlab.data.pictures import upscale
from latentlab.directions.file import DirectionSet
from latentlab.errors import ConfigError
from latentlab.render.edit import edit_latents, format_alpha, sweep_latents
from latentlab.render.faces import display_size
from latentlab.render.interpolation import lerp, ping_pong, slerp
from latentlab.render.pictures import MIN_CELL, add_caption
from latentlab.render.video import FrameWriter
from latentlab.studio.requests import ExportRequest, RenderRequest, cli_units
from latentlab.studio.session import Studio

EXPORT_FPS = 6.0


def png_bytes(image: torch.Tensor) -> bytes:
    """uint8 (3, H, W) -> PNG file bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def latent(studio: Studio, request: RenderRequest, *, skip: str | None = None) -> torch.Tensor:
    """(1, D): the face, mixed with another if asked, plus the edits (all but those on `skip`)."""
    z = studio.face(request.face).z[None]
    if request.mix is not None:
        other = studio.face(request.mix.face).z[None]
        z = (slerp if request.mix.path == "slerp" else lerp)(z, other, request.mix.t)
    edits = [e for e in request.edits if e.attr != skip]
    if edits:
        dirs = _directions(studio)
        attrs, alphas = [e.attr for e in edits], [e.alpha for e in edits]
        z = edit_latents(z, dirs, attrs, alphas, units=cli_units(request.units))
    return z


def render(studio: Studio, request: RenderRequest) -> bytes:
    """The edited face at the model's size, as PNG bytes."""
    return png_bytes(studio.decode(latent(studio, request))[0])


def command(studio: Studio, request: RenderRequest) -> dict:
    """{"command": the `latentlab manipulate` line that writes this picture, or None, "reason": why not / where}."""
    face = studio.face(request.face)
    if request.mix is not None:
        other = studio.face(request.mix.face)
        names = " ".join(shlex.quote(str(f.path)) for f in (face, other) if f.path is not None)
        return _none(
            "a mix is one point of a path that no command writes alone; "
            f"`latentlab interpolate {names or 'A B'} --path {request.mix.path}` renders the whole path"
        )
    if face.path is None:
        return _none(
            f"a sample is not a file that `manipulate` can read; `latentlab sample --n 1 --seed "
            f"{request.face[1:].split('t')[0]} --temperature {request.face.split('t', 1)[1]}` draws its face unedited"
        )
    if studio.dirs is None:
        return _none("no direction file: there is no edit to reproduce")
    edits = [(e.attr, e.alpha) for e in request.edits] or [(studio.dirs.names[0], 0.0)]  # alpha 0: reconstruction
    for attr, _ in edits:
        studio.dirs.vector(attr, units=cli_units(request.units))  # an unknown name fails here, as in the CLI
    argv = ["latentlab", "manipulate", str(face.path), *(["--face-crop"] if face.face_crop else [])]
    for attr, alpha in edits:
        argv += ["--attr", attr, "--alpha", repr(float(alpha))]
    if request.units == "sigma":
        argv += ["--units", "sigma"]
    argv += ["--model", str(studio.model_path), "--vectors", str(studio.vectors_path), "--bare", "--out", "edit.png"]
    reason = None
    if request.face.startswith("u"):
        reason = f"run it where your photo {face.name} is"
    elif face.path.is_relative_to(studio.workdir):
        reason = (
            f"this toy face lives in the studio's temporary folder while it runs; `latentlab toy-faces toy "
            f"--count 16 --size {studio.size} --seed 0` writes the same face as toy/img_align_celeba/{face.path.name}"
        )
    return {"command": " ".join(shlex.quote(a) for a in argv), "reason": reason}


def export(studio: Studio, request: ExportRequest) -> tuple[bytes, str]:
    """The picture swept along `request.attr` over [lo, hi] (n frames, back and forth) as GIF/MP4 bytes and a name."""
    dirs = _directions(studio)
    units = cli_units(request.units)
    dirs.vector(request.attr, units=units)
    lo, hi, n = request.sweep
    alphas = np.linspace(lo, hi, int(n)).tolist()
    base = latent(studio, request, skip=request.attr)
    zs = sweep_latents(base, dirs, [request.attr], alphas, units=units).reshape(-1, base.shape[1])
    faces = studio.decode(zs)
    cell = display_size(studio.size, at_least=MIN_CELL)
    tag = " sd" if units == "sigma" else ""
    folder = studio.workdir / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{uuid.uuid4().hex}.{request.format}"
    try:
        with FrameWriter(out, fps=EXPORT_FPS) as writer:
            for s in ping_pong(len(alphas)):
                frame = upscale(faces[s].permute(1, 2, 0).numpy(), cell)
                writer.append(add_caption(frame, f"{request.attr} {format_alpha(alphas[s])}{tag}"))
        data = out.read_bytes()
    finally:
        out.unlink(missing_ok=True)
    return data, f"{request.attr}_sweep.{request.format}"


def _directions(studio: Studio) -> DirectionSet:
    if studio.dirs is None:
        raise ConfigError("no direction file is loaded, so there is nothing to edit; sampling and mixing still work")
    return studio.dirs


def _none(reason: str) -> dict:
    return {"command": None, "reason": reason}
