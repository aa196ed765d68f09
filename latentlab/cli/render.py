"""The rendering commands, `manipulate` and `interpolate`: parse, call `edit` / `animate`, print one line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from latentlab.cli.app import app, console, fail, handles_errors
from latentlab.errors import ConfigError

if TYPE_CHECKING:
    from latentlab.flow.glow import Glow

ModelOption = Annotated[Path | None, typer.Option(help="Run folder or checkpoint (default: the last trained model).")]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
FaceCropOption = Annotated[
    bool,
    typer.Option(
        "--face-crop",
        help="Find the face (OpenCV: pip install 'latentlab\\[face]') and crop it like CelebA's aligned faces.",
    ),
]
FacesArgument = Annotated[
    list[Path],
    typer.Argument(
        help="Face images (any size; 178x218 CelebA aligned images get the training crop).",
        exists=True,
        dir_okay=False,
        readable=True,
    ),
]


def _load(model: Path | None, device: str) -> tuple[Glow, Path]:
    """The model (given, or the last trained) on the device, and the path it came from."""
    from latentlab.checkpoint import load_model
    from latentlab.paths import last_trained_model
    from latentlab.train.devices import resolve_device

    path = model if model is not None else last_trained_model()
    return load_model(path, device=resolve_device(device)), path


def _wrote(path: Path, details: str) -> None:
    """One green line naming the file (paths and details are printed as they are, not as markup)."""
    console.print(f"[green]wrote[/] {escape(str(path))} ({escape(details)})", highlight=False, soft_wrap=True)


@app.command()
@handles_errors
def manipulate(
    faces: FacesArgument,
    attr: Annotated[list[str], typer.Option("--attr", help="Attribute to edit, e.g. Blond_Hair; repeat for several.")],
    alpha: Annotated[
        list[float] | None,
        typer.Option(help="Edit strength, paired in order with --attr (one --alpha applies to every --attr)."),
    ] = None,
    sweep: Annotated[
        str | None, typer.Option(help="START,STOP,COUNT: a row per attribute over these alphas, e.g. -1,1,7.")
    ] = None,
    units: Annotated[
        str, typer.Option(help="raw: alpha 1 = the full mean difference; sigma: alpha 1 = one std of the data.")
    ] = "raw",
    out: Annotated[
        Path | None,
        typer.Option(help=".png/.jpg (a sweep also .gif/.mp4/.webp); default <face>_<Attr>_<alpha>.png here."),
    ] = None,
    model: ModelOption = None,
    vectors: Annotated[
        Path | None,
        typer.Option(help="Direction file (default: attributes/<model name>.safetensors).", dir_okay=False),
    ] = None,
    face_crop: FaceCropOption = False,
    show_input: Annotated[
        bool, typer.Option("--show-input", help="Also save what the model sees, as <out>_input.png.")
    ] = False,
    size: Annotated[int | None, typer.Option(min=8, max=2048, help="Pixels per face in the output.")] = None,
    fps: Annotated[float, typer.Option(min=0.1, max=50, help="Frames per second of a .gif/.mp4 sweep.")] = 6.0,
    device: DeviceOption = "auto",
) -> None:
    """Edit faces along attribute directions: decode(encode(face) + alpha·v).

    Alpha 1 moves a face by the full difference between the mean latents of faces with and
    without the attribute (the Glow paper's convention: useful edits lie in [-1, 1]); with
    --units sigma, alpha 1 is one standard deviation of the encoded faces along that direction,
    so alphas compare across attributes. Several --attr/--alpha pairs add up to one edit.

    Examples:
      latentlab manipulate face.jpg --attr Blond_Hair --alpha 0.8
      latentlab manipulate face.jpg --attr Smiling --alpha 0.5 --attr Male --alpha -0.5 --out edit.png
      latentlab manipulate a.jpg b.jpg --attr Smiling --attr Eyeglasses --sweep -1,1,7 --out sweep.png
      latentlab manipulate face.jpg --attr Smiling --sweep -2,2,9 --units sigma --out smile.gif
      latentlab manipulate photo.jpg --face-crop --show-input --attr Young --alpha 1 --model models/celeba64
    """
    from latentlab.checkpoint import model_fingerprint, resolve_model_path
    from latentlab.directions.maths import load_directions, sweep_alphas
    from latentlab.fileio import check_output_path
    from latentlab.paths import default_vectors_path
    from latentlab.render import edit

    if sweep is not None and alpha:
        raise fail("--sweep and --alpha exclude each other: --alpha makes one edit, --sweep a range", 2)
    if sweep is None and not alpha:
        raise fail("give --alpha (one edit) or --sweep START,STOP,COUNT (a range of edits)", 2)
    if units not in ("raw", "sigma"):
        raise fail(f"--units {units!r} is not one of raw, sigma", 2)
    try:
        if sweep is not None:
            alphas = sweep_alphas(sweep)
            edits = [(name, 0.0) for name in attr]
        else:
            edits = edit.pair_edits(attr, alpha or [])
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    target = out if out is not None else edit.default_output(faces, edits, sweep=sweep is not None)
    if sweep is None and target.suffix.lower() in edit.ANIMATION_FORMATS:
        raise fail(f"{target.suffix} animates a range of edits: add --sweep START,STOP,COUNT or write .png", 2)
    allowed = edit.SWEEP_FORMATS if sweep is not None else edit.STILL_FORMATS
    edit.check_extension(target, allowed, "a sweep" if sweep is not None else "an edit")

    glow, model_path = _load(model, device)
    vectors_path = vectors if vectors is not None else default_vectors_path(model_path)
    dirs = load_directions(vectors_path)
    dirs.check_model(model_fingerprint(glow), str(model_path))
    check_output_path(target, [*faces, vectors_path, resolve_model_path(model_path)])
    images = edit.load_faces(faces, glow.config.image_size, face_crop=face_crop)
    names = [f.stem for f in faces]
    if sweep is not None:
        result = edit.render_sweep(
            glow, images, dirs, attr, alphas, target, units=units, names=names, size=size, fps=fps
        )
        what = f"{len(faces)} face(s) x {len(attr)} attribute(s) x {len(alphas)} alphas"
    else:
        result = edit.render_edit(glow, images, dirs, edits, target, units=units, names=names, size=size)
        what = edit.describe_edit(edits, units)
    frames = f", {result.frames} frames" if result.frames > 1 else ""
    _wrote(result.path, f"{what}; {result.size[1]}x{result.size[0]}{frames}")
    if show_input:
        seen = target.with_name(f"{target.stem}_input.png")
        check_output_path(seen, faces)
        _wrote(edit.save_model_view(glow, images, seen, size=size), "what the model sees")


@app.command()
@handles_errors
def interpolate(
    faces: FacesArgument,
    out: Annotated[
        Path | None, typer.Option(help=".mp4 (H.264), .gif, .webp or .png (a strip); default <a>_<b>_loop.mp4.")
    ] = None,
    frames: Annotated[int, typer.Option(min=1, max=10_000, help="Frames from one face to the next.")] = 30,
    fps: Annotated[float, typer.Option(min=0.1, max=240, help="Frames per second (a .gif: at most 50).")] = 30.0,
    path: Annotated[str, typer.Option(help="slerp (keeps Gaussian latents at a typical norm) or linear.")] = "slerp",
    ease: Annotated[
        bool, typer.Option("--ease/--no-ease", help="Smooth in and out, with a short hold on each face.")
    ] = True,
    size: Annotated[int | None, typer.Option(min=8, max=4096, help="Frame side in pixels (default >= 256).")] = None,
    model: ModelOption = None,
    face_crop: FaceCropOption = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Frames decoded at a time.")] = 32,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    device: DeviceOption = "auto",
) -> None:
    """A seamless loop through every given face and back to the first.

    Each face is encoded; the loop walks face 1 -> 2 -> ... -> last -> 1 in latent space, --frames
    frames per step (with --ease a sixth of them hold on the face), and decodes and writes the
    frames in batches, so memory does not grow with the length. The first frame is the first
    face's reconstruction. The format follows the extension: .mp4 (H.264, yuv420p: plays in
    browsers and phones), .gif (loops forever), .webp, or .png (a grid of every frame).

    Examples:
      latentlab interpolate a.jpg b.jpg --out loop.mp4
      latentlab interpolate a.jpg b.jpg c.jpg --frames 45 --fps 30 --size 512 --out loop.mp4
      latentlab interpolate a.jpg b.jpg --path linear --no-ease --frames 8 --out steps.png
      latentlab interpolate a.jpg b.jpg --fps 20 --out loop.gif --model models/celeba64
    """
    from latentlab.checkpoint import resolve_model_path
    from latentlab.fileio import check_output_path
    from latentlab.progress import progress_bar
    from latentlab.render import animate
    from latentlab.render.edit import check_extension, load_faces
    from latentlab.render.video import FRAME_FORMATS

    if len(faces) < 2:
        raise fail("give at least two faces to interpolate between", 2)
    if path not in ("slerp", "linear"):
        raise fail(f"--path {path!r} is not one of slerp, linear", 2)
    stems = [f.stem for f in faces]
    target = out if out is not None else Path("_".join(stems[:3] + ["etc"] * (len(stems) > 3) + ["loop"]) + ".mp4")
    check_extension(target, FRAME_FORMATS, "an interpolation")
    glow, model_path = _load(model, device)
    check_output_path(target, [*faces, resolve_model_path(model_path)])
    images = load_faces(faces, glow.config.image_size, face_crop=face_crop)
    total = len(faces) * frames
    with progress_bar("interpolate", total, enabled=not quiet, unit="frame") as advance:
        result = animate.write_interpolation(
            glow,
            images,
            target,
            frames=frames,
            fps=fps,
            method=path,
            ease=ease,
            size=size,
            batch_size=batch_size,
            progress=advance,
        )
    _wrote(
        result.path,
        f"{result.frames} frames, {result.size[1]}x{result.size[0]}, {result.seconds:.1f} s at {result.fps:g} fps",
    )
