"""Numerical invariants of every flow layer and of the whole Glow model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latentlab import Glow, GlowConfig
from latentlab.errors import ConfigError
from latentlab.flow.glow import FlowStep, evaluating
from latentlab.flow.layers import ActNorm, Coupling, InvConv1x1, InvConv1x1LU, Reverse, Split, squeeze, unsqueeze


def perturb(module: torch.nn.Module, scale: float, seed: int = 0) -> None:
    """Move every parameter off its (often zero) initial value so tests exercise real weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def tiny_model(dtype: torch.dtype = torch.float64, **overrides) -> Glow:
    torch.manual_seed(0)
    cfg = dict(image_size=4, levels=2, steps=2, width=6)
    cfg.update(overrides)
    model = Glow(GlowConfig(**cfg)).to(dtype)
    model.initialize(torch.rand(8, 3, cfg["image_size"], cfg["image_size"], dtype=dtype) - 0.5)
    perturb(model, 0.05)
    return model


def brute_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    """log|det J| of fn at a single input x (1, ...), with J from autograd."""
    jac = torch.autograd.functional.jacobian(lambda v: fn(v.view_as(x)).flatten(), x.flatten())
    return torch.linalg.slogdet(jac)[1]


ROUND_TRIP_CONFIGS = [
    dict(image_size=16, levels=1, steps=3, width=16, coupling="affine", permutation="lu"),
    dict(image_size=16, levels=2, steps=2, width=17, coupling="affine", permutation="conv"),
    dict(image_size=16, levels=3, steps=2, width=9, coupling="affine", permutation="reverse"),
    dict(image_size=16, levels=2, steps=2, width=15, coupling="additive", permutation="lu"),
    dict(image_size=8, levels=3, steps=1, width=8, coupling="additive", permutation="conv"),
    dict(image_size=32, levels=3, steps=2, width=32, coupling="affine", permutation="lu", learn_top=False),
    dict(image_size=16, levels=3, steps=2, width=16, coupling="affine", permutation="lu", prior_width=8),
    dict(image_size=16, levels=2, steps=2, width=8, coupling="affine", permutation="lu", position_bias=True),
    dict(
        image_size=16,
        levels=3,
        steps=2,
        width=8,
        coupling="additive",
        permutation="lu",
        prior_width=4,
        position_bias=True,
    ),
]


def _config_id(c: dict) -> str:
    position = "-position" if c.get("position_bias") else ""
    return f"{c['coupling']}-{c['permutation']}-L{c['levels']}-prior{c.get('prior_width', 0)}{position}"


@pytest.mark.parametrize("cfg", ROUND_TRIP_CONFIGS, ids=_config_id)
def test_round_trip_float32(cfg):
    torch.manual_seed(1)
    model = Glow(GlowConfig(**cfg))
    x = torch.rand(6, 3, cfg["image_size"], cfg["image_size"]) - 0.5
    model.initialize(x)
    perturb(model, 0.02)
    z = model.encode(x)
    assert z.shape == (6, 3 * cfg["image_size"] ** 2)
    assert (model.decode(z) - x).abs().max().item() <= 1e-5
    with evaluating(model):  # the cached inference path must agree too
        z2 = model.encode(x)
        assert (model.decode(z2) - x).abs().max().item() <= 1e-5
    assert torch.allclose(z, z2, atol=1e-5)


@pytest.mark.parametrize(("prior_width", "position_bias"), [(0, False), (5, False), (5, True)])
@pytest.mark.parametrize("coupling", ["affine", "additive"])
@pytest.mark.parametrize("permutation", ["lu", "conv", "reverse"])
def test_log_prob_equals_brute_force_jacobian(coupling, permutation, prior_width, position_bias):
    model = tiny_model(coupling=coupling, permutation=permutation, prior_width=prior_width, position_bias=position_bias)
    x = torch.rand(1, 3, 4, 4, dtype=torch.float64) - 0.5
    z = model.encode(x)
    d = z.shape[1]
    expected = -0.5 * z.pow(2).sum() - 0.5 * d * math.log(2 * math.pi) + brute_logdet(model.encode, x)
    got = model.log_prob(x)[0]
    assert torch.allclose(got, expected, rtol=1e-6, atol=0), (got.item(), expected.item())


def test_log_prob_batch_is_per_sample():
    model = tiny_model()
    x = torch.rand(3, 3, 4, 4, dtype=torch.float64) - 0.5
    together = model.log_prob(x)
    alone = torch.stack([model.log_prob(x[i : i + 1])[0] for i in range(3)])
    assert together.shape == (3,)
    assert torch.allclose(together, alone, rtol=1e-10)


def layer_cases():
    torch.manual_seed(3)
    cases = {
        "actnorm": ActNorm(4),
        "invconv-lu": InvConv1x1LU(4),
        "invconv-conv": InvConv1x1(4),
        "reverse": Reverse(4),
        "coupling-affine": Coupling(4, 5, "affine"),
        "coupling-additive": Coupling(4, 5, "additive"),
        "flowstep": FlowStep(4, GlowConfig(image_size=4, levels=1, steps=1, width=5)),
        "flowstep-position": FlowStep(4, GlowConfig(image_size=6, levels=1, steps=1, width=5), size=3),
    }
    return cases


@pytest.mark.parametrize("name", list(layer_cases()))
def test_layer_logdet_and_inverse(name):
    layer = layer_cases()[name].double()
    perturb(layer, 0.3)
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    y, logdet = layer(x)
    assert logdet.shape == (1,)
    assert torch.allclose(logdet[0], brute_logdet(lambda v: layer(v)[0], x), rtol=1e-6, atol=1e-9)
    assert torch.allclose(layer.reverse(y), x, atol=1e-10)
    # forward log-det equals minus the log-det of the reverse map
    reverse_logdet = brute_logdet(layer.reverse, y)
    assert torch.allclose(logdet[0], -reverse_logdet, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(("prior_width", "size"), [(0, 0), (6, 0), (6, 3)])
def test_split_logdet_is_standardisation(prior_width, size):
    split = Split(4, prior_width, size=size).double()
    perturb(split, 0.3)
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    z1, eps, logdet = split(x)
    full = lambda v: torch.cat([a.flatten() for a in split(v)[:2]])  # noqa: E731
    assert torch.allclose(logdet[0], brute_logdet(full, x), rtol=1e-6)
    assert torch.allclose(split.reverse(z1, eps), x, atol=1e-12)


def test_squeeze_is_a_permutation():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float64).view(2, 3, 4, 4)
    y = squeeze(x)
    assert y.shape == (2, 12, 2, 2)
    assert torch.equal(unsqueeze(y), x)
    assert torch.equal(y.flatten().sort().values, x.flatten().sort().values)


def test_actnorm_initialisation_standardises():
    torch.manual_seed(0)
    norm = ActNorm(5)
    x = torch.randn(64, 5, 6, 6) * torch.tensor([0.1, 1, 3, 10, 0.01]).view(1, 5, 1, 1) + 4.0
    norm.initialize(x)
    y, _ = norm(x)
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(5), atol=1e-4)
    assert torch.allclose(y.std(dim=(0, 2, 3), unbiased=False), torch.ones(5), atol=1e-3)
    assert bool(norm.initialized)


def test_model_initialize_is_explicit_and_standardises_each_actnorm():
    torch.manual_seed(0)
    model = Glow(GlowConfig(image_size=8, levels=2, steps=2, width=8))
    assert not model.is_initialized
    x = torch.rand(32, 3, 8, 8) - 0.5
    model.encode(x)  # a plain forward pass must not initialise anything
    assert not model.is_initialized
    model.initialize(x)
    assert model.is_initialized
    first = model.levels[0][0].norm
    y, _ = first(squeeze(x))
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(12), atol=1e-4)
    assert torch.allclose(y.std(dim=(0, 2, 3), unbiased=False), torch.ones(12), atol=1e-3)


def test_bits_per_dim_matches_formula():
    model = tiny_model(n_bits=5)
    x8 = torch.randint(0, 256, (4, 3, 4, 4), dtype=torch.uint8)
    bpd = model.bits_per_dim(x8, generator=torch.Generator().manual_seed(7))
    # the same dequantisation by hand: drop 3 low bits, add U(0,1) noise, scale to [-0.5, 0.5)
    noise = torch.rand(x8.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    x = ((x8.to(torch.int64) // 8).double() + noise) / 32 - 0.5
    d = 3 * 4 * 4
    expected = (-model.log_prob(x) + d * math.log(32)) / (d * math.log(2))
    assert torch.allclose(bpd, expected, rtol=1e-12)


def test_untrained_additive_flow_costs_n_bits_plus_a_standard_normal():
    """Untrained, additive couplings and the 1x1 convolutions' random rotations give a volume-preserving
    rotation of x under N(0, I): bpd = n_bits + (mean(x²)/2 + log(2π)/2) / log 2, sample by sample."""
    torch.manual_seed(0)
    model = Glow(GlowConfig(image_size=4, levels=2, steps=2, width=6, coupling="additive", n_bits=3)).double()
    x8 = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    bpd = model.bits_per_dim(x8, generator=torch.Generator().manual_seed(1))
    x = x8.to(torch.int64) // 32 + torch.rand(x8.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = x / 8 - 0.5
    nats = 0.5 * x.pow(2).flatten(1).mean(1) + 0.5 * math.log(2 * math.pi)
    assert torch.allclose(bpd, 3 + nats / math.log(2), rtol=1e-12)
    assert not torch.allclose(bpd[0], bpd[1])  # the images differ, and so does their cost


def test_sample_and_temperature_zero_is_decode_of_zero():
    model = tiny_model()
    with evaluating(model):
        s = model.sample(3, temperature=0.0)
        assert torch.allclose(s, model.decode(torch.zeros(3, model.latent_dim, dtype=torch.float64)))
        assert model.sample(2, temperature=0.7, generator=torch.Generator().manual_seed(1)).shape == (2, 3, 4, 4)


def test_encode_decode_stay_differentiable():
    model = tiny_model()
    model.eval()
    x = (torch.rand(2, 3, 4, 4, dtype=torch.float64) - 0.5).requires_grad_()
    model.log_prob(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    z = torch.randn(2, model.latent_dim, dtype=torch.float64, requires_grad=True)
    model.decode(z).pow(2).sum().backward()
    assert z.grad is not None
    # gradients reach the 1x1 weights in eval mode too (no stale cached weights on the autograd path)
    assert model.levels[0][0].perm.lower.grad is not None


@pytest.mark.parametrize(
    "bad",
    [
        dict(image_size=30, levels=3),
        dict(levels=0),
        dict(width=-4),
        dict(coupling="spline"),
        dict(permutation="shuffle"),
        dict(n_bits=9),
        dict(image_size=32.0),
        dict(prior_width=-1),
        dict(prior_width=True),
        dict(position_bias=1),
    ],
)
def test_config_validation(bad):
    with pytest.raises(ConfigError):
        GlowConfig(**bad)


def test_later_settings_are_left_out_of_the_json_at_their_defaults():
    """Models saved before prior_width and position_bias existed keep their JSON, fingerprint and resume config."""
    plain = GlowConfig()
    assert "prior_width" not in plain.to_dict() and "position_bias" not in plain.to_dict()
    assert GlowConfig.from_dict(plain.to_dict()) == plain
    assert not any("position" in name for name, _ in Glow(GlowConfig(image_size=8, levels=2)).named_parameters())
    richer = GlowConfig(prior_width=64, position_bias=True)
    assert richer.to_dict()["prior_width"] == 64 and richer.to_dict()["position_bias"] is True
    assert GlowConfig.from_dict(richer.to_dict()) == richer


def test_position_bias_tells_the_flow_where_it_is():
    """Without it the flow is translation-equivariant away from the borders; with it, it is not."""

    def centre_shift_gap(model: Glow) -> float:
        """Largest change of the first level's ε in the centre when the image moves 2 px right."""
        x = torch.rand(1, 3, 32, 32, dtype=torch.float64) - 0.5
        eps = model._flow(x)[0][0]  # (1, 6, 16, 16): a 2 px image shift is 1 position here
        eps_moved = model._flow(torch.roll(x, shifts=2, dims=3))[0][0]
        return (torch.roll(eps, shifts=1, dims=3) - eps_moved)[:, :, 6:10, 6:10].abs().max().item()

    plain = tiny_model(image_size=32, levels=2, steps=1, width=6)
    placed = tiny_model(image_size=32, levels=2, steps=1, width=6, position_bias=True)
    assert centre_shift_gap(plain) < 1e-12
    assert centre_shift_gap(placed) > 1e-3


def test_config_unknown_key_refused():
    with pytest.raises(ConfigError, match="unknown model config key"):
        GlowConfig.from_dict({"image_size": 32, "depth": 4})


def test_wrong_input_shape_is_clear():
    model = tiny_model()
    with pytest.raises(ConfigError, match="expected images of shape"):
        model.encode(torch.zeros(1, 3, 8, 8, dtype=torch.float64))
    with pytest.raises(ConfigError, match="expected latents"):
        model.decode(torch.zeros(1, 5, dtype=torch.float64))


def test_memory_format_of_the_input_does_not_matter():
    model = tiny_model()
    x = torch.rand(3, 3, 4, 4, dtype=torch.float64) - 0.5
    z = model.encode(x)
    assert torch.equal(model.encode(x.contiguous(memory_format=torch.channels_last)), z)
    assert model.decode(z).is_contiguous()


def test_saturating_decode_is_exact_on_data_and_finite_far_from_it():
    """decode(z, saturate=True) equals decode(z) bit for bit for real latents; latents far off the data,
    whose exact inverse overflows to inf/NaN, still decode to finite values within ±SATURATION."""
    from latentlab.flow.glow import SATURATION

    torch.manual_seed(3)
    model = Glow(GlowConfig(image_size=16, levels=2, steps=3, width=16))
    x = torch.rand(8, 3, 16, 16) - 0.5
    model.initialize(x)
    perturb(model, 0.02)  # trained-like couplings, whose inverses expand quickly off the data
    with evaluating(model):
        z = model.encode(x)
        assert torch.equal(model.decode(z, saturate=True), model.decode(z))
        assert (model.decode(z, saturate=True) - x).abs().max() <= 1e-5
        far = z + 30 * torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
        assert not torch.isfinite(model.decode(far)).all()  # the exact inverse overflows
        saturated = model.decode(far, saturate=True)
        assert torch.isfinite(saturated).all() and saturated.abs().max() <= SATURATION


def test_sample_grid_saturates_up_to_temperature_one_and_refuses_overflow_above():
    """A temperature the error message recommends (0 to 1) never fails the grid; above 1 an overflow is refused."""
    from latentlab.train.evaluate import sample_grid

    torch.manual_seed(3)
    model = Glow(GlowConfig(image_size=16, levels=2, steps=3, width=16))
    model.initialize(torch.rand(8, 3, 16, 16) - 0.5)
    perturb(model, 0.02)
    with torch.no_grad():
        model.top_logs.fill_(math.log(30.0))  # a wide top prior: samples at T = 1 land far off the data
    with evaluating(model):
        eps = torch.randn(4, model.latent_dim, generator=torch.Generator().manual_seed(0))
        assert not torch.isfinite(model.decode(eps)).all()  # the exact inverse overflows at T = 1
    grid = sample_grid(model, n=4, temperatures=[0.5, 1.0])
    assert grid.dtype == np.uint8 and grid.ndim == 3
    with pytest.raises(ConfigError, match="temperature 2 is too high"):
        sample_grid(model, n=4, temperatures=[0.5, 2.0])
