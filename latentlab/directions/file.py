"""A set of attribute directions, and the file that holds it: safetensors vectors plus JSON metadata.

Layout of `attributes/<model>.safetensors`:
- one tensor (D,) float32 per attribute, named by the attribute;
- `__pos_counts__`, `__neg_counts__` (A,) int64 and `__norms__` (A,) float64 in attribute order,
  plus `__latent_std__` (A,) float64 when the spread of projections is known;
- header metadata key "latentlab": JSON with format, format_version, method, names (the order),
  dim, pos_counts, neg_counts, norms, latent_std, fingerprint, latentlab_version, extra.

Loading parses only safetensors (never pickle), so opening a file cannot run code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from latentlab.errors import AttributeNameError, CheckpointError, ConfigError, OutputError

FORMAT = "latentlab-directions"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"
UNITS = ("raw", "sigma")
_RESERVED = ("__pos_counts__", "__neg_counts__", "__norms__", "__latent_std__")


@dataclass(frozen=True)
class DirectionSet:
    """Attribute directions and what is known of each: fitting makes one, the file stores it, edits read it.

    `vectors[name]` is (D,) in attribute order: float64 as fitted, float32 as read from a file.
    A fitted set also counts the attributes it skipped (they have no vector; `skipped` says why).
    `extra` describes the run (probe accuracies, the skipped attributes, the images, ...) and is
    stored as it is.
    """

    vectors: dict[str, torch.Tensor]
    method: str
    pos_counts: dict[str, int]
    neg_counts: dict[str, int]
    latent_std: dict[str, float] | None = None  # spread of the data's projections (for --units sigma)
    fingerprint: str = ""  # of the model whose latents gave the vectors
    extra: dict[str, Any] = field(default_factory=dict)
    version: str = ""  # of latentlab, when read from a file
    path: Path | None = None  # when read from a file

    @property
    def names(self) -> list[str]:
        """The attributes that have a direction, in order."""
        return list(self.vectors)

    @property
    def dim(self) -> int:
        return next(iter(self.vectors.values())).shape[0]

    @property
    def norms(self) -> dict[str, float]:
        return {n: float(v.double().norm()) for n, v in self.vectors.items()}

    @property
    def skipped(self) -> dict[str, str]:
        """{name: reason} for the attributes that got no direction."""
        return dict(self.extra.get("skipped") or {})

    def check_model(self, fingerprint: str, model_name: str) -> None:
        """Raise CheckpointError unless these vectors were computed with the model of `fingerprint`."""
        if fingerprint != self.fingerprint:
            where = self.path if self.path is not None else "this direction file"
            raise CheckpointError(
                f"vectors in {where} were computed with another model "
                f"(fingerprint {self.fingerprint[:12]}≠{fingerprint[:12]}); "
                f"recompute them with `latentlab attribute-vectors --model {model_name}`"
            )

    def vector(self, name: str, *, units: str = "raw") -> torch.Tensor:
        """The direction for `name`, scaled so that alpha = 1 means one unit of `units`.

        "raw": the stored vector (alpha = 1 moves the negatives' mean to the positives').
        "sigma": the unit direction times the standard deviation of the data's projections on it,
        so that alphas mean the same spread whatever the attribute.
        An unknown name is an AttributeNameError that suggests the close ones.
        """
        if name not in self.vectors:
            # Imported here: the label module brings pandas, which edits do not otherwise need.
            from latentlab.data.labels import suggest_attribute

            raise AttributeNameError(suggest_attribute(name, self.names, where=self.path))
        v = self.vectors[name]
        if units == "raw":
            return v
        if units != "sigma":
            raise ConfigError(f"unknown units {units!r}; choose one of {', '.join(UNITS)}")
        if self.latent_std is None or not math.isfinite(self.latent_std.get(name, math.nan)):
            where = self.path if self.path is not None else "this direction file"
            raise ConfigError(f"{where} has no spread for {name}; use --units raw or recompute the vectors")
        return v / v.norm() * self.latent_std[name]

    def save(self, path: str | Path) -> Path:
        """Write this set to the direction file `path` (see `save_directions`) and return the path."""
        return save_directions(
            path,
            vectors=self.vectors,
            pos_counts=self.pos_counts,
            neg_counts=self.neg_counts,
            method=self.method,
            model_fingerprint=self.fingerprint,
            extra=self.extra,
            latent_std=self.latent_std,
        )


def _aligned(values: Mapping[str, Any] | Sequence[Any], names: list[str], what: str) -> list[Any]:
    if isinstance(values, Mapping):
        missing = [n for n in names if n not in values]
        if missing:
            raise ValueError(f"{what} has no entry for {', '.join(missing)}")
        return [values[n] for n in names]
    values = list(values)
    if len(values) != len(names):
        raise ValueError(f"{what} has {len(values)} entries for {len(names)} attributes")
    return values


def save_directions(
    path: str | Path,
    *,
    vectors: Mapping[str, torch.Tensor],
    pos_counts: Mapping[str, int] | Sequence[int],
    neg_counts: Mapping[str, int] | Sequence[int],
    method: str,
    model_fingerprint: str,
    extra: Mapping[str, Any] | None = None,
    latent_std: Mapping[str, float] | Sequence[float] | None = None,
) -> Path:
    """Write the direction file atomically (vectors stored as float32) and return its path.

    Counts and spreads are aligned with `vectors` (a sequence) or keyed by name (entries for
    attributes without a vector are left out).
    """
    from latentlab import __version__

    path = Path(path)
    if path.suffix != SUFFIX:
        raise OutputError(f"direction file {path} must end in {SUFFIX}")
    names = list(vectors)
    if not names:
        raise ValueError("no directions to save")
    tensors: dict[str, torch.Tensor] = {}
    for name in names:
        if not isinstance(name, str) or not name or name in _RESERVED:
            raise ValueError(f"invalid attribute name {name!r}")
        v = vectors[name].detach().cpu().to(torch.float32).contiguous().clone()
        if v.ndim != 1 or v.shape != tensors.get(names[0], v).shape:
            raise ValueError(f"direction {name} has shape {tuple(v.shape)}; every direction must be (D,) alike")
        if not torch.isfinite(v).all():
            raise ValueError(f"direction {name} has NaN or inf values; skip that attribute instead")
        tensors[name] = v
    pos = [int(c) for c in _aligned(pos_counts, names, "pos_counts")]
    neg = [int(c) for c in _aligned(neg_counts, names, "neg_counts")]
    norms = [float(tensors[n].double().norm()) for n in names]
    std = None if latent_std is None else [float(s) for s in _aligned(latent_std, names, "latent_std")]
    tensors["__pos_counts__"] = torch.tensor(pos, dtype=torch.int64)
    tensors["__neg_counts__"] = torch.tensor(neg, dtype=torch.int64)
    tensors["__norms__"] = torch.tensor(norms, dtype=torch.float64)
    if std is not None:
        tensors["__latent_std__"] = torch.tensor(std, dtype=torch.float64)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": str(method),
        "names": names,
        "dim": int(tensors[names[0]].shape[0]),
        "pos_counts": pos,
        "neg_counts": neg,
        "norms": norms,
        "latent_std": std,
        "fingerprint": str(model_fingerprint),
        "latentlab_version": __version__,
        "extra": dict(extra or {}),
    }
    from latentlab.checkpoint import save_tensors

    json.dumps(meta, allow_nan=False)  # NaN counts or norms are a bug upstream: refuse to write them
    return save_tensors(path, tensors, meta)


def load_directions(path: str | Path) -> DirectionSet:
    """Read a direction file written by `save_directions`; any problem is a CheckpointError naming it."""
    from latentlab.checkpoint import load_tensors

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"direction file {path} does not exist; compute it with `latentlab attribute-vectors`")
    tensors, meta = load_tensors(path, what="direction file")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a {SUFFIX} file but not a latentlab direction file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has direction format version {meta.get('format_version')!r}; "
            f"this latentlab reads version {FORMAT_VERSION}; recompute it"
        )
    try:
        names = [str(n) for n in meta["names"]]
        dim = int(meta["dim"])
        pos = dict(zip(names, (int(c) for c in meta["pos_counts"]), strict=True))
        neg = dict(zip(names, (int(c) for c in meta["neg_counts"]), strict=True))
        std = meta.get("latent_std")
        std = None if std is None else dict(zip(names, (float(s) for s in std), strict=True))
        method, fingerprint = str(meta["method"]), str(meta["fingerprint"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"direction file {path} has damaged metadata ({exc}); recompute it") from None
    vectors = {}
    for name in names:
        v = tensors.get(name)
        if v is None or v.shape != (dim,) or not v.is_floating_point() or not torch.isfinite(v).all():
            raise CheckpointError(f"direction file {path} has a missing or damaged vector for {name}; recompute it")
        vectors[name] = v
    if not vectors:
        raise CheckpointError(f"direction file {path} holds no directions; recompute it")
    return DirectionSet(
        vectors=vectors,
        method=method,
        pos_counts=pos,
        neg_counts=neg,
        latent_std=std,
        fingerprint=fingerprint,
        extra=dict(meta.get("extra") or {}),
        version=str(meta.get("latentlab_version", "")),
        path=path,
    )
