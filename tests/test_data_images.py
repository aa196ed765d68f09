"""Image discovery and decoding: every mode to RGB, EXIF, crops, and refusal of bad files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentlab.data.images import CELEBA_CROP_BOX, list_images, load_image, try_load_image
from latentlab.errors import DataError

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "celeba-sample"


def _save(im: Image.Image, path: Path, **kwargs) -> Path:
    im.save(path, **kwargs)
    return path


def _uniform(out: np.ndarray) -> tuple[int, int, int]:
    """The colour of a (3, S, S) image that should be one flat colour (checked to ±1 level)."""
    colour = out[:, out.shape[1] // 2, out.shape[2] // 2].astype(int)
    assert np.abs(out.astype(int) - colour[:, None, None]).max() <= 1
    return tuple(int(v) for v in colour)


# ---- list_images -------------------------------------------------------------------------------


def test_list_images_recursive_sorted_case_insensitive_and_skips_hidden(tmp_path: Path) -> None:
    rgb = Image.new("RGB", (8, 8))
    for rel in ["b.png", "a.JPG", "sub/c.Jpeg", "sub/deeper/d.webp", "e.bmp", ".hidden.png", ".latentlab-cache/x.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP"}[rel.rsplit(".", 1)[1].lower()]
        rgb.save(tmp_path / rel, format=fmt)
    (tmp_path / "notes.txt").write_text("not an image")
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["a.JPG", "b.png", "e.bmp", "sub/c.Jpeg", "sub/deeper/d.webp"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: _touch(p / "file.png"), "is a file, not a folder"),
        (lambda p: p, "no images in"),
    ],
)
def test_list_images_refuses_missing_file_or_empty_folder(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(DataError, match=message):
        list_images(make(tmp_path))


def _touch(path: Path) -> Path:
    path.write_bytes(b"x")
    return path


# ---- modes ---------------------------------------------------------------------------------------


def _mode_cases() -> list[tuple[str, callable, tuple[int, int, int]]]:
    def palette(transparent: bool) -> Image.Image:
        im = Image.new("P", (20, 20), 1)
        im.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
        if transparent:
            im.info["transparency"] = 1
        return im

    return [
        ("L", lambda: Image.new("L", (20, 20), 100), (100, 100, 100)),
        ("LA opaque", lambda: Image.new("LA", (20, 20), (100, 255)), (100, 100, 100)),
        ("LA transparent", lambda: Image.new("LA", (20, 20), (100, 0)), (255, 255, 255)),
        ("P", lambda: palette(False), (10, 200, 30)),
        ("P transparent", lambda: palette(True), (255, 255, 255)),
        ("RGBA opaque", lambda: Image.new("RGBA", (20, 20), (255, 0, 0, 255)), (255, 0, 0)),
        ("RGBA transparent", lambda: Image.new("RGBA", (20, 20), (255, 0, 0, 0)), (255, 255, 255)),
        ("RGBA half", lambda: Image.new("RGBA", (20, 20), (255, 0, 0, 128)), (255, 127, 127)),
        ("CMYK", lambda: Image.new("CMYK", (20, 20), (0, 255, 255, 0)), (255, 0, 0)),
        ("1", lambda: Image.new("1", (20, 20), 1), (255, 255, 255)),
        ("I;16", lambda: Image.fromarray(np.full((20, 20), 128 * 257, np.uint16)), (128, 128, 128)),
        ("I;16 max", lambda: Image.fromarray(np.full((20, 20), 65535, np.uint16)), (255, 255, 255)),
        ("I;16B", lambda: Image.new("I;16B", (20, 20), 200 * 257), (200, 200, 200)),
        ("I 16-bit range", lambda: Image.fromarray(np.full((20, 20), 40000, np.int32)), (156, 156, 156)),
        ("F unit range", lambda: Image.fromarray(np.full((20, 20), 0.5, np.float32)), (128, 128, 128)),
    ]


@pytest.mark.parametrize(("name", "make", "expected"), _mode_cases(), ids=[c[0] for c in _mode_cases()])
def test_every_mode_becomes_rgb_with_the_right_colour(tmp_path: Path, name: str, make, expected) -> None:
    im = make()
    fmt = "TIFF" if im.mode in ("I;16B", "I", "F", "CMYK") else "PNG"
    path = _save(im, tmp_path / f"x.{fmt.lower()}", format=fmt)
    out = load_image(path, 16)
    assert out.shape == (3, 16, 16) and out.dtype == np.uint8
    assert np.abs(np.array(_uniform(out)) - np.array(expected)).max() <= 1, name


def test_sixteen_bit_png_keeps_its_gradient(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (32, 1))
    out = load_image(_save(Image.fromarray(ramp), tmp_path / "ramp.png"), 32)
    row = out[0, 16].astype(int)
    assert row[0] <= 2 and row[-1] >= 253  # scaled, not clipped to 255 from value 256 on
    assert np.all(np.diff(row) >= 0) and len(np.unique(row)) > 20


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 20, 20))  # stored: red left half, blue right half
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90° clockwise: the stored left edge is shown on top
    path = _save(im, tmp_path / "rotated.jpg", exif=exif, quality=95)
    out = load_image(path, 16).astype(int)
    top, bottom = out[:, 1].mean(axis=1), out[:, -2].mean(axis=1)
    assert top[0] > 200 and top[2] < 60  # red on top
    assert bottom[2] > 200 and bottom[0] < 60  # blue below


def test_celeba_aligned_size_gets_the_standard_face_crop(tmp_path: Path) -> None:
    im = Image.new("RGB", (178, 218), (255, 0, 0))
    im.paste((0, 255, 0), CELEBA_CROP_BOX)
    out = load_image(_save(im, tmp_path / "000001.png"), 37).astype(int)
    assert np.all(out[1] > out[0]), "the 148×148 face box alone should fill the output"


def test_other_sizes_get_a_centre_square(tmp_path: Path) -> None:
    wide = Image.new("RGB", (60, 30), (255, 0, 0))
    wide.paste((0, 0, 255), (15, 0, 45, 30))
    tall = wide.transpose(Image.Transpose.ROTATE_90)
    for name, im in (("wide.png", wide), ("tall.png", tall)):
        out = load_image(_save(im, tmp_path / name), 12).astype(int)
        assert np.all(out[2] > 200) and np.all(out[0] < 40), name


def test_resize_is_antialiased(tmp_path: Path) -> None:
    stripes = np.zeros((64, 64), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: point sampling would give pure black or white
    out = load_image(_save(Image.fromarray(stripes), tmp_path / "s.png"), 8)
    assert np.abs(out.astype(int) - 128).max() < 20


# ---- refusals ------------------------------------------------------------------------------------


def test_tiny_images_are_refused(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (4, 30)), tmp_path / "tiny.png")
    with pytest.raises(DataError, match=r"tiny\.png.*4×30.*at least 8"):
        load_image(path, 16)


def test_missing_empty_and_non_image_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("definitely not a jpeg")
    for name, message in (("missing.jpg", "not found"), ("empty.jpg", "empty"), ("text.jpg", "not a readable image")):
        with pytest.raises(DataError, match=message) as info:
            load_image(tmp_path / name, 16)
        assert name in str(info.value)


def test_truncated_jpeg_is_refused_not_half_grey(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = _save(Image.fromarray(noise), tmp_path / "full.jpg", quality=90).read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match=r"cut\.jpg.*truncated"):
        load_image(cut, 16)
    image, reason = try_load_image(cut, 16)
    assert image is None and "truncated" in reason


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width×height RGB pixels, with one tiny IDAT: decoding it would allocate GBs."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("width", "height", "shown"), [(100_000, 100_000, "10,000,000,000 pixels"), (10_000, 5_000, "10000×5000")]
)
def test_decompression_bombs_are_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, width: int, height: int, shown: str
) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(width, height))

    def no_decoding(self):  # any attempt to decode the pixels fails the test
        raise AssertionError("the bomb was decoded")

    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    with pytest.raises(DataError, match="refusing to decode images over 40 megapixels") as info:
        load_image(path, 64)
    assert shown in str(info.value) and "bomb.png" in str(info.value)


# ---- real CelebA -------------------------------------------------------------------------------


@pytest.mark.skipif(not (SAMPLE / "images").is_dir(), reason="shared/celeba-sample is not present")
def test_real_celeba_images_decode_to_faces() -> None:
    paths = list_images(SAMPLE / "images")[:4]
    for path in paths:
        out = load_image(path, 64)
        assert out.shape == (3, 64, 64) and out.dtype == np.uint8 and out.std() > 10


def test_big_jpegs_decode_reduced_but_match_a_full_decode(tmp_path: Path) -> None:
    y, x = np.mgrid[0:1200, 0:1600]
    photo = np.stack([x * 255 // 1600, y * 255 // 1200, (x + y) * 255 // 2800], axis=-1).astype(np.uint8)
    path = _save(Image.fromarray(photo), tmp_path / "photo.jpg", quality=95)
    with Image.open(path) as full:
        reference = full.convert("RGB").resize((32, 32), Image.Resampling.LANCZOS, box=(200, 0, 1400, 1200))
    out = load_image(path, 32)
    assert np.abs(out.astype(int) - np.asarray(reference).transpose(2, 0, 1)).mean() < 1.5
