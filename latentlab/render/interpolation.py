"""Latent paths: linear and spherical interpolation, easing, and the frame orders of seamless loops.

Pure torch functions. Latents are (D,) or batched (B, D). The interpolation weight `t` is a
float, or a 1-D tensor (T,) that is broadcast as a column (T, 1): with keys (D,) it yields a
path (T, D); with keys (B, D) it needs T == B and gives every row its own t.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from latentlab.errors import ConfigError

METHODS = ("slerp", "linear")
MAX_FRAMES_PER_SEGMENT = 10_000
_PARALLEL = 1e-6  # below this sin(angle), slerp is replaced by its limit, lerp


def _weight(t: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.float64, device=like.device)
    if t.ndim == 1:
        t = t[:, None]  # (T, 1): one weight per output row
    elif t.ndim > 1:
        raise ValueError(f"t must be a float or a 1-D tensor; got shape {tuple(t.shape)}")
    return t


def lerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """(1 - t) a + t b; t = 0 gives a and t = 1 gives b exactly."""
    w = _weight(t, a)
    return ((1 - w) * a.double() + w * b.double()).to(a.dtype)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of direction, linear interpolation of norm.

    The result's direction moves at constant angular speed along the great circle from a to b,
    and its norm goes linearly from |a| to |b|; so between two latents of norm ~sqrt(D) the path
    keeps norm ~sqrt(D) (lerp would cut through the low-norm interior, which under N(0, I) holds
    almost no probability mass: blurry, washed-out midpoints). Written as c_a(t) a + c_b(t) b
    with c_a(0) = 1, c_b(0) = 0 and c_a(1) = 0, c_b(1) = 1 exactly, so the endpoints are exact.
    Nearly parallel vectors (and zero vectors) fall back to lerp, slerp's limit. For exactly
    opposite vectors the great circle is undefined and the lerp fallback passes through zero.
    Coefficients are computed in float64; the result has a's dtype.
    """
    w = _weight(t, a)
    a64, b64 = a.double(), b.double()
    na = a64.norm(dim=-1, keepdim=True)
    nb = b64.norm(dim=-1, keepdim=True)
    cos = ((a64 * b64).sum(dim=-1, keepdim=True) / (na * nb)).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    sin = torch.sin(theta)
    degenerate = (sin < _PARALLEL) | (na == 0) | (nb == 0) | ~torch.isfinite(cos)
    safe_sin = torch.where(degenerate, torch.ones_like(sin), sin)
    norm_t = (1 - w) * na + w * nb
    scale_a = torch.where(na == 0, torch.ones_like(na), na)
    scale_b = torch.where(nb == 0, torch.ones_like(nb), nb)
    ca = torch.where(degenerate, 1 - w, torch.sin((1 - w) * theta) / safe_sin * norm_t / scale_a)
    cb = torch.where(degenerate, w, torch.sin(w * theta) / safe_sin * norm_t / scale_b)
    return (ca * a64 + cb * b64).to(a.dtype)


def ease(t: float | torch.Tensor) -> float | torch.Tensor:
    """Smoothstep 3t^2 - 2t^3 on [0, 1]: zero velocity at both ends, ease(0) = 0, ease(1) = 1."""
    return t * t * (3 - 2 * t)


_smoothstep = ease  # loop_schedule's `ease` flag shadows the function


def loop_schedule(n_keys: int, frames_per_segment: int, *, ease: bool = True, hold: int = 0) -> list[tuple[int, float]]:
    """Frames as (segment, t): the latent of a frame is interp(keys[s], keys[(s + 1) % K], t).

    Key 0 -> key 1 -> ... -> key K-1 -> key 0, and the last frame is one step before key 0, so
    playing it on repeat closes without a duplicated frame. Each key is shown for `hold` extra
    frames before its segment starts. The first frame is exactly (0, 0.0).
    Frames: K * (frames_per_segment + hold).
    """
    if n_keys < 2:
        raise ConfigError(f"a path needs at least 2 key latents, got {n_keys}")
    if frames_per_segment < 1:
        raise ConfigError(f"frames per segment must be at least 1, got {frames_per_segment}")
    if hold < 0:
        raise ConfigError(f"hold must be 0 or more frames, got {hold}")
    shape = _smoothstep if ease else (lambda x: x)
    frames: list[tuple[int, float]] = []
    for s in range(n_keys):
        frames += [(s, 0.0)] * hold
        frames += [(s, float(shape(i / frames_per_segment))) for i in range(frames_per_segment)]
    return frames


def hold_frames(frames: int, ease: bool) -> int:
    """Frames each face is held still at the start of its segment: a sixth of it when easing, else 0."""
    return frames // 6 if ease else 0


def loop_frames(n_keys: int, frames: int, *, ease: bool) -> list[tuple[int, float]]:
    """The schedule [(segment, t)] of a closed loop of `n_keys` faces, `frames` per segment, hold included."""
    if not 1 <= frames <= MAX_FRAMES_PER_SEGMENT:
        raise ConfigError(f"frames per segment {frames} must be between 1 and {MAX_FRAMES_PER_SEGMENT}")
    hold = hold_frames(frames, ease)
    return loop_schedule(n_keys, frames - hold, ease=ease, hold=hold)


def ping_pong(n: int) -> list[int]:
    """0, 1, …, n−1, n−2, …, 1: a back-and-forth loop that repeats neither end frame."""
    return list(range(n)) + list(range(n - 2, 0, -1))


def path_latents(
    keys: torch.Tensor,
    schedule: Sequence[tuple[int, float]],
    *,
    method: str = "slerp",
    batch_size: int = 64,
    mask: torch.Tensor | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the path's latents in batches of at most `batch_size` rows (B, D), in schedule order.

    keys (K, D). Only one batch exists at a time, so memory does not grow with the frame count.
    `mask` (D,) bool moves only those values (the path runs between the keys' masked parts); the others
    stay the first key's throughout, bit for bit.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown path {method!r}; choose one of {', '.join(METHODS)}")
    if keys.ndim != 2 or keys.shape[0] < 2:
        raise ConfigError(f"a path needs at least 2 key latents as (K, D); got shape {tuple(keys.shape)}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    interp = slerp if method == "slerp" else lerp
    k = keys.shape[0]
    moving = keys if mask is None else keys[:, mask.to(keys.device)]
    for start in range(0, len(schedule), batch_size):
        chunk = schedule[start : start + batch_size]
        seg = torch.tensor([s for s, _ in chunk], dtype=torch.long, device=keys.device)
        if (seg < 0).any() or (seg >= k).any():
            raise ConfigError(f"a schedule segment is outside 0..{k - 1}")
        t = torch.tensor([w for _, w in chunk], dtype=torch.float64)
        if not torch.isfinite(t).all():
            raise ConfigError("a schedule weight is NaN or inf")
        path = interp(moving[seg], moving[(seg + 1) % k], t)
        if mask is None:
            yield path
        else:
            frames = keys[0].expand(len(chunk), -1).clone()
            frames[:, mask.to(keys.device)] = path
            yield frames
