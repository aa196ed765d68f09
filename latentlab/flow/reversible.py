"""Memory-saving training by inversion: a level's flow steps keep only their output for backward.

`Glow(..).memory_saving = "invertible"` runs each level through `InvertibleSteps`, so activation memory
no longer grows with the depth K (BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

Step = Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Reverse = Callable[[nn.Module, torch.Tensor], torch.Tensor]


class InvertibleSteps(torch.autograd.Function):
    """Run a level's flow steps keeping only the output; backward rebuilds each step's input by inversion.

    Forward runs without a graph. Backward walks the steps from the last: x = step⁻¹(y) (no graph),
    then step(x) again with a graph for that one step, back-propagated at once. Activation memory is
    one step's, whatever the depth (as in Gomez et al. 2017, "The Reversible Residual Network").
    Inputs: the steps, how to run one step forward, `forward(step, x) -> (y, logdet)`, and in reverse,
    `reverse(step, y) -> x`, then x, then every step's parameters (so autograd routes their gradients here).
    """

    @staticmethod
    def forward(ctx, steps: nn.ModuleList, forward: Step, reverse: Reverse, x: torch.Tensor, *params: torch.Tensor):
        ctx.steps, ctx.step_forward, ctx.step_reverse = steps, forward, reverse
        ctx.autocast = torch.is_autocast_enabled(x.device.type), torch.get_autocast_dtype(x.device.type)
        logdet = None
        with torch.no_grad():
            for step in steps:
                x, ld = forward(step, x)
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
                x = ctx.step_reverse(step, y)  # the coupling networks run as in forward, so this is the exact inverse
            needs_x = i > 0 or ctx.needs_input_grad[3]
            x = x.detach().requires_grad_(needs_x)
            params = trainable([step])
            with torch.enable_grad(), torch.autocast(y.device.type, dtype=dtype, enabled=enabled):
                y_again, logdet = ctx.step_forward(step, x)
            outs, grad_outs = [y_again], [grad_y]
            if logdet.requires_grad:  # (an additive step's log-det is a constant)
                outs.append(logdet)
                grad_outs.append(grad_logdet)
            got = torch.autograd.grad(outs, [x, *params] if needs_x else params, grad_outs, allow_unused=True)
            if needs_x:
                grad_y, got = got[0], got[1:]
            grads.update(zip(params, got, strict=True))
            y = x.detach()
        param_grads = [grads[p] for p in trainable(ctx.steps)]
        return None, None, None, grad_y if ctx.needs_input_grad[3] else None, *param_grads


def trainable(steps: Sequence[nn.Module]) -> list[nn.Parameter]:
    """The parameters of `steps` that take gradients, in a fixed order (the autograd inputs)."""
    return [p for step in steps for p in step.parameters() if p.requires_grad]
