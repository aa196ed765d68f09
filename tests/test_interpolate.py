"""The interpolate pipeline's library: schedules, streamed frames, and the written loop."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from latentlab import Glow, GlowConfig
from latentlab.errors import ConfigError, OutputError
from latentlab.render.animate import MIN_VIEW, interpolation_frames, write_interpolation
from latentlab.render.faces import decode_images, display_size, encode_faces
from latentlab.render.interpolation import hold_frames, loop_frames


@pytest.fixture(scope="module")
def model() -> Glow:
    torch.manual_seed(0)
    glow = Glow(GlowConfig(image_size=8, levels=2, steps=1, width=8))
    glow.initialize(torch.rand(16, 3, 8, 8) - 0.5)
    return glow.eval()


@pytest.fixture
def faces() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (3, 3, 8, 8), generator=g, dtype=torch.uint8)


def png_frames(path, n: int, side: int) -> list[np.ndarray]:
    """Cut a FrameWriter .png strip (2 px padding, all in one row up to 10 frames) back into frames."""
    strip = iio.imread(path)
    cols = n if n <= 10 else int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    assert strip.shape[:2] == (rows * side + (rows + 1) * 2, cols * side + (cols + 1) * 2)
    frames = []
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = 2 + r * (side + 2), 2 + c * (side + 2)
        frames.append(strip[y : y + side, x : x + side])
    return frames


def test_loop_frames_count_holds_and_start():
    for ease in (False, True):
        schedule = loop_frames(3, 12, ease=ease)
        assert len(schedule) == 3 * 12 and schedule[0] == (0, 0.0)
    assert hold_frames(12, True) == 2 and hold_frames(12, False) == 0
    assert loop_frames(2, 12, ease=True)[:3] == [(0, 0.0), (0, 0.0), (0, 0.0)]  # the hold, then the move
    assert [display_size(n, at_least=MIN_VIEW) for n in (8, 16, 48)] == [256, 256, 288]
    assert display_size(8, 100, at_least=MIN_VIEW) == 100
    with pytest.raises(ConfigError, match="between 1 and"):
        loop_frames(2, 0, ease=False)


def test_frames_stream_in_batches_and_equal_the_whole_path(model, faces):
    keys = encode_faces(model, faces)
    schedule = loop_frames(3, 5, ease=True)
    frames = interpolation_frames(model, keys, schedule, size=16, batch_size=4)
    assert iter(frames) is frames  # a generator: nothing is decoded up front
    small = np.stack(list(frames))
    whole = np.stack(list(interpolation_frames(model, keys, schedule, size=16, batch_size=64)))
    assert small.shape == (15, 16, 16, 3)
    np.testing.assert_array_equal(small, whole)


@pytest.mark.parametrize("method", ["slerp", "linear"])
def test_loop_starts_on_the_first_reconstruction_and_closes(model, faces, tmp_path, method):
    out = write_interpolation(
        model, faces, tmp_path / "loop.png", frames=6, method=method, ease=False, size=16, batch_size=5
    )
    assert (out.frames, out.size, out.seconds) == (18, (16, 16), pytest.approx(18 / 30))
    frames = [f.astype(int) for f in png_frames(out.path, 18, 16)]
    recon = decode_images(model, encode_faces(model, faces)).permute(0, 2, 3, 1).numpy()
    for key in range(3):  # every segment starts exactly on its face's reconstruction
        expected = np.repeat(np.repeat(recon[key], 2, 0), 2, 1)
        np.testing.assert_array_equal(frames[6 * key], expected)
    steps = [np.abs(frames[i + 1] - frames[i]).mean() for i in range(17)]
    assert np.abs(frames[0] - frames[-1]).mean() <= max(steps)  # wrapping around is just another step


def test_progress_is_reported_per_frame_and_bad_requests_fail_before_work(model, faces, tmp_path):
    seen = []
    write_interpolation(model, faces[:2], tmp_path / "a.gif", frames=4, size=16, progress=seen.append)
    assert sum(seen) == 8
    with pytest.raises(ConfigError, match="at least 2 faces"):
        write_interpolation(model, faces[:1], tmp_path / "b.gif")
    with pytest.raises(ConfigError, match="slerp, linear"):
        write_interpolation(model, faces, tmp_path / "b.gif", method="cubic")
    with pytest.raises(OutputError, match="too many for a PNG strip"):
        write_interpolation(model, faces, tmp_path / "b.png", frames=100)
    with pytest.raises(OutputError, match=r"\.mp4, \.gif, \.webp, \.png"):
        write_interpolation(model, faces, tmp_path / "b.avi")
    with pytest.raises(ConfigError, match="too fast for a GIF"):
        write_interpolation(model, faces, tmp_path / "b.gif", fps=60)
    assert [p.name for p in tmp_path.iterdir()] == ["a.gif"]


def test_interpolate_job_names_its_output_after_the_faces(model, faces, tmp_path, isolated_paths):
    from PIL import Image

    from latentlab import save_model
    from latentlab.render.jobs import interpolate

    save_model(model, isolated_paths / "models" / "run")
    paths = []
    for name, face in zip("abcd", [*faces, faces[0]], strict=True):
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(face.permute(1, 2, 0).numpy()).save(paths[-1])
    out = interpolate(paths[:2], frames=3, fps=10, size=16, device="cpu")  # written here, in the working folder
    assert (out.path, out.frames, out.size, out.fps) == (Path("a_b_loop.mp4"), 6, (16, 16), 10.0)
    assert iio.imread(isolated_paths / "a_b_loop.mp4", index=...).shape == (6, 16, 16, 3)
    out = interpolate(paths, frames=2, size=16, device="cpu")
    assert out.path == Path("a_b_c_etc_loop.mp4") and out.frames == 8
    with pytest.raises(ConfigError, match="at least 2 faces"):  # before looking for a model
        interpolate(paths[:1], model=tmp_path / "no-run")
    with pytest.raises(ConfigError, match="slerp, linear"):
        interpolate(paths, method="cubic", model=tmp_path / "no-run")
