"""Latent paths: exact endpoints, preserved norms, loops that close, batched generation."""

from __future__ import annotations

import itertools

import pytest
import torch

from latentlab.errors import ConfigError
from latentlab.render.interpolation import ease, lerp, loop_schedule, path_latents, slerp


@pytest.fixture
def keys():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 4096, generator=g)


@pytest.mark.parametrize("interp", [slerp, lerp])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_endpoints_are_exact(interp, dtype, keys):
    a, b = keys[0].to(dtype), keys[1].to(dtype)
    assert torch.equal(interp(a, b, 0.0), a) and torch.equal(interp(a, b, 1.0), b)
    path = interp(a, b, torch.tensor([0.0, 0.3, 1.0]))
    assert path.shape == (3, 4096) and path.dtype == dtype
    assert torch.equal(path[0], a) and torch.equal(path[-1], b)
    batch_a, batch_b = keys[:2].to(dtype), keys[1:].to(dtype)
    rows = interp(batch_a, batch_b, torch.tensor([0.0, 1.0]))  # one t per row
    assert torch.equal(rows[0], batch_a[0]) and torch.equal(rows[1], batch_b[1])


def test_slerp_keeps_the_norm_and_moves_at_constant_angle(keys):
    a, b = keys[0].double(), keys[1].double()
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    path = slerp(a, b, t)
    expected_norm = (1 - t) * a.norm() + t * b.norm()
    assert torch.allclose(path.norm(dim=1), expected_norm, rtol=1e-12)
    assert ((path.norm(dim=1) / 4096**0.5 - 1).abs() < 0.05).all()  # ~sqrt(D) throughout
    assert lerp(a, b, 0.5).norm() < 0.8 * 4096**0.5  # what slerp avoids
    theta = torch.arccos(torch.dot(a, b) / (a.norm() * b.norm()))
    angles = torch.arccos(((path @ a) / (path.norm(dim=1) * a.norm())).clamp(-1, 1))
    assert torch.allclose(angles, t * theta, atol=1e-6)


def test_slerp_falls_back_to_lerp_for_parallel_and_zero_vectors(keys):
    a = keys[0]
    for b in (a * 1.5, a.clone(), torch.zeros_like(a)):
        out = slerp(a, b, torch.tensor([0.0, 0.25, 1.0]))
        assert torch.isfinite(out).all()
        assert torch.allclose(out[1], lerp(a, b, 0.25), atol=1e-5)
        assert torch.equal(out[0], a) and torch.equal(out[2], b)


def test_ease():
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    e = ease(t)
    assert e[0] == 0 and e[-1] == 1 and (e[1:] >= e[:-1]).all()
    assert torch.allclose(e + ease(1 - t), torch.ones_like(t))  # symmetric
    assert ease(0.01) < 0.001 and ease(0.5) == 0.5  # slow start, so keys are dwelt on


@pytest.mark.parametrize(("n_keys", "frames", "hold", "eased"), [(2, 5, 0, False), (3, 4, 2, True), (4, 1, 0, True)])
def test_loop_schedule_closes_without_a_duplicate_frame(n_keys, frames, hold, eased):
    schedule = loop_schedule(n_keys, frames, ease=eased, hold=hold)
    assert len(schedule) == n_keys * (frames + hold)
    assert schedule[0] == (0, 0.0)
    assert [s for s, _ in schedule] == sorted(s for s, _ in schedule)
    for key in range(n_keys):  # every key is shown, for hold + 1 frames
        assert schedule.count((key, 0.0)) == hold + 1
    assert all(0.0 <= t < 1.0 for _, t in schedule)  # t = 1 would repeat the next key
    assert schedule[-1][0] == n_keys - 1
    if not eased:  # the wrap-around step is the same size as every other step
        steps = [(s + t) for s, t in schedule] + [n_keys]
        assert all(abs((b - a) - 1 / frames) < 1e-12 for a, b in itertools.pairwise(steps))


def test_schedule_errors():
    for args in [(1, 5), (2, 0)]:
        with pytest.raises(ConfigError):
            loop_schedule(*args)
    with pytest.raises(ConfigError):
        loop_schedule(2, 3, hold=-1)


@pytest.mark.parametrize("method", ["slerp", "linear"])
def test_path_latents_in_batches_equal_the_whole_path(method, keys):
    schedule = loop_schedule(3, 7, hold=1)
    batches = list(path_latents(keys, schedule, method=method, batch_size=5))
    assert all(b.shape[0] <= 5 for b in batches)
    path = torch.cat(batches)
    assert path.shape == (len(schedule), 4096)
    assert torch.equal(path[0], keys[0])
    interp = slerp if method == "slerp" else lerp
    for row, (s, t) in zip(path, schedule, strict=True):
        assert torch.allclose(row, interp(keys[s], keys[(s + 1) % 3], t), atol=1e-5)
    (whole,) = path_latents(keys, schedule, method=method, batch_size=len(schedule))
    assert torch.allclose(whole, path, atol=1e-6)


def test_path_latents_is_lazy_and_checks_its_arguments(keys):
    schedule = loop_schedule(3, 100_000)
    first = next(path_latents(keys, schedule, batch_size=4))  # does not build 300k latents
    assert first.shape == (4, 4096)
    with pytest.raises(ConfigError, match="slerp, linear"):
        next(path_latents(keys, schedule, method="cubic"))
    with pytest.raises(ConfigError):
        next(path_latents(keys[:1], schedule))
