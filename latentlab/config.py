"""Configuration dataclasses: the frozen model config saved in every checkpoint, and its validation."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latentlab.errors import ConfigError
from latentlab.paths import models_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, published as tomli before it joined the standard library
    import tomli as tomllib

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

COUPLINGS = ("affine", "additive")
_SCALARS = {"int": int, "float": float, "bool": bool, "str": str}


def _check_types(config: Any) -> None:
    """Refuse values of the wrong type (from TOML or --set) with a ConfigError, before any range check."""
    for f in fields(config):
        if f.name == "model":
            continue
        value = getattr(config, f.name)
        names = [part.strip() for part in str(f.type).split("|")]
        if value is None and "None" in names:
            continue
        wanted = [_SCALARS[n] for n in names if n in _SCALARS]
        ok = any(
            isinstance(value, t)
            and not (isinstance(value, bool) and t is not bool)
            or (t is float and isinstance(value, int) and not isinstance(value, bool))
            for t in wanted
        )
        if not ok:
            raise ConfigError(f"{f.name} must be {' or '.join(names)}, got {value!r}")


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
    prior_width: hidden channels of each split prior's network (conv3x3 → conv1x1 → zero-initialised
    conv3x3, as a coupling network); 0 gives the Glow paper's single zero-initialised 3x3 convolution.
    position_bias: give every coupling network (and split prior network) a learned bias per position and
    hidden channel, so it knows where in the image it is (aligned faces keep eyes and mouth in place).
    dequantizer_steps: conditional couplings of a learned dequantiser q(u | image) (Flow++), trained with
    the flow; 0 fills each bin with uniform noise, as Glow does. dequantizer_width: its hidden channels.
    """

    image_size: int = 32
    levels: int = 3
    steps: int = 8
    width: int = 128
    coupling: str = "affine"
    permutation: str = "lu"
    n_bits: int = 5
    learn_top: bool = True
    prior_width: int = 0
    position_bias: bool = False
    dequantizer_steps: int = 0
    dequantizer_width: int = 32

    def __post_init__(self) -> None:
        for name in ("image_size", "levels", "steps", "width", "n_bits", "dequantizer_width"):
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
        for name, zero_means in (("prior_width", "Glow's linear prior"), ("dequantizer_steps", "uniform noise")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0 (0: {zero_means}), got {value!r}")
        for name in ("learn_top", "position_bias"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @property
    def latent_dim(self) -> int:
        """D = 3·H·W, the length of the flattened latent vector."""
        return 3 * self.image_size * self.image_size

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON; settings added after version 1 are left out at their defaults, so the
        JSON (and the fingerprint) of a model that does not use them is what it always was."""
        data = dataclasses.asdict(self)
        for name, default in _LATER_DEFAULTS.items():
            if data[name] == default:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GlowConfig:
        """Build from a dict, refusing unknown keys so a typo never goes unnoticed."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown model config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}"
            )
        return cls(**data)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), also used for model fingerprints."""
        return json.dumps(self.to_dict(), sort_keys=True)


# GlowConfig fields added after the first checkpoints were written, with the value those checkpoints imply
_LATER_DEFAULTS = {"prior_width": 0, "position_bias": False, "dequantizer_steps": 0, "dequantizer_width": 32}

DEVICES = ("auto", "cpu", "cuda", "mps")
# "auto": bf16 autocast where the device computes bf16 natively, float32 elsewhere (devices.has_fast_bf16)
PRECISIONS = ("fp32", "bf16", "auto")
MEMORY_SAVING = ("none", "checkpoint", "invertible")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; precedence is defaults < preset file < command-line flags.

    data: image folder (None: the embedded toy faces). out: run folder (None: models/<preset>).
    flip: mirror a random half of each batch left-right (faces are roughly symmetric; the mirrored
    copies reduce overfitting on small sets).
    crop_jitter: also train on crops whose window is moved by ±crop_jitter output pixels (a 3×3 grid of
    sub-pixel shifts, one image cache each); aligned faces vary that much anyway, so the shifted copies
    are near-free extra data for small sets. Validation and evaluation keep the standard crop.
    ema_decay: keep an exponential moving average of the weights (Polyak averaging, as openai/glow
    does) with this decay, 0 for none; the saved model, validation and sample grids use the average.
    The decay ramps up as min(ema_decay, (1 + step)/(10 + step)), so 0.999 binds only after step 8991.
    time_limit is in minutes; lr warms up linearly over warmup_steps, then stays constant or
    follows a cosine to lr·min_lr_ratio at max_steps (or, with only a time limit, at the time limit).
    """

    model: GlowConfig = GlowConfig()
    data: str | None = None
    out: str | None = None
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 200
    schedule: str = "constant"
    min_lr_ratio: float = 0.1
    max_steps: int | None = None
    epochs: int | None = None
    time_limit: float | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False
    grad_clip: float = 100.0
    ema_decay: float = 0.0
    flip: bool = True
    crop_jitter: float = 0.0
    memory_saving: str = "none"
    init_batch: int = 256
    log_every: int = 10
    checkpoint_every: int = 500
    sample_every: int = 500
    val_every: int = 250
    val_fraction: float = 0.05
    val_max: int = 1000
    max_bad_steps: int = 20
    toy_count: int = 5000
    workers: int = 2

    def __post_init__(self) -> None:
        _check_types(self)
        positive_ints = ("batch_size", "log_every", "checkpoint_every", "sample_every", "val_every", "init_batch")
        for name in positive_ints + ("max_bad_steps", "toy_count", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        for name in ("max_steps", "epochs"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 1):
            raise ConfigError(f"lr must be in (0, 1), got {self.lr!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise ConfigError(f"time_limit must be a positive number of minutes, got {self.time_limit!r}")
        if not 0 <= self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction must be in [0, 0.5), got {self.val_fraction!r}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if not 0 <= self.crop_jitter <= 2:
            raise ConfigError(f"crop_jitter must be between 0 and 2 output pixels, got {self.crop_jitter!r}")
        if not self.grad_clip > 0:
            raise ConfigError(f"grad_clip must be positive, got {self.grad_clip!r}")
        for name, allowed in (
            ("device", DEVICES),
            ("precision", PRECISIONS),
            ("memory_saving", MEMORY_SAVING),
            ("schedule", SCHEDULES),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(allowed)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (the model config nested under 'model', as `GlowConfig.to_dict` writes it)."""
        return {**dataclasses.asdict(self), "model": self.model.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict (as saved in a run), refusing unknown keys."""
        data = dict(data)
        model = GlowConfig.from_dict(data.pop("model", {}))
        known = {f.name for f in fields(cls)} - {"model"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
        return cls(model=model, **data)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed; model fields may be given as model={...} overrides."""
        model_changes = changes.pop("model", None) or {}
        model = dataclasses.replace(self.model, **model_changes) if model_changes else self.model
        return dataclasses.replace(self, model=model, **changes)


def parse_override(text: str) -> tuple[str, Any]:
    """'width=64' -> ('width', 64): a --set override, its value parsed as TOML (bare words as strings)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not KEY=VALUE (e.g. --set width=64)")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


def apply_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """Apply flat KEY=VALUE overrides, routing model keys to the model config; unknown keys are an error."""
    model_keys = {f.name for f in fields(GlowConfig)}
    train_keys = {f.name for f in fields(TrainConfig)} - {"model"}
    model_changes = {k: v for k, v in overrides.items() if k in model_keys}
    train_changes = {k: v for k, v in overrides.items() if k in train_keys}
    unknown = sorted(set(overrides) - model_keys - train_keys)
    if unknown:
        valid = ", ".join(sorted(model_keys | train_keys))
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; valid settings: {valid}")
    return config.replace(model=model_changes, **train_changes)


def preset_files() -> dict[str, Traversable]:
    """Every preset by name: the package data in latentlab/presets/ (found wherever latentlab is installed),
    replaced by name by the user's models_dir()/NAME.toml."""
    found: dict[str, Traversable] = {}
    for folder in (resources.files("latentlab") / "presets", models_dir()):
        for file in folder.iterdir() if folder.is_dir() else ():
            if file.name.endswith(".toml") and file.is_file():
                found[file.name.removesuffix(".toml")] = file
    return found


def available_presets() -> list[str]:
    """Names of the presets that can be found."""
    return sorted(preset_files())


def load_preset(name: str) -> TrainConfig:
    """A preset name (shipped, or models/NAME.toml) or a path to a TOML file -> TrainConfig."""
    path = Path(name) if name.endswith(".toml") else preset_files().get(name)
    if path is None or not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available presets: {', '.join(available_presets()) or 'none'}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"preset {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"model", "train"})
    if unknown:
        raise ConfigError(f"preset {path} has unknown section(s) {', '.join(unknown)}; use [model] and [train]")
    return TrainConfig.from_dict({**data.get("train", {}), "model": data.get("model", {})})
