"""The fast path computes the function of the layers as written: outputs, log-dets and gradients.

`Glow` runs `latentlab.flow.fast` by default (ActNorms and scales folded into convolutions, cached
inference weights, padded channels, channels-last activations); `model.fast = False` runs the layers of
`latentlab.flow.layers` one by one. Here both run on tiny float64 models with every option of GlowConfig.
"""

from __future__ import annotations

import pytest
import torch

from latentlab import Glow, GlowConfig
from latentlab.flow import fast, folding
from latentlab.flow.folding import CHANNEL_BLOCK, fold_nets, fold_steps
from latentlab.flow.glow import FlowStep, evaluating
from latentlab.flow.layers import Split
from latentlab.flow.position_bias import add_position

from .test_flow import perturb, tiny_model

OPTIONS = [
    dict(coupling="affine", permutation="lu"),
    dict(coupling="additive", permutation="conv"),
    dict(coupling="affine", permutation="reverse", learn_top=False),
    dict(coupling="affine", permutation="lu", prior_width=4, position_bias=True, dequantizer_steps=2),
    dict(coupling="additive", permutation="lu", prior_width=4, learn_top=False, dequantizer_steps=1),
    dict(coupling="affine", permutation="conv", position_bias=True),
]


def _id(options: dict) -> str:
    extras = [k for k in ("prior_width", "position_bias", "dequantizer_steps") if options.get(k)]
    top = [] if options.get("learn_top", True) else ["fixed-top"]
    return "-".join([options["coupling"], options["permutation"], *extras, *top])


def model_with(options: dict) -> Glow:
    """A tiny float64 model, initialised, with every parameter (top prior and dequantiser too) off its start."""
    return tiny_model(image_size=8, levels=3, steps=2, width=6, dequantizer_width=4, **options)


def both_paths(model: Glow, run) -> tuple[dict, dict]:
    results = []
    for is_fast in (True, False):
        model.fast = is_fast
        model.zero_grad(set_to_none=True)
        results.append(run())
    model.fast = True
    return results[0], results[1]


def assert_same(fast_result: dict, plain_result: dict) -> None:
    assert fast_result.keys() == plain_result.keys()
    for name, got in fast_result.items():
        want = plain_result[name]
        assert got is not None and want is not None, name
        assert got.shape == want.shape, name
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-11), (name, (got - want).abs().max().item())


def inputs(model: Glow) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    x = torch.rand(3, 3, 8, 8, generator=g, dtype=torch.float64) - 0.5
    with torch.no_grad():  # latents near the data's, where the inverse stays finite
        z = model.encode(x) + 0.1 * torch.randn(3, model.latent_dim, generator=g, dtype=torch.float64)
    return x, z


def outputs(model: Glow, x: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
    eps_list, logdet = model._flow(x)
    return {
        "eps": torch.cat([e.flatten(1) for e in eps_list], 1),
        "logdet": logdet,
        "encode": model.encode(x),
        "decode": model.decode(z),
        "decode saturated": model.decode(z, saturate=True),
        "log_prob": model.log_prob(x),
        "log_likelihood": model.log_likelihood(x),
    }


@pytest.mark.parametrize("options", OPTIONS, ids=_id)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_fast_path_computes_the_layers_function_and_gradients(options, mode):
    model = model_with(options).train(mode == "train")
    x, z = inputs(model)

    def run() -> dict[str, torch.Tensor]:
        xg, zg = x.clone().requires_grad_(), z.clone().requires_grad_()
        out = outputs(model, xg, zg)
        g = torch.Generator().manual_seed(6)  # one random weighting of every output, the same for both paths
        sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in out.values()).backward()
        grads = {f"grad {name}": p.grad for name, p in model.named_parameters() if p.requires_grad}
        return {**out, "grad x": xg.grad, "grad z": zg.grad, **grads}

    fast_result, plain_result = both_paths(model, run)
    assert_same(fast_result, plain_result)
    assert fast_result["logdet"].abs().min() > 0.1  # the perturbed flow does change volumes
    with torch.no_grad():  # and without gradients: eval mode uses the cached inference weights
        assert_same(*both_paths(model, lambda: outputs(model, x, z)))
    if mode == "eval":
        assert len(model.folded_cache) == 2 * sum(len(steps) for steps in model.levels)  # forward and reverse


@pytest.mark.parametrize("memory_saving", ["checkpoint", "invertible"])
@pytest.mark.parametrize("options", [OPTIONS[0], OPTIONS[3]], ids=_id)
def test_memory_saving_training_computes_the_layers_gradients(options, memory_saving):
    model = model_with(options)
    model.memory_saving = memory_saving
    x, _ = inputs(model)

    def run() -> dict[str, torch.Tensor]:
        xg = x.clone().requires_grad_()
        log_prob = model(xg)
        (log_prob * torch.tensor([0.5, 1.0, 2.0], dtype=x.dtype)).sum().backward()
        grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
        return {"log_prob": log_prob.detach(), "grad x": xg.grad, **grads}

    assert_same(*both_paths(model, run))


@pytest.mark.parametrize("coupling", ["affine", "additive"])
@pytest.mark.parametrize("permutation", ["lu", "conv", "reverse"])
def test_a_fast_step_is_the_step_as_written(coupling, permutation):
    torch.manual_seed(0)
    config = GlowConfig(image_size=4, levels=1, steps=1, width=6, coupling=coupling, permutation=permutation)
    step = FlowStep(8, config, size=5).double()
    perturb(step, 0.3)
    x = torch.randn(3, 8, 5, 5, dtype=torch.float64)
    y, logdet = step(x)
    y_fast, logdet_fast = fast.step_forward(step, x)
    assert torch.allclose(y_fast, y, atol=1e-12) and torch.allclose(logdet_fast, logdet, atol=1e-10)
    assert torch.allclose(
        fast.step_reverse(step, y, fold_steps([step], y, reverse=True)[0]), step.reverse(y), atol=1e-12
    )


@pytest.mark.parametrize(("prior_width", "size"), [(0, 0), (6, 0), (6, 3)])
def test_a_fast_split_is_the_split_as_written(prior_width, size):
    split = Split(8, prior_width, size=size).double()
    perturb(split, 0.3)
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    for got, want in zip(fast.split_forward(split, x), split(x), strict=True):
        assert torch.allclose(got, want, atol=1e-12)
    z1, eps = x[:, :4], x[:, 4:]
    assert torch.allclose(fast.split_reverse(split, z1, eps), split.reverse(z1, eps), atol=1e-12)


def test_batched_folding_equals_folding_each_step():
    model = tiny_model(steps=3)
    steps = model.levels[0]
    x = torch.randn(2, 12, 2, 2, dtype=torch.float64)
    for reverse in (False, True):
        together = fold_steps(steps, x, reverse=reverse)
        for step, got in zip(steps, together, strict=True):
            alone = fold_steps([step], x, reverse=reverse)[0]
            for a, b in zip([*got.mix, *got.net, got.logdet], [*alone.mix, *alone.net, alone.logdet], strict=True):
                assert torch.allclose(a, b, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("coupling", ["affine", "additive"])
def test_cached_inference_weights_are_padded_and_give_the_same_outputs(coupling):
    step = FlowStep(12, GlowConfig(image_size=4, levels=1, steps=1, width=6, coupling=coupling)).double()
    perturb(step, 0.3)
    x = torch.randn(3, 12, 5, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    cache = folding.FoldedCache()
    with torch.no_grad():
        y, logdet = fast.step_forward(step, x)  # folded afresh, no padding
        cached = cache.get(step, x)
        y_cached, coupling_logdet = fast.apply_step(step, x, cached)
        logdet_cached = coupling_logdet + x.shape[2] * x.shape[3] * cached.logdet
    w1, w3 = cached.net[0], cached.net[4]
    out = 12 if coupling == "affine" else 6
    assert w3.shape[0] == CHANNEL_BLOCK and not w3[out:].any()  # zero rows up to a block of channels
    assert w1.is_contiguous(memory_format=torch.channels_last) and w3.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(y_cached, y, atol=1e-13) and torch.allclose(logdet_cached, logdet, atol=1e-12)
    with torch.no_grad():
        assert torch.allclose(step.reverse(y_cached), x, atol=1e-12)


def test_cache_follows_parameter_updates_dtype_and_training():
    model = tiny_model(dtype=torch.float32)
    step = model.levels[0][0]
    x = torch.rand(2, 3, 4, 4) - 0.5
    with evaluating(model):
        z1 = model.encode(x)
        first = model.folded_cache.get(step, torch.empty(0, 12, 2, 2))
        assert model.encode(x).equal(z1) and model.folded_cache.get(step, torch.empty(0, 12, 2, 2)) is first
    model.eval()
    with torch.no_grad():
        step.perm.log_s.add_(0.1)  # an in-place update invalidates the folded weights
        z2 = model.encode(x)
        assert not torch.allclose(z1, z2)
        assert (model.decode(z2) - x).abs().max() < 1e-5
        step.coupling.net.out.conv.bias.add_(0.1)
        assert not torch.allclose(model.encode(x), z2)
    model.double()
    with evaluating(model):
        z3 = model.encode(x.double())
        assert z3.dtype == torch.float64
        assert all(t.dtype == torch.float64 for t in model.folded_cache.get(step, z3.new_empty(0, 12, 2, 2)).net)
    model.train()
    assert len(model.folded_cache) == 0


def test_encode_without_log_dets_gives_the_latents_of_the_full_flow():
    model = tiny_model(prior_width=5, position_bias=True)
    perturb(model, 0.3)
    x = torch.rand(3, 3, 4, 4, dtype=torch.float64) - 0.5
    for mode in (True, False):  # folded afresh (training) and the cached inference weights
        model.train(mode)
        with torch.no_grad():
            eps_list, _ = model._flow(x)
            assert torch.equal(model.encode(x), torch.cat([e.flatten(1) for e in eps_list], dim=1))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_position_bias_gradient_equals_plain_autograd(layout):
    """The in-place position add's own backward gives what autograd gives for h + position."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64, generator=g).contiguous(memory_format=layout)
    position = torch.randn(1, 4, 5, 5, dtype=torch.float64, generator=g).requires_grad_()
    weights = torch.randn(3, 4, 5, 5, dtype=torch.float64, generator=g)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    (torch.relu(add_position(x1 * 2.0, position)) * weights).sum().backward()
    ours = position.grad.clone()
    position.grad = None
    (torch.relu(x2 * 2.0 + position) * weights).sum().backward()
    assert torch.allclose(ours, position.grad, rtol=1e-12) and torch.allclose(x1.grad, x2.grad, rtol=1e-12)
    with torch.no_grad():  # the inference path adds the same values, whatever the layout
        added = add_position(x.clone(memory_format=torch.preserve_format), position)
    assert added.is_contiguous(memory_format=layout) and torch.equal(added, x + position)


def test_bf16_folded_weights_cast_once_give_what_autocast_gives(monkeypatch):
    """Under bf16 autocast the folded network weights are cast per level, not per convolution: same numbers."""
    model = tiny_model(torch.float32, image_size=8, position_bias=True, prior_width=8).train()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)) - 0.5

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            log_prob = model.log_likelihood(x)
        log_prob.float().sum().backward()
        return log_prob.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert all(t.dtype == torch.bfloat16 for t in fold_steps(model.levels[0], x[:, :, :4, :4])[0].net)
    once, once_grads = run()
    monkeypatch.setattr(folding, "fold_nets", lambda nets, offset=0.0, dtype=None: fold_nets(nets, offset=offset))
    per_conv, per_conv_grads = run()
    assert torch.equal(once, per_conv)
    assert len(once_grads) == len(per_conv_grads)
    assert all(torch.equal(a, b) for a, b in zip(once_grads, per_conv_grads, strict=True))
