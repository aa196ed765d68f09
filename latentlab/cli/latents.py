"""The latent-space commands: `encode` a folder into a latent store, fit `attribute-vectors` from labeled faces."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from latentlab.cli.common import (
    DeviceOption,
    ModelOption,
    console,
    err_console,
    fail,
    handles_errors,
    parse_names,
)


class LatentDtype(str, Enum):
    """How latents are stored on disk."""

    float16 = "float16"
    float32 = "float32"


class Method(str, Enum):
    """How a direction is fitted."""

    mean_diff = "mean-diff"
    mean_diff_shrunk = "mean-diff-shrunk"
    logistic = "logistic"
    pca = "pca"


@handles_errors
def encode(
    data: Annotated[Path | None, typer.Option(help="Folder of images (default: the one next to --labels).")] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Label file: encode only labeled images and store their labels.")
    ] = None,
    model: ModelOption = None,
    out: Annotated[Path | None, typer.Option(help="Store folder (default: latents/<model name>).")] = None,
    dtype: Annotated[LatentDtype, typer.Option(help="Storage type of the latents.")] = LatentDtype.float16,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 64,
    limit: Annotated[int | None, typer.Option(min=1, help="Encode only the first N (labeled) images.")] = None,
    device: DeviceOption = "auto",
    force: Annotated[bool, typer.Option(help="Start over in --out even if it holds other latents.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
    fit_sample: Annotated[
        int, typer.Option(min=0, help="Report bits/dim of this many images, spread over the folder (0: none).")
    ] = 128,
) -> None:
    """Encode a folder of faces into a memory-mapped latent store (latents.npy, ids.json, meta.json).

    Interrupted runs continue where they stopped when rerun with the same options. Then the
    bits/dim and reconstruction PSNR of a sample of the images are printed beside the model's
    held-out bits/dim, with a warning for images far outside the faces the model knows.

    Examples:
      latentlab encode --data img_align_celeba/ --out latents/celeba64
      latentlab encode --labels list_attr_celeba.csv --model models/celeba64 --dtype float32
    """
    from latentlab.checkpoint import load_model
    from latentlab.cli.photo_fit import print_fit
    from latentlab.latents import default_image_folder, store_progress
    from latentlab.latents.encode import encode_and_fit
    from latentlab.latents.likelihood import model_reference
    from latentlab.paths import model_or_last, run_name
    from latentlab.train.devices import resolve_device

    if data is None and labels is None:
        raise fail("give the images with --data DIR, or a label file with --labels FILE", 2)
    model_path = model_or_last(model)
    folder = data if data is not None else default_image_folder(labels)
    target = out if out is not None else Path("latents") / run_name(model_path)
    glow = load_model(model_path, device=resolve_device(device))
    try:
        store, fit = encode_and_fit(
            glow,
            folder,
            target,
            sample=fit_sample,
            reference=model_reference(model_path),
            dtype=dtype.value,
            batch_size=batch_size,
            labels=labels,
            limit=limit,
            force=force,
            progress=not quiet,
            model_name=str(model_path),
        )
    except KeyboardInterrupt:
        done = store_progress(target)
        saved = f"{done[0]} of {done[1]} latents are saved in {target}; " if done else ""
        raise fail(f"interrupted; {saved}rerun the same command to continue", 130) from None
    size = store.latents.nbytes / 2**20
    if store.encoded == 0:
        console.print(f"[green]already encoded[/] {len(store)} images in {store.path}; nothing to do", soft_wrap=True)
    else:
        resumed = f" (continued after {store.resumed_from})" if store.resumed_from else ""
        console.print(f"[green]encoded[/] {store.encoded} images{resumed} from {folder}", soft_wrap=True)
    shape = f"{len(store)} x {store.dim} {dtype.value}, {size:.1f} MiB"
    console.print(f"latents: {store.path / 'latents.npy'} ({shape})", highlight=False, soft_wrap=True)
    if labels is not None:
        console.print(store.match_summary(), highlight=False, soft_wrap=True)
    if fit is not None:
        print_fit(fit, what="sampled image" if len(fit.images) < len(store) else "image")


@handles_errors
def attribute_vectors(
    labels: Annotated[
        Path | None,
        typer.Option(help="CelebA-style label file (Kaggle .csv or the original .txt); optional for --method pca."),
    ] = None,
    images: Annotated[
        Path | None, typer.Option(help="Image folder (default: img_align_celeba/ next to the labels).")
    ] = None,
    model: ModelOption = None,
    out: Annotated[
        Path | None, typer.Option(help="Direction file (default: attributes/<model name>.safetensors).")
    ] = None,
    attrs: Annotated[str | None, typer.Option(help="Comma-separated attributes (default: all).")] = None,
    method: Annotated[
        Method,
        typer.Option(
            help="mean-diff (Glow paper), mean-diff-shrunk (its noise removed; best held-out probe on CelebA), "
            "logistic regression, or pca (principal components, no labels)."
        ),
    ] = Method.mean_diff,
    shrink: Annotated[
        float,
        typer.Option(min=0.0, help="With mean-diff-shrunk: move each coordinate this many standard errors toward 0."),
    ] = 1.5,
    components: Annotated[
        int, typer.Option(min=1, help="With --method pca: how many principal components (pc1, pc2, ...).")
    ] = 10,
    held_out_fraction: Annotated[
        float,
        typer.Option(help="Share of the faces kept out of the fit to score each direction (0: none, no probe)."),
    ] = 0.2,
    orthogonal_to: Annotated[
        str | None, typer.Option(help="Remove from every other direction its projection on these, e.g. Male,Young.")
    ] = None,
    mirror: Annotated[
        bool,
        typer.Option(
            "--mirror",
            help="Also fit on every face's mirror image (twice the encoding; for attributes a mirror keeps, "
            "as all of CelebA's do).",
        ),
    ] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Use only the first N labeled images.")] = None,
    min_count: Annotated[int, typer.Option(min=2, help="Skip attributes with fewer positives or negatives.")] = 10,
    max_samples: Annotated[int, typer.Option(min=4, help="Rows the logistic classifiers are fitted on.")] = 5000,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per encoding batch.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed for the probe split, the classifier subset and pca's start.")] = 0,
    latents: Annotated[
        Path | None, typer.Option(help="Keep the encoded latents in this folder (reused and resumed).")
    ] = None,
    dtype: Annotated[
        LatentDtype, typer.Option(help="Storage type of the latents on disk between the passes.")
    ] = LatentDtype.float16,
    device: DeviceOption = "auto",
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Compute one latent direction per attribute in one pass over the labeled images, plus a report.

    Writes the direction file (vectors, counts, norms, method, fingerprint
    of the model) and beside it <name>-report.json, <name>-report.csv and
    <name>-report-cosine.png. Attributes with too few positives or negatives
    are reported and skipped. A random --held-out-fraction of the faces is
    kept out of the fit; the report scores each direction on them.

    --method pca needs no labels: it writes the leading principal components
    of the encoded faces as pc1, pc2, ... with their share of the variance
    (with --labels, also the attribute each component follows most).

    Examples:
      latentlab attribute-vectors --labels list_attr_celeba.csv
      latentlab attribute-vectors --labels labels.csv --images faces/ --model models/x --out attributes/x.safetensors
      latentlab attribute-vectors --labels list_attr_celeba.csv --attrs Blond_Hair,Smiling --method logistic
      latentlab attribute-vectors --labels list_attr_celeba.csv --method mean-diff-shrunk --held-out-fraction 0.2
      latentlab attribute-vectors --labels list_attr_celeba.csv --attrs Smiling --orthogonal-to Male,Young
      latentlab attribute-vectors --labels list_attr_celeba.csv --method mean-diff-shrunk --mirror
      latentlab attribute-vectors --method pca --images faces/ --components 10 --out attributes/x-pca.safetensors
    """
    from latentlab.directions.attribute_vectors import compute_attribute_vectors
    from latentlab.directions.report import attribute_table, component_table
    from latentlab.train.devices import resolve_device

    result = compute_attribute_vectors(
        labels_path=labels,
        model_path=model,
        images=images,
        out=out,
        attrs=parse_names(attrs, "--attrs") or None,
        method=method.value,
        orthogonal_to=parse_names(orthogonal_to, "--orthogonal-to"),
        shrink=shrink,
        limit=limit,
        batch_size=batch_size,
        min_count=min_count,
        seed=seed,
        max_samples=max_samples,
        held_out_fraction=held_out_fraction,
        components=components,
        latents=latents,
        latent_dtype=dtype.value,
        device=resolve_device(device),
        progress=not quiet,
        mirror=mirror,
    )
    if result.method == "pca":
        console.print(component_table(result.rows, title=f"principal components of {result.images_used} faces"))
    else:
        held_out = result.directions.extra.get("held_out_rows")
        method = result.method + (", faces and their mirror images" if mirror else "")
        console.print(attribute_table(result.rows, title=f"attribute directions ({method})", held_out=held_out))
    console.print(result.match_summary, highlight=False, soft_wrap=True)
    skipped = sum(1 for row in result.rows if row["skipped"])
    if skipped:
        err_console.print(
            f"[yellow]{skipped} attribute(s) skipped[/]; see the note column", highlight=False, soft_wrap=True
        )
    done = len(result.rows) - skipped
    console.print(
        f"[green]wrote[/] {result.path} ({done} directions, model {result.fingerprint})",
        highlight=False,
        soft_wrap=True,
    )
    console.print("report: " + ", ".join(str(p) for p in result.report.values()), highlight=False, soft_wrap=True)
