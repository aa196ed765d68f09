"""The Glow flow: flow steps (ActNorm → 1x1 convolution → coupling) over levels with splits, and `Glow`.

The layers are in `latentlab.flow.layers`; flow steps keep their contract: `forward(x) -> (y, logdet)`
with logdet of shape (B,) in nats, and `reverse(y) -> x`. Tensors are NCHW. The latent of an image is
the concatenation of every level's standardised ε (Kingma & Dhariwal 2018, with the split priors
folded into the flow), so `log_prob(x) = log N(encode(x); 0, I) + log|det ∂encode/∂x|` holds exactly.

Speed (measured in BENCHMARKS.md): every ActNorm and scale is folded into the convolution next to
it, in training too (the folded form is the same function of the same parameters); the folded
weights of a level's K steps are computed in one batch of small tensor ops (`fold_steps`), and in
eval mode with no gradient once, then cached; activations are channels-last.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
import torch.utils.checkpoint
from torch import nn

from latentlab.config import GlowConfig
from latentlab.data.quantize import bins_and_noise, dequantize, n_bins, to_float
from latentlab.errors import ConfigError
from latentlab.flow.dequantizer import Dequantizer
from latentlab.flow.layers import (
    ActNorm,
    Coupling,
    InvConv1x1,
    Split,
    _batch_logdet,
    _conv1x1,
    _exact,
    _fold_nets,
    _invconv_matrices,
    _log_abs_dets,
    _params_key,
    _use_cache,
    _wide,
    inference_layout,
    squeeze,
    unsqueeze,
)
from latentlab.flow.layers import (
    ZeroConv2d as ZeroConv2d,  # re-exported: bench.py finds the output convolutions through this module
)
from latentlab.flow.reversible import InvertibleSteps, trainable

LOG_2PI = math.log(2 * math.pi)
# oneDNN's convolutions (and their backward) run 1.2-1.6x faster on NHWC activations at these shapes
ACTIVATIONS = torch.channels_last
# A saturating decode (`Glow.decode(z, saturate=True)`, used for edits, paths and samples) holds every
# activation within ±SATURATION. Real images stay below ~10 at every layer (trained toy and CelebA
# models: 8.4 and 7.7), so their decode is unchanged, bit for bit; a latent far off the data, whose
# exact inverse overflows to inf and NaN through the expanding reverse couplings, gives saturated
# (visibly broken) pixels where it went too far instead of a NaN image.
SATURATION = 1e3


def _unchanged(h: torch.Tensor) -> torch.Tensor:
    return h


def _saturate(h: torch.Tensor) -> torch.Tensor:
    """h with inf clipped to ±SATURATION, NaN (0/0 or inf−inf of an overflowed inverse) set to 0, all within it."""
    return torch.nan_to_num(h, nan=0.0, posinf=SATURATION, neginf=-SATURATION).clamp_(-SATURATION, SATURATION)


class Folded(NamedTuple):
    """A flow step's weights with every ActNorm and scale folded in.

    mix: (weight (C, C), bias (C,)) of the 1x1 convolution with the step's ActNorm folded in:
    W·(s·(x + loc)) = (W·diag(s))·x + W·(s·loc); for the reverse, (diag(1/s)·W⁻¹)·y − loc.
    net: the coupling network's (w1, b1, w2, b2, w3, b3). logdet: the per-pixel log-det of the
    ActNorm and 1x1 convolution, a scalar (None where not needed).
    """

    mix: tuple[torch.Tensor, torch.Tensor]
    net: tuple[torch.Tensor, ...]
    logdet: torch.Tensor | None


class FlowStep(nn.Module):
    """One step of flow: ActNorm → invertible 1x1 convolution → coupling (run with folded weights)."""

    def __init__(self, channels: int, config: GlowConfig, *, size: int = 0) -> None:
        """size: the level's spatial side, for position biases (0: none)."""
        super().__init__()
        self.norm = ActNorm(channels)
        self.perm = InvConv1x1(channels, config.permutation)
        self.coupling = Coupling(channels, config.width, config.coupling, size=size)
        self._cache: dict[bool, tuple] = {}  # reverse? -> (parameter key, Folded), for inference only

    def _init_pending(self) -> bool:
        net = self.coupling.net
        return self.norm.init_pending or net.norm1.init_pending or net.norm2.init_pending

    def folded(self, like: torch.Tensor, *, reverse: bool = False) -> Folded:
        """This step's folded weights (for its reverse if asked), cached for inference (see `_use_cache`)."""
        if not _use_cache(self):
            return fold_steps([self], like, reverse=reverse)[0]
        key = (*_params_key(self), like.dtype, like.device, torch.is_autocast_enabled(like.device.type))
        cached = self._cache.get(reverse)
        if cached is None or cached[0] != key:
            folded = fold_steps([self], like, reverse=reverse)[0]
            cached = self._cache[reverse] = (key, folded._replace(net=inference_layout(folded.net)))
        return cached[1]

    def apply_folded(self, x: torch.Tensor, folded: Folded) -> tuple[torch.Tensor, torch.Tensor]:
        """forward(x) with given folded weights; the log-det returned is the coupling's only."""
        with _exact(x):
            h = _conv1x1(x, *folded.mix)
        return self.coupling(h, folded.net)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """forward(x)'s output without the log-det, for encode."""
        folded = self.folded(x)
        with _exact(x):
            h = _conv1x1(x, *folded.mix)
        return self.coupling.transform(h, folded.net)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._init_pending():
            x, logdet = self.norm(x)
            x, ld = self.perm(x)
            x, ld2 = self.coupling(x)
            return x, logdet + ld + ld2
        folded = self.folded(x)
        y, logdet = self.apply_folded(x, folded)
        return y, logdet + _batch_logdet(x.shape[2] * x.shape[3] * folded.logdet, x.shape[0])

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        folded = self.folded(y, reverse=True)
        h = self.coupling.reverse(y, folded.net)
        with _exact(y):
            return _conv1x1(h, *folded.mix)


def fold_steps(steps: Sequence[FlowStep], like: torch.Tensor, *, reverse: bool = False) -> list[Folded]:
    """The folded weights of flow steps of one shape (a level's K steps), computed in one batch of ops.

    Batching turns ~25 small operations per step (and as many autograd nodes) into ~25 per level:
    most of what eager training otherwise spends outside the convolutions. Always in full precision.
    """
    kind = like.device.type
    net_dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None
    with _exact(like):
        logs = torch.stack([s.norm.logs for s in steps]).flatten(1)  # (K, C)
        loc = torch.stack([s.norm.loc for s in steps]).flatten(1)
        convs = [s.perm for s in steps]
        if all(_use_cache(c) for c in convs):  # the 1x1 convolutions keep their own (W, W⁻¹) cache
            matrices = torch.stack([c.weights(like)[1 if reverse else 0] for c in convs])
        else:
            matrices = _invconv_matrices(convs, like, inverse=reverse)
        if reverse:
            mix_w, mix_b = matrices * torch.exp(-logs)[:, :, None], -loc
        else:
            scale = torch.exp(logs)
            mix_w, mix_b = matrices * scale[:, None, :], (matrices @ (scale * loc)[:, :, None])[:, :, 0]
        nets = _fold_nets([s.coupling.net for s in steps], net_dtype)  # networks run in autocast's dtype
        per_pixel = (logs.sum(1) + _log_abs_dets(convs, like).to(logs)).unbind()
        mixes = zip(mix_w.unbind(), mix_b.unbind(), strict=True)
        return [Folded(m, n, ld) for m, n, ld in zip(mixes, nets, per_pixel, strict=True)]


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
        # how training trades compute for activation memory: "none", "checkpoint" (recompute each step
        # from its saved input) or "invertible" (rebuild each step's input from its output); not saved
        self.memory_saving = "none"
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
            for m in self.modules():
                if isinstance(m, FlowStep):
                    m._cache = {}
                elif isinstance(m, InvConv1x1):
                    m._cache = None
        return super().train(mode)

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent ActNorm initialisation from a batch x (B, 3, H, W) in [-0.5, 0.5].

        Every ActNorm, in flow order, sets its scale and bias so its output has zero mean and unit
        variance per channel on this batch. Call it once before training; it is saved in checkpoints.
        """
        self._check_input(x)
        norms = [m for m in self.modules() if isinstance(m, ActNorm)]
        for m in norms:
            m.init_pending = True
        try:
            self._flow(x)
        finally:
            for m in norms:
                m.init_pending = False

    def _check_input(self, x: torch.Tensor) -> None:
        size = self.config.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, size, size):
            raise ConfigError(f"expected images of shape (B, 3, {size}, {size}), got {tuple(x.shape)}")

    def _flow(self, x: torch.Tensor, *, with_logdet: bool = True) -> tuple[list[torch.Tensor], torch.Tensor]:
        """x -> (standardised ε of every level, log|det ∂ε/∂x| of shape (B,), zeros without `with_logdet`)."""
        logdet = torch.zeros(x.shape[0], device=x.device, dtype=torch.promote_types(x.dtype, torch.float32))
        eps_list: list[torch.Tensor] = []
        h = x
        for level, steps in enumerate(self.levels):
            h = squeeze(h, ACTIVATIONS)
            if with_logdet:
                h, ld = self._run_level(steps, h)
                logdet = logdet + ld
            else:
                for step in steps:
                    h = step.transform(h)
            if level < len(self.splits):
                h, eps, ld = self.splits[level](h)
                eps_list.append(eps)
                logdet = logdet + ld
        eps_list.append((h - self.top_mean) * torch.exp(-self.top_logs))
        logdet = logdet - _wide(self.top_logs).sum()
        return eps_list, logdet

    def _run_level(self, steps: nn.ModuleList, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The K steps of one level, trading compute for activation memory as `memory_saving` says.

        The plain path folds all K steps' weights at once (`fold_steps`); the memory-saving modes fold
        step by step inside the recomputed region, so no folded copy of the weights stays alive.
        """
        saving = self.memory_saving if self.training and torch.is_grad_enabled() else "none"
        if any(step._init_pending() for step in steps):
            saving = "step by step"  # data-dependent initialisation sees every layer unfolded
        if saving == "invertible":
            return InvertibleSteps.apply(steps, h, *trainable(steps))
        if saving in ("checkpoint", "step by step"):
            logdet = None
            for step in steps:
                if saving == "checkpoint":
                    h, ld = torch.utils.checkpoint.checkpoint(step, h, use_reentrant=False)
                else:
                    h, ld = step(h)
                logdet = ld if logdet is None else logdet + ld
            return h, logdet
        folded = [step.folded(h) for step in steps] if _use_cache(self) else fold_steps(steps, h)
        per_pixel = torch.stack([f.logdet for f in folded]).sum()
        logdet = _batch_logdet(h.shape[2] * h.shape[3] * per_pixel, h.shape[0])
        for step, f in zip(steps, folded, strict=True):
            h, ld = step.apply_folded(h, f)
            logdet = logdet + ld
        return h, logdet

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
        for level in reversed(range(len(self.levels))):
            if level < len(self.splits):
                h = bound(self.splits[level].reverse(h, parts[level]))
            h = h.contiguous(memory_format=ACTIVATIONS)
            for step in reversed(self.levels[level]):
                h = bound(step.reverse(h))
            h = unsqueeze(h, ACTIVATIONS if level else torch.contiguous_format)
        return h

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
        sq = sum(_wide(e).pow(2).flatten(1).sum(1) for e in eps_list)
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
