"""The fast path: Glow's layers run with folded weights, cached inference weights and channels-last activations.

It computes the function of `latentlab.flow.layers` (a test proves it: outputs, log-dets and gradients)
and is what `Glow` runs by default, in training and inference (BENCHMARKS.md has what each part buys):
- every ActNorm and output scale is folded into the convolution next to it (`latentlab.flow.folding`),
  in training too, the folded weights of a level's K steps computed in one batch of ops;
- in eval mode with no gradient the folded weights are computed once and cached, laid out for oneDNN;
- activations are channels-last, and inference 1x1 convolutions are GEMMs over the pixels;
- position biases are added in place (`latentlab.flow.position_bias`);
- training may trade compute for memory (`Glow.memory_saving`: recompute or invert each step);
- under autocast only the coupling networks and priors run in bf16 (`latentlab.flow.precision`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from latentlab.flow.folding import Folded, FoldedCache, fold_nets, fold_steps
from latentlab.flow.layers import Coupling, CouplingNet, Split, ZeroConv2d
from latentlab.flow.position_bias import add_position
from latentlab.flow.precision import batch_logdet, exact, wide
from latentlab.flow.reversible import InvertibleSteps, trainable

if TYPE_CHECKING:
    from latentlab.flow.glow import FlowStep, Glow

# oneDNN's convolutions (and their backward) run faster on NHWC activations at these shapes (BENCHMARKS.md)
ACTIVATIONS = torch.channels_last


def use_cache(module: nn.Module) -> bool:
    """Cached inference weights are used only when no gradient can flow into the parameters."""
    return not module.training and not torch.is_grad_enabled()


def squeeze(x: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """`layers.squeeze` with its result in `layout` (one copy either way)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2)
    if layout == torch.channels_last:
        return x.permute(0, 2, 4, 1, 3, 5).reshape(b, h // 2, w // 2, 4 * c).permute(0, 3, 1, 2)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(x: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """`layers.unsqueeze` with its result in `layout` (one copy either way)."""
    b, c, h, w = x.shape
    x = x.view(b, c // 4, 2, 2, h, w)
    if layout == torch.channels_last:
        return x.permute(0, 4, 2, 5, 3, 1).reshape(b, 2 * h, 2 * w, c // 4).permute(0, 3, 1, 2)
    return x.permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, 2 * h, 2 * w)


def conv1x1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1x1 convolution with a (C_out, C_in) matrix; at inference a GEMM over channels-last pixels.

    The GEMM is faster for encode, but in training oneDNN's convolution with its backward is faster
    than the GEMM's, so training keeps the convolution (BENCHMARKS.md).
    """
    if not torch.is_grad_enabled() and x.is_contiguous(memory_format=torch.channels_last):
        return F.linear(x.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)
    return F.conv2d(x, weight[:, :, None, None], bias)


def net(module: CouplingNet, x: torch.Tensor, folded: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The coupling network with folded weights: x (B, C_in, H, W) -> (B, C_out, H, W), offsets included."""
    w1, b1, w2, b2, w3, b3 = folded
    h = F.conv2d(x, w1, b1, padding=1)
    if module.position is not None:
        h = add_position(h, module.position)
    h = F.relu_(h)
    h = F.relu_(conv1x1(h, w2, b2))
    out = F.conv2d(h, w3, b3, padding=1)
    n = module.out.conv.out_channels
    return out if out.shape[1] == n else out[:, :n]  # without the zero rows of `inference_layout`


def _shift_raw(coupling: Coupling, xa: torch.Tensor, folded: tuple) -> tuple[torch.Tensor, torch.Tensor | None]:
    h = wide(net(coupling.net, xa, folded))
    return (h, None) if coupling.kind == "additive" else h.chunk(2, dim=1)


def _coupling_update(coupling: Coupling, x: torch.Tensor, folded: tuple) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(y, the scale logits or None for additive couplings); the offset is in the folded bias."""
    xa, xb = x[:, : coupling.half], x[:, coupling.half :]
    shift, raw = _shift_raw(coupling, xa, folded)
    with exact(x):
        yb = xb + shift if raw is None else (xb + shift) * torch.sigmoid(raw)
        return torch.cat([xa, yb], dim=1), raw


def coupling_forward(coupling: Coupling, x: torch.Tensor, folded: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    y, raw = _coupling_update(coupling, x, folded)
    if raw is None:
        return y, wide(x.new_zeros(x.shape[0]))
    with exact(x):
        return y, F.logsigmoid(raw).flatten(1).sum(1)


def coupling_reverse(coupling: Coupling, y: torch.Tensor, folded: tuple) -> torch.Tensor:
    ya, yb = y[:, : coupling.half], y[:, coupling.half :]
    shift, raw = _shift_raw(coupling, ya, folded)
    with exact(y):
        if raw is None:
            return torch.cat([ya, yb - shift], dim=1)
        return torch.cat([ya, yb / torch.sigmoid(raw) - shift], dim=1)


def apply_step(step: FlowStep, x: torch.Tensor, folded: Folded) -> tuple[torch.Tensor, torch.Tensor]:
    """A flow step with given folded weights; the log-det returned is the coupling's only."""
    with exact(x):
        h = conv1x1(x, *folded.mix)
    return coupling_forward(step.coupling, h, folded.net)


def step_forward(step: FlowStep, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`FlowStep.forward`, folded afresh (for the memory-saving modes, which work step by step)."""
    folded = fold_steps([step], x)[0]
    y, logdet = apply_step(step, x, folded)
    return y, logdet + batch_logdet(x.shape[2] * x.shape[3] * folded.logdet, x.shape[0])


def step_transform(step: FlowStep, x: torch.Tensor, folded: Folded) -> torch.Tensor:
    """A flow step's output without the log-det (encode does not need it)."""
    with exact(x):
        h = conv1x1(x, *folded.mix)
    return _coupling_update(step.coupling, h, folded.net)[0]


def step_reverse(step: FlowStep, y: torch.Tensor, folded: Folded) -> torch.Tensor:
    """`FlowStep.reverse` with the step's folded reverse weights."""
    h = coupling_reverse(step.coupling, y, folded.net)
    with exact(y):
        return conv1x1(h, *folded.mix)


def _step_reverse_folded(step: FlowStep, y: torch.Tensor) -> torch.Tensor:
    return step_reverse(step, y, fold_steps([step], y, reverse=True)[0])


def folded_weights(step: FlowStep, like: torch.Tensor, cache: FoldedCache, *, reverse: bool = False) -> Folded:
    """A step's folded weights: from the cache for inference (see `use_cache`), else folded afresh."""
    if use_cache(step):
        return cache.get(step, like, reverse=reverse)
    return fold_steps([step], like, reverse=reverse)[0]


def run_level(
    steps: nn.ModuleList, h: torch.Tensor, *, memory_saving: str, cache: FoldedCache
) -> tuple[torch.Tensor, torch.Tensor]:
    """The K steps of one level, trading compute for activation memory in training as `memory_saving` says.

    Without memory saving all K steps' weights are folded at once; the memory-saving modes fold step by
    step inside the recomputed region, so no folded copy of the weights stays alive.
    """
    if memory_saving == "invertible":
        return InvertibleSteps.apply(steps, step_forward, _step_reverse_folded, h, *trainable(steps))
    if memory_saving == "checkpoint":
        logdet = None
        for step in steps:
            h, ld = torch.utils.checkpoint.checkpoint(step_forward, step, h, use_reentrant=False)
            logdet = ld if logdet is None else logdet + ld
        return h, logdet
    folded = [cache.get(step, h) for step in steps] if use_cache(steps) else fold_steps(steps, h)
    per_pixel = torch.stack([f.logdet for f in folded]).sum()
    logdet = batch_logdet(h.shape[2] * h.shape[3] * per_pixel, h.shape[0])
    for step, f in zip(steps, folded, strict=True):
        h, ld = apply_step(step, h, f)
        logdet = logdet + ld
    return h, logdet


def _prior(split: Split, z1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ, log σ) of a split's prior, its scales folded into the convolutions."""
    prior = split.prior
    if isinstance(prior, ZeroConv2d):
        scale = torch.exp(prior.logs * 3).flatten()  # conv(x)·s is the convolution with weights ·s
        weight, bias = prior.conv.weight * scale[:, None, None, None], prior.conv.bias * scale
        h = F.conv2d(z1, weight, bias, padding=1)
    else:
        h = net(prior, z1, fold_nets([prior])[0])
    return wide(h).chunk(2, dim=1)


def split_forward(split: Split, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    z1, z2 = x[:, : split.half], x[:, split.half :]
    mean, logs = _prior(split, z1)
    with exact(x):
        eps = (z2 - mean) * torch.exp(-logs)
    return z1, eps, -logs.flatten(1).sum(1)


def split_reverse(split: Split, z1: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    mean, logs = _prior(split, z1)
    with exact(z1):
        return torch.cat([z1, mean + torch.exp(logs) * eps], dim=1)


def flow(
    model: Glow, x: torch.Tensor, *, with_logdet: bool = True
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """`Glow`'s levels on x: (ε of every split, the top level's h, log|det| so far (B,)).

    Without `with_logdet` the flow steps' log-dets are left out: encode does not need them.
    """
    saving = model.memory_saving if model.training and torch.is_grad_enabled() else "none"
    cache = model.folded_cache
    logdet = torch.zeros(x.shape[0], device=x.device, dtype=torch.promote_types(x.dtype, torch.float32))
    eps_list: list[torch.Tensor] = []
    h = x
    for level, steps in enumerate(model.levels):
        h = squeeze(h, ACTIVATIONS)
        if with_logdet:
            h, ld = run_level(steps, h, memory_saving=saving, cache=cache)
            logdet = logdet + ld
        else:
            for step in steps:
                h = step_transform(step, h, folded_weights(step, h, cache))
        if level < len(model.splits):
            h, eps, ld = split_forward(model.splits[level], h)
            eps_list.append(eps)
            logdet = logdet + ld
    return eps_list, h, logdet


def reverse_levels(
    model: Glow, h: torch.Tensor, eps_list: list[torch.Tensor], bound: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """`Glow`'s levels in reverse, from the top level's h and every split's ε to images (B, 3, H, W).

    `bound` is applied after every layer (see `Glow.decode`'s `saturate`).
    """
    for level in reversed(range(len(model.levels))):
        if level < len(model.splits):
            h = bound(split_reverse(model.splits[level], h, eps_list[level]))
        h = h.contiguous(memory_format=ACTIVATIONS)
        for step in reversed(model.levels[level]):
            h = bound(step_reverse(step, h, folded_weights(step, h, model.folded_cache, reverse=True)))
        h = unsqueeze(h, ACTIVATIONS if level else torch.contiguous_format)
    return h
