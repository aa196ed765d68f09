"""Folding: a flow step's ActNorms and output scales multiplied into the convolutions next to them.

A step ActNorm → W → coupling becomes one 1x1 convolution (W·diag(s), W·(s·loc)) and a coupling
network of three plain convolutions: the same function of the same parameters, with fewer passes over
the activations. The folded weights of a level's K steps are computed in one batch of small tensor
ops (`fold_steps`); for inference they are computed once and cached (`FoldedCache`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from latentlab.flow.layers import SCALE_OFFSET, CouplingNet, InvConv1x1LU, Reverse
from latentlab.flow.precision import exact

# oneDNN's AVX-512 convolutions work on blocks of 16 channels: 12 or 24 outputs run slower than 16 or 32
CHANNEL_BLOCK = 16


class Folded(NamedTuple):
    """A flow step's weights with every ActNorm and scale folded in.

    mix: (weight (C, C), bias (C,)) of the 1x1 convolution with the step's ActNorm folded in:
    W·(s·(x + loc)) = (W·diag(s))·x + W·(s·loc); for the reverse, (diag(1/s)·W⁻¹)·y − loc.
    net: the coupling network's (w1, b1, w2, b2, w3, b3). logdet: the per-pixel log-det of the
    ActNorm and 1x1 convolution, a scalar.
    """

    mix: tuple[torch.Tensor, torch.Tensor]
    net: tuple[torch.Tensor, ...]
    logdet: torch.Tensor


def mix_matrices(convs: Sequence[nn.Module], like: torch.Tensor, *, inverse: bool) -> torch.Tensor:
    """W (or W⁻¹) of each step's channel mixing as (K, C, C), differentiable; W⁻¹ by triangular solves for LU."""
    first, k = convs[0], len(convs)
    if isinstance(first, Reverse):
        c = first.channels
        return torch.eye(c, dtype=like.dtype, device=like.device).flip(0).expand(k, c, c)
    if not isinstance(first, InvConv1x1LU):
        weight = torch.stack([m.weight for m in convs])
        return torch.linalg.inv(weight) if inverse else weight
    eye = torch.eye(first.lower.shape[0], dtype=like.dtype, device=like.device)
    lower = torch.stack([m.lower for m in convs]) * first.lower_mask + eye
    diag = torch.stack([m.sign_s for m in convs]) * torch.exp(torch.stack([m.log_s for m in convs]))
    upper = torch.stack([m.upper for m in convs]) * first.lower_mask.T + torch.diag_embed(diag)
    perm = torch.stack([m.perm for m in convs])
    if not inverse:
        return perm @ lower @ upper
    lower_inv = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
    upper_inv = torch.linalg.solve_triangular(upper, eye, upper=True)
    return upper_inv @ lower_inv @ perm.mT


def log_abs_dets(convs: Sequence[nn.Module], like: torch.Tensor) -> torch.Tensor:
    """log|det W| of each step's channel mixing, (K,)."""
    if isinstance(convs[0], InvConv1x1LU):
        return torch.stack([c.log_s for c in convs]).sum(1)
    if isinstance(convs[0], Reverse):
        return like.new_zeros(len(convs))
    return torch.linalg.slogdet(torch.stack([c.weight for c in convs]))[1]


class _ExpScaled(torch.autograd.Function):
    """w·exp(factor·logs), one scale per output row of w (K, O, ...), logs (K, O).

    The plain product saves w for backward, and w is a stacked copy of the parameters: this one saves
    the product instead (which the convolutions keep anyway), so no second copy of the weights lives on.
    """

    @staticmethod
    def forward(ctx, w: torch.Tensor, logs: torch.Tensor, factor: float) -> torch.Tensor:
        scale = torch.exp(factor * logs).view(*logs.shape, *(1,) * (w.dim() - logs.dim()))
        y = w * scale
        ctx.save_for_backward(y, scale)
        ctx.factor = factor
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        y, scale = ctx.saved_tensors
        return grad * scale, ctx.factor * (grad * y).flatten(2).sum(2), None  # ∂(w·e^{f·l})/∂l = f·y


def fold_nets(
    nets: Sequence[CouplingNet], *, offset: float = 0.0, dtype: torch.dtype | None = None
) -> list[tuple[torch.Tensor, ...]]:
    """(w1, b1, w2, b2, w3, b3) of each network, with both ActNorms and the output scale folded in.

    offset: added to the second half of the outputs (the affine coupling's scale logits).
    With `dtype` (autocast's, bf16), the stacked weights are cast once here rather than by autocast at
    every convolution: the same values, with one cast (and one backward node) per level instead of per step.
    """

    def stack(get: Callable[[CouplingNet], torch.Tensor]) -> torch.Tensor:
        return torch.stack([get(n) for n in nets])

    logs1 = stack(lambda n: n.norm1.logs).flatten(1)  # (K, width)
    logs2 = stack(lambda n: n.norm2.logs).flatten(1)
    logs3 = stack(lambda n: n.out.logs).flatten(1)  # (K, C_out)
    w1 = _ExpScaled.apply(stack(lambda n: n.conv1.weight), logs1, 1.0)
    w2 = _ExpScaled.apply(stack(lambda n: n.conv2.weight).flatten(2), logs2, 1.0)
    w3 = _ExpScaled.apply(stack(lambda n: n.out.conv.weight), logs3, 3.0)
    b1 = torch.exp(logs1) * stack(lambda n: n.norm1.loc).flatten(1)
    b2 = torch.exp(logs2) * stack(lambda n: n.norm2.loc).flatten(1)
    offsets = logs3.new_zeros(logs3.shape[1])
    offsets[logs3.shape[1] // 2 :] = offset
    b3 = torch.exp(3 * logs3) * stack(lambda n: n.out.conv.bias) + offsets
    folded = (w1, b1, w2, b2, w3, b3)
    if dtype is not None:
        folded = tuple(t.to(dtype) for t in folded)
    return list(zip(*(t.unbind() for t in folded), strict=True))


def inference_layout(net: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """A coupling network's folded weights laid out for fast inference convolutions (same outputs).

    The output convolution gets zero rows up to a multiple of CHANNEL_BLOCK output channels, which
    the fast path slices off again, and the 3x3 weights are stored channels-last like the activations,
    so oneDNN does not reorder them on every call (BENCHMARKS.md). No gain in training, so only the
    cached inference weights use it.
    """
    w1, b1, w2, b2, w3, b3 = net
    extra = -w3.shape[0] % CHANNEL_BLOCK
    if extra:
        w3, b3 = F.pad(w3, (0, 0, 0, 0, 0, 0, 0, extra)), F.pad(b3, (0, extra))
    w1, w3 = (w.contiguous(memory_format=torch.channels_last) for w in (w1, w3))
    return w1, b1, w2, b2, w3, b3


def fold_steps(steps: Sequence[nn.Module], like: torch.Tensor, *, reverse: bool = False) -> list[Folded]:
    """The folded weights of flow steps of one shape (a level's K steps), computed in one batch of ops.

    Batching turns ~25 small operations per step (and as many autograd nodes) into ~25 per level:
    most of what eager training otherwise spends outside the convolutions. Always in full precision;
    the networks' weights in autocast's dtype where it is on.
    """
    kind = like.device.type
    net_dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None
    with exact(like):
        logs = torch.stack([s.norm.logs for s in steps]).flatten(1)  # (K, C)
        loc = torch.stack([s.norm.loc for s in steps]).flatten(1)
        convs = [s.perm for s in steps]
        matrices = mix_matrices(convs, like, inverse=reverse)
        if reverse:
            mix_w, mix_b = matrices * torch.exp(-logs)[:, :, None], -loc
        else:
            scale = torch.exp(logs)
            mix_w, mix_b = matrices * scale[:, None, :], (matrices @ (scale * loc)[:, :, None])[:, :, 0]
        offset = SCALE_OFFSET if steps[0].coupling.kind == "affine" else 0.0
        nets = fold_nets([s.coupling.net for s in steps], offset=offset, dtype=net_dtype)
        per_pixel = (logs.sum(1) + log_abs_dets(convs, like).to(logs)).unbind()
        mixes = zip(mix_w.unbind(), mix_b.unbind(), strict=True)
        return [Folded(m, n, ld) for m, n, ld in zip(mixes, nets, per_pixel, strict=True)]


def _params_key(module: nn.Module) -> tuple:
    """Identify the current values of a module's parameters (changes after any in-place update)."""
    return tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in module.parameters())


class FoldedCache:
    """Each flow step's folded inference weights (in `inference_layout`), forward and reverse.

    An entry is refolded when the step's parameters change (in place too), or the dtype, device or
    autocast state of the activations does. Only for inference: its tensors carry no gradient graph.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[nn.Module, bool], tuple[tuple, Folded]] = {}

    def get(self, step: nn.Module, like: torch.Tensor, *, reverse: bool = False) -> Folded:
        key = (*_params_key(step), like.dtype, like.device, torch.is_autocast_enabled(like.device.type))
        entry = self._entries.get((step, reverse))
        if entry is None or entry[0] != key:
            folded = fold_steps([step], like, reverse=reverse)[0]
            entry = self._entries[step, reverse] = (key, folded._replace(net=inference_layout(folded.net)))
        return entry[1]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
