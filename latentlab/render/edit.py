"""Attribute edits in latent space, and how they are named.

The meaning of alpha (the Glow paper's convention, Kingma & Dhariwal 2018):
- units "raw": an edit is decode(z + α·v) with v the stored direction; for mean-difference vectors
  v = mean(z | attribute) − mean(z | not attribute), so α = 1 moves a face by the full difference
  between the two groups' means, and useful edits lie in [−1, 1];
- units "sigma": v is rescaled to a unit vector times the standard deviation of the encoded faces'
  projections on it, so α = 1 moves a face by one standard deviation of the data along that
  direction, whatever the attribute: alphas are comparable across attributes.
Several edits compose by addition, decode(z + Σ αᵢ·vᵢ), and α = 0 gives the reconstruction exactly.

Pure functions on latents (B, D); the pictures are made in `pictures`, the jobs in `jobs`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from latentlab.directions.file import DirectionSet
from latentlab.directions.maths import apply_edits, check_alpha
from latentlab.errors import ConfigError
from latentlab.render.levels import keep_outside


def pair_edits(attrs: Sequence[str], alphas: Sequence[float]) -> list[tuple[str, float]]:
    """Pair attributes with alphas by position; one alpha given for several attributes applies to all.

    Raises ConfigError for no attributes, mismatched counts, or a non-finite alpha.
    """
    if not attrs:
        raise ConfigError("no attribute given; name one with --attr, e.g. --attr Smiling")
    if len(alphas) == 1:
        alphas = list(alphas) * len(attrs)
    if len(alphas) != len(attrs):
        raise ConfigError(
            f"{len(attrs)} --attr but {len(alphas)} --alpha; give one --alpha per --attr (paired in order), "
            "or a single --alpha for all"
        )
    return [(str(a), check_alpha(alpha)) for a, alpha in zip(attrs, alphas, strict=True)]


def edit_latents(
    z: torch.Tensor,
    dirs: DirectionSet,
    attrs: Sequence[str],
    alphas: Sequence[float],
    *,
    units: str = "raw",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """z (B, D) + Σ alphas[i]·v(attrs[i]) with v in `units` ("raw" or "sigma", see the module doc).

    `mask` (D,) bool restricts the edit to those values (`levels.level_mask`): the others stay z's, bit for bit.
    """
    vectors = [dirs.vector(name, units=units) for name in attrs]
    return keep_outside(z, apply_edits(z, vectors, alphas), mask)


def sweep_latents(
    z: torch.Tensor,
    dirs: DirectionSet,
    attrs: Sequence[str],
    alphas: Sequence[float],
    *,
    units: str = "raw",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, A, S, D): face b moved along attribute a by alphas[s] (z (B, D), A attributes, S alphas).

    `mask` (D,) bool restricts every move to those values, as in `edit_latents`.
    """
    alpha = torch.tensor([check_alpha(a) for a in alphas], dtype=z.dtype, device=z.device)
    vectors = torch.stack([dirs.vector(name, units=units) for name in attrs]).to(dtype=z.dtype, device=z.device)
    if vectors.shape[1] != z.shape[1]:
        raise ConfigError(f"directions have {vectors.shape[1]} values but the latents {z.shape[1]}")
    base = z[:, None, None, :]
    return keep_outside(base, base + alpha[None, None, :, None] * vectors[None, :, None, :], mask)


def format_alpha(alpha: float) -> str:
    """+0.8, −1 written as -1, 0: short, signed, at most 3 decimals."""
    if alpha == 0:
        return "0"
    return f"{alpha:+.3f}".rstrip("0").rstrip(".")


def describe_edit(edits: Sequence[tuple[str, float]], units: str = "raw") -> str:
    """'Blond_Hair +0.8, Smiling -0.5' (with 'sd' after each alpha in sigma units)."""
    suffix = " sd" if units == "sigma" else ""
    return ", ".join(f"{name} {format_alpha(a)}{suffix}" for name, a in edits)
