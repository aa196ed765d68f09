"""The pipeline behind `latentlab attribute-vectors`: encode the faces once, fit, save the file, report.

Defaults come from the project layout: the last trained model, the images next to the label file,
every attribute in it. Latents go to a float16 store on disk between the two passes of the fit.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentlab.directions.file import DirectionSet
from latentlab.directions.fit import METHODS, fit_directions
from latentlab.directions.maths import DEFAULT_SHRINK, cosine_matrix
from latentlab.directions.pca import DEFAULT_COMPONENTS, principal_directions
from latentlab.directions.probe import DEFAULT_HELD_OUT, check_held_out_fraction, probe_description
from latentlab.directions.report import report_rows, write_report
from latentlab.errors import ConfigError, DataError, OutputError
from latentlab.latents import DTYPES

__all__ = ["ALL_METHODS", "AttributeResult", "compute_attribute_vectors"]

ALL_METHODS = (*METHODS, "pca")
PCA_NOTE = "principal components: no labels fitted, no probe; see explained_variance_ratio"


@dataclass(frozen=True)
class AttributeResult:
    """What `attribute-vectors` made: the direction file, the report files and their rows."""

    path: Path
    report: dict[str, Path]
    rows: list[dict[str, Any]]
    directions: DirectionSet = field(repr=False)  # as written, with float64 vectors
    model: Path
    images: Path
    labels: Path | None
    method: str
    fingerprint: str
    images_used: int
    labels_without_image: int
    images_without_labels: int
    match_summary: str


def compute_attribute_vectors(
    *,
    labels_path: Path | None = None,
    model_path: Path | None = None,
    images: Path | None = None,
    out: Path | None = None,
    attrs: Sequence[str] | None = None,
    method: str = "mean-diff",
    orthogonal_to: Sequence[str] = (),
    shrink: float = DEFAULT_SHRINK,
    limit: int | None = None,
    batch_size: int = 64,
    min_count: int = 10,
    seed: int = 0,
    max_samples: int = 5000,
    held_out_fraction: float = DEFAULT_HELD_OUT,
    components: int = DEFAULT_COMPONENTS,
    latents: Path | None = None,
    latent_dtype: str = "float16",
    device: str | torch.device = "cpu",
    workers: int = 2,
    progress: bool = True,
    mirror: bool = False,
) -> AttributeResult:
    """Compute one direction per attribute (or `components` principal components for method "pca") and
    write `out` (default attributes/<model name>.safetensors).

    Defaults: the last trained model; the images next to the label file; every attribute in it.
    Conditions in `orthogonal_to` are computed too. Latents go to a temporary store on disk (float16,
    under the cache folder) unless `latents` names a folder to keep them in (and to resume from).
    A seeded random `held_out_fraction` of the faces is kept out of the fit to judge the directions
    (0: none, and no probe). `shrink` (standard errors) is for method "mean-diff-shrunk". "pca" needs
    no labels (then `images` is required and every image is used); with labels it encodes the labeled
    images and reports which attribute each component tracks.
    `mirror` also encodes every face's left-right mirror image (into `mirror/` inside the latent folder)
    and fits on faces and mirrors together (`fit_directions`'s `mirrored`), for attributes a mirror
    image keeps: twice the encoding, less noise in the directions (BENCHMARKS.md).
    The report lands beside `out`: `<stem>-report.json`, `-report.csv`, `-report-cosine.png` (not for pca).
    """
    from latentlab.checkpoint import load_model, resolve_model_path
    from latentlab.data.labels import check_attributes, load_labels
    from latentlab.fileio import check_output_path, ensure_parent
    from latentlab.latents import default_image_folder, encode_to_store
    from latentlab.paths import default_vectors_path, model_or_last

    _check_options(
        method=method,
        min_count=min_count,
        limit=limit,
        batch_size=batch_size,
        max_samples=max_samples,
        latent_dtype=latent_dtype,
        components=components,
        shrink=shrink,
    )
    held_out_fraction = check_held_out_fraction(held_out_fraction)
    pca = method == "pca"
    _check_inputs(pca=pca, labels_path=labels_path, images=images, attrs=attrs, orthogonal_to=orthogonal_to)
    if pca and mirror:
        raise ConfigError("--mirror is for the labeled methods (mean-diff, mean-diff-shrunk, logistic), not pca")
    table, names, conditions = None, [], []
    if labels_path is not None:
        labels_path = Path(labels_path)
        table = load_labels(labels_path)
        table.attrs["source"] = str(labels_path)
        known = list(table.columns)
        names = check_attributes(list(attrs) if attrs else known, known)
        conditions = check_attributes(list(dict.fromkeys(orthogonal_to)), known)
        names = list(dict.fromkeys(names)) + [c for c in conditions if c not in names]
    model_path = model_or_last(model_path)
    out = Path(out) if out is not None else default_vectors_path(model_path)
    if out.suffix != ".safetensors":
        raise OutputError(f"--out {out} must end in .safetensors")
    report_stem = out.with_name(out.stem + "-report")
    ends = (".json", ".csv") if pca else (".json", ".csv", "-cosine.png")
    inputs = [p for p in (labels_path, resolve_model_path(model_path)) if p is not None]
    for target in (out, *(report_stem.with_name(report_stem.name + end) for end in ends)):
        check_output_path(target, inputs)
    ensure_parent(out)
    model = load_model(model_path, device=device)
    if pca and components > model.latent_dim:
        raise ConfigError(f"--components {components} exceeds the model's latent size {model.latent_dim}")
    images = Path(images) if images is not None else default_image_folder(labels_path)

    with _latent_folder(latents) as folder:
        encoding = {
            "dtype": latent_dtype,
            "batch_size": batch_size,
            "labels": table,
            "limit": limit,
            "progress": progress,
            "workers": workers,
            "model_name": str(model_path),
        }
        store = encode_to_store(model, images, folder, **encoding)
        mirrored = encode_to_store(model, images, folder / "mirror", mirror=True, **encoding) if mirror else None
        if mirrored is not None and mirrored.ids != store.ids:
            raise DataError(f"{folder / 'mirror'} holds other faces than {folder}; pass another --latents folder")
        label_array = None if table is None else store.labels[names].to_numpy(dtype=np.int8)
        if pca:
            fit = principal_directions(
                store.latents, components=components, labels=label_array, names=names, seed=seed, progress=progress
            )
        else:
            fit = fit_directions(
                store.latents,
                label_array,
                names,
                method=method,
                orthogonal_to=conditions,
                shrink=shrink,
                min_count=min_count,
                seed=seed,
                max_samples=max_samples,
                held_out_fraction=held_out_fraction,
                progress=progress,
                mirrored=None if mirrored is None else mirrored.latents,
            )
        fingerprint, used, summary = store.fingerprint, len(store), store.match_summary()
        match = store.meta.get("match") or {"labels_without_image": 0, "images_without_labels": 0}
        del store, mirrored

    if not fit.vectors:
        first = next(iter(fit.skipped.items()))
        raise DataError(
            f"no attribute can get a direction from {used} labeled images ({first[0]}: {first[1]}); "
            "use more images or a smaller --min-count"
        )
    about = {
        "model": str(model_path),
        "fingerprint": fingerprint,
        "images": str(images),
        "labels": None if labels_path is None else str(labels_path),
        "method": method,
        "orthogonal_to": conditions,
        "images_used": used,
        "labels_without_image": match["labels_without_image"],
        "images_without_labels": match["images_without_labels"],
        "seed": seed,
        "latent_dtype": latent_dtype,
        "mirror": mirror,
    }
    if pca:
        about |= {
            "components": components,
            "pca_subspace": fit.extra["pca_subspace"],
            "pca_power_iterations": fit.extra["pca_power_iterations"],
            "probe": PCA_NOTE,
        }
    else:
        about |= {
            "min_count": min_count,
            "shrink": fit.extra["shrink"],
            "logistic_rows": fit.extra["logistic_rows"],
            "held_out_fraction": fit.extra["held_out_fraction"],
            "held_out_rows": fit.extra["held_out_rows"],
            "probe": probe_description(fit.extra["held_out_rows"]),
        }
    dirs = replace(fit, fingerprint=fingerprint, extra={**about, **fit.extra})
    path = dirs.save(out)
    dirs = replace(dirs, path=path)
    rows = report_rows(dirs)
    cosine = None if pca else cosine_matrix(torch.stack(list(dirs.vectors.values())))
    report = write_report(report_stem, rows, cosine=cosine, cosine_names=dirs.names, meta=about)
    return AttributeResult(
        path=path,
        report=report,
        rows=rows,
        directions=dirs,
        model=model_path,
        images=images,
        labels=labels_path,
        method=method,
        fingerprint=fingerprint,
        images_used=used,
        labels_without_image=match["labels_without_image"],
        images_without_labels=match["images_without_labels"],
        match_summary=summary,
    )


def _check_inputs(
    *,
    pca: bool,
    labels_path: Path | None,
    images: Path | None,
    attrs: Sequence[str] | None,
    orthogonal_to: Sequence[str],
) -> None:
    """Labels are needed by every method but pca; pca without labels needs the images; pca has no conditions."""
    if labels_path is None and not pca:
        raise ConfigError("attribute directions need a label file (--labels FILE); only --method pca works without")
    if labels_path is None and images is None:
        raise ConfigError("--method pca without --labels needs the faces to analyse: --images DIR")
    if labels_path is None and attrs:
        raise ConfigError("--attrs names labeled attributes; give --labels FILE too, or leave --attrs out")
    if pca and orthogonal_to:
        raise ConfigError("--orthogonal-to does not apply to --method pca (principal components are orthogonal)")


def _check_options(
    *,
    method: str,
    min_count: int,
    limit: int | None,
    batch_size: int,
    max_samples: int,
    latent_dtype: str,
    components: int,
    shrink: float,
) -> None:
    if method not in ALL_METHODS:
        raise ConfigError(f"unknown method {method!r}; choose {', '.join(ALL_METHODS)}")
    if components < 1:
        raise ConfigError(f"components {components} must be at least 1")
    if not (math.isfinite(shrink) and shrink >= 0):
        raise ConfigError(f"shrink {shrink} must be a finite number of standard errors, 0 or more")
    if min_count < 2:
        raise ConfigError(f"min count {min_count} must be at least 2 (a probe needs a positive and a negative)")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit {limit} must be at least 1")
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size} must be at least 1")
    if max_samples < 4:
        raise ConfigError(f"max samples {max_samples} must be at least 4")
    if latent_dtype not in DTYPES:
        raise ConfigError(f"latent dtype {latent_dtype!r} is not supported; choose {' or '.join(DTYPES)}")


@contextlib.contextmanager
def _latent_folder(latents: Path | None) -> Iterator[Path]:
    """The folder to encode into: the one given (kept), else a temporary one under the cache folder (removed)."""
    if latents is not None:
        yield Path(latents)
        return
    from latentlab.data.cache import cache_root

    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {root}: {exc.strerror or exc}; set LATENTLAB_CACHE_DIR") from None
    with tempfile.TemporaryDirectory(prefix="latents-", dir=root) as tmp:
        yield Path(tmp)
