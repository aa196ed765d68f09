"""Mixed precision in the flow: what stays in float32 when the networks run in bf16 under autocast.

Only the coupling networks and priors run in bf16; what must be inverted (1x1 mixing, coupling updates,
weight folding) and every log-det stay float32 or wider, so decode(encode(x)) stays exact.
"""

from __future__ import annotations

import contextlib

import torch


def wide(t: torch.Tensor) -> torch.Tensor:
    """Half-precision values promoted to float32 (log-dets and priors are summed in float32 or wider)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def batch_logdet(value: torch.Tensor, batch: int) -> torch.Tensor:
    """Broadcast a per-sample-constant log-det (a scalar) to shape (B,), in float32 or wider."""
    return wide(value).expand(batch)


def exact(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Keep the block out of autocast (the invertible trunk), or nothing to do where autocast is off."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()
