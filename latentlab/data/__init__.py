"""Data: image loading and cropping, CelebA label files, the uint8 image cache, the synthetic toy faces,
picture primitives (grids, still images, text).

Names are imported lazily so that importing an image helper does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "IMAGE_EXTENSIONS": "latentlab.data.images",
    "list_images": "latentlab.data.images",
    "load_image": "latentlab.data.images",
    "CELEBA_ATTRIBUTES": "latentlab.data.labels",
    "LabelMatch": "latentlab.data.labels",
    "load_labels": "latentlab.data.labels",
    "match_labels": "latentlab.data.labels",
    "check_attributes": "latentlab.data.labels",
    "suggest_attribute": "latentlab.data.labels",
    "ImageCache": "latentlab.data.cache",
    "prepare_cache": "latentlab.data.cache",
    "open_cache": "latentlab.data.cache",
    "cache_root": "latentlab.data.cache",
    "TOY_ATTRIBUTES": "latentlab.data.toy_faces",
    "make_toy_faces": "latentlab.data.toy_faces",
    "render_toy_face": "latentlab.data.toy_faces",
    "sample_toy_attributes": "latentlab.data.toy_faces",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'latentlab.data' has no attribute {name!r}")
