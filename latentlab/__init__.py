"""latentlab: the Glow normalizing flow for latent-space work on faces.

The public names are imported lazily so that `latentlab --help` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Glow": "latentlab.flow.glow",
    "GlowConfig": "latentlab.config",
    "load_model": "latentlab.checkpoint",
    "save_model": "latentlab.checkpoint",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'latentlab' has no attribute {name!r}")
