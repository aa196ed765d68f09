"""Default locations, all overridable by environment variables so tests never touch real folders.

LATENTLAB_MODELS (default ./models), LATENTLAB_ATTRIBUTES (./attributes), LATENTLAB_DATA (./data).
"""

from __future__ import annotations

import os
from pathlib import Path

from latentlab.errors import CheckpointError

MODEL_FILE = "model.safetensors"  # a run folder's weights


def models_dir() -> Path:
    """Where run folders are written by default; a NAME.toml here replaces the shipped preset NAME."""
    return Path(os.environ.get("LATENTLAB_MODELS", "models"))


def attributes_dir() -> Path:
    """Where direction files are written by default."""
    return Path(os.environ.get("LATENTLAB_ATTRIBUTES", "attributes"))


def data_dir() -> Path:
    """Where generated data (the toy faces) is written by default."""
    return Path(os.environ.get("LATENTLAB_DATA", "data"))


def last_trained_model() -> Path:
    """The run folder under models_dir() whose checkpoint was written most recently."""
    root = models_dir()
    runs = [p.parent for p in root.glob(f"*/{MODEL_FILE}")] if root.is_dir() else []
    if not runs:
        raise CheckpointError(f"no trained model found under {root}/; run `latentlab train` first or pass --model")
    return max(runs, key=lambda run: (run / MODEL_FILE).stat().st_mtime_ns)


def model_or_last(model: str | os.PathLike[str] | None) -> Path:
    """The model given (a run folder or a checkpoint), else the last trained one (see `last_trained_model`)."""
    return Path(model) if model is not None else last_trained_model()


def run_name(model: str | os.PathLike[str]) -> str:
    """A model's name: its run folder's, whether given the folder or the checkpoint file inside it."""
    path = Path(model)
    return path.parent.name if path.suffix == ".safetensors" else path.name


def default_vectors_path(model: Path) -> Path:
    """The direction file that belongs to a model: attributes/<run name>.safetensors."""
    return attributes_dir() / f"{run_name(model)}.safetensors"
