"""The rendering commands, `manipulate` and `interpolate`: parse the options, run the job, print one line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from latentlab.cli.common import DeviceOption, err_console, fail, handles_errors, wrote
from latentlab.errors import ConfigError

MAX_FAILURES = 20  # skipped photos named one by one; the rest are counted

# worded a little apart from common.ModelOption since these commands first had it; --help stays as it was
RenderModelOption = Annotated[
    Path | None, typer.Option(help="Run folder or checkpoint (default: the last trained model).")
]
FaceCropOption = Annotated[
    bool,
    typer.Option(
        "--face-crop",
        help="Find the face (OpenCV: pip install 'latentlab\\[face]') and crop it like CelebA's aligned faces.",
    ),
]
FaceOption = Annotated[
    int | None,
    typer.Option(min=1, help="With several faces in a photo, align the N-th from the left (implies --face-crop)."),
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

PhotosArgument = Annotated[
    list[Path],
    typer.Argument(
        help="Face images (any size; 178x218 CelebA aligned images get the training crop), or one folder of them.",
        exists=True,
        readable=True,
    ),
]
LevelsOption = Annotated[
    str | None,
    typer.Option(help="Only these levels of the latent, e.g. 2,3 or 8x8,top (1 = the finest; see the README)."),
]


@handles_errors
def manipulate(
    faces: PhotosArgument,
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
        typer.Option(
            help=".png/.jpg (a sweep also .gif/.mp4/.webp), a folder for a folder; default <face>_<Attr>_<alpha>.png."
        ),
    ] = None,
    model: RenderModelOption = None,
    vectors: Annotated[
        Path | None,
        typer.Option(help="Direction file (default: attributes/<model name>.safetensors).", dir_okay=False),
    ] = None,
    face_crop: FaceCropOption = False,
    face: FaceOption = None,
    show_input: Annotated[
        bool, typer.Option("--show-input", help="Also save what the model sees, as <out>_input.png.")
    ] = False,
    bare: Annotated[
        bool,
        typer.Option("--bare", help="Write only the edited face, no labels, at --size (default the model's size)."),
    ] = False,
    size: Annotated[int | None, typer.Option(min=8, max=2048, help="Pixels per face in the output.")] = None,
    fps: Annotated[float, typer.Option(min=0.1, max=50, help="Frames per second of a .gif/.mp4 sweep.")] = 6.0,
    device: DeviceOption = "auto",
    levels: LevelsOption = None,
    grid: Annotated[
        bool, typer.Option("--grid", help="With a folder: write input, reconstruction and edit per photo.")
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="With a folder: photos read and encoded at a time.")] = 32,
    quiet: Annotated[bool, typer.Option(help="No progress bar (folders).")] = False,
) -> None:
    """Edit faces along attribute directions: decode(encode(face) + alpha·v).

    Alpha 1 moves a face by the full difference between the mean latents of faces with and
    without the attribute (the Glow paper's convention: useful edits lie in [-1, 1]); with
    --units sigma, alpha 1 is one standard deviation of the encoded faces along that direction,
    so alphas compare across attributes. Several --attr/--alpha pairs add up to one edit.
    --levels restricts the edit to some levels of the multi-scale latent.

    Given a folder, every photo in it is edited into the --out folder under its own name (the
    edited face alone at --size, or with --grid the usual grid; with --sweep a grid per photo);
    photos that fail are listed and skipped, and the exit code is 1 only if none succeeded.
    Each photo's bits/dim is printed beside the model's held-out figure, with a warning for
    photos far outside the faces the model knows.

    Examples:
      latentlab manipulate face.jpg --attr Blond_Hair --alpha 0.8
      latentlab manipulate face.jpg --attr Smiling --alpha 0.5 --attr Male --alpha -0.5 --out edit.png
      latentlab manipulate a.jpg b.jpg --attr Smiling --attr Eyeglasses --sweep -1,1,7 --out sweep.png
      latentlab manipulate face.jpg --attr Smiling --sweep -2,2,9 --units sigma --out smile.gif
      latentlab manipulate photo.jpg --face-crop --show-input --attr Young --alpha 1 --model models/celeba64
      latentlab manipulate face.jpg --attr Smiling --alpha 0.5 --bare --out face.png
      latentlab manipulate face.jpg --attr Blond_Hair --alpha 1 --levels 2,3
      latentlab manipulate photos/ --face-crop --attr Smiling --alpha 0.5 --size 256 --out edited/
    """
    from latentlab.directions.maths import sweep_alphas
    from latentlab.render.edit import pair_edits
    from latentlab.render.jobs import Sweep
    from latentlab.render.jobs import manipulate as run
    from latentlab.render.pictures import ANIMATION_FORMATS

    if sweep is not None and alpha:
        raise fail("--sweep and --alpha exclude each other: --alpha makes one edit, --sweep a range", 2)
    if sweep is None and not alpha:
        raise fail("give --alpha (one edit) or --sweep START,STOP,COUNT (a range of edits)", 2)
    if units not in ("raw", "sigma"):
        raise fail(f"--units {units!r} is not one of raw, sigma", 2)
    try:
        edit = Sweep(tuple(attr), tuple(sweep_alphas(sweep))) if sweep is not None else pair_edits(attr, alpha or [])
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    if any(f.is_dir() for f in faces):
        if bare and grid:
            raise fail("--bare and --grid exclude each other: a folder gets the bare faces unless --grid", 2)
        if face is not None:
            raise fail("--face N picks a face in one photo; a folder takes --face-crop (each photo's largest face)", 2)
        folder_options = {"units": units, "model": model, "vectors": vectors, "face_crop": face_crop, "size": size}
        _edit_folder(
            faces,
            edit,
            out=out,
            show_input=show_input,
            grid=grid,
            levels=levels,
            batch_size=batch_size,
            device=device,
            progress=not quiet,
            **folder_options,
        )
        return
    if grid:
        raise fail("--grid is for a folder of photos; a single edit writes the grid unless --bare", 2)
    if sweep is None and out is not None and out.suffix.lower() in ANIMATION_FORMATS:
        raise fail(f"{out.suffix} animates a range of edits: add --sweep START,STOP,COUNT or write .png", 2)
    result = run(
        faces,
        edit,
        units=units,
        out=out,
        model=model,
        vectors=vectors,
        face_crop=face_crop,
        face=face,
        show_input=show_input,
        bare=bare,
        size=size,
        fps=fps,
        device=device,
        levels=levels,
    )
    frames = f", {result.frames} frames" if result.frames > 1 else ""
    wrote(result.path, f"{result.description}; {result.size[1]}x{result.size[0]}{frames}")
    if result.model_view is not None:
        wrote(result.model_view, "what the model sees")
    if result.fit is not None:
        from latentlab.cli.photo_fit import print_fit

        print_fit(result.fit)


def _edit_folder(faces: list[Path], edit: object, *, out: Path | None, show_input: bool, grid: bool, **options) -> None:
    """The folder form: check its options, edit every photo, print the outcome; exit 1 only if none was edited."""
    from latentlab.cli.photo_fit import print_fit
    from latentlab.render.batch import FILE_LIKE, manipulate_folder

    folder = faces[0]
    if len(faces) > 1:
        raise fail(f"{folder} is a directory: give one folder of photos, or image files, not both", 2)
    if out is not None and not out.is_dir() and out.suffix.lower() in FILE_LIKE:
        raise fail(
            f"{folder} is a directory: a folder of photos is edited into a folder; give --out FOLDER, not {out}", 2
        )
    if show_input:
        raise fail("--show-input is for single edits; with a folder, --grid shows each input beside its edit", 2)
    result = manipulate_folder(folder, edit, out=out, grid=grid, **options)
    if result.written:
        wrote(result.out, f"{result.written} photo(s), {result.description}")
    print_fit(result.fit)
    for failure in result.failed[:MAX_FAILURES]:
        reason = failure.reason.removeprefix(f"{failure.path}: ")  # most errors already name the file
        line = f"[yellow]skipped[/] {escape(str(failure.path))}: {escape(reason)}"
        err_console.print(line, highlight=False, soft_wrap=True)
    if len(result.failed) > MAX_FAILURES:
        err_console.print(f"[yellow]skipped[/] {len(result.failed) - MAX_FAILURES} more", highlight=False)
    if not result.written:
        raise fail(f"none of the {len(result.failed)} photo(s) under {folder} could be edited; see above", 1)


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
    model: RenderModelOption = None,
    face_crop: FaceCropOption = False,
    face: FaceOption = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Frames decoded at a time.")] = 32,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    device: DeviceOption = "auto",
    levels: LevelsOption = None,
) -> None:
    """A seamless loop through every given face and back to the first.

    Each face is encoded; the loop walks face 1 -> 2 -> ... -> last -> 1 in latent space, --frames
    frames per step (with --ease a sixth of them hold on the face), and decodes and writes the
    frames in batches, so memory does not grow with the length. The first frame is the first
    face's reconstruction. The format follows the extension: .mp4 (H.264, yuv420p: plays in
    browsers and phones), .gif (loops forever), .webp, or .png (a grid of every frame).
    --levels moves only those levels of the latent; the others stay the first face's.

    Examples:
      latentlab interpolate a.jpg b.jpg --out loop.mp4
      latentlab interpolate a.jpg b.jpg c.jpg --frames 45 --fps 30 --size 512 --out loop.mp4
      latentlab interpolate a.jpg b.jpg --path linear --no-ease --frames 8 --out steps.png
      latentlab interpolate a.jpg b.jpg --fps 20 --out loop.gif --model models/celeba64
      latentlab interpolate a.jpg b.jpg --levels 3 --out pose.mp4
    """
    from latentlab.render.jobs import interpolate as run

    if len(faces) < 2:
        raise fail("give at least two faces to interpolate between", 2)
    if path not in ("slerp", "linear"):
        raise fail(f"--path {path!r} is not one of slerp, linear", 2)
    result = run(
        faces,
        out=out,
        frames=frames,
        fps=fps,
        method=path,
        ease=ease,
        size=size,
        model=model,
        face_crop=face_crop,
        face=face,
        batch_size=batch_size,
        device=device,
        progress=not quiet,
        levels=levels,
    )
    details = f"{result.frames} frames, {result.size[1]}x{result.size[0]}, {result.seconds:.1f} s at {result.fps:g} fps"
    wrote(result.path, details)
    if result.fit is not None:
        from latentlab.cli.photo_fit import print_fit

        print_fit(result.fit)
