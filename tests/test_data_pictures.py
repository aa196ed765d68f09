"""Picture primitives: grids, upscaling, layouts and still images, every file read back and checked."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from latentlab.data.pictures import make_grid, save_image, to_hwc, upscale
from latentlab.errors import OutputError
from tests.test_render import images, moving_frame


def test_make_grid_places_every_image():
    imgs = images(5)
    grid = make_grid(torch.from_numpy(imgs), nrow=3, pad=2, pad_value=7)
    assert grid.shape == (2 * 4 + 3 * 2, 3 * 5 + 4 * 2, 3)
    for i in range(5):
        r, c = divmod(i, 3)
        y, x = 2 + r * 6, 2 + c * 7
        np.testing.assert_array_equal(grid[y : y + 4, x : x + 5], imgs[i].transpose(1, 2, 0))
    assert (grid[:2] == 7).all() and (grid[8:, 2 + 2 * 7 :] == 7).all()  # border and the empty last cell
    assert make_grid(imgs[:2], nrow=8).shape == (8, 2 * 5 + 3 * 2, 3)
    with pytest.raises(ValueError):
        make_grid(imgs.astype(np.float32), nrow=2)


def test_upscale_repeats_pixels_for_whole_factors_and_uses_lanczos_otherwise():
    frame = moving_frame(0, 2, 8, 10)
    big = upscale(frame, 40)
    assert big.shape == (32, 40, 3)
    np.testing.assert_array_equal(big[::4, ::4], frame)
    np.testing.assert_array_equal(big[3::4, 3::4], frame)
    assert upscale(frame, (13, 17)).shape == (13, 17, 3)
    assert upscale(frame, (4, 5)).shape == (4, 5, 3)


def test_to_hwc():
    assert to_hwc(images(2)).shape == (2, 4, 5, 3)


def test_save_image_png_exact_jpeg_close_and_atomic(tmp_path):
    frame = moving_frame(3, 10)
    save_image(tmp_path / "a.png", frame)
    np.testing.assert_array_equal(iio.imread(tmp_path / "a.png"), frame)
    save_image(tmp_path / "b.JPG", frame)
    assert np.abs(iio.imread(tmp_path / "b.JPG").astype(int) - frame).mean() < 6
    with pytest.raises(OutputError, match=r"\.png, \.jpg, \.jpeg"):
        save_image(tmp_path / "c.tiff", frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.JPG"]
