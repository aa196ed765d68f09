"""Polyak averaging: a moving average of the weights, which is what a run saves, validates and samples.

The optimiser keeps stepping its own weights; the average lives beside them and is swapped into the
model only for evaluation and saving (openai/glow does the same), so the optimiser's path is unchanged.
torch.optim.swa_utils.AveragedModel would keep a second model, start from the first step's weights and
count its updates rather than the steps, so its average would differ from the one runs have saved.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from latentlab.errors import TrainingError


class WeightAverage:
    """An exponential moving average of a model's parameters, updated after every optimiser step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = model
        self.decay = decay
        self.average = [p.detach().clone() for p in model.parameters()]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """average ← d·average + (1 − d)·weights, d = min(decay, (1 + step)/(10 + step)).

        In short runs the ramp, not `decay`, sets d (0.999 binds only after step 8991); it weights step j
        about as j⁸, and wider or narrower averages measured no better (BENCHMARKS.md).
        """
        decay = min(self.decay, (1 + step) / (10 + step))
        for avg, p in zip(self.average, self.model.parameters(), strict=True):
            avg.lerp_(p.detach(), 1 - decay)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The model holds the averaged weights inside this block and its own weights again after it."""
        params = list(self.model.parameters())
        with torch.no_grad():
            own = [p.detach().clone() for p in params]
            for p, avg in zip(params, self.average, strict=True):
                p.copy_(avg)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, w in zip(params, own, strict=True):
                    p.copy_(w)

    def own_weights(self) -> dict[str, torch.Tensor]:
        """The optimiser's weights by parameter name (what a resumed run must continue from)."""
        return {name: p.detach() for name, p in self.model.named_parameters()}

    @torch.no_grad()
    def load_own_weights(self, raw: dict[str, torch.Tensor], *, source: Path) -> None:
        """Put saved optimiser weights back into the model (the average came in as the saved model)."""
        params = dict(self.model.named_parameters())
        if set(raw) != set(params):
            raise TrainingError(
                f"the training state in {source} has no optimiser weights for weight averaging "
                "(it was written with --set ema_decay=0); resume with the settings it was started with"
            )
        for name, p in params.items():
            p.copy_(raw[name].to(p.device, p.dtype))


def averaged(average: WeightAverage | None) -> contextlib.AbstractContextManager:
    """`average.swapped_in()`, or nothing to do when the run does not average."""
    return average.swapped_in() if average is not None else contextlib.nullcontext()
