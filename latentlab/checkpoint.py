"""Checkpoints: safetensors weights with JSON metadata in the header, written atomically.

A run folder holds `model.safetensors`; a checkpoint file can also be passed directly. Loading
parses only the safetensors header and raw tensor bytes, so it never executes code from the file.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from latentlab.config import GlowConfig
from latentlab.errors import CheckpointError, LatentlabError
from latentlab.fileio import atomic_write_bytes
from latentlab.flow.glow import Glow
from latentlab.paths import MODEL_FILE

FORMAT = "latentlab-model"
FORMAT_VERSION = 1
_META_KEY = "latentlab"


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write tensors and a JSON-able dict to one safetensors file, atomically."""
    path = Path(path)
    plain = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    data = st_save(plain, metadata={_META_KEY: json.dumps(meta, sort_keys=True)})
    atomic_write_bytes(path, data)
    return path


def load_tensors(path: str | Path, *, what: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file written by `save_tensors`; anything else is a one-line CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{what} {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{what} {path} is a folder; expected a .safetensors file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) == 0:
        raise CheckpointError(f"{what} {path} is empty (0 bytes); it was not written completely")
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
    except (SafetensorError, ValueError, UnicodeDecodeError, OverflowError) as exc:
        if _looks_pickled(data):
            raise CheckpointError(
                f"{path} looks like a pickle/torch.save file; latentlab loads weights only from safetensors, "
                "which cannot execute code"
            ) from None
        raise CheckpointError(f"{what} {path} is corrupt or truncated ({_first_line(exc)})") from None
    raw_meta = (header.get("__metadata__") or {}).get(_META_KEY)
    if raw_meta is None:
        raise CheckpointError(f"{path} is a safetensors file but not a latentlab {what} (no latentlab metadata)")
    try:
        meta = json.loads(raw_meta)
    except ValueError:
        raise CheckpointError(f"{what} {path} has unreadable metadata") from None
    return tensors, meta


def _looks_pickled(data: bytes) -> bool:
    """A pickle (protocol 2+) or a torch.save zip archive, recognised by magic bytes only."""
    return (data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) or data[:4] == b"PK\x03\x04"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def resolve_model_path(path: str | Path) -> Path:
    """A run folder or a checkpoint file -> the checkpoint file."""
    path = Path(path)
    if path.is_dir():
        return path / MODEL_FILE
    return path


def model_fingerprint(model: Glow) -> str:
    """A short hash of the config and every weight: direction files record it to refuse other models."""
    h = hashlib.sha256(model.config.to_json().encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def save_model(
    model: Glow,
    path: str | Path,
    *,
    step: int = 0,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save weights and metadata (config, version, step, initialised, fingerprint) atomically.

    `path` is a run folder (the file goes to `path/model.safetensors`) or a `.safetensors` file.
    Returns the file written.
    """
    from latentlab import __version__

    path = Path(path)
    target = path if path.suffix == ".safetensors" else path / MODEL_FILE
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "latentlab_version": __version__,
        "config": model.config.to_dict(),
        "step": int(step),
        "initialized": model.is_initialized,
        "fingerprint": model_fingerprint(model),
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "metrics": metrics or {},
        **(extra or {}),
    }
    return save_tensors(target, model.state_dict(), meta)


def read_model_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a model checkpoint (validated), without building the model."""
    file = resolve_model_path(path)
    _, meta = _load_model_file(file)
    return meta


def _load_model_file(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not file.exists():
        raise CheckpointError(
            f"no model checkpoint at {file}; train one with `latentlab train` or pass --model RUN_FOLDER"
        )
    tensors, meta = load_tensors(file, what="model checkpoint")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{file} is a latentlab {meta.get('format', 'unknown')} file, not a model checkpoint")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{file} was written by a newer latentlab (format {meta['format_version']}); upgrade")
    return tensors, meta


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> Glow:
    """Rebuild a Glow from a run folder or checkpoint file: config from the metadata, then the weights.

    Returns the model in eval mode. Raises CheckpointError for a missing, corrupt, unsafe,
    incompatible or non-finite checkpoint.
    """
    file = resolve_model_path(path)
    tensors, meta = _load_model_file(file)
    try:
        config = GlowConfig.from_dict(meta["config"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{file} has no usable model config ({exc})") from None
    except LatentlabError as exc:
        raise CheckpointError(f"{file} has an invalid model config: {exc}") from None
    model = Glow(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise CheckpointError(
            f"{file} does not match its config ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(wrong)} mis-shaped tensors, e.g. {first}); it is incompatible with this latentlab version"
        )
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{file} holds non-finite weights ({name}); use an earlier checkpoint")
    model.load_state_dict(tensors)
    model.eval()
    return model.to(device)


def checkpoint_summary(meta: dict[str, Any]) -> dict[str, Any]:
    """The fields `latentlab info` shows, with missing ones as None."""
    metrics = meta.get("metrics") or {}
    bpd = metrics.get("val_bpd", metrics.get("train_bpd"))
    return {
        "config": meta.get("config", {}),
        "step": meta.get("step"),
        "initialized": meta.get("initialized"),
        "fingerprint": meta.get("fingerprint"),
        "latentlab_version": meta.get("latentlab_version"),
        "saved_at": meta.get("saved_at"),
        "bits_per_dim": None if bpd is None or (isinstance(bpd, float) and math.isnan(bpd)) else bpd,
    }
