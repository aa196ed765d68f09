"""Labelled grids, animations and output paths: every file is read back and checked."""

from __future__ import annotations

import os

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from latentlab.data.pictures import make_grid, plain_text
from latentlab.errors import ConfigError, OutputError
from latentlab.fileio import check_output_path
from latentlab.render import video as video_module
from latentlab.render.pictures import label_grid
from latentlab.render.video import FrameWriter


def moving_frame(i: int, n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Red grows rightwards, blue downwards, pure colour patches top-left, a yellow box moving right."""
    f = np.zeros((h, w, 3), dtype=np.uint8)
    f[..., 0] = np.linspace(0, 255, w, dtype=np.float64)[None, :].astype(np.uint8)
    f[..., 2] = np.linspace(0, 255, h, dtype=np.float64)[:, None].astype(np.uint8)
    f[:8, :8], f[:8, 8:16], f[:8, 16:24] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    x = int((w - 12) * i / max(n - 1, 1))
    f[h - 16 : h - 4, x : x + 12] = (255, 255, 0)
    return f


def images(n: int, h: int = 4, w: int = 5) -> np.ndarray:
    return np.arange(n * 3 * h * w, dtype=np.int64).reshape(n, 3, h, w).astype(np.uint8)


def test_label_grid_adds_margins_with_text():
    rows = [[im for im in images(3, 32, 32)], [im for im in images(2, 32, 32)]]  # a short second row
    plain = label_grid(rows)
    assert plain.shape == make_grid(images(4, 32, 32), nrow=3).shape
    labelled = label_grid(rows, ["Smiling", "Male"], ["α=-1", "α=0", "α=+1"])
    extra_h, extra_w = labelled.shape[0] - plain.shape[0], labelled.shape[1] - plain.shape[1]
    assert extra_h > 5 and extra_w > 20
    assert (labelled[:extra_h, extra_w:] < 100).any()  # column labels drawn above
    assert (labelled[extra_h:, :extra_w] < 100).any()  # row labels drawn left
    assert (labelled[-34:-2, -34:-2] == 255).all()  # the missing cell is blank
    assert plain_text("α=0.5, σ") == "alpha=0.5, sigma"
    with pytest.raises(ValueError):
        label_grid(rows, ["only one"], None)


@pytest.mark.parametrize(("ext", "tolerance"), [(".mp4", 6.0), (".gif", 6.0), (".webp", 8.0)])
def test_animation_formats_decode_with_the_right_frames(tmp_path, ext, tolerance):
    n = 12
    frames = [moving_frame(i, n) for i in range(n)]
    path = tmp_path / f"loop{ext}"
    with FrameWriter(path, fps=12) as writer:
        writer.append(frames[0])
        for frame in np.stack(frames[1:]):
            writer.append(frame)
    assert writer.n_frames == n
    back = iio.imread(path, index=...)[..., :3]
    assert back.shape == (n, 48, 64, 3)
    for i in (0, n // 2, n - 1):
        diff = np.abs(back[i].astype(int) - frames[i])
        assert diff.mean() < tolerance
        # the colour patches keep their colours: no channel swap, no tint
        for (y, x), colour in [((4, 4), (255, 0, 0)), ((4, 12), (0, 255, 0)), ((4, 20), (0, 0, 255))]:
            assert np.abs(back[i, y, x].astype(int) - colour).max() < 16
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_gif_loops_forever_at_the_requested_rate(tmp_path):
    path = tmp_path / "loop.gif"
    with FrameWriter(path, fps=30) as writer:
        for i in range(30):
            writer.append(moving_frame(i, 30))
    with Image.open(path) as gif:
        assert gif.info["loop"] == 0
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
    assert abs(sum(durations) - 1000) <= 20  # 30 frames at 30 fps: one second, in whole centiseconds


def test_mp4_with_odd_size_is_padded_to_even(tmp_path):
    path = tmp_path / "odd.mp4"
    with FrameWriter(path, fps=10) as writer:
        for i in range(4):
            writer.append(moving_frame(i, 4, 33, 47))
    back = iio.imread(path, index=...)
    assert back.shape == (4, 34, 48, 3)
    assert np.abs(back[0, :33, :47].astype(int) - moving_frame(0, 4, 33, 47)).mean() < 6


def test_png_strip_tiles_the_frames(tmp_path):
    frames = [moving_frame(i, 5) for i in range(5)]
    with FrameWriter(tmp_path / "strip.png") as writer:
        for frame in frames:
            writer.append(frame)
    expected = make_grid(np.stack(frames).transpose(0, 3, 1, 2), nrow=5)
    np.testing.assert_array_equal(iio.imread(tmp_path / "strip.png"), expected)


def test_failed_writes_leave_nothing_and_keep_the_old_file(tmp_path):
    path = tmp_path / "out.mp4"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), FrameWriter(path) as writer:
        writer.append(moving_frame(0, 2))
        raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    with pytest.raises(ValueError, match="first frame"), FrameWriter(path) as writer:
        writer.append(moving_frame(0, 2))
        writer.append(moving_frame(0, 2, 50, 64))
    with pytest.raises(OutputError, match="no frames"), FrameWriter(tmp_path / "empty.gif"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
    assert path.read_bytes() == b"old"


@pytest.mark.parametrize(("ext", "frames"), [(".mp4", 1), (".gif", 30)])  # fails at the end / while writing
def test_a_failing_ffmpeg_is_an_output_error_and_leaves_the_old_file(tmp_path, monkeypatch, ext, frames):
    path = tmp_path / f"out{ext}"
    path.write_bytes(b"old")
    monkeypatch.setattr(video_module, "ffmpeg_settings", lambda suffix, quality: ("no-such-codec", "yuv420p", []))
    with pytest.raises(OutputError, match="ffmpeg"), FrameWriter(path, fps=10) as writer:
        for i in range(frames):
            writer.append(moving_frame(i, frames))
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_writer_refuses_bad_settings(tmp_path):
    with pytest.raises(OutputError, match=r"\.mp4, \.gif, \.webp, \.png"):
        FrameWriter(tmp_path / "x.avi")
    with pytest.raises(ConfigError, match="GIF"):
        FrameWriter(tmp_path / "x.gif", fps=60)
    with pytest.raises(ConfigError, match="fps"):
        FrameWriter(tmp_path / "x.mp4", fps=float("nan"))
    with pytest.raises(ConfigError, match="quality"):
        FrameWriter(tmp_path / "x.mp4", quality=10)


def test_output_may_not_be_an_input(tmp_path, monkeypatch):
    face = tmp_path / "face.jpg"
    face.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    for out in (face, "face.jpg", tmp_path / "sub" / ".." / "face.jpg"):
        with pytest.raises(OutputError, match="also an input"):
            check_output_path(out, [tmp_path / "other.jpg", face])
    os.link(face, tmp_path / "hard.jpg")
    with pytest.raises(OutputError):
        check_output_path(tmp_path / "hard.jpg", [face])
    check_output_path(tmp_path / "edit.png", [face])
