"""The invertible layers Glow is built from: ActNorm, 1x1 convolution, coupling, squeeze and split.

ActNorm, InvConv1x1 and Coupling follow one contract: `forward(x) -> (y, logdet)` with logdet of
shape (B,) in nats, and `reverse(y) -> x`; Split's forward gives (kept half, ε, logdet). Tensors are
NCHW. `latentlab.flow.glow` assembles them into `Glow` and runs them with every ActNorm and scale folded
into the neighbouring convolution.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from latentlab.flow.position_bias import add_position

SCALE_OFFSET = 2.0  # the affine coupling's scale is sigmoid(raw + 2), as in the Glow code
# oneDNN's AVX-512 convolutions work on blocks of 16 channels: 12 or 24 outputs run slower than 16 or 32
CHANNEL_BLOCK = 16


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
            h = add_position(h, self.position)
        h = F.relu_(h)
        h = F.relu_(_conv1x1(h, w2, b2))
        out = F.conv2d(h, w3, b3, padding=1)
        n = self.offsets.shape[0]
        return out if out.shape[1] == n else out[:, :n]  # without the zero rows of `inference_layout`


def _fold_nets(nets: Sequence[CouplingNet], dtype: torch.dtype | None = None) -> list[tuple[torch.Tensor, ...]]:
    """(w1, b1, w2, b2, w3, b3) of each coupling network, with both ActNorms and the output scale folded in.

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
    b3 = torch.exp(3 * logs3) * stack(lambda n: n.out.conv.bias) + nets[0].offsets
    folded = (w1, b1, w2, b2, w3, b3)
    if dtype is not None:
        folded = tuple(t.to(dtype) for t in folded)
    return list(zip(*(t.unbind() for t in folded), strict=True))


def inference_layout(net: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """A coupling network's folded weights laid out for fast inference convolutions (same outputs).

    The output convolution gets zero rows up to a multiple of CHANNEL_BLOCK output channels, which
    `CouplingNet.forward` slices off again, and the 3x3 weights are stored channels-last like the
    activations, so oneDNN does not reorder them on every call. Together +5-15% encode and decode at
    configs A and B (BENCHMARKS.md); no gain in training, so only the cached inference weights use it.
    """
    w1, b1, w2, b2, w3, b3 = net
    extra = -w3.shape[0] % CHANNEL_BLOCK
    if extra:
        w3, b3 = F.pad(w3, (0, 0, 0, 0, 0, 0, 0, extra)), F.pad(b3, (0, extra))
    w1, w3 = (w.contiguous(memory_format=torch.channels_last) for w in (w1, w3))
    return w1, b1, w2, b2, w3, b3


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

    def _update(self, x: torch.Tensor, folded: tuple | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(y, the scale logits or None for additive couplings)."""
        xa, xb = x[:, : self.half], x[:, self.half :]
        shift, raw = self._shift_raw(xa, folded)
        with _exact(x):
            yb = xb + shift if raw is None else (xb + shift) * torch.sigmoid(raw)
            return torch.cat([xa, yb], dim=1), raw

    def forward(self, x: torch.Tensor, folded: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        y, raw = self._update(x, folded)
        if raw is None:
            return y, _wide(x.new_zeros(x.shape[0]))
        with _exact(x):
            return y, F.logsigmoid(raw).flatten(1).sum(1)

    def transform(self, x: torch.Tensor, folded: tuple | None = None) -> torch.Tensor:
        """forward(x)'s y alone: encode does not need the log-det (2-5% of its time)."""
        return self._update(x, folded)[0]

    def reverse(self, y: torch.Tensor, folded: tuple | None = None) -> torch.Tensor:
        ya, yb = y[:, : self.half], y[:, self.half :]
        shift, raw = self._shift_raw(ya, folded)
        with _exact(y):
            if raw is None:
                return torch.cat([ya, yb - shift], dim=1)
            return torch.cat([ya, yb / torch.sigmoid(raw) - shift], dim=1)


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
