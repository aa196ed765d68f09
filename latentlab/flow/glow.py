"""The Glow flow: flow steps (ActNorm → invertible 1x1 convolution → coupling) over levels with splits.

The layers are in `latentlab.flow.layers`; a flow step keeps their contract: `forward(x) -> (y, logdet)`
with logdet of shape (B,) in nats, and `reverse(y) -> x`. Tensors are NCHW. The latent of an image is
the concatenation of every level's standardised ε (Kingma & Dhariwal 2018, with the split priors
folded into the flow), so `log_prob(x) = log N(encode(x); 0, I) + log|det ∂encode/∂x|` holds exactly.
`Glow` runs the same function through `latentlab.flow.fast` unless `fast` is set to False.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
from torch import nn

from latentlab.config import GlowConfig
from latentlab.data.quantize import bins_and_noise, dequantize, n_bins, to_float
from latentlab.errors import ConfigError
from latentlab.flow import fast
from latentlab.flow.dequantizer import Dequantizer
from latentlab.flow.folding import FoldedCache
from latentlab.flow.layers import ActNorm, Coupling, Split, permutation, squeeze, unsqueeze
from latentlab.flow.layers import (
    ZeroConv2d as ZeroConv2d,  # re-exported: bench.py finds the output convolutions through this module
)
from latentlab.flow.precision import wide

LOG_2PI = math.log(2 * math.pi)
# A saturating decode (`Glow.decode(z, saturate=True)`, used for edits, paths and samples) holds every
# activation within ±SATURATION. Real images stay below ~10 at every layer (trained toy and CelebA
# models: 8.4 and 7.7), so their decode is unchanged, bit for bit; a latent far off the data, whose
# exact inverse overflows to inf and NaN through the expanding reverse couplings, gives saturated
# (visibly broken) pixels where it went too far instead of a NaN image.
SATURATION = 1e3
Bound = Callable[[torch.Tensor], torch.Tensor]  # applied to the activations after every layer of decode


def _unchanged(h: torch.Tensor) -> torch.Tensor:
    return h


def _saturate(h: torch.Tensor) -> torch.Tensor:
    """h with inf clipped to ±SATURATION, NaN (0/0 or inf−inf of an overflowed inverse) set to 0, all within it."""
    return torch.nan_to_num(h, nan=0.0, posinf=SATURATION, neginf=-SATURATION).clamp_(-SATURATION, SATURATION)


def _initialize_from_input(norm: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
    norm.initialize(args[0])


class FlowStep(nn.Module):
    """One step of flow: ActNorm → invertible 1x1 convolution (or a permutation) → coupling."""

    def __init__(self, channels: int, config: GlowConfig, *, size: int = 0) -> None:
        """size: the level's spatial side, for position biases (0: none)."""
        super().__init__()
        self.norm = ActNorm(channels)
        self.perm = permutation(config.permutation, channels)
        self.coupling = Coupling(channels, config.width, config.coupling, size=size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, logdet1 = self.norm(x)
        x, logdet2 = self.perm(x)
        x, logdet3 = self.coupling(x)
        return x, logdet1 + logdet2 + logdet3

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        return self.norm.reverse(self.perm.reverse(self.coupling.reverse(y)))


class Glow(nn.Module):
    """Multi-scale Glow on (B, 3, H, W) images in [-0.5, 0.5]; latents are (B, D) with D = 3·H·W."""

    def __init__(self, config: GlowConfig) -> None:
        super().__init__()
        self.config = config
        self.levels = nn.ModuleList()
        self.splits = nn.ModuleList()
        channels, size = 3, config.image_size
        self.latent_shapes: list[tuple[int, int, int]] = []
        for level in range(config.levels):
            channels, size = channels * 4, size // 2
            where = size if config.position_bias else 0
            self.levels.append(nn.ModuleList(FlowStep(channels, config, size=where) for _ in range(config.steps)))
            if level < config.levels - 1:
                self.splits.append(Split(channels, config.prior_width, size=where))
                self.latent_shapes.append((channels - channels // 2, size, size))
                channels = channels // 2
        self.latent_shapes.append((channels, size, size))
        # speed settings, not saved: `fast` runs the flow through `latentlab.flow.fast` (False: the layers
        # as written); `memory_saving` is how fast training trades compute for activation memory: "none",
        # "checkpoint" (recompute each step from its saved input) or "invertible" (rebuild each step's
        # input from its output)
        self.fast = True
        self.memory_saving = "none"
        self.folded_cache = FoldedCache()  # the fast path's inference weights
        top = (1, channels, size, size)
        self.top_mean = nn.Parameter(torch.zeros(top), requires_grad=config.learn_top)
        self.top_logs = nn.Parameter(torch.zeros(top), requires_grad=config.learn_top)
        self.dequantizer = (
            Dequantizer(config.n_bits, config.dequantizer_steps, config.dequantizer_width)
            if config.dequantizer_steps
            else None
        )

    @property
    def latent_dim(self) -> int:
        """D, the length of a latent vector."""
        return self.config.latent_dim

    @property
    def is_initialized(self) -> bool:
        """Whether the data-dependent ActNorm initialisation has run (or was loaded)."""
        return all(bool(m.initialized) for m in self.modules() if isinstance(m, ActNorm))

    def train(self, mode: bool = True) -> Glow:
        """As nn.Module.train; entering training also drops the cached inference weights (stale soon)."""
        if mode:
            self.folded_cache.clear()
        return super().train(mode)

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent ActNorm initialisation from a batch x (B, 3, H, W) in [-0.5, 0.5].

        Every ActNorm, in flow order, sets its scale and bias so its output has zero mean and unit
        variance per channel on this batch. Call it once before training; it is saved in checkpoints.
        It runs the layers as written, each ActNorm set from its input before the next one sees it.
        """
        self._check_input(x)
        norms = [m for m in self.modules() if isinstance(m, ActNorm)]
        hooks = [m.register_forward_pre_hook(_initialize_from_input) for m in norms]
        try:
            # on the fast path's activation layout: the statistics are sums whose float rounding depends
            # on the layout, and this keeps the initial weights of a given seed what they have always been
            self._levels(x, layout=fast.ACTIVATIONS)
        finally:
            for hook in hooks:
                hook.remove()

    def _check_input(self, x: torch.Tensor) -> None:
        size = self.config.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, size, size):
            raise ConfigError(f"expected images of shape (B, 3, {size}, {size}), got {tuple(x.shape)}")

    def _levels(
        self, x: torch.Tensor, *, layout: torch.memory_format = torch.contiguous_format
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """The levels as written: x -> (ε of every split, the top level's h, log|det| so far (B,)).

        layout: the activations' memory layout (the same values, up to float rounding).
        """
        logdet = x.new_zeros(x.shape[0])
        eps_list: list[torch.Tensor] = []
        h = x
        for level, steps in enumerate(self.levels):
            h = squeeze(h).contiguous(memory_format=layout)  # (B, 4C, H/2, W/2)
            for step in steps:
                h, ld = step(h)
                logdet = logdet + ld
            if level < len(self.splits):
                h, eps, ld = self.splits[level](h)  # h keeps half the channels
                eps_list.append(eps)
                logdet = logdet + ld
        return eps_list, h, logdet

    def _reverse_levels(self, h: torch.Tensor, eps_list: list[torch.Tensor], bound: Bound) -> torch.Tensor:
        """The levels as written, in reverse: the top level's h and every split's ε -> x (B, 3, H, W)."""
        for level in reversed(range(len(self.levels))):
            if level < len(self.splits):
                h = bound(self.splits[level].reverse(h, eps_list[level]))
            for step in reversed(self.levels[level]):
                h = bound(step.reverse(h))
            h = unsqueeze(h)
        return h

    def _flow(self, x: torch.Tensor, *, with_logdet: bool = True) -> tuple[list[torch.Tensor], torch.Tensor]:
        """x -> (standardised ε of every level, log|det ∂ε/∂x| of shape (B,)).

        Without `with_logdet` the fast path may leave the flow steps' log-dets out (encode).
        """
        if self.fast:
            eps_list, h, logdet = fast.flow(self, x, with_logdet=with_logdet)
        else:
            eps_list, h, logdet = self._levels(x)
        eps_list.append((h - self.top_mean) * torch.exp(-self.top_logs))
        return eps_list, logdet - wide(self.top_logs).sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The training objective's core: `log_likelihood(x)` (so DDP and torch.compile wrap the model directly)."""
        return self.log_likelihood(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-0.5, 0.5] -> latents (B, D): every level's ε, flattened, in level order."""
        self._check_input(x)
        eps_list, _ = self._flow(x, with_logdet=False)
        return torch.cat([e.flatten(1) for e in eps_list], dim=1)

    def decode(self, z: torch.Tensor, *, saturate: bool = False) -> torch.Tensor:
        """Latents (B, D) -> images (B, 3, H, W); the exact inverse of `encode`, nothing re-sampled.

        saturate: hold every activation within ±SATURATION (see there), so latents far off the data
        decode to finite, saturated pixels instead of NaN; identical results for real images' latents.
        """
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ConfigError(f"expected latents of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        bound = _saturate if saturate else _unchanged
        parts = list(self._unflatten(z))
        h = bound(self.top_mean + torch.exp(self.top_logs) * parts[-1])
        if self.fast:
            return fast.reverse_levels(self, h, parts[:-1], bound)
        return self._reverse_levels(h, parts[:-1], bound)

    def _unflatten(self, z: torch.Tensor) -> Iterator[torch.Tensor]:
        start = 0
        for c, h, w in self.latent_shapes:
            n = c * h * w
            yield z[:, start : start + n].reshape(z.shape[0], c, h, w)
            start += n

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density (B,) in nats of continuous images x (B, 3, H, W) in [-0.5, 0.5]."""
        self._check_input(x)
        eps_list, logdet = self._flow(x)
        sq = sum(wide(e).pow(2).flatten(1).sum(1) for e in eps_list)
        return -0.5 * (sq + self.latent_dim * LOG_2PI) + logdet

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """What training maximises and scoring reports, (B,) in nats, for x from `quantize.dequantize`.

        Without a dequantiser this is `log_prob(x)`: uniform noise in each bin, as in the Glow paper.
        With one, x's bins and uniform noise u₀ are read back from x (exactly), u₀ becomes u ~ q(u | bins),
        and the value is log p(bins + u) − log q(u | bins): the same kind of bound on the discrete
        log-likelihood, tighter as q learns where in each bin the density lies (Ho et al. 2019).
        """
        if self.dequantizer is None:
            return self.log_prob(x)
        bins, noise = bins_and_noise(x, self.config.n_bits)
        x_dequantized, log_q = self.dequantizer(bins, noise)
        return self.log_prob(x_dequantized.to(x.dtype)) - log_q

    def bits_per_dim(self, x_uint8: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Bits per dimension (B,) of uint8 images, as in the Glow paper.

        Pixels are reduced to n_bits, dequantised with uniform noise (then the dequantiser's, if the
        model has one), and the discretisation term D·log(2**n_bits) is added:
        bpd = (−log_likelihood(x̃) + D·log n_bins) / (D·log 2).
        """
        dtype = self.top_mean.dtype
        x = dequantize(x_uint8, self.config.n_bits, generator=generator, dtype=dtype)
        return self.bits_per_dim_from_log_prob(self.log_likelihood(x))

    def bits_per_dim_from_log_prob(self, log_prob: torch.Tensor) -> torch.Tensor:
        """Turn continuous log-densities (nats) of dequantised images into bits per dimension."""
        d = self.latent_dim
        return (-log_prob + d * math.log(n_bins(self.config.n_bits))) / (d * math.log(2.0))

    def preprocess(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> model input: n_bits levels at their bin centres, no noise."""
        return to_float(x_uint8, self.config.n_bits, dtype=self.top_mean.dtype).to(self.top_mean.device)

    def sample(self, n: int, *, temperature: float = 0.7, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw n images (n, 3, H, W) as decode(T·ε), ε ~ N(0, I) (a saturating decode: never NaN)."""
        eps = torch.randn(n, self.latent_dim, generator=generator, dtype=self.top_mean.dtype)
        return self.decode(temperature * eps.to(self.top_mean.device), saturate=True)


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Switch a model to eval mode under inference_mode for the block, restoring its mode after."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        model.train(was_training)
