"""Edits and paths by level: the latent's layout, level masks, and edits that leave the other levels bit for bit."""

from __future__ import annotations

import pytest
import torch

from latentlab import Glow, GlowConfig
from latentlab.checkpoint import model_fingerprint
from latentlab.directions.file import load_directions, save_directions
from latentlab.errors import ConfigError
from latentlab.render.edit import edit_latents, sweep_latents
from latentlab.render.faces import decode_images, encode_faces
from latentlab.render.interpolation import loop_frames, path_latents
from latentlab.render.levels import latent_levels, level_mask, levels_mask, parse_levels


@pytest.fixture(scope="module")
def model() -> Glow:
    torch.manual_seed(0)
    glow = Glow(GlowConfig(image_size=16, levels=3, steps=1, width=8))
    glow.initialize(torch.rand(16, 3, 16, 16) - 0.5)
    return glow.eval()


@pytest.fixture
def dirs(model, tmp_path):
    g = torch.Generator().manual_seed(2)
    path = save_directions(
        tmp_path / "dirs.safetensors",
        vectors={name: 0.3 * torch.randn(model.latent_dim, generator=g) for name in ("Smiling", "Male")},
        pos_counts=[5, 5],
        neg_counts=[5, 5],
        method="mean-diff",
        model_fingerprint=model_fingerprint(model),
        latent_std=[0.5, 2.0],
    )
    return load_directions(path)


def bits(t: torch.Tensor) -> torch.Tensor:
    """The float32 values' bit patterns: equal only when bit for bit equal (-0.0 and 0.0 differ)."""
    return t.contiguous().view(torch.int32)


def test_the_levels_tile_the_latent_in_flow_order():
    glow = Glow(GlowConfig(image_size=32, levels=3, steps=1, width=8))
    levels = latent_levels(glow.latent_shapes)
    assert [(lv.number, lv.name, lv.dims, lv.top) for lv in levels] == [
        (1, "16x16", 1536, False),
        (2, "8x8", 768, False),
        (3, "4x4", 768, True),
    ]
    assert [lv.start for lv in levels] == [0, 1536, 2304] and levels[-1].stop == glow.latent_dim == 3072
    assert parse_levels("2,3", levels) == parse_levels("8x8, top", levels) == parse_levels([3, "2"], levels) == (2, 3)
    for bad in ("4", "0", "x", "", "2,,3"):
        with pytest.raises(ConfigError, match=r"levels are 1 \(16x16\), 2 \(8x8\), 3 \(4x4, top\)"):
            parse_levels(bad, levels)
    mask = level_mask(levels, (2,))
    assert mask.sum() == 768 and mask[1536:2304].all()
    assert levels_mask(glow.latent_shapes, None) == (None, "") == levels_mask(glow.latent_shapes, "1,2,3")
    assert levels_mask(glow.latent_shapes, "top")[1] == "level 3 (4x4)"


def test_the_level_layout_is_the_models_own(model):
    """Changing one level's part of z and decoding, then encoding again, moves only that part."""
    levels = latent_levels(model.latent_shapes)
    z = torch.zeros(1, model.latent_dim)
    for lv in levels:
        moved = z.clone()
        moved[:, lv.start : lv.stop] = 0.5
        with torch.inference_mode():
            back = model.encode(model.decode(moved))
        torch.testing.assert_close(back, moved, atol=1e-4, rtol=0)
        parts = list(model._unflatten(moved))  # the model's own split of the vector into its levels
        assert [bool(p.abs().sum() > 0) for p in parts] == [other is lv for other in levels]


@pytest.mark.parametrize("chosen", [(1,), (2,), (3,), (1, 3)])
def test_an_edit_at_some_levels_leaves_the_others_bit_for_bit(model, dirs, chosen):
    faces = torch.randint(0, 256, (2, 3, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    z = encode_faces(model, faces)
    levels = latent_levels(model.latent_shapes)
    mask = level_mask(levels, chosen)
    edited = edit_latents(z, dirs, ["Smiling", "Male"], [0.8, -0.5], units="sigma", mask=mask)
    full = edit_latents(z, dirs, ["Smiling", "Male"], [0.8, -0.5], units="sigma")
    assert torch.equal(bits(edited[:, ~mask]), bits(z[:, ~mask]))  # untouched, bit for bit
    assert torch.equal(edited[:, mask], full[:, mask])  # the chosen levels move as in the full edit
    assert not torch.equal(edited[:, mask], z[:, mask])
    swept = sweep_latents(z, dirs, ["Smiling"], [-1.0, 0.0, 1.0], mask=mask)  # (B, A, S, D)
    assert torch.equal(bits(swept[..., ~mask]), bits(z[:, None, None, ~mask].expand(-1, 1, 3, -1)))
    assert torch.equal(swept[:, 0, 2, mask], (z + dirs.vector("Smiling"))[:, mask])
    # decoded and encoded again, the other levels come back to float rounding (the flow is exact)
    again = encode_faces(model, decode_images(model, edited))
    assert (again[:, ~mask] - z[:, ~mask]).abs().max() < (again[:, mask] - z[:, mask]).abs().max()


def test_a_path_at_some_levels_moves_only_them(model):
    keys = torch.randn(3, model.latent_dim, generator=torch.Generator().manual_seed(4))
    mask = level_mask(latent_levels(model.latent_shapes), (3,))
    schedule = loop_frames(3, 5, ease=True)
    for method in ("slerp", "linear"):
        frames = torch.cat(list(path_latents(keys, schedule, method=method, batch_size=4, mask=mask)))
        assert frames.shape == (15, model.latent_dim)
        assert torch.equal(bits(frames[:, ~mask]), bits(keys[0, ~mask].expand(15, -1)))  # the first face's, always
        starts = [
            i for i, (_, t) in enumerate(schedule) if t == 0.0 and (i == 0 or schedule[i - 1][0] != schedule[i][0])
        ]
        for seg, i in enumerate(starts):  # each segment starts at its key's chosen levels, exactly
            assert torch.equal(frames[i, mask], keys[seg, mask])
        whole = torch.cat(list(path_latents(keys[:, mask], schedule, method=method)))
        assert torch.equal(frames[:, mask], whole)  # the path of the chosen parts alone


def test_the_levels_option_of_the_commands(tiny_run, toy_data, isolated_paths, tmp_path):
    import shutil

    import imageio.v3 as iio
    from typer.testing import CliRunner

    from latentlab.checkpoint import load_model
    from latentlab.cli.app import app
    from latentlab.render.faces import load_faces

    run = isolated_paths / "models" / "tiny"
    shutil.copytree(tiny_run, run)
    model = load_model(run)
    v = 0.5 * torch.randn(model.latent_dim, generator=torch.Generator().manual_seed(0))
    save_directions(
        isolated_paths / "attributes" / "tiny.safetensors",
        vectors={"Smiling": v},
        pos_counts=[9],
        neg_counts=[9],
        method="mean-diff",
        model_fingerprint=model_fingerprint(model),
        latent_std=[1.0],
    )
    a, b = sorted((toy_data / "img_align_celeba").iterdir())[:2]
    invoke = CliRunner().invoke
    edit = ["manipulate", str(a), "--attr", "Smiling", "--alpha", "1"]
    bad = invoke(app, [*edit, "--levels", "3", "--out", "x.png"])
    assert bad.exit_code == 1 and "levels are 1 (8x8), 2 (4x4, top)" in bad.stderr
    ok = invoke(app, [*edit, "--levels", "top", "--bare", "--out", "top.png"])
    assert ok.exit_code == 0 and "at level 2 (4x4)" in ok.stdout, ok.output
    z = encode_faces(model, load_faces([a], 16))
    mask = level_mask(latent_levels(model.latent_shapes), (2,))
    expected = decode_images(model, torch.where(mask, z + v, z))[0].permute(1, 2, 0).numpy()
    assert (iio.imread("top.png") == expected).all()
    loop = invoke(app, ["interpolate", str(a), str(b), "--levels", "1", "--frames", "2", "--out", "l.png", "--quiet"])
    assert loop.exit_code == 0, loop.output
