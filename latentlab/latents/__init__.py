"""Latents: images encoded batch by batch into a resumable store on disk, and the store read back."""

from latentlab.latents.encode import default_image_folder, encode_images, encode_to_store
from latentlab.latents.store import (
    DTYPES,
    LATENTS_FILE,
    LatentStore,
    latent_chunks,
    open_store,
    store_progress,
)

__all__ = [
    "DTYPES",
    "LATENTS_FILE",
    "LatentStore",
    "default_image_folder",
    "encode_images",
    "encode_to_store",
    "latent_chunks",
    "open_store",
    "store_progress",
]
