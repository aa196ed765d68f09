"""The optimiser: torch.optim.Adam as the trainer builds it, and its state flattened for the training state file.

The state layout is torch.optim.Adam's state_dict: per-parameter `step`, `exp_avg` and `exp_avg_sq`, and one
parameter group. Runs saved by latentlab's former hand-written Adam used the same layout with fewer group
settings, so they resume as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from latentlab.errors import CheckpointError

# how torch.optim.Adam computes, not what it has learned: a resumed run keeps the choice of the process that
# resumes it (states written before latentlab used torch.optim.Adam have none of these settings)
_IMPLEMENTATION_KEYS = ("foreach", "fused", "capturable", "differentiable")


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten an optimiser state_dict into named tensors plus JSON-able scalars."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for pid, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                scalars["state"].setdefault(str(pid), {})[key] = value
    return tensors, scalars


def restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]
) -> None:
    """Inverse of `optimizer_tensors`; a state that does not fit the optimiser's parameters is a CheckpointError."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, entry in scalars.get("state", {}).items():
        state.setdefault(int(pid), {}).update(entry)
    try:
        groups = [
            _saved_group(saved, group, state)
            for saved, group in zip(scalars["param_groups"], optimizer.param_groups, strict=True)
        ]
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"the saved optimiser state does not fit this model ({exc})") from None


def _saved_group(saved: dict[str, Any], group: dict[str, Any], state: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """A saved parameter group checked against the optimiser's, with this process's implementation settings."""
    if len(saved["params"]) != len(group["params"]):
        raise ValueError(f"the state has {len(saved['params'])} parameters, the model {len(group['params'])}")
    for pid, param in zip(saved["params"], group["params"], strict=True):
        for key in ("exp_avg", "exp_avg_sq"):
            if pid in state and tuple(state[pid][key].shape) != tuple(param.shape):
                raise ValueError(
                    f"parameter {pid} has shape {tuple(param.shape)}, its {key} {tuple(state[pid][key].shape)}"
                )
    mine = {key: group[key] for key in _IMPLEMENTATION_KEYS if key in group}
    return {**saved, "betas": tuple(saved["betas"]), **mine}


def make_optimizer(params: Iterable[torch.nn.Parameter], *, lr: float) -> torch.optim.Adam:
    """torch.optim.Adam with its default betas and eps, in torch's fused kernel where it has one for the device."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except RuntimeError:  # a torch without a fused Adam for this device (CPUs before torch 2.4)
        return torch.optim.Adam(params, lr=lr)
