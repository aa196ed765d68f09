"""The direction file: one float32 vector per attribute in safetensors, described by JSON metadata.

Layout of `attributes/<model>.safetensors`:
- one tensor (D,) float32 per attribute, named by the attribute;
- `__pos_counts__`, `__neg_counts__` (A,) int64 and `__norms__` (A,) float64 in attribute order,
  plus `__latent_std__` (A,) float64 when the spread of projections is known;
- header metadata key "latentlab": JSON with format, format_version, method, names (the order),
  dim, pos_counts, neg_counts, norms, latent_std, fingerprint, latentlab_version, extra.

Loading parses only safetensors (never pickle), so opening a file cannot run code.
"""

from __future__ import annotations

import difflib
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
    """Directions loaded from a file: `vectors[name]` is (D,) float32, in the file's attribute order."""

    vectors: dict[str, torch.Tensor]
    method: str
    fingerprint: str
    pos_counts: dict[str, int]
    neg_counts: dict[str, int]
    latent_std: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    path: Path | None = None

    @property
    def names(self) -> list[str]:
        return list(self.vectors)

    @property
    def dim(self) -> int:
        return next(iter(self.vectors.values())).shape[0]

    @property
    def counts(self) -> dict[str, tuple[int, int]]:
        """{name: (positives, negatives)}."""
        return {n: (self.pos_counts[n], self.neg_counts[n]) for n in self.vectors}

    @property
    def norms(self) -> dict[str, float]:
        return {n: float(v.double().norm()) for n, v in self.vectors.items()}

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
        "sigma": the unit direction times the standard deviation of the data's projections on it.
        """
        v = get_vector(self, name)
        if units == "raw":
            return v
        if units != "sigma":
            raise ConfigError(f"unknown units {units!r}; choose one of {', '.join(UNITS)}")
        if self.latent_std is None or not math.isfinite(self.latent_std.get(name, math.nan)):
            where = self.path if self.path is not None else "this direction file"
            raise ConfigError(f"{where} has no spread for {name}; use --units raw or recompute the vectors")
        return v / v.norm() * self.latent_std[name]

    def matrix(self, names: Sequence[str] | None = None) -> torch.Tensor:
        """(A, D) float32 stack of the vectors for `names` (default: all, in file order)."""
        return torch.stack([get_vector(self, n) for n in (names if names is not None else self.names)])


def get_vector(dirs: DirectionSet, name: str) -> torch.Tensor:
    """dirs.vectors[name], or AttributeNameError with a case-insensitive "did you mean"."""
    if name in dirs.vectors:
        return dirs.vectors[name]
    lowered = {n.lower(): n for n in dirs.vectors}
    key = str(name).lower()
    close = difflib.get_close_matches(key, list(lowered), n=3, cutoff=0.6)
    close += [low for low in lowered if key and key in low and low not in close]
    where = f" in {dirs.path}" if dirs.path is not None else ""
    if close:
        hint = "did you mean " + " or ".join(lowered[c] for c in close[:3]) + "?"
    else:
        hint = "known: " + ", ".join(dirs.vectors)
    raise AttributeNameError(f"unknown attribute {name!r}{where}; {hint}")


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
    """Write the direction file atomically (vectors stored as float32) and return its path."""
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
        fingerprint=fingerprint,
        pos_counts=pos,
        neg_counts=neg,
        latent_std=std,
        extra=dict(meta.get("extra") or {}),
        version=str(meta.get("latentlab_version", "")),
        path=path,
    )
