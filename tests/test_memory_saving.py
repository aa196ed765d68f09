"""Memory-saving training modes change only memory and time: gradients and log-densities stay the same."""

from __future__ import annotations

import pytest
import torch

from latentlab import Glow, GlowConfig

MODES = ("checkpoint", "invertible")


def tiny(**overrides) -> tuple[Glow, torch.Tensor]:
    torch.manual_seed(0)
    cfg = dict(image_size=8, levels=2, steps=3, width=8)
    cfg.update(overrides)
    model = Glow(GlowConfig(**cfg)).double()
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64) - 0.5
    model.initialize(x)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # off the zero initialisation, so every coupling does real work
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model, x


def gradients(model: Glow, x: torch.Tensor, mode: str) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    model.memory_saving = mode
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    log_prob = model(x)
    (log_prob * torch.linspace(0.5, 2.0, len(x), dtype=x.dtype)).sum().backward()
    return log_prob.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad], x.grad


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "arch",
    [
        dict(coupling="affine", permutation="lu"),
        dict(coupling="additive", permutation="conv"),
        dict(coupling="affine", permutation="reverse"),
        dict(coupling="affine", permutation="lu", prior_width=4, position_bias=True),
    ],
    ids=lambda a: f"{a['coupling']}-{a['permutation']}" + ("-prior-position" if a.get("position_bias") else ""),
)
def test_gradients_and_log_prob_equal_the_plain_path(mode, arch):
    model, x = tiny(**arch)
    lp_ref, grads_ref, xgrad_ref = gradients(model, x, "none")
    lp, grads, xgrad = gradients(model, x, mode)
    assert torch.allclose(lp, lp_ref, rtol=1e-12, atol=0)
    assert len(grads) == len(grads_ref)
    for got, ref in zip(grads, grads_ref, strict=True):
        assert torch.allclose(got, ref, rtol=1e-8, atol=1e-12)
    assert torch.allclose(xgrad, xgrad_ref, rtol=1e-8, atol=1e-12)


def test_invertible_mode_keeps_one_tensor_per_level():
    """Only each level's output is saved for backward, whatever the depth."""
    model, x = tiny(steps=6)
    saved: dict[str, set[int]] = {}
    for mode in ("none", "invertible"):
        model.memory_saving = mode
        ptrs: set[int] = set()

        def pack(t: torch.Tensor, ptrs: set[int] = ptrs) -> torch.Tensor:
            if t.dim() == 4 and t.shape[0] == x.shape[0]:  # activations, not weights
                ptrs.add(t.untyped_storage().data_ptr())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x)
        saved[mode] = ptrs
    assert len(saved["invertible"]) * 4 < len(saved["none"])


def test_memory_saving_is_ignored_outside_training_and_for_initialisation():
    model, x = tiny()
    model.memory_saving = "invertible"
    fresh = Glow(model.config).double()
    fresh.memory_saving = "invertible"
    fresh.initialize(x)  # runs the layers as written, whatever the memory saving
    assert fresh.is_initialized
    model.eval()
    with torch.no_grad():
        z = model.encode(x)
    assert torch.allclose(model.decode(z), x, atol=1e-10)


@pytest.mark.parametrize("extras", [{}, {"prior_width": 4, "position_bias": True}], ids=["glow", "prior-position"])
def test_bf16_autocast_training_keeps_the_trunk_exact(extras):
    """Under autocast the coupling networks run in bf16, but the log-det and the invertible trunk stay float32."""
    torch.manual_seed(0)
    model = Glow(GlowConfig(image_size=8, levels=2, steps=2, width=8, **extras))
    x = torch.rand(4, 3, 8, 8) - 0.5
    model.initialize(x)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    grads = {}
    for mode in ("none", "invertible"):
        model.memory_saving = mode
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            log_prob = model(x)
        assert log_prob.dtype == torch.float32
        log_prob.sum().backward()
        grads[mode] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        assert torch.isfinite(grads[mode]).all()
    # the rebuilt inputs agree to float32 precision, so bf16 rounding rarely differs: gradients agree closely
    assert (grads["invertible"] - grads["none"]).norm() < 1e-4 * grads["none"].norm()
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        z = model.encode(x)
        x_back = model.decode(z)
    # couplings in bf16 still invert exactly: the same bf16 network output is added, then subtracted
    assert (x_back.float() - x).abs().max() < 1e-4
