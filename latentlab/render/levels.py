"""The levels of the multi-scale latent, and masks that restrict an edit or a path to some of them.

Glow squeezes the image to half its side before each level and, after every level but the last, splits
off half the channels as that level's latent. latentlab's latent vector concatenates them in flow order:
level 1 (the finest grid, half the image's side), level 2 (a quarter), ..., and last the top level (the
coarsest grid), which keeps every channel left. For a 32-px model with 3 levels: level 1 is 6x16x16 = 1536
values, level 2 12x8x8 = 768, level 3 (top) 48x4x4 = 768. Coarse levels decide the layout of the face (pose,
shape, hair, background), the finest one its texture and fine detail, given the others.

Levels are numbered from 1 and can be named by their grid ("16x16") or "top". Pure functions, no model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from latentlab.errors import ConfigError


@dataclass(frozen=True)
class Level:
    """One level's part of the latent vector: z[start:stop], shaped (channels, side, side)."""

    number: int  # from 1, finest first
    shape: tuple[int, int, int]
    start: int
    top: bool

    @property
    def name(self) -> str:
        return f"{self.shape[1]}x{self.shape[2]}"

    @property
    def dims(self) -> int:
        c, h, w = self.shape
        return c * h * w

    @property
    def stop(self) -> int:
        return self.start + self.dims


def latent_levels(shapes: Sequence[tuple[int, int, int]]) -> list[Level]:
    """The levels of a latent laid out as `Glow.latent_shapes` says (each level's (C, H, W), finest first)."""
    levels, start = [], 0
    for i, shape in enumerate(shapes):
        levels.append(Level(i + 1, tuple(shape), start, i == len(shapes) - 1))
        start += levels[-1].dims
    return levels


def parse_levels(spec: str | Sequence[int | str], levels: Sequence[Level]) -> tuple[int, ...]:
    """Level numbers (sorted, from 1) from "2,3", "8x8,top" or a sequence of numbers and names.

    Raises ConfigError naming the bad entry and the valid ones.
    """
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    by_name = {level.name: level.number for level in levels}
    by_name["top"] = levels[-1].number
    valid = ", ".join(f"{lv.number} ({lv.name}{', top' if lv.top else ''})" for lv in levels)
    chosen: set[int] = set()
    for item in items:
        if item.isdigit() and 1 <= int(item) <= len(levels):
            chosen.add(int(item))
        elif item.lower() in by_name:
            chosen.add(by_name[item.lower()])
        else:
            raise ConfigError(f"unknown level {item!r}; this model's levels are {valid}")
    if not chosen:
        raise ConfigError(f"no level given; this model's levels are {valid}")
    return tuple(sorted(chosen))


def level_mask(levels: Sequence[Level], chosen: Sequence[int]) -> torch.Tensor:
    """Bool (D,): True on the values of the chosen levels (numbers from 1)."""
    mask = torch.zeros(levels[-1].stop, dtype=torch.bool)
    for level in levels:
        if level.number in chosen:
            mask[level.start : level.stop] = True
    return mask


def keep_outside(z: torch.Tensor, moved: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """`moved` on the mask's values, `z` elsewhere (bit for bit); z broadcasts against moved (..., D)."""
    if mask is None:
        return moved
    return torch.where(mask.to(moved.device), moved, z)


def describe_levels(levels: Sequence[Level], chosen: Sequence[int] | None) -> str:
    """'levels 2 (8x8), 3 (4x4)' for a restricted edit, '' for all levels."""
    if not chosen or len(chosen) == len(levels):
        return ""
    parts = [f"{lv.number} ({lv.name})" for lv in levels if lv.number in chosen]
    return ("level " if len(parts) == 1 else "levels ") + ", ".join(parts)


def describe_latent_levels(shapes: Sequence[tuple[int, int, int]]) -> str:
    """One line per level, finest first: '1 16x16: 6x16x16 = 1,536', ..., '3 4x4 (top): 48x4x4 = 768'."""
    return "\n".join(
        f"{lv.number} {lv.name}{' (top)' if lv.top else ''}: {'x'.join(map(str, lv.shape))} = {lv.dims:,}"
        for lv in latent_levels(shapes)
    )


def levels_mask(
    shapes: Sequence[tuple[int, int, int]], spec: str | Sequence[int | str] | None
) -> tuple[torch.Tensor | None, str]:
    """(mask (D,) or None for every level, its description) for a --levels value on a latent of these shapes."""
    if spec is None:
        return None, ""
    levels = latent_levels(shapes)
    chosen = parse_levels(spec, levels)
    if len(chosen) == len(levels):
        return None, ""
    return level_mask(levels, chosen), describe_levels(levels, chosen)
