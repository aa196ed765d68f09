"""The position bias of the coupling networks: h += bias (1, C, H, W), fast in channels-last.

Aligned faces put eyes and mouth in fixed places, so every coupling network (and split prior network)
may learn one bias per position and hidden channel (BENCHMARKS.md has what it buys on CelebA).
"""

from __future__ import annotations

import torch


def add_position(h: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """h + position (1, C, H, W), in place on h so it keeps the convolution's channels-last layout."""
    if torch.is_grad_enabled() and (h.requires_grad or position.requires_grad):
        return _AddPosition.apply(h, position)
    return h.add_(_laid_out_like(position, h))


def _laid_out_like(position: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The bias in h's memory layout and dtype: a broadcast add across layouts, or of a float32 bias into
    bf16 activations (autocast), is many times slower (BENCHMARKS.md). Either copy is of one image's worth
    of values, not a batch's."""
    if h.is_contiguous(memory_format=torch.channels_last) and not h.is_contiguous():
        position = position.contiguous(memory_format=torch.channels_last)
    return position.to(h.dtype)


class _AddPosition(torch.autograd.Function):
    """In-place h += position whose backward sums the gradient over the batch as a flat (B, H·W·C) array.

    Autograd's own sum over the batch of a channels-last gradient is much slower (BENCHMARKS.md), a
    sizeable part of a training step once every coupling has a position bias.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        ctx.mark_dirty(h)
        return h.add_(_laid_out_like(position, h))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, height, width = grad.shape
        wide = torch.promote_types(grad.dtype, torch.float32)  # bf16 gradients are summed in float32
        if grad.is_contiguous(memory_format=torch.channels_last):
            flat = grad.permute(0, 2, 3, 1).reshape(b, -1).sum(0, dtype=wide)
            grad_position = flat.view(1, height, width, c).permute(0, 3, 1, 2)
        else:
            grad_position = grad.sum(0, keepdim=True, dtype=wide)
        return grad, grad_position
