"""The machine's convolution ceiling for an architecture: the best 3×3 convolution rate measured here and now.

Encode and decode are judged against it: the images/s the machine would reach if every forward FLOP
ran at that rate is the ceiling divided by the forward FLOPs per image, and the fraction of it that
encode or decode reaches says how much time goes elsewhere (1×1 layers, element-wise work, copies).
Candidates are the architecture's own 3×3 convolutions (coupling networks in and out, split priors)
and a width-to-width 3×3 convolution on every level's grid, the densest one its width allows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from latentlab.config import GlowConfig


def conv3x3_shapes(cfg: GlowConfig) -> list[tuple[int, int, int]]:
    """(in channels, out channels, grid side) of the architecture's distinct 3×3 convolutions, plus
    width → width on each level's grid."""
    shapes, channels, size = set(), 3, cfg.image_size
    for level in range(cfg.levels):
        channels, size = channels * 4, size // 2
        half = channels // 2
        out = 2 * (channels - half) if cfg.coupling == "affine" else channels - half
        shapes |= {(half, cfg.width, size), (cfg.width, out, size), (cfg.width, cfg.width, size)}
        if level < cfg.levels - 1:
            shapes.add((half, 2 * (channels - half), size))
            channels = channels - half
    return sorted(shapes)


def conv3x3_ceiling(
    cfg: GlowConfig,
    batch: int,
    *,
    device: torch.device,
    throughput: Callable[..., tuple[float, list[float]]],
    **timing: Any,
) -> dict[str, Any]:
    """The best float32 rate (GFLOP/s) among `conv3x3_shapes` at this batch, channels-last and under
    inference_mode as the model runs them; `throughput` is the bench's timer (`_throughput`)."""
    g = torch.Generator().manual_seed(0)
    best: dict[str, Any] = {"conv3x3_ceiling_gflop_per_s": 0.0, "conv3x3_ceiling_shape": None}
    for cin, cout, side in conv3x3_shapes(cfg):
        x = torch.randn(batch, cin, side, side, generator=g).to(device, memory_format=torch.channels_last)
        w = (0.01 * torch.randn(cout, cin, 3, 3, generator=g)).to(device, memory_format=torch.channels_last)
        b = torch.zeros(cout, device=device)
        flops = 2.0 * batch * cin * cout * 9 * side * side
        with torch.inference_mode():
            calls_per_s, _ = throughput(lambda x=x, w=w, b=b: F.conv2d(x, w, b, padding=1), images=1, **timing)
        rate = calls_per_s * flops / 1e9
        if rate > best["conv3x3_ceiling_gflop_per_s"]:
            best = {"conv3x3_ceiling_gflop_per_s": rate, "conv3x3_ceiling_shape": f"{cin}->{cout} at {side}x{side}"}
    return best
