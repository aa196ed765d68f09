"""Bad inputs through the real CLI, over every command: one red line, the right exit code, nothing half-written.

Each case runs `latentlab ...` with CliRunner on tiny data (the session's toy faces and tiny run, plus files
crafted here: odd image modes, a truncated JPEG, a PNG header claiming 100,000 x 100,000 pixels, a pickle
named model.safetensors, label files with duplicate ids or NaNs, a direction file of another model) and checks:
- the exit code: 1 for a user error, 2 for a usage error, 0 for inputs that must be accepted;
- an error is exactly one non-empty line on stderr that names the bad value or what to do, and no traceback;
- a failed command changes no file (an earlier result at the output path keeps its bytes), and no command
  leaves temporary files behind; the session's inputs are never modified.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from latentlab import Glow, GlowConfig, save_model
from latentlab.checkpoint import load_model, load_tensors, model_fingerprint, save_tensors
from latentlab.cli.app import app
from latentlab.data.toy_faces import TOY_ATTRIBUTES
from latentlab.directions.file import save_directions
from latentlab.latents import encode_to_store
from tests.conftest import TINY_MODEL

runner = CliRunner()
COMMANDS = set(typer.main.get_command(app).commands)

TRAIN_FLAGS = (
    *("--max-steps", "1", "--batch-size", "16", "--quiet", "--device", "cpu"),
    *("--set", "image_size=16", "--set", "levels=2", "--set", "steps=1", "--set", "width=8"),
    *("--set", "workers=1", "--set", "val_every=1000", "--set", "sample_every=1000"),
)
ATTRS = ("Smiling", "Blond_Hair")
EARLIER = b"an earlier result that a failed command must leave as it is\n"
ALLOWED_HIDDEN = {".lock"}  # the latent store's lock file is part of a store


# ---- crafted files ------------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png_header(path: Path, width: int, height: int) -> Path:
    """A tiny, well-formed PNG (valid CRCs) whose header claims width x height RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    )
    return path


def _folder(path: Path, files: dict[str, Path | bytes] | None = None) -> Path:
    path.mkdir(parents=True)
    for name, source in (files or {}).items():
        if isinstance(source, bytes):
            (path / name).write_bytes(source)
        else:
            shutil.copy(source, path / name)
    return path


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory, toy_data: Path, tiny_run: Path) -> SimpleNamespace:
    """Every crafted input, built once; cases only read them (the checks below make sure of it)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    a = SimpleNamespace(root=root, run=tiny_run, toy=toy_data, images=toy_data / "img_align_celeba")
    a.labels = toy_data / "list_attr_celeba.csv"
    a.face1, a.face2 = a.images / "000001.png", a.images / "000002.png"

    face = Image.open(a.face1).convert("RGB").resize((40, 48))
    modes = _folder(root / "modes")
    a.cmyk, a.gray16, a.palette, a.gray, a.rgba = (
        modes / n for n in ("cmyk.jpg", "gray16.png", "palette.png", "gray.jpg", "rgba.png")
    )
    face.convert("CMYK").save(a.cmyk)
    Image.fromarray(np.asarray(face.convert("L"), dtype=np.uint16) * 257).save(a.gray16)
    face.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(a.palette)
    face.convert("L").save(a.gray)
    translucent = face.convert("RGBA")
    translucent.putalpha(128)
    translucent.save(a.rgba)
    modes_written = {p.stem: Image.open(p).mode for p in modes.iterdir()}
    assert modes_written == {"cmyk": "CMYK", "gray16": "I;16", "palette": "P", "gray": "L", "rgba": "RGBA"}

    bad = _folder(root / "bad")
    a.not_image = bad / "not_image.jpg"
    a.not_image.write_text("this is text, not a JPEG\n")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noise.save(buf, "JPEG", quality=95)
    a.truncated = bad / "truncated.jpg"
    a.truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    a.empty_jpg = bad / "empty.jpg"
    a.empty_jpg.write_bytes(b"")
    a.one_pixel = bad / "one_pixel.png"
    Image.new("RGB", (1, 1), "white").save(a.one_pixel)
    a.bomb = write_png_header(bad / "bomb.png", 100_000, 100_000)  # Pillow's own bomb limit refuses it
    a.big = write_png_header(bad / "big.png", 8000, 8000)  # under Pillow's limit, over latentlab's 40 MP
    a.dir_jpg = _folder(bad / "folder.jpg")

    a.empty_dir = _folder(root / "empty")
    a.only_bad = _folder(root / "only-bad", {"a.jpg": a.not_image, "b.jpg": a.truncated, "c.jpg": a.empty_jpg})
    a.bomb_only = _folder(root / "bomb-only", {"bomb.png": a.bomb})
    a.mixed = _folder(
        root / "mixed",
        {
            "good1.png": a.face1,
            "good2.png": a.face2,
            "not_image.jpg": a.not_image,
            "truncated.jpg": a.truncated,
            "empty.jpg": a.empty_jpg,
            "one_pixel.png": a.one_pixel,
            "bomb.png": a.bomb,
            "big.png": a.big,
        },
    )
    a.modes = modes

    labels = _folder(root / "labels")
    text = a.labels.read_text(encoding="utf-8")
    header, first = text.splitlines()[:2]
    a.lab = SimpleNamespace()
    for name, content in {
        "no_id": "Smiling,Male\n1,-1\n-1,1\n",
        "duplicate": f"{header}\n{first}\n{first}\n",
        "value_2": "image_id,Smiling\n000001.png,2\n000002.png,-1\n",
        "nan": "image_id,Smiling\n000001.png,NaN\n000002.png,1\n",
        "empty_cell": "image_id,Smiling\n000001.png,\n000002.png,1\n",
        "mixed_negatives": "image_id,Smiling,Male\n000001.png,0,1\n000002.png,1,-1\n",
        "empty": "",
        "header_only": f"{header}\n",
        "no_match": "image_id,Smiling\nnope1.jpg,1\nnope2.jpg,-1\n",
    }.items():
        path = labels / f"{name}.csv"
        path.write_text(content, encoding="utf-8")
        setattr(a.lab, name, path)
    a.lab.crlf_bom = labels / "crlf_bom.csv"
    a.lab.crlf_bom.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    a.lab.latin1 = labels / "latin1.csv"
    a.lab.latin1.write_bytes("image_id,Lächeln\n000001.png,1\n".encode("latin-1"))
    a.lab.zero_one = labels / "zero_one.csv"
    a.lab.zero_one.write_text(text.replace(",-1", ",0"), encoding="utf-8")

    ckpt = _folder(root / "checkpoints")
    model = load_model(tiny_run)
    data = (tiny_run / "model.safetensors").read_bytes()
    a.ckpt_zero = ckpt / "zero.safetensors"
    a.ckpt_zero.write_bytes(b"")
    a.ckpt_truncated = ckpt / "truncated.safetensors"
    a.ckpt_truncated.write_bytes(data[: len(data) // 2])
    a.pickle_run = _folder(ckpt / "pickled")
    torch.save(model.state_dict(), a.pickle_run / "model.safetensors")  # a zip of pickles, whatever the name
    tensors, meta = load_tensors(tiny_run / "model.safetensors")
    a.ckpt_other_config = save_tensors(
        ckpt / "other_config.safetensors", tensors, {**meta, "config": {**meta["config"], "width": 32}}
    )
    nan_tensors = {k: v.clone() for k, v in tensors.items()}
    nan_tensors[next(k for k, v in tensors.items() if v.is_floating_point())].fill_(float("nan"))
    a.ckpt_nan = save_tensors(ckpt / "nan.safetensors", nan_tensors, meta)
    a.ckpt_newer = save_tensors(ckpt / "newer.safetensors", tensors, {**meta, "format_version": 99})
    a.ckpt_plain = ckpt / "plain.safetensors"
    save_file({"x": torch.zeros(3)}, a.ckpt_plain)
    torch.manual_seed(1)
    other = Glow(GlowConfig(**TINY_MODEL))
    other.initialize(torch.rand(8, 3, 16, 16) - 0.5)
    a.other_run = ckpt / "other-run"
    save_model(other, a.other_run)

    g = torch.Generator().manual_seed(0)
    vectors = {name: 0.5 * torch.randn(model.latent_dim, generator=g) for name in ATTRS}
    common = {"pos_counts": [9, 9], "neg_counts": [9, 9], "method": "mean-diff", "latent_std": [1.0, 1.0]}
    vec = _folder(root / "vectors")
    a.vectors = save_directions(
        vec / "tiny.safetensors", vectors=vectors, model_fingerprint=model_fingerprint(model), **common
    )
    a.vectors_other = save_directions(
        vec / "other.safetensors", vectors=vectors, model_fingerprint=model_fingerprint(other), **common
    )
    a.vectors_no_spread = save_directions(
        vec / "no-spread.safetensors",
        vectors=vectors,
        model_fingerprint=model_fingerprint(model),
        **{**common, "latent_std": None},
    )
    a.vectors_pickle = vec / "pickled.safetensors"
    torch.save(vectors, a.vectors_pickle)
    a.vectors_truncated = vec / "truncated.safetensors"
    a.vectors_truncated.write_bytes(a.vectors.read_bytes()[:200])

    a.run_bad_state = ckpt / "bad-state-run"
    shutil.copytree(tiny_run, a.run_bad_state)
    state = a.run_bad_state / "train_state.safetensors"
    state.write_bytes(state.read_bytes()[:1000])
    return a


# ---- the workspace of one case ------------------------------------------------------------------------------


class Workspace:
    """The crafted inputs (read-only, as attributes) and this case's own folder `tmp` for outputs and copies."""

    def __init__(self, assets: SimpleNamespace, tmp: Path) -> None:
        self.a, self.tmp = assets, tmp

    def __getattr__(self, name: str):
        return getattr(self.a, name)

    def run_copy(self) -> Path:
        """A writable copy of the tiny run (for cases that point an output into a run)."""
        target = self.tmp / "run"
        if not target.exists():
            shutil.copytree(self.a.run, target)
        return target

    def earlier(self, name: str) -> Path:
        """An earlier result at tmp/name, which a failing command must not touch."""
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(EARLIER)
        return path

    def file(self, name: str = "a-file") -> Path:
        """A plain file, to stand where a folder is expected."""
        path = self.tmp / name
        path.write_text("not a folder\n")
        return path

    def copy(self, source: Path, name: str) -> Path:
        path = self.tmp / name
        shutil.copy(source, path)
        return path

    def store(self) -> Path:
        """A finished latent store of the tiny run's first 4 toy faces, at tmp/store."""
        out = self.tmp / "store"
        encode_to_store(load_model(self.a.run), self.a.images, out, limit=4, progress=False, workers=1)
        return out


@dataclass(frozen=True)
class Case:
    """One command line and what must come of it."""

    id: str
    args: Callable[[Workspace], list]
    code: int  # 0 accepted, 1 user error, 2 usage error
    says: tuple[str, ...] = ()  # fragments of the error line (or of stdout, for accepted inputs)
    check: Callable[[Workspace], None] | None = None  # more checks on an accepted run's output
    env: Callable[[Workspace], dict[str, str]] | None = None


def info(w: Workspace, path: Path) -> list:
    return ["info", path]


def train(w: Workspace, *extra: object, out: Path | None = None, data: Path | None = None) -> list:
    data = w.images if data is None else data
    return ["train", "--data", data, "--out", out or w.tmp / "new-run", *TRAIN_FLAGS, *extra]


def sample(w: Workspace, *extra: object, out: Path | None = None) -> list:
    return ["sample", "--model", w.run, "--n", "2", "--device", "cpu", "--out", out or w.tmp / "s.png", *extra]


def evaluate(w: Workspace, data: Path, *extra: object) -> list:
    return ["evaluate", "--model", w.run, "--data", data, "--device", "cpu", "--quiet", *extra]


def toy(w: Workspace, out: Path, *extra: object) -> list:
    return ["toy-faces", out, "--count", "3", "--size", "16", "--workers", "1", *extra]


def prepare(w: Workspace, folder: Path, *extra: object) -> list:
    return ["prepare", folder, "--size", "16", "--workers", "1", "--quiet", *extra]


def encode(w: Workspace, *extra: object, out: Path | None = None) -> list:
    return ["encode", "--model", w.run, "--out", out or w.tmp / "store", "--device", "cpu", "--quiet", *extra]


def labeled(w: Workspace, labels: str, *extra: object) -> list:
    """encode with one of the crafted label files (by name) and the toy images."""
    return encode(w, "--labels", getattr(w.lab, labels), "--data", w.images, *extra)


def vectors(w: Workspace, labels: Path, *extra: object, out: Path | None = None) -> list:
    out = out or w.tmp / "attributes" / "tiny.safetensors"
    args = ["--images", w.images, "--out", out, "--min-count", "2", "--device", "cpu", "--quiet"]
    return ["attribute-vectors", "--labels", labels, "--model", w.run, *args, *extra]


def manipulate(w: Workspace, *faces: Path, out: Path | None = None) -> list:
    """Smiling +0.5 on `faces` (default: one toy face); options added after these win."""
    return edit(w, out=out, faces=faces)


def edit(w: Workspace, *extra: object, out: Path | None = None, faces: tuple = ()) -> list:
    """manipulate with these options, plus --attr Smiling and --alpha 0.5 where they are not among them."""
    attr = () if "--attr" in extra else ("--attr", "Smiling")
    alpha = () if "--alpha" in extra or "--sweep" in extra else ("--alpha", "0.5")
    tail = ["--out", out or w.tmp / "edit.png", "--model", w.run, "--vectors", w.vectors, "--device", "cpu"]
    return ["manipulate", *(faces or (w.face1,)), *attr, *alpha, *tail, *extra]


def interpolate(w: Workspace, *faces: Path, out: Path | None = None) -> list:
    tail = ["--out", out or w.tmp / "loop.png", "--model", w.run, "--frames", "2", "--quiet", "--device", "cpu"]
    return ["interpolate", *(faces or (w.face1, w.face2)), *tail]


def loop(w: Workspace, *extra: object, out: Path | None = None) -> list:
    return [*interpolate(w, out=out), *extra]


def studio(w: Workspace, *extra: object) -> list:
    return ["studio", "--model", w.run, "--vectors", w.vectors, *extra]


def audit(w: Workspace, *extra: object, labels: bool = True) -> list:
    """audit of the tiny run's random directions on 8 toy faces, into tmp/audit.*; options after these win."""
    given = ("--labels", w.labels) if labels else ()
    tail = ["--faces", "8", "--quiet", "--device", "cpu", "--out", w.tmp / "audit"]
    return ["audit", "--model", w.run, "--vectors", w.vectors, *given, *tail, *extra]


def _empty_folder(w: Workspace) -> Path:
    folder = w.tmp / "empty"
    folder.mkdir()
    return folder


def _check_store_labels(w: Workspace) -> None:
    meta = json.loads((w.tmp / "store" / "meta.json").read_text())
    assert meta["attributes"] == list(TOY_ATTRIBUTES) and meta["count"] == 8, meta  # no BOM in a column name
    labels = np.load(w.tmp / "store" / "labels.npy")
    assert set(np.unique(labels)) <= {-1, 1}


def _check_forced_run(w: Workspace) -> None:
    run = w.tmp / "run"
    meta = load_tensors(run / "model.safetensors")[1]
    assert meta["step"] == 1 and meta["config"]["width"] == 8  # the new run, not the one it replaced
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1], steps  # none of the replaced run's history is left to mix with the new one's
    assert [p.name for p in (run / "samples").iterdir()] == ["step_000001.png"]


def _check_cached_skips(w: Workspace) -> None:
    (listing,) = Path(os.environ["LATENTLAB_CACHE_DIR"]).glob("*/skipped.txt")
    reasons = dict(line.split("\t", 1) for line in listing.read_text().splitlines())
    assert sorted(reasons) == ["big.png", "bomb.png", "empty.jpg", "not_image.jpg", "one_pixel.png", "truncated.jpg"]
    for name, fragment in {
        "bomb.png": "10,000,000,000 pixels",
        "big.png": "8000×8000",
        "empty.jpg": "0 bytes",
        "not_image.jpg": "not a readable image",
        "truncated.jpg": "truncated",
        "one_pixel.png": "1×1",
    }.items():
        assert fragment in reasons[name], (name, reasons[name])


def _read_only_dir(w: Workspace) -> Path:
    folder = w.tmp / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        (folder / "probe").write_bytes(b"")
    except OSError:
        return folder
    (folder / "probe").unlink()
    folder.chmod(0o700)
    pytest.skip("running as root: a 0o500 folder is still writable, so it cannot stand for an unwritable one")


C = Case
CASES = [
    # bench
    C("bench-unknown-config", lambda w: ["bench", "--config", "Z"], 2, ("--config", "'Z'", "A, B, tiny")),
    C("bench-zero-repeats", lambda w: ["bench", "--repeats", "0"], 2, ("--repeats",)),
    # info
    C("info-missing-path", lambda w: info(w, w.tmp / "nope"), 1, ("no model checkpoint", "nope", "latentlab train")),
    C("info-empty-folder", lambda w: info(w, w.empty_dir), 1, ("no model checkpoint at", "empty")),
    C("info-zero-byte-checkpoint", lambda w: info(w, w.ckpt_zero), 1, ("zero.safetensors", "empty (0 bytes)")),
    C("info-truncated-checkpoint", lambda w: info(w, w.ckpt_truncated), 1, ("truncated.safetensors", "truncated")),
    C("info-pickle-named-safetensors", lambda w: info(w, w.pickle_run), 1, ("pickle", "only from safetensors")),
    C("info-checkpoint-of-another-config", lambda w: info(w, w.ckpt_other_config), 1, ("does not match its config",)),
    C("info-safetensors-not-latentlab", lambda w: info(w, w.ckpt_plain), 1, ("not a latentlab model checkpoint",)),
    C("info-direction-file-as-model", lambda w: info(w, w.vectors), 1, ("not a model checkpoint",)),
    C("info-non-finite-weights", lambda w: info(w, w.ckpt_nan), 1, ("non-finite weights", "earlier checkpoint")),
    C("info-newer-format", lambda w: info(w, w.ckpt_newer), 1, ("newer latentlab", "upgrade")),
    C("info-no-argument", lambda w: ["info"], 2, ("Missing argument 'model'", "latentlab info --help")),
    # train
    C("train-data-missing", lambda w: train(w, data=w.tmp / "nope"), 1, ("nope",)),
    C("train-data-is-a-file", lambda w: train(w, data=w.not_image), 1, ("not_image.jpg", "folder")),
    C("train-data-empty-folder", lambda w: train(w, data=w.empty_dir), 1, ("no images in", ".jpg")),
    C("train-data-all-unreadable", lambda w: train(w, data=w.only_bad), 1, ("none of the 3 images", "only-bad")),
    C("train-over-a-trained-run", lambda w: train(w, out=w.run_copy()), 1, ("already holds a trained run", "--force")),
    C(
        "train-over-a-trained-run-forced",
        lambda w: train(w, "--force", out=w.run_copy()),
        0,
        ("trained 1 steps",),
        check=_check_forced_run,
    ),
    C(
        "train-resume-a-run",
        lambda w: ["train", "--out", w.run_copy(), "--resume", "--max-steps", "9", "--quiet"],
        0,
        ("trained 9 steps",),
    ),
    C("train-resume-nothing", lambda w: train(w, "--resume", out=w.tmp / "fresh"), 1, ("nothing to resume",)),
    C("train-resume-truncated-state", lambda w: train(w, "--resume", out=w.run_bad_state), 1, ("truncated",)),
    C("train-resume-other-width", lambda w: train(w, "--resume", out=w.run_copy()), 1, ("different model",)),
    C("train-unknown-preset", lambda w: train(w, "--preset", "celeba65"), 1, ("celeba65", "celeba64")),
    C("train-unknown-setting", lambda w: train(w, "--set", "widht=8"), 1, ("widht", "width")),
    C("train-setting-not-key-value", lambda w: train(w, "--set", "width"), 1, ("'width'", "KEY=VALUE")),
    C("train-unknown-schedule", lambda w: train(w, "--schedule", "linear"), 1, ("'linear'", "constant, cosine")),
    C("train-lr-nan", lambda w: train(w, "--lr", "nan"), 1, ("lr", "nan")),
    C("train-unknown-device", lambda w: train(w, "--device", "gpu"), 1, ("'gpu'", "cpu")),
    C("train-batch-size-0", lambda w: train(w, "--batch-size", "0"), 2, ("--batch-size",)),
    C("train-batch-larger-than-data", lambda w: train(w, "--batch-size", "500"), 1, ("fewer than one batch of 500",)),
    C("train-out-is-a-file", lambda w: train(w, out=w.file()), 1, ("a-file", "is a file")),
    C("train-out-under-a-file", lambda w: train(w, out=w.file() / "run"), 1, ("cannot create folder", "a-file")),
    # sample
    C("sample-temperature-nan", lambda w: sample(w, "--temperature", "nan", out=w.earlier("s.png")), 2, ("finite",)),
    C("sample-temperature-negative", lambda w: sample(w, "--temperature", "0.5,-1"), 2, (">= 0", "0.5,-1")),
    C(
        "sample-temperature-too-high",
        lambda w: sample(w, "--temperature", "0.7,1000", out=w.earlier("s.png")),
        1,
        ("temperature 1000 is too high", "0 to 1"),
    ),
    C("sample-temperature-not-a-number", lambda w: sample(w, "--temperature", "warm"), 2, ("'warm'",)),
    C("sample-n-0", lambda w: sample(w, "--n", "0"), 2, ("--n",)),
    C("sample-no-trained-model", lambda w: ["sample", "--out", w.tmp / "s.png"], 1, ("no trained model", "--model")),
    C("sample-pickle-checkpoint", lambda w: sample(w, "--model", w.pickle_run), 1, ("pickle",)),
    C("sample-unknown-device", lambda w: sample(w, "--device", "gpu"), 1, ("'gpu'", "cpu")),
    C(
        "sample-out-in-new-folders",
        lambda w: sample(w, out=w.tmp / "new" / "deeper" / "s.png"),
        0,
        ("wrote",),
        check=lambda w: Image.open(w.tmp / "new" / "deeper" / "s.png").verify(),
    ),
    C("sample-out-unknown-extension", lambda w: sample(w, out=w.tmp / "s.gif"), 1, ("'.gif'", ".png")),
    C("sample-out-is-a-folder", lambda w: sample(w, out=w.tmp), 1, ("unknown extension '(none)'", ".png")),
    C("sample-out-under-a-file", lambda w: sample(w, out=w.file() / "s.png"), 1, ("cannot create folder", "a-file")),
    C("sample-out-in-read-only-folder", lambda w: sample(w, out=_read_only_dir(w) / "s.png"), 1, ("read-only",)),
    # evaluate
    C("evaluate-data-missing", lambda w: evaluate(w, w.tmp / "nope"), 1, ("nope", "does not exist")),
    C("evaluate-data-is-a-file", lambda w: evaluate(w, w.face1), 1, ("000001.png", "not a folder")),
    C("evaluate-empty-folder", lambda w: evaluate(w, w.empty_dir), 1, ("no images in",)),
    C("evaluate-all-unreadable", lambda w: evaluate(w, w.only_bad), 1, ("none of the 3 images",)),
    C("evaluate-bomb-only", lambda w: evaluate(w, w.bomb_only), 1, ("10,000,000,000 pixels", "40 megapixels")),
    C("evaluate-skips-bad-files", lambda w: evaluate(w, w.mixed), 0, ("over 2 images", "6 unreadable files skipped")),
    C("evaluate-odd-image-modes", lambda w: evaluate(w, w.modes), 0, ("over 5 images",)),
    C("evaluate-truncated-checkpoint", lambda w: evaluate(w, w.images, "--model", w.ckpt_truncated), 1, ("truncated",)),
    C("evaluate-limit-0", lambda w: evaluate(w, w.images, "--limit", "0"), 2, ("--limit",)),
    C("evaluate-no-data-option", lambda w: ["evaluate", "--model", w.run], 2, ("Missing option '--data'",)),
    # toy-faces
    C("toy-faces-count-0", lambda w: toy(w, w.tmp / "toy", "--count", "0"), 2, ("--count",)),
    C("toy-faces-size-8", lambda w: toy(w, w.tmp / "toy", "--size", "8"), 2, ("--size",)),
    C("toy-faces-out-is-a-file", lambda w: toy(w, w.file()), 1, ("a-file", "is a file")),
    C("toy-faces-out-under-a-file", lambda w: toy(w, w.file() / "toy"), 1, ("cannot create", "a-file")),
    C(
        "toy-faces-out-in-new-folders",
        lambda w: toy(w, w.tmp / "a" / "b"),
        0,
        ("wrote 3 toy faces",),
        check=lambda w: len((w.tmp / "a" / "b" / "list_attr_celeba.csv").read_text().splitlines()) == 4,
    ),
    # prepare
    C("prepare-missing-folder", lambda w: prepare(w, w.tmp / "nope"), 1, ("nope", "does not exist")),
    C("prepare-a-file", lambda w: prepare(w, w.face1), 1, ("000001.png", "not a folder")),
    C("prepare-empty-folder", lambda w: prepare(w, w.empty_dir), 1, ("no images in", ".png")),
    C("prepare-bomb-refused", lambda w: prepare(w, w.bomb_only), 1, ("claims 10,000,000,000 pixels", "refusing")),
    C("prepare-size-4", lambda w: prepare(w, w.images, "--size", "4"), 2, ("--size",)),
    C("prepare-odd-image-modes", lambda w: prepare(w, w.modes), 0, ("cached 5 images",)),
    C(
        "prepare-skips-and-lists-bad-files",
        lambda w: prepare(w, w.mixed),
        0,
        ("cached 2 images", "6 unreadable"),
        check=_check_cached_skips,
    ),
    C(
        "prepare-cache-folder-under-a-file",
        lambda w: prepare(w, w.images),
        1,
        ("cannot create cache folder",),
        env=lambda w: {"LATENTLAB_CACHE_DIR": str(w.file())},
    ),
    # encode
    C("encode-no-images-given", lambda w: encode(w), 2, ("--data", "--labels")),
    C("encode-data-missing", lambda w: encode(w, "--data", w.tmp / "nope"), 1, ("nope", "does not exist")),
    C("encode-labels-missing", lambda w: encode(w, "--labels", w.tmp / "no.csv"), 1, ("no.csv", "does not exist")),
    C("encode-labels-is-a-folder", lambda w: encode(w, "--labels", w.empty_dir), 1, ("is a folder",)),
    C("encode-labels-without-id-column", lambda w: labeled(w, "no_id"), 1, ("no image-id column", "image_id")),
    C("encode-labels-duplicate-ids", lambda w: labeled(w, "duplicate"), 1, ("'000001.png' appears more than once",)),
    C("encode-labels-value-2", lambda w: labeled(w, "value_2"), 1, ("value '2'", "-1/1 or 0/1")),
    C("encode-labels-nan", lambda w: labeled(w, "nan"), 1, ("value 'NaN'", "-1/1 or 0/1")),
    C("encode-labels-empty-cell", lambda w: labeled(w, "empty_cell"), 1, ("an empty value", "'000001.png'")),
    C("encode-labels-mixed-negatives", lambda w: labeled(w, "mixed_negatives"), 1, ("mixes -1 and 0",)),
    C("encode-labels-not-utf8", lambda w: labeled(w, "latin1"), 1, ("latin1.csv", "not UTF-8")),
    C("encode-labels-empty-file", lambda w: labeled(w, "empty"), 1, ("empty.csv", "empty")),
    C("encode-labels-header-only", lambda w: labeled(w, "header_only"), 1, ("no label rows",)),
    C("encode-labels-match-no-image", lambda w: labeled(w, "no_match"), 1, ("none of the 96 images", "nope1.jpg")),
    C(
        "encode-labels-crlf-and-bom",
        lambda w: labeled(w, "crlf_bom", "--limit", "8"),
        0,
        ("labeled images",),
        check=_check_store_labels,
    ),
    C(
        "encode-labels-zero-one",
        lambda w: labeled(w, "zero_one", "--limit", "8"),
        0,
        ("labeled images",),
        check=_check_store_labels,
    ),
    C("encode-out-is-a-file", lambda w: encode(w, "--data", w.images, out=w.file()), 1, ("a-file",)),
    C(
        "encode-out-holds-other-latents",
        lambda w: encode(w, "--data", w.images, "--limit", "4", "--model", w.other_run, out=w.store()),
        1,
        ("another model", "--force"),
    ),
    C(
        "encode-truncated-checkpoint",
        lambda w: encode(w, "--data", w.images, "--model", w.ckpt_truncated),
        1,
        ("truncated",),
    ),
    # attribute-vectors
    C(
        "attribute-vectors-unknown-attribute",
        lambda w: vectors(w, w.labels, "--attrs", "Blond"),
        1,
        ("'Blond'", "did you mean Blond_Hair"),
    ),
    C(
        "attribute-vectors-unknown-condition",
        lambda w: vectors(w, w.labels, "--orthogonal-to", "male"),
        1,
        ("'male'", "did you mean Male"),
    ),
    C("attribute-vectors-empty-attribute-list", lambda w: vectors(w, w.labels, "--attrs", ","), 2, ("--attrs",)),
    C("attribute-vectors-min-count-1", lambda w: vectors(w, w.labels, "--min-count", "1"), 2, ("--min-count",)),
    C(
        "attribute-vectors-out-not-safetensors",
        lambda w: vectors(w, w.labels, out=w.tmp / "v.pt"),
        1,
        ("v.pt", ".safetensors"),
    ),
    C(
        "attribute-vectors-out-is-the-model",
        lambda w: vectors(w, w.labels, "--model", w.run_copy(), out=w.run_copy() / "model.safetensors"),
        1,
        ("also an input",),
    ),
    C(
        "attribute-vectors-out-under-a-file",
        lambda w: vectors(w, w.labels, out=w.file() / "v.safetensors"),
        1,
        ("cannot create folder", "a-file"),
    ),
    C("attribute-vectors-labels-duplicate-ids", lambda w: vectors(w, w.lab.duplicate), 1, ("more than once",)),
    C("attribute-vectors-labels-nan", lambda w: vectors(w, w.lab.nan), 1, ("value 'NaN'",)),
    C(
        "attribute-vectors-labels-crlf-and-bom",
        lambda w: vectors(w, w.lab.crlf_bom, "--attrs", "Smiling", out=w.tmp / "new" / "v.safetensors"),
        0,
        ("wrote",),
        check=lambda w: (w.tmp / "new" / "v.safetensors").stat().st_size > 0,
    ),
    C("attribute-vectors-latents-is-a-file", lambda w: vectors(w, w.labels, "--latents", w.file()), 1, ("a-file",)),
    C(
        "attribute-vectors-model-of-another-config",
        lambda w: vectors(w, w.labels, "--model", w.ckpt_other_config),
        1,
        ("does not match its config",),
    ),
    # manipulate
    C("manipulate-face-missing", lambda w: manipulate(w, w.tmp / "no.jpg"), 2, ("no.jpg", "does not exist")),
    C("manipulate-face-is-a-folder", lambda w: manipulate(w, w.dir_jpg), 2, ("folder.jpg", "is a directory")),
    C("manipulate-text-named-jpg", lambda w: manipulate(w, w.not_image), 1, ("not_image.jpg", "not a readable image")),
    C("manipulate-truncated-jpeg", lambda w: manipulate(w, w.truncated), 1, ("truncated.jpg", "truncated")),
    C("manipulate-zero-byte-file", lambda w: manipulate(w, w.empty_jpg), 1, ("empty.jpg", "empty (0 bytes)")),
    C("manipulate-one-pixel-image", lambda w: manipulate(w, w.one_pixel), 1, ("1×1", "at least 8 px")),
    C("manipulate-decompression-bomb", lambda w: manipulate(w, w.bomb), 1, ("bomb.png", "10,000,000,000 pixels")),
    C("manipulate-64-megapixel-header", lambda w: manipulate(w, w.big), 1, ("8000×8000", "40 megapixels")),
    C("manipulate-cmyk-jpeg", lambda w: manipulate(w, w.cmyk), 0, ("wrote",)),
    C("manipulate-16-bit-png", lambda w: manipulate(w, w.gray16), 0, ("wrote",)),
    C("manipulate-palette-png", lambda w: manipulate(w, w.palette), 0, ("wrote",)),
    C("manipulate-grayscale-jpeg", lambda w: manipulate(w, w.gray), 0, ("wrote",)),
    C("manipulate-translucent-png", lambda w: manipulate(w, w.rgba), 0, ("wrote",)),
    C("manipulate-alpha-nan", lambda w: edit(w, "--alpha", "nan", out=w.earlier("edit.png")), 2, ("nan", "finite")),
    C("manipulate-alpha-inf", lambda w: edit(w, "--alpha", "-inf"), 2, ("-inf", "finite")),
    C(
        "manipulate-alpha-far-too-large",
        lambda w: edit(w, "--alpha", "1e30", out=w.earlier("edit.png")),
        1,
        ("further out than a typical latent", "smaller --alpha"),
    ),
    C(
        "manipulate-sigma-units-without-spread",
        lambda w: edit(w, "--units", "sigma", "--vectors", w.vectors_no_spread),
        1,
        ("no spread", "--units raw"),
    ),
    C(
        "manipulate-unknown-attribute",
        lambda w: edit(w, "--attr", "smile", out=w.earlier("edit.png")),
        1,
        ("'smile'", "did you mean Smiling"),
    ),
    C(
        "manipulate-out-is-the-input",
        lambda w: manipulate(w, w.copy(w.face1, "face.png"), out=w.tmp / "face.png"),
        1,
        ("also an input",),
    ),
    C(
        "manipulate-out-in-new-folders",
        lambda w: edit(w, out=w.tmp / "x" / "y" / "edit.jpg"),
        0,
        ("wrote",),
        check=lambda w: Image.open(w.tmp / "x" / "y" / "edit.jpg").verify(),
    ),
    C("manipulate-out-under-a-file", lambda w: edit(w, out=w.file() / "edit.png"), 1, ("cannot create folder",)),
    C(
        "manipulate-vectors-of-another-model",
        lambda w: edit(w, "--vectors", w.vectors_other),
        1,
        ("another model", "attribute-vectors --model"),
    ),
    C("manipulate-model-other-than-the-vectors", lambda w: edit(w, "--model", w.other_run), 1, ("another model",)),
    C("manipulate-vectors-is-a-folder", lambda w: edit(w, "--vectors", w.empty_dir), 2, ("is a directory",)),
    C("manipulate-vectors-pickle", lambda w: edit(w, "--vectors", w.vectors_pickle), 1, ("pickle",)),
    C(
        "manipulate-vectors-missing",
        lambda w: edit(w, "--vectors", w.tmp / "none.safetensors"),
        1,
        ("none.safetensors", "attribute-vectors"),
    ),
    C(
        "manipulate-vectors-truncated",
        lambda w: edit(w, "--vectors", w.vectors_truncated),
        1,
        ("truncated.safetensors", "corrupt or truncated"),
    ),
    C("manipulate-model-missing", lambda w: edit(w, "--model", w.tmp / "no-run"), 1, ("no model checkpoint",)),
    C("manipulate-sweep-too-long", lambda w: edit(w, "--sweep", "-1,1,1000"), 2, ("1000", "between 2 and")),
    C("manipulate-size-0", lambda w: edit(w, "--size", "0"), 2, ("--size",)),
    # interpolate
    C("interpolate-one-face", lambda w: interpolate(w, w.face1), 2, ("at least two faces",)),
    C("interpolate-face-missing", lambda w: interpolate(w, w.face1, w.tmp / "nope.png"), 2, ("nope.png",)),
    C("interpolate-out-unknown-extension", lambda w: loop(w, out=w.tmp / "loop.avi"), 1, ("'.avi'", ".mp4")),
    C(
        "interpolate-out-is-an-input",
        lambda w: interpolate(w, w.face1, w.copy(w.face2, "b.png"), out=w.tmp / "b.png"),
        1,
        ("also an input",),
    ),
    C("interpolate-gif-too-fast", lambda w: loop(w, "--fps", "100", out=w.tmp / "loop.gif"), 1, ("100", "at most 50")),
    C("interpolate-unknown-path", lambda w: loop(w, "--path", "spline"), 2, ("'spline'", "slerp")),
    C("interpolate-frames-0", lambda w: loop(w, "--frames", "0"), 2, ("--frames",)),
    C("interpolate-one-pixel-image", lambda w: interpolate(w, w.face1, w.one_pixel), 1, ("one_pixel.png", "1×1")),
    C(
        "interpolate-odd-modes-into-new-folder",
        lambda w: interpolate(w, w.palette, w.gray16, w.cmyk, out=w.tmp / "n" / "loop.png"),
        0,
        ("wrote",),
        check=lambda w: Image.open(w.tmp / "n" / "loop.png").verify(),
    ),
    # studio (every case fails before serving)
    C("studio-model-missing", lambda w: studio(w, "--model", w.tmp / "no-run"), 1, ("no model checkpoint",)),
    C("studio-port-0", lambda w: studio(w, "--port", "0"), 2, ("--port",)),
    C("studio-vectors-missing", lambda w: studio(w, "--vectors", w.tmp / "nope.safetensors"), 2, ("nope.safetensors",)),
    C("studio-faces-is-a-file", lambda w: studio(w, "--faces", w.file()), 2, ("--faces",)),
    C("studio-faces-without-images", lambda w: studio(w, "--faces", _empty_folder(w)), 1, ("no images",)),
    # audit
    C("audit-unknown-attribute", lambda w: audit(w, "--attrs", "Smile"), 1, ("'Smile'", "Smiling")),
    C("audit-vectors-of-another-model", lambda w: audit(w, "--vectors", w.vectors_other), 1, ("another model",)),
    C("audit-vectors-missing", lambda w: audit(w, "--vectors", w.tmp / "no.safetensors"), 1, ("does not exist",)),
    C("audit-no-labels", lambda w: audit(w, labels=False), 1, ("--labels",)),
    C("audit-labels-missing", lambda w: audit(w, "--labels", w.tmp / "no.csv"), 1, ("no.csv", "does not exist")),
    C("audit-images-missing", lambda w: audit(w, "--images", w.tmp / "nope"), 1, ("nope", "does not exist")),
    C(
        "audit-sigma-without-spread",
        lambda w: audit(w, "--vectors", w.vectors_no_spread, "--units", "sigma"),
        1,
        ("spread",),
    ),
    C("audit-alpha-zero", lambda w: audit(w, "--alpha", "0"), 1, ("positive",)),
    C("audit-no-faces", lambda w: audit(w, "--faces", "0"), 2, ("--faces",)),
    C(
        "audit-random-directions",
        lambda w: audit(w),
        0,
        ("worst side effect", "(random)"),
        check=lambda w: all((w.tmp / f"audit.{ext}").is_file() for ext in ("json", "csv", "png")),
    ),
]


# ---- the checks ---------------------------------------------------------------------------------------------


def tree(*roots: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """{path: sha256 of the bytes} for every file under `roots` (hidden ones included)."""
    found = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not set(path.relative_to(root).parts) & set(skip):
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def stray_files(*roots: Path) -> list[str]:
    """Hidden files (the temporaries of atomic writes) and half-built folders left anywhere under `roots`."""
    return [str(p) for root in roots for p in root.rglob(".*") if p.name not in ALLOWED_HIDDEN]


def one_line_error(result, code: int) -> str:
    """The error line, after checking the exit code, the line count and that no traceback was printed."""
    everything = result.stdout + result.stderr
    assert result.exit_code == code, (result.exit_code, everything, result.exception)
    assert isinstance(result.exception, SystemExit), f"not a clean exit: {result.exception!r}"
    assert "Traceback" not in everything
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, assets: SimpleNamespace, tmp_path: Path, isolated_paths: Path) -> None:
    w = Workspace(assets, tmp_path)
    args = [str(a) for a in case.args(w)]
    assert args[0] == command_of(case)
    env = case.env(w) if case.env else None
    inputs = (assets.root, assets.toy, assets.run)
    inputs_before = tree(*inputs)
    work_before = tree(tmp_path, isolated_paths, skip=("cache",))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(app, args, env=env)

    if case.code == 0:
        assert result.exit_code == 0, (result.stdout + result.stderr, result.exception)
        assert "Traceback" not in result.stdout + result.stderr
        for fragment in case.says:
            assert fragment in result.stdout, (fragment, result.stdout)
        if case.check is not None:
            assert case.check(w) is not False
    else:
        line = one_line_error(result, case.code)
        assert line.startswith("error: ")
        for fragment in case.says:
            assert fragment in line, (fragment, line)
        assert tree(tmp_path, isolated_paths, skip=("cache",)) == work_before, "a failed command changed files"
    assert [str(m.message) for m in caught] == [], "a warning would reach the user's terminal"
    assert tree(*inputs) == inputs_before, "an input was modified"
    assert stray_files(tmp_path, isolated_paths, *inputs) == []


def command_of(case: Case) -> str:
    """The command a case exercises, from its id ("attribute-vectors-unknown-attribute" -> "attribute-vectors")."""
    return next(name for name in sorted(COMMANDS, key=len, reverse=True) if case.id.startswith(name + "-"))


def test_the_matrix_covers_every_command() -> None:
    assert {command_of(case) for case in CASES} == COMMANDS
    assert len(CASES) >= 45 and len({case.id for case in CASES}) == len(CASES)


def invoke(args: list):
    return runner.invoke(app, [str(a) for a in args])


def test_a_failed_rerun_leaves_the_earlier_result_as_it_was(assets: SimpleNamespace, tmp_path: Path) -> None:
    w = Workspace(assets, tmp_path)
    edit_png, samples_png = tmp_path / "edit.png", tmp_path / "samples.png"
    assert invoke(manipulate(w, out=edit_png)).exit_code == 0
    assert invoke(sample(w, out=samples_png)).exit_code == 0
    earlier = {edit_png: edit_png.read_bytes(), samples_png: samples_png.read_bytes()}
    reruns = [
        (edit(w, "--alpha", "nan", out=edit_png), 2),
        (edit(w, "--alpha", "inf", out=edit_png), 2),
        (edit(w, "--alpha", "1e30", out=edit_png), 1),  # fails while decoding, after the work has started
        (edit(w, "--attr", "Smiles", out=edit_png), 1),
        (manipulate(w, w.truncated, out=edit_png), 1),
        (manipulate(w, w.face1, w.bomb, out=edit_png), 1),
        (edit(w, "--model", w.other_run, out=edit_png), 1),
        (sample(w, "--temperature", "0.5,1000", out=samples_png), 1),
        (sample(w, "--model", w.ckpt_truncated, out=samples_png), 1),
    ]
    for args, code in reruns:
        one_line_error(invoke(args), code)
        assert {path: path.read_bytes() for path in earlier} == earlier, args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edit.png", "samples.png"]


def test_debug_shows_the_traceback(assets: SimpleNamespace, tmp_path: Path) -> None:
    w = Workspace(assets, tmp_path)
    result = invoke(["--debug", *manipulate(w, w.truncated)])
    assert result.exit_code == 1 and result.exception is not None and not isinstance(result.exception, SystemExit)
    assert "truncated" in str(result.exception)
    assert one_line_error(invoke(manipulate(w, w.truncated)), 1)  # and without --debug, one line again


def test_bombs_are_refused_from_the_header_without_decoding(assets, tmp_path, monkeypatch) -> None:
    from PIL import ImageFile

    def no_decoding(self):
        raise AssertionError(f"{self.filename} was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    w = Workspace(assets, tmp_path)
    for image, claim in ((assets.bomb, "10,000,000,000 pixels"), (assets.big, "8000×8000")):
        line = one_line_error(invoke(manipulate(w, image)), 1)
        assert claim in line and "refusing to decode" in line


def test_usage_errors_of_the_app_itself_are_one_line_too() -> None:
    assert "No such command 'sampel'" in one_line_error(runner.invoke(app, ["sampel"]), 2)
    assert "--bogus" in one_line_error(runner.invoke(app, ["--bogus"]), 2)
    result = runner.invoke(app, [])  # no arguments: the help, as before
    assert "Usage" in result.stdout and "toy-faces" in result.stdout
