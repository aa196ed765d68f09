"""Configuration dataclasses: the frozen model config saved in every checkpoint, and its validation."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from typing import Any

from latentlab.errors import ConfigError

COUPLINGS = ("affine", "additive")
PERMUTATIONS = ("lu", "conv", "reverse")


@dataclass(frozen=True)
class GlowConfig:
    """The architecture of a Glow model; a model is always rebuilt from this, never from flags.

    image_size: square input side in pixels (divisible by 2**levels).
    levels: L, the number of multi-scale levels (each squeezes, and all but the last split).
    steps: K, flow steps per level (ActNorm, permutation, coupling).
    width: hidden channels of each coupling network.
    coupling: "affine" (scale and shift) or "additive" (shift only, volume preserving).
    permutation: "lu" (invertible 1x1 conv, LU-parametrised), "conv" (plain 1x1 conv) or "reverse".
    n_bits: bits kept per colour channel (the Glow paper uses 5 for CelebA-HQ).
    learn_top: learn the mean and log-std of the top-level prior.
    """

    image_size: int = 32
    levels: int = 3
    steps: int = 8
    width: int = 128
    coupling: str = "affine"
    permutation: str = "lu"
    n_bits: int = 5
    learn_top: bool = True

    def __post_init__(self) -> None:
        for name in ("image_size", "levels", "steps", "width", "n_bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
            if value < 1:
                raise ConfigError(f"{name} must be positive, got {value}")
        if self.n_bits > 8:
            raise ConfigError(f"n_bits must be between 1 and 8, got {self.n_bits}")
        if self.image_size % (2**self.levels) != 0:
            raise ConfigError(
                f"image_size {self.image_size} is not divisible by 2**levels = {2**self.levels}; "
                f"use fewer levels or an image size that is a multiple of {2**self.levels}"
            )
        if self.coupling not in COUPLINGS:
            raise ConfigError(f"unknown coupling {self.coupling!r}; choose one of {', '.join(COUPLINGS)}")
        if self.permutation not in PERMUTATIONS:
            raise ConfigError(f"unknown permutation {self.permutation!r}; choose one of {', '.join(PERMUTATIONS)}")
        if not isinstance(self.learn_top, bool):
            raise ConfigError(f"learn_top must be true or false, got {self.learn_top!r}")

    @property
    def latent_dim(self) -> int:
        """D = 3·H·W, the length of the flattened latent vector."""
        return 3 * self.image_size * self.image_size

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GlowConfig:
        """Build from a dict, refusing unknown keys so a typo never goes unnoticed."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
        return cls(**data)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), also used for model fingerprints."""
        return json.dumps(self.to_dict(), sort_keys=True)
