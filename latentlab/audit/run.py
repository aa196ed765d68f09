"""The pipeline behind `latentlab audit`: pick held-out faces, fit the judges, edit, decode, judge, report.

Defaults come from the direction file: the model and the labeled images it was fitted on. The audit
faces are the faces the direction file held out of its fit (when it says which, for the same labels
and images), so neither the directions nor the judges have seen them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentlab.audit.effects import DirectionEffect, direction_effect
from latentlab.audit.judges import Judges, fit_judges
from latentlab.directions.file import UNITS, DirectionSet, load_directions
from latentlab.directions.probe import DEFAULT_HELD_OUT, held_out_rows
from latentlab.errors import ConfigError, DataError
from latentlab.progress import progress_bar
from latentlab.render.faces import decode_batches, encode_faces, model_view

__all__ = ["CONTROL", "AuditResult", "run_audit"]

CONTROL = "(random)"  # a random direction of the median norm: what any edit this large does by chance
MAX_TRAIN, MAX_TEST = 20000, 5000  # faces the judges are fitted and scored on, at most


@dataclass(frozen=True)
class AuditResult:
    """What the audit measured and wrote: one DirectionEffect per direction, the control last."""

    effects: list[DirectionEffect]
    judges: Judges = field(repr=False)
    meta: dict[str, Any]
    paths: dict[str, Path]


def run_audit(
    *,
    model_path: Path | None = None,
    vectors: Path | None = None,
    labels: Path | None = None,
    images: Path | None = None,
    attrs: Sequence[str] | None = None,
    faces: int = 200,
    units: str = "raw",
    alpha: float = 1.0,
    seed: int = 0,
    out: Path | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    workers: int = 2,
    progress: bool = True,
) -> AuditResult:
    """Audit the directions of `vectors` (default: the model's direction file) at ±alpha in `units`.

    Writes `<out>.json`, `<out>.csv` and `<out>.png` (default out: `<vectors stem>-audit` beside the
    file, `-audit-sigma` in sigma units) and returns the figures.
    """
    from latentlab.audit.report import output_paths, write_audit
    from latentlab.checkpoint import load_model, model_fingerprint, resolve_model_path
    from latentlab.data.cache import prepare_cache
    from latentlab.data.labels import load_labels, match_labels
    from latentlab.fileio import check_output_path
    from latentlab.latents import default_image_folder
    from latentlab.paths import default_vectors_path, model_or_last

    if units not in UNITS:
        raise ConfigError(f"unknown units {units!r}; choose one of {', '.join(UNITS)}")
    if not (np.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"alpha {alpha} must be a positive number (the audit edits at +alpha and -alpha)")
    if faces < 1 or batch_size < 1:
        raise ConfigError(f"faces ({faces}) and batch size ({batch_size}) must be at least 1")
    if vectors is None:
        model_path = model_or_last(model_path)
        vectors = default_vectors_path(model_path)
    dirs = load_directions(vectors)
    if model_path is None:
        recorded = dirs.extra.get("model")
        model_path = Path(recorded) if recorded and Path(recorded).exists() else model_or_last(None)
    names = _chosen(dirs, attrs, units)
    labels_path, images = _label_sources(dirs, labels, images, default_image_folder)
    paths = output_paths(Path(vectors), out, units)
    for target in paths.values():
        check_output_path(target, [vectors, labels_path, resolve_model_path(model_path)])

    model = load_model(model_path, device=device)
    dirs.check_model(model_fingerprint(model), str(model_path))
    table = load_labels(labels_path)
    cache = prepare_cache(images, model.config.image_size, workers=workers, progress=progress)
    match = match_labels(table, cache.names)
    if len(match) < 2:
        raise DataError(
            f"{len(match)} of the {len(cache)} images in {images} have a row in {labels_path}; check --images, --labels"
        )
    held, split_note = _held_out(dirs, len(match), labels_path, images, seed)
    rng = np.random.default_rng((seed, 23))
    train = _at_most(np.flatnonzero(~held), MAX_TRAIN, rng)
    test = _at_most(np.flatnonzero(held), MAX_TEST, rng)
    sample = np.sort(rng.choice(np.flatnonzero(held), size=min(faces, int(held.sum())), replace=False))
    rows = np.union1d(np.union1d(train, test), sample)
    pictures = _model_view(model, cache.images, match.indices[rows], batch_size)
    y = match.labels.to_numpy(dtype=np.int8)[rows]
    judges = fit_judges(pictures, y, list(match.labels.columns), np.isin(rows, train), np.isin(rows, test), seed=seed)
    if not judges.names:
        raise DataError(f"no attribute in {labels_path} can have a judge: {next(iter(judges.skipped.values()))}")

    z = encode_faces(model, torch.from_numpy(pictures[np.isin(rows, sample)]), batch_size=batch_size)
    steps = {name: dirs.vector(name, units=units).to(z) * alpha for name in names}
    steps[CONTROL] = _control(steps, z.shape[1], seed).to(z)
    effects = []
    with progress_bar("audit", (2 * len(steps) + 1) * len(z), enabled=progress) as advance:
        recon = _decode(model, z, batch_size, advance)
        p0 = judges.probabilities(recon)
        for name, step in steps.items():
            plus, minus = _decode(model, z + step, batch_size, advance), _decode(model, z - step, batch_size, advance)
            drift = (_drift(plus, recon) + _drift(minus, recon)) / 2
            p_plus, p_minus = judges.probabilities(plus), judges.probabilities(minus)
            effects.append(direction_effect(name, judges.names, p0, p_plus, p_minus, drift=drift))
    meta = {
        "vectors": str(vectors),
        "model": str(model_path),
        "labels": str(labels_path),
        "images": str(images),
        "method": dirs.method,
        "units": units,
        "alpha": float(alpha),
        "seed": seed,
        "faces": len(z),
        "face_ids": [str(match.labels.index[i]) for i in sample],
        "split": split_note,
        "control": f"{CONTROL}: a seeded random direction with the median length of the audited ones",
    }
    return AuditResult(effects=effects, judges=judges, meta=meta, paths=write_audit(paths, effects, judges, meta))


def _chosen(dirs: DirectionSet, attrs: Sequence[str] | None, units: str) -> list[str]:
    """The directions to audit (all, or `attrs` in that order), each checked to exist in `units`."""
    names = list(dict.fromkeys(attrs)) if attrs else dirs.names
    for name in names:
        dirs.vector(name, units=units)  # unknown names and missing spreads fail here, before any work
    return names


def _label_sources(
    dirs: DirectionSet, labels: Path | None, images: Path | None, default_folder: Any
) -> tuple[Path, Path]:
    """The label file and image folder: as given, else those the direction file was fitted on."""
    recorded_labels, recorded_images = dirs.extra.get("labels"), dirs.extra.get("images")
    if labels is None:
        if not recorded_labels or not Path(recorded_labels).is_file():
            where = f" ({recorded_labels} is gone)" if recorded_labels else ""
            raise ConfigError(f"the audit needs labeled faces; give --labels FILE{where}")
        labels = Path(recorded_labels)
    same_labels = recorded_labels and Path(labels).resolve() == Path(recorded_labels).resolve()
    if images is None and same_labels and recorded_images and Path(recorded_images).is_dir():
        images = Path(recorded_images)
    labels = Path(labels)
    if not labels.is_file():
        raise DataError(f"label file {labels} " + ("is a folder" if labels.is_dir() else "does not exist"))
    images = Path(images) if images is not None else default_folder(labels)
    if not images.is_dir():
        raise DataError(f"image folder {images} does not exist; give --images DIR")
    return labels, images


def _held_out(dirs: DirectionSet, n: int, labels: Path, images: Path, seed: int) -> tuple[np.ndarray, str]:
    """(n,) bool over the matched labeled faces: the faces no direction was fitted on, and a note saying so."""
    extra = dirs.extra
    used, count = extra.get("images_used"), extra.get("held_out_rows")
    if _same_sources(extra, labels, images, n) and isinstance(count, int) and isinstance(used, int) and 0 < used <= n:
        fitted = held_out_rows(
            used, float(extra.get("held_out_fraction", DEFAULT_HELD_OUT)), seed=int(extra.get("seed", 0))
        )
        if int(fitted.sum()) == count:
            held = np.concatenate([fitted, np.ones(n - used, dtype=bool)])
            return (
                held,
                f"the {int(held.sum())} faces the direction file held out of its fit (judges fitted on the others)",
            )
    held = held_out_rows(n, DEFAULT_HELD_OUT, seed=seed)
    return held, (
        f"a seeded {DEFAULT_HELD_OUT:.0%} of the labeled faces, held out from the judges; the direction file does "
        "not say which of these faces it was fitted on"
    )


def _same_sources(extra: dict[str, Any], labels: Path, images: Path, n: int) -> bool:
    """Whether the direction file was fitted on these labels and images: the same paths, or, where its
    recorded paths (relative to where it was made) lead nowhere from here, the same names and face count."""
    recorded = [Path(str(extra.get(key) or "")) for key in ("labels", "images")]
    if not all(str(r) not in ("", ".") for r in recorded):
        return False
    if all(r.exists() for r in recorded):
        return all(r.resolve() == p.resolve() for r, p in zip(recorded, (labels, images), strict=True))
    names_match = all(r.name == p.resolve().name for r, p in zip(recorded, (labels, images), strict=True))
    return names_match and extra.get("images_used") == n


def _at_most(rows: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return rows if len(rows) <= k else np.sort(rng.choice(rows, size=k, replace=False))


def _model_view(model: Any, images: np.ndarray, rows: np.ndarray, batch_size: int) -> np.ndarray:
    """uint8 (len(rows), 3, S, S): the cached faces `rows` as the model sees them (reduced to its n_bits)."""
    chunks = [rows[i : i + 1024] for i in range(0, len(rows), 1024)]
    return np.concatenate([model_view(model, torch.from_numpy(np.asarray(images[c]))).numpy() for c in chunks])


def _control(steps: dict[str, torch.Tensor], dim: int, seed: int) -> torch.Tensor:
    """A seeded random direction (D,) as long as the median audited step."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(dim, generator=g, dtype=torch.float64)
    length = float(np.median([float(s.double().norm()) for s in steps.values()]))
    return (v / v.norm() * length).float()


def _decode(model: Any, z: torch.Tensor, batch_size: int, advance: Any) -> np.ndarray:
    out = []
    for batch in decode_batches(model, z, batch_size=batch_size):
        out.append(batch.numpy())
        advance(len(batch))
    return np.concatenate(out)


def _drift(edited: np.ndarray, recon: np.ndarray) -> float:
    """Mean absolute pixel change, in 0–255 levels."""
    return float(np.abs(edited.astype(np.float32) - recon.astype(np.float32)).mean())
