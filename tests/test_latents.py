"""The latent store: batched encoding equals in-memory encoding, resumes after an interruption, refuses mismatches."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from latentlab.checkpoint import load_model, model_fingerprint
from latentlab.data.cache import prepare_cache
from latentlab.errors import DataError, OutputError
from latentlab.latents import default_image_folder, encode_images, encode_to_store, open_store
from latentlab.latents import encode as encode_module
from latentlab.latents import store as store_module


@pytest.fixture
def model(tiny_run: Path):
    return load_model(tiny_run)


@pytest.fixture
def images(toy_data: Path) -> Path:
    return toy_data / "img_align_celeba"


def in_memory_latents(model, folder: Path) -> tuple[np.ndarray, list[str]]:
    cache = prepare_cache(folder, model.config.image_size, workers=1, progress=False)
    with torch.inference_mode():
        z = model.eval().encode(model.preprocess(torch.from_numpy(np.array(cache.images))))
    return z.numpy(), cache.names


def test_store_equals_in_memory_encoding_whatever_the_batch_size(model, images, tmp_path):
    expected, names = in_memory_latents(model, images)
    for batch_size in (7, 64):
        out = tmp_path / f"b{batch_size}"
        store = encode_to_store(model, images, out, dtype="float32", batch_size=batch_size, progress=False, workers=1)
        assert store.ids == names and store.latents.dtype == np.float32 and store.labels is None
        np.testing.assert_allclose(store.latents, expected, rtol=0, atol=1e-5)
        assert store.fingerprint == model_fingerprint(model) and store.meta["complete"]
        assert not (store.path / store_module.PARTIAL_FILE).exists()
    half = encode_to_store(model, images, tmp_path / "f16", progress=False, workers=1)
    assert half.latents.dtype == np.float16
    np.testing.assert_allclose(np.asarray(half.latents, dtype=np.float32), expected, rtol=2e-3, atol=2e-3)


def test_encode_images_yields_positions_along_rows(model, images):
    cache = prepare_cache(images, model.config.image_size, workers=1, progress=False)
    expected, _ = in_memory_latents(model, images)
    rows = np.array([3, 10, 11, 50, 95])
    got = dict(encode_images(model, cache, rows=rows, start=1, batch_size=2, progress=False))
    assert sorted(got) == [1, 3]
    np.testing.assert_allclose(torch.cat([got[1], got[3]]).numpy(), expected[rows[1:]], atol=1e-5)


def test_interrupted_encode_continues_where_it_stopped(model, images, tmp_path, monkeypatch):
    reference = encode_to_store(model, images, tmp_path / "whole", dtype="float32", batch_size=10, progress=False)
    monkeypatch.setattr(encode_module, "CHECKPOINT_EVERY", 2)
    calls = {"n": 0}
    real_encode = model.encode

    def failing_encode(x):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_encode(x)

    monkeypatch.setattr(model, "encode", failing_encode)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        encode_to_store(model, images, out, dtype="float32", batch_size=10, progress=False)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["done"] == 30 and not meta["complete"]  # the three finished batches were recorded
    with pytest.raises(DataError, match="incomplete.*30 of 96"):
        open_store(out)

    monkeypatch.setattr(model, "encode", real_encode)
    store = encode_to_store(model, images, out, dtype="float32", batch_size=10, progress=False)
    assert (store.resumed_from, store.encoded) == (30, 66)
    np.testing.assert_array_equal(store.latents, reference.latents)
    assert store.ids == reference.ids

    again = encode_to_store(model, images, out, dtype="float32", batch_size=10, progress=False)
    assert again.encoded == 0 and again.resumed_from == 96


def test_a_store_of_another_model_or_dtype_is_refused_unless_forced(model, images, tmp_path):
    out = tmp_path / "store"
    encode_to_store(model, images, out, progress=False, limit=20)
    with pytest.raises(OutputError, match="another dtype.*--force"):
        encode_to_store(model, images, out, dtype="float32", progress=False, limit=20)
    with pytest.raises(OutputError, match="another set of images"):
        encode_to_store(model, images, out, progress=False, limit=21)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.top_mean.add_(0.1)
    with pytest.raises(OutputError, match="another model"):
        encode_to_store(other, images, out, progress=False, limit=20)
    store = encode_to_store(other, images, out, progress=False, limit=20, force=True)
    assert store.fingerprint == model_fingerprint(other) and len(store) == 20


def test_labels_select_and_align_the_images(model, toy_data, images, tmp_path):
    table = pd.read_csv(toy_data / "list_attr_celeba.csv", dtype={"image_id": str})
    kept = table.drop(index=[0, 5, 9]).sample(frac=1.0, random_state=0)  # three missing rows, shuffled order
    extra = kept.iloc[:2].assign(image_id=["999998.png", "999999.png"])
    labels = tmp_path / "labels.csv"
    pd.concat([kept, extra]).to_csv(labels, index=False)
    store = encode_to_store(model, images, tmp_path / "store", labels=labels, progress=False)
    match = store.meta["match"]
    assert (match["matched"], match["images_without_labels"], match["labels_without_image"]) == (93, 3, 2)
    assert len(store) == 93 and store.ids == sorted(store.ids)
    expected = table.set_index("image_id").loc[store.ids]
    np.testing.assert_array_equal(store.labels.to_numpy(), expected.to_numpy())
    assert "3 images without labels" in store.match_summary()


def test_missing_and_unfinished_stores_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="run `latentlab encode` first"):
        open_store(tmp_path / "nothing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "meta.json").write_text('{"format": "something-else"}')
    with pytest.raises(OutputError, match="not a latentlab latent store"):
        open_store(tmp_path / "other")


def test_default_image_folder_follows_the_celeba_layouts(tmp_path):
    labels = tmp_path / "list_attr_celeba.csv"
    assert default_image_folder(labels) == tmp_path
    (tmp_path / "img_align_celeba").mkdir()
    assert default_image_folder(labels) == tmp_path / "img_align_celeba"
    (tmp_path / "img_align_celeba" / "img_align_celeba").mkdir()  # Kaggle's nesting
    assert default_image_folder(labels) == tmp_path / "img_align_celeba" / "img_align_celeba"
