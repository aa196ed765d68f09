"""The Glow flow, bottom-up: ActNorm, invertible 1x1 convolution, couplings, squeeze, split, and `Glow`.

Every layer follows one contract: `forward(x) -> (y, logdet)` with logdet of shape (B,) in nats,
and `reverse(y) -> x`. Tensors are NCHW. The latent of an image is the concatenation of every
level's standardised ε (Kingma & Dhariwal 2018, with the split priors folded into the flow), so
`log_prob(x) = log N(encode(x); 0, I) + log|det ∂encode/∂x|` holds exactly.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from latentlab.config import GlowConfig
from latentlab.errors import ConfigError
from latentlab.quantize import dequantize, n_bins, to_float

LOG_2PI = math.log(2 * math.pi)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """Half-precision values promoted to float32 (log-dets and priors are summed in float32 or wider)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _batch_logdet(value: torch.Tensor, batch: int) -> torch.Tensor:
    """Broadcast a per-sample-constant log-det (a scalar) to shape (B,), in float32 or wider."""
    return _wide(value).expand(batch)


def _params_key(module: nn.Module) -> tuple:
    """Identify the current values of a module's parameters (changes after any in-place update)."""
    return tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in module.parameters())


def _use_cache(module: nn.Module) -> bool:
    """Cached inference weights are used only when no gradient can flow into the parameters."""
    return not module.training and not torch.is_grad_enabled()


class ActNorm(nn.Module):
    """Per-channel affine normalisation y = (x + loc)·exp(logs), initialised from data explicitly."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))
        self.init_pending = False  # set only by Glow.initialize for the duration of one forward pass

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set loc and logs so that x (B, C, H, W) gets per-channel mean 0 and std 1."""
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
        self.loc.copy_(-mean)
        self.logs.copy_(-torch.log(std + 1e-6))
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.init_pending:
            self.initialize(x)
            self.init_pending = False
        y = (x + self.loc) * torch.exp(self.logs)
        return y, _batch_logdet(x.shape[2] * x.shape[3] * self.logs.sum(), x.shape[0])

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-self.logs) - self.loc


class InvConv1x1(nn.Module):
    """Invertible 1x1 convolution: "lu" (W = P·L·(U + diag(sign·exp(log_s)))), "conv" (plain W) or "reverse"."""

    def __init__(self, channels: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.channels = channels
        self._cache: tuple | None = None
        if kind == "reverse":
            return
        w = torch.linalg.qr(torch.randn(channels, channels))[0]
        if kind == "conv":
            self.weight = nn.Parameter(w)
            return
        perm, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("perm", perm)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(torch.abs(s)))

    def _lu_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        eye = torch.eye(self.channels, dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return lower, upper

    def _compute_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, W⁻¹) as (C, C) matrices; W⁻¹ through triangular solves, never a general inverse."""
        if self.kind == "conv":
            return self.weight, torch.linalg.inv(self.weight)
        lower, upper = self._lu_factors()
        weight = self.perm @ lower @ upper
        eye = torch.eye(self.channels, dtype=lower.dtype, device=lower.device)
        lower_inv = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
        upper_inv = torch.linalg.solve_triangular(upper, eye, upper=True)
        return weight, upper_inv @ lower_inv @ self.perm.T

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, W⁻¹), cached while the parameters, dtype and device stay the same and no gradient is needed."""
        if not _use_cache(self):
            return self._compute_weights()
        key = _params_key(self)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, *self._compute_weights())
        return self._cache[1], self._cache[2]

    def log_abs_det(self) -> torch.Tensor:
        """log|det W| (a scalar): Σ log|s| for LU, never a per-step slogdet there."""
        if self.kind == "lu":
            return self.log_s.sum()
        return torch.linalg.slogdet(self.weight)[1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "reverse":
            return x.flip(1), _wide(x.new_zeros(x.shape[0]))
        weight, _ = self.weights()
        y = F.conv2d(x, weight.view(self.channels, self.channels, 1, 1))
        return y, _batch_logdet(x.shape[2] * x.shape[3] * self.log_abs_det(), x.shape[0])

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "reverse":
            return y.flip(1)
        _, weight_inv = self.weights()
        return F.conv2d(y, weight_inv.view(self.channels, self.channels, 1, 1))


class ZeroConv2d(nn.Module):
    """3x3 convolution initialised to output zeros, with a learned per-channel log-scale (×3) as in Glow."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.logs = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.exp(self.logs * 3)


class CouplingNet(nn.Module):
    """The coupling network: conv3x3 → ActNorm → ReLU → conv1x1 → ActNorm → ReLU → ZeroConv3x3."""

    def __init__(self, in_channels: int, out_channels: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.norm1 = ActNorm(width)
        self.conv2 = nn.Conv2d(width, width, 1, bias=False)
        self.norm2 = ActNorm(width)
        self.out = ZeroConv2d(width, out_channels)
        nn.init.normal_(self.conv1.weight, 0.0, 0.05)
        nn.init.normal_(self.conv2.weight, 0.0, 0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x))[0])
        h = F.relu(self.norm2(self.conv2(h))[0])
        return self.out(h)


class Coupling(nn.Module):
    """Coupling layer: the second half of the channels is shifted (and scaled) by a function of the first."""

    def __init__(self, channels: int, width: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.half = channels // 2
        out = 2 * (channels - self.half) if kind == "affine" else channels - self.half
        self.net = CouplingNet(self.half, out, width)

    def _shift_scale(self, xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.net(xa)
        if self.kind == "additive":
            return h, None
        shift, raw = h.chunk(2, dim=1)
        return shift, raw + 2.0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xa, xb = x[:, : self.half], x[:, self.half :]
        shift, raw = self._shift_scale(xa)
        if raw is None:
            return torch.cat([xa, xb + shift], dim=1), _wide(x.new_zeros(x.shape[0]))
        yb = (xb + shift) * torch.sigmoid(raw)
        logdet = F.logsigmoid(_wide(raw)).flatten(1).sum(1)
        return torch.cat([xa, yb], dim=1), logdet

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        ya, yb = y[:, : self.half], y[:, self.half :]
        shift, raw = self._shift_scale(ya)
        if raw is None:
            return torch.cat([ya, yb - shift], dim=1)
        return torch.cat([ya, yb / torch.sigmoid(raw) - shift], dim=1)


class FlowStep(nn.Module):
    """One step of flow: ActNorm → invertible 1x1 convolution → coupling."""

    def __init__(self, channels: int, config: GlowConfig) -> None:
        super().__init__()
        self.norm = ActNorm(channels)
        self.perm = InvConv1x1(channels, config.permutation)
        self.coupling = Coupling(channels, config.width, config.coupling)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, logdet = self.norm(x)
        x, ld = self.perm(x)
        logdet = logdet + ld
        x, ld = self.coupling(x)
        return x, logdet + ld

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        return self.norm.reverse(self.perm.reverse(self.coupling.reverse(y)))


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 block of pixels becomes 4 channels."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """(B, 4C, H, W) -> (B, C, 2H, 2W), the inverse of `squeeze`."""
    b, c, h, w = x.shape
    x = x.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, 2 * h, 2 * w)


class Split(nn.Module):
    """Split off half the channels and standardise them under a prior conditioned on the other half.

    forward: x -> (kept half, ε, logdet) with ε = (z2 − μ(z1))·exp(−log σ(z1)); logdet = −Σ log σ.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.half = channels // 2
        self.prior = ZeroConv2d(self.half, 2 * (channels - self.half))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z1, z2 = x[:, : self.half], x[:, self.half :]
        mean, logs = self.prior(z1).chunk(2, dim=1)
        eps = (z2 - mean) * torch.exp(-logs)
        return z1, eps, -_wide(logs).flatten(1).sum(1)

    def reverse(self, z1: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        mean, logs = self.prior(z1).chunk(2, dim=1)
        return torch.cat([z1, mean + torch.exp(logs) * eps], dim=1)


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
            self.levels.append(nn.ModuleList(FlowStep(channels, config) for _ in range(config.steps)))
            if level < config.levels - 1:
                self.splits.append(Split(channels))
                self.latent_shapes.append((channels - channels // 2, size, size))
                channels = channels // 2
        self.latent_shapes.append((channels, size, size))
        self.memory_saving = "none"  # how training trades compute for memory; not part of the weights
        top = (1, channels, size, size)
        self.top_mean = nn.Parameter(torch.zeros(top), requires_grad=config.learn_top)
        self.top_logs = nn.Parameter(torch.zeros(top), requires_grad=config.learn_top)

    @property
    def latent_dim(self) -> int:
        """D, the length of a latent vector."""
        return self.config.latent_dim

    @property
    def is_initialized(self) -> bool:
        """Whether the data-dependent ActNorm initialisation has run (or was loaded)."""
        return all(bool(m.initialized) for m in self.modules() if isinstance(m, ActNorm))

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

    def _flow(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """x -> (standardised ε of every level, log|det ∂ε/∂x| of shape (B,))."""
        logdet = torch.zeros(x.shape[0], device=x.device, dtype=torch.promote_types(x.dtype, torch.float32))
        eps_list: list[torch.Tensor] = []
        h = x
        for level, steps in enumerate(self.levels):
            h = squeeze(h)
            for step in steps:
                h, ld = self._run_step(step, h)
                logdet = logdet + ld
            if level < len(self.splits):
                h, eps, ld = self.splits[level](h)
                eps_list.append(eps)
                logdet = logdet + ld
        eps_list.append((h - self.top_mean) * torch.exp(-self.top_logs))
        logdet = logdet - _wide(self.top_logs).sum()
        return eps_list, logdet

    def _run_step(self, step: FlowStep, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.memory_saving == "checkpoint" and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(step, h, use_reentrant=False)
        return step(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The training objective's core: `log_prob(x)` (so DDP and torch.compile wrap the model directly)."""
        return self.log_prob(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-0.5, 0.5] -> latents (B, D): every level's ε, flattened, in level order."""
        self._check_input(x)
        eps_list, _ = self._flow(x)
        return torch.cat([e.flatten(1) for e in eps_list], dim=1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, D) -> images (B, 3, H, W); the exact inverse of `encode`, nothing re-sampled."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ConfigError(f"expected latents of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        parts = list(self._unflatten(z))
        h = self.top_mean + torch.exp(self.top_logs) * parts[-1]
        for level in reversed(range(len(self.levels))):
            if level < len(self.splits):
                h = self.splits[level].reverse(h, parts[level])
            for step in reversed(self.levels[level]):
                h = step.reverse(h)
            h = unsqueeze(h)
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

    def bits_per_dim(self, x_uint8: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Bits per dimension (B,) of uint8 images, as in the Glow paper.

        Pixels are reduced to n_bits, dequantised with uniform noise, and the discretisation term
        D·log(2**n_bits) is added: bpd = (−log p(x̃) + D·log n_bins) / (D·log 2).
        """
        dtype = self.top_mean.dtype
        x = dequantize(x_uint8, self.config.n_bits, generator=generator, dtype=dtype)
        return self.bits_per_dim_from_log_prob(self.log_prob(x))

    def bits_per_dim_from_log_prob(self, log_prob: torch.Tensor) -> torch.Tensor:
        """Turn continuous log-densities (nats) of dequantised images into bits per dimension."""
        d = self.latent_dim
        return (-log_prob + d * math.log(n_bins(self.config.n_bits))) / (d * math.log(2.0))

    def preprocess(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> model input: n_bits levels at their bin centres, no noise."""
        return to_float(x_uint8, self.config.n_bits, dtype=self.top_mean.dtype).to(self.top_mean.device)

    def sample(
        self, n: int, *, temperature: float = 0.7, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw n images (n, 3, H, W) as decode(T·ε), ε ~ N(0, I)."""
        eps = torch.randn(n, self.latent_dim, generator=generator, dtype=self.top_mean.dtype)
        return self.decode(temperature * eps.to(self.top_mean.device))


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
