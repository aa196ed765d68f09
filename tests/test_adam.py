"""latentlab.train.adam.Adam: torch.optim.Adam's update and state layout, without importing torch._dynamo."""

import subprocess
import sys

import pytest
import torch

from latentlab.train.adam import Adam, adam_update_


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(5, 3), (7,), (2, 3, 3, 3), ()]
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64)) for s in shapes]


def _grads(step: int, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]


def _run(optimizer, params, steps: int, *, lrs=None, skip=None) -> None:
    for t in range(steps):
        optimizer.zero_grad(set_to_none=True)
        for i, (p, g) in enumerate(zip(params, _grads(t, params), strict=True)):
            if skip is None or i != skip:
                p.grad = g
        if lrs is not None:
            optimizer.param_groups[0]["lr"] = lrs[t]
        optimizer.step()


@pytest.mark.parametrize("fused", [True, False])
def test_matches_torch_adam(monkeypatch, fused):
    """Same parameters and moments as torch.optim.Adam over steps with a changing lr and a skipped parameter."""
    if not fused:
        monkeypatch.setattr("latentlab.train.adam._has_fused_kernel", lambda device: False)
    ours, theirs = _params(), _params()
    lrs = [1e-2 * (1 + t) / 6 for t in range(6)]
    opt = Adam(ours, lr=0.1, betas=(0.8, 0.99), eps=1e-6)
    ref = torch.optim.Adam(theirs, lr=0.1, betas=(0.8, 0.99), eps=1e-6)
    _run(opt, ours, 6, lrs=lrs, skip=1)
    _run(ref, theirs, 6, lrs=lrs, skip=1)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    mine, reference = opt.state_dict(), ref.state_dict()
    assert sorted(mine["state"]) == sorted(reference["state"]) == [0, 2, 3]
    for i in mine["state"]:
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(mine["state"][i][key], reference["state"][i][key], rtol=1e-12, atol=1e-12)
        assert float(mine["state"][i]["step"]) == float(reference["state"][i]["step"]) == 6


def test_update_formula_by_hand():
    """adam_update_ against the paper's formula written out, for a scalar over two steps."""
    p, m, v = (
        torch.tensor([1.0], dtype=torch.float64),
        torch.zeros(1, dtype=torch.float64),
        torch.zeros(1, dtype=torch.float64),
    )
    b1, b2, lr, eps = 0.9, 0.999, 0.01, 1e-8
    expected, mh, vh = 1.0, 0.0, 0.0
    for t, g in enumerate([0.5, -2.0], start=1):
        adam_update_(p, torch.tensor([g], dtype=torch.float64), m, v, t, lr=lr, betas=(b1, b2), eps=eps)
        mh, vh = b1 * mh + (1 - b1) * g, b2 * vh + (1 - b2) * g * g
        expected -= lr * (mh / (1 - b1**t)) / ((vh / (1 - b2**t)) ** 0.5 + eps)
    assert float(p) == pytest.approx(expected, rel=1e-12)


def test_state_dict_round_trip_continues_identically():
    a, b = _params(), _params()
    opt_a = Adam(a, lr=0.05)
    _run(opt_a, a, 3)
    state = opt_a.state_dict()
    with torch.no_grad():
        for p, q in zip(a, b, strict=True):
            q.copy_(p)
    opt_b = Adam(b, lr=0.5)
    opt_b.load_state_dict(state)
    assert opt_b.param_groups[0]["lr"] == 0.05
    _run(opt_a, a, 2)
    _run(opt_b, b, 2)
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p, q)


def test_loads_torch_adam_state():
    """Training states written before latentlab had its own Adam (by torch.optim.Adam) still resume."""
    a, b = _params(), _params()
    ref = torch.optim.Adam(a, lr=0.05)
    _run(ref, a, 3)
    opt = Adam(b, lr=0.05)
    opt.load_state_dict(ref.state_dict())
    for i, entry in ref.state_dict()["state"].items():
        assert torch.equal(opt.state[i]["exp_avg"], entry["exp_avg"])
        assert float(opt.state[i]["step"]) == 3


@pytest.mark.parametrize(
    "bad",
    [
        lambda s: s["param_groups"][0].update(params=[0, 1]),
        lambda s: s["state"][0].update(exp_avg=torch.zeros(2, 2)),
        lambda s: s["state"][0].pop("exp_avg_sq"),
        lambda s: s["param_groups"][0].update(amsgrad=True),
    ],
)
def test_refuses_state_that_does_not_fit(bad):
    params = _params()
    opt = Adam(params)
    _run(opt, params, 1)
    state = opt.state_dict()
    state = {"state": {i: dict(e) for i, e in state["state"].items()}, "param_groups": [dict(state["param_groups"][0])]}
    bad(state)
    with pytest.raises(ValueError):
        Adam(_params()).load_state_dict(state)


def test_training_does_not_import_dynamo():
    """A training step through latentlab's Adam leaves torch._dynamo (~70 MB) unimported."""
    code = (
        "import sys, torch\n"
        "from latentlab.train.adam import Adam\n"
        "p = torch.nn.Parameter(torch.ones(3)); opt = Adam([p], lr=0.1)\n"
        "p.grad = torch.ones(3); torch.nn.utils.clip_grad_norm_([p], 1.0); opt.step()\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
