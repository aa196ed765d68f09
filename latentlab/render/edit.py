"""Attribute edits on real faces: load, encode, move along attribute directions, decode, lay out.

The meaning of alpha (the Glow paper's convention, Kingma & Dhariwal 2018):
- units "raw": an edit is decode(z + α·v) with v the stored direction; for mean-difference vectors
  v = mean(z | attribute) − mean(z | not attribute), so α = 1 moves a face by the full difference
  between the two groups' means, and useful edits lie in [−1, 1];
- units "sigma": v is rescaled to a unit vector times the standard deviation of the encoded faces'
  projections on it, so α = 1 moves a face by one standard deviation of the data along that
  direction, whatever the attribute: alphas are comparable across attributes.
Several edits compose by addition, decode(z + Σ αᵢ·vᵢ), and α = 0 gives the reconstruction exactly.

Images are uint8 (B, 3, S, S) at the model's size; latents are (B, D). The latent maths
(`pair_edits`, `edit_latents`, `sweep_latents`) is pure; the render functions do the I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from latentlab.data.images import load_image
from latentlab.data.pictures import IMAGE_FORMATS, load_font, make_grid, plain_text, save_image, text_size, upscale
from latentlab.data.quantize import to_uint8
from latentlab.directions.file import DirectionSet
from latentlab.directions.maths import apply_edits, check_alpha
from latentlab.errors import ConfigError, OutputError
from latentlab.flow.glow import Glow, evaluating
from latentlab.render.pictures import label_grid
from latentlab.render.video import FRAME_FORMATS, FrameWriter

MIN_CELL = 160  # px per face in edit grids: large enough for the labels above each column
STILL_FORMATS = tuple(IMAGE_FORMATS)
ANIMATION_FORMATS = tuple(f for f in FRAME_FORMATS if f not in STILL_FORMATS)
SWEEP_FORMATS = STILL_FORMATS + ANIMATION_FORMATS


# ---- faces in, latents out -------------------------------------------------------------------


def load_faces(paths: Sequence[str | Path], size: int, *, face_crop: bool = False) -> torch.Tensor:
    """uint8 (B, 3, size, size): aligned CelebA images get the training crop, other photos the centre
    square, or with `face_crop` the detected face in CelebA's aligned layout (see `facecrop`)."""
    if face_crop:
        from latentlab.data.facecrop import load_face as load
    else:
        load = load_image
    return torch.from_numpy(np.stack([load(Path(p), size) for p in paths]))


def model_view(model: Glow, images: torch.Tensor) -> torch.Tensor:
    """What the model sees of uint8 images (B, 3, S, S): reduced to its n_bits, shown as uint8."""
    return to_uint8(model.preprocess(images), model.config.n_bits).cpu()


def encode_faces(model: Glow, images: torch.Tensor, *, batch_size: int = 32) -> torch.Tensor:
    """uint8 images (B, 3, S, S) -> latents (B, D) on the model's device, no noise added."""
    with evaluating(model):
        return torch.cat([model.encode(model.preprocess(b)) for b in images.split(batch_size)])


FAR_LATENT = 10.0  # latents beyond this many times sqrt(D) in norm are refused (real faces: ~0.8 sqrt(D))


def decode_batches(model: Glow, z: torch.Tensor, *, batch_size: int = 32) -> Iterator[torch.Tensor]:
    """Latents (N, D) -> uint8 images (b, 3, S, S) on the CPU, one batch at a time."""
    typical = math.sqrt(model.latent_dim)  # the norm of a standard Gaussian latent, ±1
    with evaluating(model):
        for batch in z.split(batch_size):
            furthest = float(batch.norm(dim=1).max())
            if not furthest <= FAR_LATENT * typical:  # NaN norms included
                raise ConfigError(
                    f"these latents lie {furthest / typical:.3g}x further out than a typical latent (norm "
                    f"{furthest:.3g} against {typical:.0f}), far beyond the faces the model knows; use a smaller "
                    "--alpha (useful edits lie in [-1, 1])"
                )
            # saturating: an edit pushed beyond what the model knows shows as broken pixels, not NaN
            x = model.decode(batch.to(model.top_mean.device), saturate=True)
            if not bool(torch.isfinite(x).all()):  # finite latents, saturated decode: only broken weights get here
                raise ConfigError(
                    "the model decodes these latents to NaN or inf although they are finite and near the faces "
                    "it knows: its weights are broken; use an earlier checkpoint"
                )
            yield to_uint8(x, model.config.n_bits).cpu()


def decode_images(model: Glow, z: torch.Tensor, *, batch_size: int = 32) -> torch.Tensor:
    """Latents (N, D) -> uint8 images (N, 3, S, S) on the CPU."""
    return torch.cat(list(decode_batches(model, z, batch_size=batch_size)))


# ---- the latent maths --------------------------------------------------------------------------


def pair_edits(attrs: Sequence[str], alphas: Sequence[float]) -> list[tuple[str, float]]:
    """Pair attributes with alphas by position; one alpha given for several attributes applies to all.

    Raises ConfigError for no attributes, mismatched counts, or a non-finite alpha.
    """
    if not attrs:
        raise ConfigError("no attribute given; name one with --attr, e.g. --attr Smiling")
    if len(alphas) == 1:
        alphas = list(alphas) * len(attrs)
    if len(alphas) != len(attrs):
        raise ConfigError(
            f"{len(attrs)} --attr but {len(alphas)} --alpha; give one --alpha per --attr (paired in order), "
            "or a single --alpha for all"
        )
    return [(str(a), check_alpha(alpha)) for a, alpha in zip(attrs, alphas, strict=True)]


def edit_latents(
    z: torch.Tensor, dirs: DirectionSet, attrs: Sequence[str], alphas: Sequence[float], *, units: str = "raw"
) -> torch.Tensor:
    """z (B, D) + Σ alphas[i]·v(attrs[i]) with v in `units` ("raw" or "sigma", see the module doc)."""
    vectors = [dirs.vector(name, units=units) for name in attrs]
    return apply_edits(z, vectors, alphas)


def sweep_latents(
    z: torch.Tensor, dirs: DirectionSet, attrs: Sequence[str], alphas: Sequence[float], *, units: str = "raw"
) -> torch.Tensor:
    """(B, A, S, D): face b moved along attribute a by alphas[s] (z (B, D), A attributes, S alphas)."""
    alpha = torch.tensor([check_alpha(a) for a in alphas], dtype=z.dtype, device=z.device)
    vectors = torch.stack([dirs.vector(name, units=units) for name in attrs]).to(dtype=z.dtype, device=z.device)
    if vectors.shape[1] != z.shape[1]:
        raise ConfigError(f"directions have {vectors.shape[1]} values but the latents {z.shape[1]}")
    return z[:, None, None, :] + alpha[None, None, :, None] * vectors[None, :, None, :]


def ping_pong(n: int) -> list[int]:
    """0, 1, …, n−1, n−2, …, 1: a back-and-forth loop that repeats neither end frame."""
    return list(range(n)) + list(range(n - 2, 0, -1))


# ---- labels and file names ---------------------------------------------------------------------


def format_alpha(alpha: float) -> str:
    """+0.8, −1 written as -1, 0: short, signed, at most 3 decimals."""
    if alpha == 0:
        return "0"
    return f"{alpha:+.3f}".rstrip("0").rstrip(".")


def describe_edit(edits: Sequence[tuple[str, float]], units: str = "raw") -> str:
    """'Blond_Hair +0.8, Smiling -0.5' (with 'sd' after each alpha in sigma units)."""
    suffix = " sd" if units == "sigma" else ""
    return ", ".join(f"{name} {format_alpha(a)}{suffix}" for name, a in edits)


def default_output(inputs: Sequence[str | Path], edits: Sequence[tuple[str, float]], *, sweep: bool) -> Path:
    """<first input stem>_<Attr>_<alpha>[_<Attr>_<alpha>…].png, or <stem>_<Attr>[_…]_sweep.png."""
    stem = Path(inputs[0]).stem
    if sweep:
        parts = [name for name, _ in edits] + ["sweep"]
    else:
        parts = [f"{name}_{alpha:g}" for name, alpha in edits]
    return Path("_".join([stem, *parts]) + ".png")


def check_extension(out: str | Path, allowed: Sequence[str], what: str) -> str:
    """The lower-case suffix of `out`, or OutputError listing the allowed ones."""
    suffix = Path(out).suffix.lower()
    if suffix not in allowed:
        raise OutputError(
            f"cannot write {what} to {out}: unknown extension {suffix or '(none)'!r}; use {', '.join(allowed)}"
        )
    return suffix


def cell_size(image_size: int, size: int | None = None) -> int:
    """Pixels per face: `size`, else the smallest whole multiple of the image size >= MIN_CELL."""
    if size is not None:
        if size < 1:
            raise ConfigError(f"size {size} must be a positive number of pixels, e.g. 256")
        return size
    return image_size * math.ceil(MIN_CELL / image_size)


def _cells(images: torch.Tensor, cell: int) -> list[np.ndarray]:
    """uint8 (N, 3, S, S) -> N arrays (3, cell, cell) for label_grid (whole factors repeat pixels)."""
    return [upscale(img.permute(1, 2, 0).numpy(), cell).transpose(2, 0, 1) for img in images]


def add_caption(image: np.ndarray, text: str, *, font_size: int = 16) -> np.ndarray:
    """A white strip with `text` centred under a (H, W, 3) uint8 image; its height depends only on the font."""
    font = load_font(font_size)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = text_size(draw, "Ag", font)[1]
    strip = line + font_size
    canvas = Image.new("RGB", (image.shape[1], image.shape[0] + strip), (255, 255, 255))
    canvas.paste(Image.fromarray(image), (0, 0))
    ImageDraw.Draw(canvas).text(
        (image.shape[1] // 2, image.shape[0] + strip // 2), plain_text(text), fill=(0, 0, 0), font=font, anchor="mm"
    )
    return np.asarray(canvas)


# ---- rendering ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EditOutput:
    """What a render wrote: the file, its size (height, width) and its frame count (1 for a still)."""

    path: Path
    size: tuple[int, int]
    frames: int


def render_edit(
    model: Glow,
    images: torch.Tensor,
    dirs: DirectionSet,
    edits: Sequence[tuple[str, float]],
    out: str | Path,
    *,
    units: str = "raw",
    names: Sequence[str] | None = None,
    size: int | None = None,
    batch_size: int = 32,
) -> EditOutput:
    """One row per face: the input as the model sees it, its reconstruction, and the composed edit.

    images uint8 (B, 3, S, S); `names` label the rows (default: none for one face). Writes a PNG/JPEG.
    """
    out = Path(out)
    check_extension(out, STILL_FORMATS, "an edit")
    attrs, alphas = [n for n, _ in edits], [a for _, a in edits]
    z = encode_faces(model, images, batch_size=batch_size)
    both = torch.cat([z, edit_latents(z, dirs, attrs, alphas, units=units)])
    decoded = decode_images(model, both, batch_size=batch_size)
    recon, edited = decoded[: len(z)], decoded[len(z) :]
    cell = cell_size(model.config.image_size, size)
    seen = _cells(model_view(model, images), cell)
    rows = [[s, r, e] for s, r, e in zip(seen, _cells(recon, cell), _cells(edited, cell), strict=True)]
    cols = ["input (as the model sees it)", "reconstruction", describe_edit(edits, units)]
    grid = label_grid(rows, _row_labels(names, len(rows)), cols)
    save_image(out, grid)
    return EditOutput(out, grid.shape[:2], 1)


def render_sweep(
    model: Glow,
    images: torch.Tensor,
    dirs: DirectionSet,
    attrs: Sequence[str],
    alphas: Sequence[float],
    out: str | Path,
    *,
    units: str = "raw",
    names: Sequence[str] | None = None,
    size: int | None = None,
    fps: float = 6.0,
    batch_size: int = 32,
) -> EditOutput:
    """Each face moved along each attribute over `alphas`.

    .png/.jpg: a grid, one row per (face, attribute): the input as the model sees it, then one
    column per alpha. .gif/.mp4/.webp: an animation going back and forth over the alphas, each
    frame a grid of faces (rows) by the input and each attribute (columns), the alpha underneath.
    """
    out = Path(out)
    suffix = check_extension(out, SWEEP_FORMATS, "a sweep")
    writer = None if suffix in STILL_FORMATS else FrameWriter(out, fps=fps)  # checks fps before the work
    for name in attrs:
        dirs.vector(name, units=units)  # unknown names and missing spreads fail before any decoding
    z = encode_faces(model, images, batch_size=batch_size)
    zs = sweep_latents(z, dirs, attrs, alphas, units=units)  # (B, A, S, D)
    n_faces, n_attrs, n_alphas = zs.shape[:3]
    decoded = decode_images(model, zs.reshape(-1, zs.shape[-1]), batch_size=batch_size)
    decoded = decoded.reshape(n_faces, n_attrs, n_alphas, *decoded.shape[1:])
    cell = cell_size(model.config.image_size, size)
    seen = _cells(model_view(model, images), cell)
    tag = " sd" if units == "sigma" else ""
    if suffix in STILL_FORMATS:
        rows, labels = [], []
        face_names = _row_labels(names, n_faces)
        for b in range(n_faces):
            for a, attr in enumerate(attrs):
                rows.append([seen[b], *_cells(decoded[b, a], cell)])
                labels.append(attr if face_names is None else f"{face_names[b]}: {attr}")
        cols = ["input", *(f"{format_alpha(x)}{tag}" for x in alphas)]
        grid = label_grid(rows, labels, cols)
        save_image(out, grid)
        return EditOutput(out, grid.shape[:2], 1)
    order = ping_pong(n_alphas)
    assert writer is not None
    with writer:
        for s in order:
            rows = [[seen[b], *_cells(decoded[b, :, s], cell)] for b in range(n_faces)]
            grid = label_grid(rows, _row_labels(names, n_faces), ["input", *attrs])
            frame = add_caption(grid, f"alpha {format_alpha(alphas[s])}{tag}")
            writer.append(frame)
    return EditOutput(out, frame.shape[:2], len(order))


def _row_labels(names: Sequence[str] | None, n: int) -> list[str] | None:
    """Row labels only when there is more than one row of faces to tell apart."""
    return list(names) if names is not None and n > 1 else None


def save_model_view(model: Glow, images: torch.Tensor, out: str | Path, *, size: int | None = None) -> Path:
    """Write what the model sees of uint8 images (B, 3, S, S), in a row, each face enlarged by a whole factor."""
    cell = cell_size(model.config.image_size, size)
    cells = np.stack(_cells(model_view(model, images), cell))
    return save_image(out, make_grid(cells, nrow=len(cells)) if len(cells) > 1 else cells[0].transpose(1, 2, 0))
