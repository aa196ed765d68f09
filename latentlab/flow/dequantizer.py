"""Variational dequantisation (Ho et al. 2019, "Flow++"): learned noise inside each pixel's bin.

Glow trains and scores log p(x_k + u) with u uniform in each n_bits bin: a bound on the discrete
log-likelihood that is loose wherever the model's density is not flat across a bin. A dequantiser
draws u from a learned q(u | x_k) instead, and the objective becomes log p(x_k + u) − log q(u | x_k),
a bound on the same discrete log-likelihood (uniform q gives Glow's). Here u = sigmoid(f(logit(u₀)))
with u₀ uniform and f a few affine couplings whose networks also see the image's bins. f starts as
the identity (zero-initialised outputs, scales 2·sigmoid(0) = 1), so a new model starts as Glow's.

Only training and scoring use it: encode, decode and sampling work on bin centres as before.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from latentlab.flow.fast import squeeze, unsqueeze
from latentlab.flow.precision import exact, wide

CHANNELS = 12  # the noise of a 3-channel image, squeezed: every 2x2 block of pixels as channels
HALF = CHANNELS // 2  # each coupling updates one half from the other
# channels-last activations, as in the flow: its networks' forward and backward run faster (BENCHMARKS.md)
LAYOUT = torch.channels_last


def _log_logistic_density(e: torch.Tensor) -> torch.Tensor:
    """Σ log σ'(e) per sample: the standard logistic log-density, and the log-derivative of sigmoid."""
    return -(F.softplus(e) + F.softplus(-e)).flatten(1).sum(1)


def _zero_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class Dequantizer(nn.Module):
    """q(u | bins): `steps` conditional affine couplings on the squeezed logistic noise, `width` channels."""

    def __init__(self, n_bits: int, steps: int, width: int) -> None:
        super().__init__()
        self.bins = 2**n_bits
        # features of the image's bins, shared by every coupling: two 3x3 layers (a 5x5 view at H/2)
        self.features = nn.Sequential(
            nn.Conv2d(CHANNELS, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.couplings = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(HALF + width, width, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 1),
                nn.ReLU(inplace=True),
                _zero_conv(width, 2 * HALF),  # (shift, scale logit) of the other half: zero, the identity
            )
            for _ in range(steps)
        )

    def forward(self, bins: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """bins (B, 3, H, W) integer levels, noise u₀ (B, 3, H, W) uniform in [0, 1) ->
        (dequantised image (bins + u)/n_bins − 0.5, log q(u | bins) (B,) in nats)."""
        with exact(noise):
            e = squeeze(torch.logit(noise.clamp(1e-6, 1 - 1e-6)), LAYOUT)  # standard logistic noise
            log_q = _log_logistic_density(wide(e))
        context = self.features(squeeze(bins / self.bins - 0.5, LAYOUT).to(e.dtype))
        for net in self.couplings:
            a, b = e[:, :HALF], e[:, HALF:]
            shift, raw = wide(net(torch.cat([a, context.to(a.dtype)], dim=1))).chunk(2, dim=1)
            with exact(e):
                log_scale = math.log(2.0) + F.logsigmoid(raw)  # scales in (0, 2), 1 at the start
                e = torch.cat([(b + shift) * torch.exp(log_scale), a], dim=1)
                log_q = log_q - log_scale.flatten(1).sum(1)
        with exact(e):
            log_q = log_q - _log_logistic_density(wide(e))
            u = unsqueeze(torch.sigmoid(e), torch.contiguous_format)
            return (bins + u) / self.bins - 0.5, log_q
