"""The learned dequantiser: an exact log q, identity at the start, samples inside each bin, and its place in Glow."""

from __future__ import annotations

import math

import pytest
import torch

from latentlab import Glow, GlowConfig
from latentlab.checkpoint import load_model, save_model
from latentlab.data.quantize import bins_and_noise, dequantize, to_levels
from latentlab.errors import ConfigError
from latentlab.flow.dequantizer import Dequantizer
from latentlab.flow.glow import evaluating

from .test_flow import brute_logdet, perturb, tiny_model


def _dequantized(shape: tuple[int, ...], n_bits: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x8 = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
    return dequantize(x8, n_bits, generator=g, dtype=dtype)


@pytest.mark.parametrize("n_bits", [1, 5, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bins_and_noise_read_back_exactly(n_bits, dtype):
    g = torch.Generator().manual_seed(n_bits)
    x8 = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8, generator=g)
    x = dequantize(x8, n_bits, generator=g, dtype=dtype)
    bins, noise = bins_and_noise(x, n_bits)
    assert torch.equal(bins, to_levels(x8, n_bits).to(dtype))
    assert noise.min() >= 0 and noise.max() < 1
    assert torch.equal((bins + noise) / 2**n_bits - 0.5, x)


def test_log_q_equals_brute_force_jacobian():
    torch.manual_seed(0)
    deq = Dequantizer(n_bits=5, steps=3, width=6).double()
    perturb(deq, 0.3)
    x = _dequantized((1, 3, 4, 4), 5, seed=1)
    bins, noise = bins_and_noise(x, 5)

    def u_of(u0: torch.Tensor) -> torch.Tensor:
        return (deq(bins, u0)[0] + 0.5) * 32 - bins

    x_tilde, log_q = deq(bins, noise)
    # q(u) = 1 / |det ∂u/∂u₀| for u₀ uniform on the unit cube
    assert torch.allclose(log_q[0], -brute_logdet(u_of, noise), rtol=1e-9, atol=1e-9)
    assert abs(log_q.item()) > 1.0  # the perturbed dequantiser is far from uniform


def test_samples_stay_in_their_bins():
    torch.manual_seed(0)
    deq = Dequantizer(n_bits=5, steps=2, width=8)
    perturb(deq, 1.0)
    x = _dequantized((16, 3, 8, 8), 5, seed=2, dtype=torch.float32)
    bins, noise = bins_and_noise(x, 5)
    x_tilde, log_q = deq(bins, noise)
    assert torch.isfinite(log_q).all()
    inside = (x_tilde + 0.5) * 32 - bins
    assert inside.min() >= 0 and inside.max() <= 1


def test_new_dequantizer_is_uniform_noise():
    torch.manual_seed(0)
    model = Glow(GlowConfig(image_size=4, levels=2, steps=2, width=6, dequantizer_steps=2, dequantizer_width=4))
    model.double()
    x = _dequantized((3, 3, 4, 4), 5, seed=3)
    model.initialize(x)
    x_tilde, log_q = model.dequantizer(*bins_and_noise(x, 5))
    assert torch.allclose(x_tilde, x, rtol=0, atol=1e-12)
    assert torch.allclose(log_q, torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-9)
    assert torch.allclose(model.log_likelihood(x), model.log_prob(x), rtol=0, atol=1e-9)


def test_log_likelihood_is_log_prob_of_the_sample_minus_log_q():
    model = tiny_model(dequantizer_steps=2, dequantizer_width=4)
    perturb(model.dequantizer, 0.3, seed=5)
    x = _dequantized((3, 3, 4, 4), 5, seed=4)
    x_tilde, log_q = model.dequantizer(*bins_and_noise(x, 5))
    expected = model.log_prob(x_tilde) - log_q
    assert torch.allclose(model.log_likelihood(x), expected, rtol=1e-12)
    assert torch.allclose(model(x), expected, rtol=1e-12)
    bpd = model.bits_per_dim(torch.zeros(3, 3, 4, 4, dtype=torch.uint8), generator=torch.Generator().manual_seed(0))
    assert bpd.shape == (3,) and torch.isfinite(bpd).all()


def test_uniform_model_log_likelihood_is_log_prob():
    model = tiny_model()
    assert model.dequantizer is None
    x = _dequantized((2, 3, 4, 4), 5, seed=6)
    assert torch.equal(model.log_likelihood(x), model.log_prob(x))


def test_dequantizer_trains_with_the_flow():
    """A few Adam steps on the bound move the dequantiser's parameters and lower the loss."""
    torch.manual_seed(0)
    cfg = GlowConfig(image_size=8, levels=2, steps=2, width=16, dequantizer_steps=2, dequantizer_width=8)
    model = Glow(cfg)
    g = torch.Generator().manual_seed(0)
    x8 = (torch.rand(32, 3, 8, 8, generator=g) * 64 + 96).to(torch.uint8)  # a narrow band of grey
    model.initialize(dequantize(x8, 5, generator=g))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    before = [p.detach().clone() for p in model.dequantizer.parameters()]
    losses = []
    for _ in range(30):
        loss = model.bits_per_dim_from_log_prob(model(dequantize(x8, 5, generator=g))).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    moved = [not torch.equal(b, p) for b, p in zip(before, model.dequantizer.parameters(), strict=True)]
    assert all(moved)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def test_encode_and_decode_ignore_the_dequantizer():
    model = tiny_model(dequantizer_steps=1, dequantizer_width=4)
    plain = Glow(GlowConfig(image_size=4, levels=2, steps=2, width=6)).double()
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith("dequantizer.") for k in unexpected)
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64) - 0.5
    assert torch.equal(model.encode(x), plain.encode(x))
    with evaluating(model):
        assert (model.decode(model.encode(x)) - x).abs().max() < 1e-10


def test_checkpoint_keeps_the_dequantizer(tmp_path):
    model = tiny_model(dtype=torch.float32, dequantizer_steps=2, dequantizer_width=4)
    perturb(model.dequantizer, 0.3, seed=9)
    save_model(model, tmp_path, step=1)
    loaded = load_model(tmp_path)
    assert loaded.config.dequantizer_steps == 2
    x = _dequantized((2, 3, 4, 4), 5, seed=7, dtype=torch.float32)
    assert torch.equal(loaded.log_likelihood(x), model.log_likelihood(x))


@pytest.mark.parametrize("bad", [dict(dequantizer_steps=-1), dict(dequantizer_width=0), dict(dequantizer_steps=1.5)])
def test_dequantizer_config_validation(bad):
    with pytest.raises(ConfigError):
        GlowConfig(**bad)


def test_default_dequantizer_settings_leave_the_json_unchanged():
    assert "dequantizer_steps" not in GlowConfig().to_dict()
    for cfg in (GlowConfig(dequantizer_steps=2), GlowConfig(dequantizer_steps=2, dequantizer_width=16)):
        assert cfg.to_dict()["dequantizer_steps"] == 2
        assert GlowConfig.from_dict(cfg.to_dict()) == cfg


def test_evaluate_reports_both_bounds(tmp_path):
    from PIL import Image

    from latentlab.train.evaluate import evaluate_folder

    g = torch.Generator().manual_seed(0)
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(5):
        pixels = torch.randint(0, 256, (8, 8, 3), dtype=torch.uint8, generator=g).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.png")
    model = tiny_model(dtype=torch.float32, image_size=8, dequantizer_steps=2, dequantizer_width=4)
    perturb(model.dequantizer, 0.3, seed=11)
    result = evaluate_folder(model, folder, progress=False, workers=1)
    assert result.images == 5
    assert math.isfinite(result.bits_per_dim) and math.isfinite(result.uniform_bits_per_dim)
    assert result.bits_per_dim != result.uniform_bits_per_dim
    plain = tiny_model(dtype=torch.float32, image_size=8)
    same = evaluate_folder(plain, folder, progress=False, workers=1)
    assert same.uniform_bits_per_dim == same.bits_per_dim and same.uniform_std_error == same.std_error

    from typer.testing import CliRunner

    from latentlab.cli.app import app

    save_model(model, tmp_path / "run", step=1)
    args = ["evaluate", "--model", str(tmp_path / "run"), "--data", str(folder), "--device", "cpu", "--quiet"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert f"{result.bits_per_dim:.4f}" in out.output
    assert f"{result.uniform_bits_per_dim:.4f}" in out.output and "uniform noise" in out.output
