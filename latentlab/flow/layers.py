"""The layers of Glow (Kingma & Dhariwal 2018), written as in the paper.

Every invertible layer is an nn.Module with `forward(x) -> (y, logdet)`, logdet of shape (B,) in nats,
and `reverse(y) -> x`; `Split` also returns the standardised half it splits off. Tensors are NCHW.
These modules hold the parameters; `latentlab.flow.fast` runs the same functions of the same
parameters faster (ActNorms and scales folded into convolutions, cached inference weights,
channels-last activations), and a test proves the two paths agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SCALE_OFFSET = 2.0  # the affine coupling's scale is sigmoid(raw + 2), as in the Glow code


def _per_sample(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A log-det that is the same for every sample (a scalar), as shape (B,)."""
    return value.expand(x.shape[0])


class ActNorm(nn.Module):
    """Per-channel affine normalisation y = (x + loc)·exp(logs), initialised from data by `initialize`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set loc and logs so that x (B, C, H, W) gets per-channel mean 0 and std 1."""
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
        self.loc.copy_(-mean)
        self.logs.copy_(-torch.log(std + 1e-6))
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = (x + self.loc) * torch.exp(self.logs)  # (B, C, H, W)
        height, width = x.shape[2:]
        return y, _per_sample(height * width * self.logs.sum(), x)

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-self.logs) - self.loc


def _random_rotation(channels: int) -> torch.Tensor:
    """A random orthogonal (C, C) matrix, the paper's initial W."""
    return torch.linalg.qr(torch.randn(channels, channels))[0]


class _InvertibleMix(nn.Module):
    """y = W·x at every pixel (a 1x1 convolution); subclasses say how W is parametrised."""

    def matrix(self) -> torch.Tensor:
        """W, (C, C)."""
        raise NotImplementedError

    def log_abs_det(self) -> torch.Tensor:
        """log|det W|, a scalar."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = F.conv2d(x, self.matrix()[:, :, None, None])  # (B, C, H, W)
        height, width = x.shape[2:]
        return y, _per_sample(height * width * self.log_abs_det(), x)

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        return F.conv2d(y, torch.linalg.inv(self.matrix())[:, :, None, None])


class InvConv1x1(_InvertibleMix):
    """Invertible 1x1 convolution with W itself the parameter."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(_random_rotation(channels))

    def matrix(self) -> torch.Tensor:
        return self.weight

    def log_abs_det(self) -> torch.Tensor:
        return torch.linalg.slogdet(self.weight)[1]


class InvConv1x1LU(_InvertibleMix):
    """Invertible 1x1 convolution with W = P·L·(U + diag(sign·exp(log_s))), so log|det W| = Σ log_s.

    P (a permutation) and sign stay fixed; L is unit lower triangular and U strictly upper triangular.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        perm, lower, upper = torch.linalg.lu(_random_rotation(channels))
        s = torch.diagonal(upper)
        self.register_buffer("perm", perm)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(torch.abs(s)))

    def matrix(self) -> torch.Tensor:
        eye = torch.eye(self.lower.shape[0], dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.perm @ lower @ upper

    def log_abs_det(self) -> torch.Tensor:
        return self.log_s.sum()


class Reverse(nn.Module):
    """The fixed permutation that reverses the order of the channels (log-det 0), the paper's baseline."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.flip(1), x.new_zeros(x.shape[0])

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.flip(1)


def permutation(kind: str, channels: int) -> nn.Module:
    """The channel mixing of a flow step: "lu", "conv" (a plain W) or "reverse"."""
    return {"lu": InvConv1x1LU, "conv": InvConv1x1, "reverse": Reverse}[kind](channels)


class ZeroConv2d(nn.Module):
    """3x3 convolution initialised to output zeros, its output scaled by exp(3·logs) per channel, as in Glow."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.logs = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.exp(self.logs * 3)


class CouplingNet(nn.Module):
    """The coupling network NN(): conv3x3 → ActNorm → ReLU → conv1x1 → ActNorm → ReLU → ZeroConv2d.

    With `size`, a learned bias per position and hidden channel is added before the first ReLU, so the
    network knows where in the (size × size) image it is: aligned faces put eyes and mouth in fixed places.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int, *, size: int = 0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.position = nn.Parameter(torch.zeros(1, width, size, size)) if size else None
        self.norm1 = ActNorm(width)
        self.conv2 = nn.Conv2d(width, width, 1, bias=False)
        self.norm2 = ActNorm(width)
        self.out = ZeroConv2d(width, out_channels)
        nn.init.normal_(self.conv1.weight, 0.0, 0.05)
        nn.init.normal_(self.conv2.weight, 0.0, 0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(self.conv1(x))[0]  # (B, width, H, W)
        if self.position is not None:
            h = h + self.position
        h = F.relu(h)
        h = F.relu(self.norm2(self.conv2(h))[0])
        return self.out(h)  # (B, out_channels, H, W)


class Coupling(nn.Module):
    """Affine coupling: x = (xa, xb); (shift, raw) = NN(xa); yb = (xb + shift)·sigmoid(raw + 2).

    "additive" couplings have no scale: yb = xb + NN(xa), volume preserving.
    """

    def __init__(self, channels: int, width: int, kind: str, *, size: int = 0) -> None:
        super().__init__()
        self.kind = kind
        self.half = channels // 2
        out = 2 * (channels - self.half) if kind == "affine" else channels - self.half
        self.net = CouplingNet(self.half, out, width, size=size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xa, xb = x[:, : self.half], x[:, self.half :]  # (B, C/2, H, W) each
        h = self.net(xa)  # (B, C, H, W) affine: shift and raw; (B, C/2, H, W) additive
        if self.kind == "additive":
            return torch.cat([xa, xb + h], dim=1), x.new_zeros(x.shape[0])
        shift, raw = h.chunk(2, dim=1)
        scale = torch.sigmoid(raw + SCALE_OFFSET)
        logdet = F.logsigmoid(raw + SCALE_OFFSET).flatten(1).sum(1)  # Σ log scale
        return torch.cat([xa, (xb + shift) * scale], dim=1), logdet

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        ya, yb = y[:, : self.half], y[:, self.half :]
        h = self.net(ya)
        if self.kind == "additive":
            return torch.cat([ya, yb - h], dim=1)
        shift, raw = h.chunk(2, dim=1)
        return torch.cat([ya, yb / torch.sigmoid(raw + SCALE_OFFSET) - shift], dim=1)


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 block of pixels becomes 4 channels."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """(B, 4C, H, W) -> (B, C, 2H, 2W), the inverse of `squeeze`."""
    b, c, h, w = x.shape
    x = x.view(b, c // 4, 2, 2, h, w)
    return x.permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, 2 * h, 2 * w)


class Split(nn.Module):
    """Split off half the channels and standardise them under a prior conditioned on the other half.

    forward: x -> (z1, ε, logdet) with (μ, log σ) = prior(z1), ε = (z2 − μ)·exp(−log σ) and
    logdet = −Σ log σ; reverse(z1, ε) = (z1, μ + exp(log σ)·ε). The prior is Glow's ZeroConv2d, or
    with `width` a coupling-style network (half of all dimensions leave at the first split: a nonlinear
    prior models them better per step), with position biases given `size`.
    """

    def __init__(self, channels: int, width: int = 0, *, size: int = 0) -> None:
        super().__init__()
        self.half = channels // 2
        out = 2 * (channels - self.half)
        self.prior: nn.Module = CouplingNet(self.half, out, width, size=size) if width else ZeroConv2d(self.half, out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z1, z2 = x[:, : self.half], x[:, self.half :]  # (B, C/2, H, W) each
        mean, logs = self.prior(z1).chunk(2, dim=1)  # each shaped as z2
        eps = (z2 - mean) * torch.exp(-logs)
        return z1, eps, -logs.flatten(1).sum(1)

    def reverse(self, z1: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        mean, logs = self.prior(z1).chunk(2, dim=1)
        return torch.cat([z1, mean + torch.exp(logs) * eps], dim=1)
