"""Adam without torch.optim: the same update in torch's fused kernel, without importing torch._dynamo.

Building or stepping any torch.optim optimiser imports torch._dynamo (about 70 MB resident and a
second of start-up on a CPU), which is a third of config A's training memory. This optimiser does
the same maths and keeps torch.optim.Adam's state_dict layout, so training states save and resume
exactly as before (states written by torch.optim.Adam load too).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

STATE_KEYS = ("step", "exp_avg", "exp_avg_sq")


def adam_update_(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: int,
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
) -> None:
    """One Adam update of `param` in place (Kingma & Ba, with bias correction); `step` counts from 1.

    m ← β1·m + (1−β1)·g,  v ← β2·v + (1−β2)·g²,  p ← p − lr/(1−β1^t) · m / (√v/√(1−β2^t) + ε).
    The reference for the fused kernel, and the path on devices that have none.
    """
    beta1, beta2 = betas
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**step)).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**step))


def _has_fused_kernel(device: torch.device) -> bool:
    return device.type in ("cpu", "cuda") and hasattr(torch, "_fused_adam_")


class Adam:
    """Adam over one group of parameters, with torch.optim.Adam's defaults and state_dict format.

    `param_groups[0]["lr"]` may be changed between steps (the trainer's schedule does). Parameters
    without a gradient are skipped, as torch.optim does.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if not (lr >= 0 and eps >= 0 and all(0 <= b < 1 for b in betas)):
            raise ValueError(f"invalid Adam settings lr={lr}, betas={betas}, eps={eps}")
        self.params = list(params)
        self.param_groups: list[dict[str, Any]] = [
            {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": 0.0, "params": self.params}
        ]
        self.state: dict[int, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop (or zero) every parameter's gradient."""
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.zero_()

    def _state(self, index: int, p: torch.Tensor) -> dict[str, torch.Tensor]:
        state = self.state.get(index)
        if state is None:
            state = self.state[index] = {
                "step": torch.zeros((), dtype=torch.float32, device=p.device),
                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            }
        return state

    @torch.no_grad()
    def step(self) -> None:
        """Update every parameter that has a gradient: one fused kernel per device and dtype."""
        group = self.param_groups[0]
        lr, betas, eps = float(group["lr"]), tuple(group["betas"]), float(group["eps"])
        buckets: dict[tuple[torch.device, torch.dtype], list[tuple[torch.Tensor, dict[str, torch.Tensor]]]] = {}
        for index, p in enumerate(self.params):
            if p.grad is not None:
                buckets.setdefault((p.device, p.dtype), []).append((p, self._state(index, p)))
        for (device, _), entries in buckets.items():
            params = [p for p, _ in entries]
            grads = [p.grad for p in params]
            exp_avgs = [s["exp_avg"] for _, s in entries]
            exp_avg_sqs = [s["exp_avg_sq"] for _, s in entries]
            steps = [s["step"] for _, s in entries]
            for s in steps:
                s.add_(1)
            if _has_fused_kernel(device):
                torch._fused_adam_(
                    params, grads, exp_avgs, exp_avg_sqs, [], steps,
                    lr=lr, beta1=betas[0], beta2=betas[1], weight_decay=0.0, eps=eps,
                    amsgrad=False, maximize=False,
                )  # fmt: skip
                continue
            for p, g, m, v, t in zip(params, grads, exp_avgs, exp_avg_sqs, steps, strict=True):
                adam_update_(p, g, m, v, int(t.item()), lr=lr, betas=betas, eps=eps)

    def state_dict(self) -> dict[str, Any]:
        """torch.optim.Adam's layout: per-parameter state by index, and the group's settings."""
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        group.update(amsgrad=False, maximize=False, params=list(range(len(self.params))))
        return {"state": {i: dict(s) for i, s in self.state.items()}, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state from `state_dict` (ours or torch.optim.Adam's); ValueError if it does not fit."""
        groups = state_dict["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise ValueError(
                f"the state has {sum(len(g['params']) for g in groups)} parameters, the model {len(self.params)}"
            )
        if groups[0].get("amsgrad") or groups[0].get("weight_decay") or groups[0].get("maximize"):
            raise ValueError(
                "the state was written with amsgrad, weight decay or maximize, which this Adam does not do"
            )
        by_position = dict(zip(groups[0]["params"], range(len(self.params)), strict=True))
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, entry in state_dict["state"].items():
            index = by_position.get(int(key))
            if index is None or set(entry) != set(STATE_KEYS):
                raise ValueError(f"unexpected state entry {key!r} with keys {sorted(entry)}")
            p = self.params[index]
            if tuple(entry["exp_avg"].shape) != tuple(p.shape) or tuple(entry["exp_avg_sq"].shape) != tuple(p.shape):
                raise ValueError(
                    f"the state of parameter {index} has shape {tuple(entry['exp_avg'].shape)}, not {tuple(p.shape)}"
                )
            state[index] = {
                "step": torch.as_tensor(entry["step"]).to(p.device, torch.float32, copy=True).reshape(()),
                "exp_avg": entry["exp_avg"].to(p.device, p.dtype, copy=True),  # copies, as torch.optim makes
                "exp_avg_sq": entry["exp_avg_sq"].to(p.device, p.dtype, copy=True),
            }
        self.state = state
        self.param_groups[0].update(
            lr=float(groups[0]["lr"]), betas=tuple(groups[0]["betas"]), eps=float(groups[0]["eps"])
        )
