"""Checkpoints: bit-exact round trips, and a clear one-line error for every bad file."""

from __future__ import annotations

import pickle

import pytest
import torch

from latentlab import Glow, GlowConfig, load_model, save_model
from latentlab.checkpoint import model_fingerprint, read_model_metadata, save_tensors
from latentlab.errors import CheckpointError


@pytest.fixture(params=[{}, {"prior_width": 6, "position_bias": True}], ids=["glow", "prior-net-position"])
def model(request) -> Glow:
    torch.manual_seed(0)
    m = Glow(GlowConfig(image_size=8, levels=2, steps=2, width=8, **request.param))
    m.initialize(torch.rand(4, 3, 8, 8) - 0.5)
    return m


def test_round_trip_is_bit_exact(model, tmp_path):
    path = save_model(model, tmp_path / "run", step=12, metrics={"val_bpd": 3.5})
    assert path == tmp_path / "run" / "model.safetensors"
    loaded = load_model(tmp_path / "run")
    assert loaded.config == model.config
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and a.dtype == b.dtype and torch.equal(a, b)
    assert loaded.is_initialized and not loaded.training
    meta = read_model_metadata(path)
    assert meta["step"] == 12 and meta["metrics"]["val_bpd"] == 3.5 and meta["initialized"] is True
    assert meta["fingerprint"] == model_fingerprint(loaded)
    x = torch.rand(2, 3, 8, 8) - 0.5
    assert torch.equal(model.encode(x), loaded.encode(x))


def test_load_from_file_path_and_no_temp_files_left(model, tmp_path):
    path = save_model(model, tmp_path / "ckpt.safetensors")
    load_model(path)
    save_model(model, tmp_path / "ckpt.safetensors")  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]


def test_fingerprint_changes_with_weights(model):
    before = model_fingerprint(model)
    with torch.no_grad():
        model.top_mean.add_(1e-3)
    assert model_fingerprint(model) != before


@pytest.mark.parametrize("cut", [0, 5, 100, -10])
def test_truncated_checkpoint_is_a_clear_error(model, tmp_path, cut):
    data = save_model(model, tmp_path / "good.safetensors").read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data[:cut] if cut >= 0 else data[:cut])
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_model(bad)


def test_garbage_and_missing_files(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + b"x" * 50)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(junk)
    with pytest.raises(CheckpointError, match="no model checkpoint"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(CheckpointError, match="no model checkpoint"):
        load_model(tmp_path / "empty_run")


def test_pickle_is_refused_without_unpickling(model, tmp_path):
    marker = tmp_path / "executed"

    class Boom:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "model.safetensors"
    evil.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError, match="pickle"):
        load_model(evil)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="pickle"):
        load_model(tmp_path / "weights.pt")
    assert not marker.exists()


def test_foreign_safetensors_and_incompatible_config(model, tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "foreign.safetensors")
    with pytest.raises(CheckpointError, match="not a latentlab"):
        load_model(tmp_path / "foreign.safetensors")
    meta = read_model_metadata(save_model(model, tmp_path / "a.safetensors"))
    meta["config"]["width"] = 16  # the weights no longer fit the config
    save_tensors(tmp_path / "b.safetensors", model.state_dict(), meta)
    with pytest.raises(CheckpointError, match="does not match its config"):
        load_model(tmp_path / "b.safetensors")
    meta["config"] = {"image_size": 8, "levels": 2, "bogus": 1}
    save_tensors(tmp_path / "c.safetensors", model.state_dict(), meta)
    with pytest.raises(CheckpointError, match="invalid model config"):
        load_model(tmp_path / "c.safetensors")


def test_nan_weights_refused(model, tmp_path):
    with torch.no_grad():
        model.top_logs[0, 0, 0, 0] = float("nan")
    save_model(model, tmp_path / "nan")
    with pytest.raises(CheckpointError, match="non-finite"):
        load_model(tmp_path / "nan")
