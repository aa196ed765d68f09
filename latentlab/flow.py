"""The Glow flow, bottom-up: ActNorm, invertible 1x1 convolution, couplings, squeeze, split, and `Glow`.

Every layer follows one contract: `forward(x) -> (y, logdet)` with logdet of shape (B,) in nats,
and `reverse(y) -> x`. Tensors are NCHW. The latent of an image is the concatenation of every
level's standardised ε (Kingma & Dhariwal 2018, with the split priors folded into the flow), so
`log_prob(x) = log N(encode(x); 0, I) + log|det ∂encode/∂x|` holds exactly.

Speed (measured in BENCHMARKS.md): every ActNorm and scale is folded into the convolution next to
it, in training too (the folded form is the same function of the same parameters); the folded
weights of a level's K steps are computed in one batch of small tensor ops (`fold_steps`), and in
eval mode with no gradient once, then cached; activations are channels-last.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from latentlab.config import GlowConfig
from latentlab.errors import ConfigError
from latentlab.quantize import dequantize, n_bins, to_float

LOG_2PI = math.log(2 * math.pi)
SCALE_OFFSET = 2.0  # the affine coupling's scale is sigmoid(raw + 2), as in the Glow code
# oneDNN's convolutions (and their backward) run 1.2-1.6x faster on NHWC activations at these shapes
ACTIVATIONS = torch.channels_last
# A saturating decode (`Glow.decode(z, saturate=True)`, used for edits, paths and samples) holds every
# activation within ±SATURATION. Real images stay below ~10 at every layer (trained toy and CelebA
# models: 8.4 and 7.7), so their decode is unchanged, bit for bit; a latent far off the data, whose
# exact inverse overflows to inf and NaN through the expanding reverse couplings, gives saturated
# (visibly broken) pixels where it went too far instead of a NaN image.
SATURATION = 1e3


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


def _exact(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Keep the invertible trunk (1x1 mixing, affine updates, weight folding) out of autocast.

    Only the coupling networks and priors run in bf16 under autocast; what must be inverted stays in
    float32, so decode(encode(x)) and the invertible memory saving stay exact.
    """
    if torch.is_autocast_enabled(x.device.type):
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()


def _unchanged(h: torch.Tensor) -> torch.Tensor:
    return h


def _saturate(h: torch.Tensor) -> torch.Tensor:
    """h with inf clipped to ±SATURATION, NaN (0/0 or inf−inf of an overflowed inverse) set to 0, all within it."""
    return torch.nan_to_num(h, nan=0.0, posinf=SATURATION, neginf=-SATURATION).clamp_(-SATURATION, SATURATION)


def _conv1x1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1x1 convolution with a (C_out, C_in) matrix; at inference a GEMM over channels-last pixels.

    The GEMM is ~7% faster for encode, but in training oneDNN's convolution with its backward is ~15%
    faster than the GEMM's, so training keeps the convolution.
    """
    if not torch.is_grad_enabled() and x.is_contiguous(memory_format=torch.channels_last):
        return F.linear(x.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)
    return F.conv2d(x, weight[:, :, None, None], bias)


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

    def weights(self, like: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, W⁻¹) as (C, C) matrices in the dtype and device of `like` (the layer's own by default).

        Cached while the parameters, dtype and device stay the same and no gradient is needed.
        """
        if like is None:
            like = next(iter([*self.parameters(), *self.buffers()]), torch.empty(0))
        if not _use_cache(self):
            return _invconv_matrices([self], like, inverse=False)[0], _invconv_matrices([self], like, inverse=True)[0]
        key = (*_params_key(self), like.dtype, like.device)
        if self._cache is None or self._cache[0] != key:
            inverse = (_invconv_matrices([self], like, inverse=i)[0] for i in (False, True))
            self._cache = (key, *inverse)
        return self._cache[1], self._cache[2]

    def log_abs_det(self) -> torch.Tensor:
        """log|det W| (a scalar): Σ log|s| for LU, never a per-step slogdet there."""
        return _log_abs_dets([self], torch.zeros(()))[0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "reverse":
            return x.flip(1), _wide(x.new_zeros(x.shape[0]))
        weight = self.weights(x)[0] if _use_cache(self) else _invconv_matrices([self], x, inverse=False)[0]
        y = _conv1x1(x, weight, None)
        return y, _batch_logdet(x.shape[2] * x.shape[3] * self.log_abs_det(), x.shape[0])

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "reverse":
            return y.flip(1)
        weight_inv = self.weights(y)[1] if _use_cache(self) else _invconv_matrices([self], y, inverse=True)[0]
        return _conv1x1(y, weight_inv, None)


def _invconv_matrices(convs: Sequence[InvConv1x1], like: torch.Tensor, *, inverse: bool) -> torch.Tensor:
    """W (or W⁻¹) of each convolution as (K, C, C), differentiable; W⁻¹ by triangular solves for LU."""
    first, k, c = convs[0], len(convs), convs[0].channels
    eye = torch.eye(c, dtype=like.dtype, device=like.device)
    if first.kind == "reverse":
        return eye.flip(0).expand(k, c, c)
    if first.kind == "conv":
        weight = torch.stack([m.weight for m in convs])
        return torch.linalg.inv(weight) if inverse else weight
    lower = torch.stack([m.lower for m in convs]) * first.lower_mask + eye
    diag = torch.stack([m.sign_s for m in convs]) * torch.exp(torch.stack([m.log_s for m in convs]))
    upper = torch.stack([m.upper for m in convs]) * first.lower_mask.T + torch.diag_embed(diag)
    perm = torch.stack([m.perm for m in convs])
    if not inverse:
        return perm @ lower @ upper
    lower_inv = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
    upper_inv = torch.linalg.solve_triangular(upper, eye, upper=True)
    return upper_inv @ lower_inv @ perm.mT


def _log_abs_dets(convs: Sequence[InvConv1x1], like: torch.Tensor) -> torch.Tensor:
    """log|det W| of each convolution, (K,)."""
    if convs[0].kind == "lu":
        return torch.stack([c.log_s for c in convs]).sum(1)
    if convs[0].kind == "conv":
        return torch.linalg.slogdet(torch.stack([c.weight for c in convs]))[1]
    return like.new_zeros(len(convs))


class ZeroConv2d(nn.Module):
    """3x3 convolution initialised to output zeros, with a learned per-channel log-scale (×3) as in Glow."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.logs = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.exp(self.logs * 3).flatten()  # folded: conv(x)·s is the convolution with weights ·s
        return F.conv2d(x, self.conv.weight * scale[:, None, None, None], self.conv.bias * scale, padding=1)


class CouplingNet(nn.Module):
    """The coupling network: conv3x3 → ActNorm → ReLU → conv1x1 → ActNorm → ReLU → ZeroConv3x3 (+ offsets).

    With `size`, a learned bias per position and hidden channel is added before the first ReLU, so the
    network knows where in the (size × size) image it is: aligned faces put eyes and mouth in fixed places.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int, *, offset: float = 0.0, size: int = 0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.position = nn.Parameter(torch.zeros(1, width, size, size)) if size else None
        self.norm1 = ActNorm(width)
        self.conv2 = nn.Conv2d(width, width, 1, bias=False)
        self.norm2 = ActNorm(width)
        self.out = ZeroConv2d(width, out_channels)
        offsets = torch.zeros(out_channels)  # added to the second half of the outputs (the scale logits)
        offsets[out_channels // 2 :] = offset
        self.register_buffer("offsets", offsets, persistent=False)  # fixed by the coupling kind: not saved
        nn.init.normal_(self.conv1.weight, 0.0, 0.05)
        nn.init.normal_(self.conv2.weight, 0.0, 0.05)

    def forward(self, x: torch.Tensor, folded: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """x (B, C_in, H, W) -> (B, C_out, H, W); `folded` are this net's weights from `fold_steps`."""
        if self.norm1.init_pending or self.norm2.init_pending:  # data-dependent init sees the unfolded net
            h = self.norm1(self.conv1(x))[0]
            h = F.relu(h if self.position is None else h + self.position)
            h = F.relu(self.norm2(self.conv2(h))[0])
            return self.out(h) + self.offsets[:, None, None]
        w1, b1, w2, b2, w3, b3 = folded if folded is not None else _fold_nets([self])[0]
        h = F.conv2d(x, w1, b1, padding=1)
        if self.position is not None:
            h = _add_position(h, self.position)
        h = F.relu_(h)
        h = F.relu_(_conv1x1(h, w2, b2))
        return F.conv2d(h, w3, b3, padding=1)


def _add_position(h: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """h + position (1, C, H, W), in place on h so it keeps the convolution's channels-last layout."""
    if torch.is_grad_enabled() and (h.requires_grad or position.requires_grad):
        return _AddPosition.apply(h, position)
    return h.add_(position)


class _AddPosition(torch.autograd.Function):
    """In-place h += position whose backward sums the gradient over the batch as a flat (B, H·W·C) array.

    Autograd's own sum over the batch of a channels-last gradient takes ~15x longer here (0.7 ms against
    0.05 ms at 16x128x16x16): a tenth of a training step once every coupling has a position bias.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        ctx.mark_dirty(h)
        return h.add_(position)

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


class Coupling(nn.Module):
    """Coupling layer: the second half of the channels is shifted (and scaled) by a function of the first."""

    def __init__(self, channels: int, width: int, kind: str, *, size: int = 0) -> None:
        super().__init__()
        self.kind = kind
        self.half = channels // 2
        out = 2 * (channels - self.half) if kind == "affine" else channels - self.half
        offset = SCALE_OFFSET if kind == "affine" else 0.0
        self.net = CouplingNet(self.half, out, width, offset=offset, size=size)

    def _shift_raw(self, xa: torch.Tensor, folded: tuple | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = _wide(self.net(xa, folded))
        return (h, None) if self.kind == "additive" else h.chunk(2, dim=1)

    def forward(self, x: torch.Tensor, folded: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        xa, xb = x[:, : self.half], x[:, self.half :]
        shift, raw = self._shift_raw(xa, folded)
        with _exact(x):
            if raw is None:
                return torch.cat([xa, xb + shift], dim=1), _wide(x.new_zeros(x.shape[0]))
            yb = (xb + shift) * torch.sigmoid(raw)
            return torch.cat([xa, yb], dim=1), F.logsigmoid(raw).flatten(1).sum(1)

    def reverse(self, y: torch.Tensor, folded: tuple | None = None) -> torch.Tensor:
        ya, yb = y[:, : self.half], y[:, self.half :]
        shift, raw = self._shift_raw(ya, folded)
        with _exact(y):
            if raw is None:
                return torch.cat([ya, yb - shift], dim=1)
            return torch.cat([ya, yb / torch.sigmoid(raw) - shift], dim=1)


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
        key = (*_params_key(self), like.dtype, like.device)
        cached = self._cache.get(reverse)
        if cached is None or cached[0] != key:
            cached = self._cache[reverse] = (key, fold_steps([self], like, reverse=reverse)[0])
        return cached[1]

    def apply_folded(self, x: torch.Tensor, folded: Folded) -> tuple[torch.Tensor, torch.Tensor]:
        """forward(x) with given folded weights; the log-det returned is the coupling's only."""
        with _exact(x):
            h = _conv1x1(x, *folded.mix)
        return self.coupling(h, folded.net)

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
        nets = _fold_nets([s.coupling.net for s in steps])
        per_pixel = (logs.sum(1) + _log_abs_dets(convs, like).to(logs)).unbind()
        mixes = zip(mix_w.unbind(), mix_b.unbind(), strict=True)
        return [Folded(m, n, ld) for m, n, ld in zip(mixes, nets, per_pixel, strict=True)]


def _fold_nets(nets: Sequence[CouplingNet]) -> list[tuple[torch.Tensor, ...]]:
    """(w1, b1, w2, b2, w3, b3) of each coupling network, with both ActNorms and the output scale folded in."""

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
    b3 = torch.exp(3 * logs3) * stack(lambda n: n.out.conv.bias) + nets[0].offsets
    return list(zip(w1.unbind(), b1.unbind(), w2.unbind(), b2.unbind(), w3.unbind(), b3.unbind(), strict=True))


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


def squeeze(x: torch.Tensor, memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 block of pixels becomes 4 channels (one copy)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2)
    if memory_format == torch.channels_last:
        return x.permute(0, 2, 4, 1, 3, 5).reshape(b, h // 2, w // 2, 4 * c).permute(0, 3, 1, 2)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(x: torch.Tensor, memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """(B, 4C, H, W) -> (B, C, 2H, 2W), the inverse of `squeeze` (one copy)."""
    b, c, h, w = x.shape
    x = x.view(b, c // 4, 2, 2, h, w)
    if memory_format == torch.channels_last:
        return x.permute(0, 4, 2, 5, 3, 1).reshape(b, 2 * h, 2 * w, c // 4).permute(0, 3, 1, 2)
    return x.permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, 2 * h, 2 * w)


class Split(nn.Module):
    """Split off half the channels and standardise them under a prior conditioned on the other half.

    forward: x -> (kept half, ε, logdet) with ε = (z2 − μ(z1))·exp(−log σ(z1)); logdet = −Σ log σ.
    The prior is Glow's zero-initialised 3x3 convolution, or with `width` a coupling-style network
    (half of all dimensions leave at the first split: a nonlinear prior models them better per step).
    With `size`, the prior network gets position biases as the coupling networks do (a bias on μ and
    log σ per position measured no better: BENCHMARKS.md).
    """

    def __init__(self, channels: int, width: int = 0, *, size: int = 0) -> None:
        super().__init__()
        self.half = channels // 2
        out = 2 * (channels - self.half)
        self.prior: nn.Module = CouplingNet(self.half, out, width, size=size) if width else ZeroConv2d(self.half, out)

    def _mean_logs(self, z1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _wide(self.prior(z1)).chunk(2, dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z1, z2 = x[:, : self.half], x[:, self.half :]
        mean, logs = self._mean_logs(z1)
        with _exact(x):
            eps = (z2 - mean) * torch.exp(-logs)
        return z1, eps, -logs.flatten(1).sum(1)

    def reverse(self, z1: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        mean, logs = self._mean_logs(z1)
        with _exact(z1):
            return torch.cat([z1, mean + torch.exp(logs) * eps], dim=1)


class _InvertibleSteps(torch.autograd.Function):
    """Run a level's flow steps keeping only the output; backward rebuilds each step's input by inversion.

    Forward runs without a graph. Backward walks the steps from the last: x = step⁻¹(y) (no graph),
    then step(x) again with a graph for that one step, back-propagated at once. Activation memory is
    one step's, whatever the depth (as in Gomez et al. 2017, "The Reversible Residual Network").
    Inputs: the steps, x, then every step's parameters (so autograd routes their gradients here).
    """

    @staticmethod
    def forward(ctx, steps: nn.ModuleList, x: torch.Tensor, *params: torch.Tensor):
        ctx.steps = steps
        ctx.autocast = torch.is_autocast_enabled(x.device.type), torch.get_autocast_dtype(x.device.type)
        logdet = None
        with torch.no_grad():
            for step in steps:
                x, ld = step(x)
                logdet = ld if logdet is None else logdet + ld
        ctx.save_for_backward(x)
        return x, logdet

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor, grad_logdet: torch.Tensor):
        (y,) = ctx.saved_tensors
        enabled, dtype = ctx.autocast
        grads: dict[nn.Parameter, torch.Tensor | None] = {}
        for i in reversed(range(len(ctx.steps))):
            step = ctx.steps[i]
            with torch.no_grad(), torch.autocast(y.device.type, dtype=dtype, enabled=enabled):
                x = step.reverse(y)  # the coupling networks run as in forward, so this is the exact inverse
            needs_x = i > 0 or ctx.needs_input_grad[1]
            x = x.detach().requires_grad_(needs_x)
            params = _trainable([step])
            with torch.enable_grad(), torch.autocast(y.device.type, dtype=dtype, enabled=enabled):
                y_again, logdet = step(x)
            outs, grad_outs = [y_again], [grad_y]
            if logdet.requires_grad:  # (an additive step's log-det is a constant)
                outs.append(logdet)
                grad_outs.append(grad_logdet)
            got = torch.autograd.grad(outs, [x, *params] if needs_x else params, grad_outs, allow_unused=True)
            if needs_x:
                grad_y, got = got[0], got[1:]
            grads.update(zip(params, got, strict=True))
            y = x.detach()
        param_grads = [grads[p] for p in _trainable(ctx.steps)]
        return None, grad_y if ctx.needs_input_grad[1] else None, *param_grads


def _trainable(steps: Sequence[nn.Module]) -> list[nn.Parameter]:
    return [p for step in steps for p in step.parameters() if p.requires_grad]


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

    def _flow(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """x -> (standardised ε of every level, log|det ∂ε/∂x| of shape (B,))."""
        logdet = torch.zeros(x.shape[0], device=x.device, dtype=torch.promote_types(x.dtype, torch.float32))
        eps_list: list[torch.Tensor] = []
        h = x
        for level, steps in enumerate(self.levels):
            h, ld = self._run_level(steps, squeeze(h, ACTIVATIONS))
            logdet = logdet + ld
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
            return _InvertibleSteps.apply(steps, h, *_trainable(steps))
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
        """The training objective's core: `log_prob(x)` (so DDP and torch.compile wrap the model directly)."""
        return self.log_prob(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-0.5, 0.5] -> latents (B, D): every level's ε, flattened, in level order."""
        self._check_input(x)
        eps_list, _ = self._flow(x)
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
