"""The studio's HTTP API through FastAPI's test client, on a tiny trained model and a small direction file.

Every endpoint, its refusals (always 4xx JSON with an "error", never 5xx), uploads of every image mode,
and the reproduce command: run through the CLI, it writes exactly the face /api/render returns.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

if not os.environ.get("CI"):  # `make install` brings the studio extra and httpx: under CI these tests must run
    pytest.importorskip("fastapi")
    pytest.importorskip("multipart")
    pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from latentlab.checkpoint import load_model, model_fingerprint  # noqa: E402
from latentlab.cli.app import app as cli  # noqa: E402
from latentlab.data.images import list_images  # noqa: E402
from latentlab.directions.file import save_directions  # noqa: E402
from latentlab.render.faces import decode_images, encode_faces, load_faces, model_view  # noqa: E402
from latentlab.studio.app import MAX_UPLOAD, create_app  # noqa: E402
from latentlab.studio.session import Studio  # noqa: E402

ATTRS = ("Smiling", "Blond_Hair", "Eyeglasses")


@pytest.fixture(scope="module")
def served(tiny_run: Path, toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A studio on the tiny model, a direction file of three attributes, and a gallery of 4 faces."""
    home = tmp_path_factory.mktemp("studio-api")
    faces = home / "faces"
    faces.mkdir()
    for path in list_images(toy_data / "img_align_celeba")[:4]:
        shutil.copy(path, faces / path.name)
    model = load_model(tiny_run)
    g = torch.Generator().manual_seed(0)
    vectors_path = save_directions(
        home / "tiny.safetensors",
        vectors={name: 0.7 * torch.randn(model.latent_dim, generator=g) for name in ATTRS},
        pos_counts=[9] * 3,
        neg_counts=[9] * 3,
        method="mean-diff",
        model_fingerprint=model_fingerprint(model),
        latent_std=[1.5, 0.5, 2.0],
    )
    workdir = home / "work"
    workdir.mkdir()
    studio = Studio.open(workdir, model=tiny_run, vectors=vectors_path, faces=faces)
    return {"client": TestClient(create_app(studio)), "studio": studio, "model": model, "faces": faces}


@pytest.fixture
def client(served: dict) -> TestClient:
    return served["client"]


def png(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def refused(response, status: int, *words: str) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    message = response.json()["error"]
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


def render(client: TestClient, face: str = "g0", edits=(), units: str = "file", mix=None) -> np.ndarray:
    body = {"face": face, "edits": [{"attr": a, "alpha": x} for a, x in edits], "units": units, "mix": mix}
    return png(client.post("/api/render", json=body))


def as_hwc(images: torch.Tensor) -> np.ndarray:
    return images[0].permute(1, 2, 0).numpy()


def encoded(served: dict, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = load_faces([list_images(served["faces"])[index]], 16)
    return images, encode_faces(served["model"], images)


# ---- the page, info, the gallery, faces


def test_page_and_static_files_and_nothing_else(client):
    page = client.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert client.get("/static/studio.js").status_code == 200
    for path in ("/static/../app.py", "/static/%2e%2e/session.py", "/static/nothing.js", "/api/nothing"):
        refused(client.get(path), 404)


def test_info_names_the_model_directions_and_gallery(client):
    info = client.get("/api/info").json()
    assert info["image_size"] == 16 and info["latent_dim"] == 3 * 16 * 16 and info["model"]
    assert [d["name"] for d in info["directions"]] == list(ATTRS)
    assert [d["sigma"] for d in info["directions"]] == [1.5, 0.5, 2.0]
    assert info["has_directions"] and info["hint"] is None
    assert info["units"] == ["file", "sigma"] and info["gallery"] == 4
    assert info["bits_per_dim"] is None or info["bits_per_dim"] > 0


def test_gallery_faces_are_what_the_model_sees(client, served):
    images, _ = encoded(served, 2)
    expected = as_hwc(model_view(served["model"], images))
    np.testing.assert_array_equal(png(client.get("/api/gallery/2.png")), expected)
    np.testing.assert_array_equal(png(client.get("/api/face/g2/input.png")), expected)
    for bad in ("4.png", "99999999999.png", "-1.png", "x.png", "1.jpg"):
        refused(client.get(f"/api/gallery/{bad}"), 404)


def test_reconstruction_is_decode_of_encode(client, served):
    _, z = encoded(served, 1)
    expected = as_hwc(decode_images(served["model"], z))
    np.testing.assert_array_equal(png(client.get("/api/face/g1/reconstruction.png")), expected)
    refused(client.get("/api/face/u0123456789abcdef/input.png"), 404, "unknown face")
    refused(client.get("/api/face/g1/other.png"), 404)


# ---- rendering


def test_alpha_zero_is_the_reconstruction_and_an_edit_changes_the_face(client):
    recon = png(client.get("/api/face/g0/reconstruction.png"))
    np.testing.assert_array_equal(render(client, edits=[("Smiling", 0.0)]), recon)
    np.testing.assert_array_equal(render(client), recon)
    assert not np.array_equal(render(client, edits=[("Smiling", 2.0)]), recon)


def test_edits_compose_in_order_as_the_cli_adds_them(client, served):
    studio = served["studio"]
    _, z = encoded(served, 0)
    v = studio.dirs.vector("Smiling") * 1.0 + studio.dirs.vector("Blond_Hair") * -0.5
    expected = as_hwc(decode_images(served["model"], z + v))
    np.testing.assert_array_equal(render(client, edits=[("Smiling", 1), ("Blond_Hair", -0.5)]), expected)


def test_sigma_units_scale_by_the_spread(client, served):
    studio = served["studio"]
    _, z = encoded(served, 0)
    v = studio.dirs.vector("Smiling")
    expected = as_hwc(decode_images(served["model"], z + v / v.norm() * 1.5))
    np.testing.assert_array_equal(render(client, edits=[("Smiling", 1.0)], units="sigma"), expected)


def test_mix_ends_are_the_two_faces_and_its_middle_is_neither(client):
    a, b = render(client, "g0"), render(client, "g1")
    np.testing.assert_array_equal(render(client, "g0", mix={"face": "g1", "t": 0.0}), a)
    np.testing.assert_array_equal(render(client, "g0", mix={"face": "g1", "t": 1.0, "path": "linear"}), b)
    middle = render(client, "g0", mix={"face": "g1", "t": 0.5, "path": "slerp"})
    assert not np.array_equal(middle, a) and not np.array_equal(middle, b)


def test_two_tabs_rendering_different_faces_at_once_do_not_interfere(client):
    jobs = {("g0", 1.5): None, ("g3", -1.0): None}
    alone = {key: render(client, key[0], edits=[("Smiling", key[1])]) for key in jobs}
    results: dict = {key: [] for key in jobs}

    def tab(key):
        for _ in range(6):
            results[key].append(render(client, key[0], edits=[("Smiling", key[1])]))

    threads = [threading.Thread(target=tab, args=(key,)) for key in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key, shown in results.items():
        assert len(shown) == 6
        for image in shown:
            np.testing.assert_array_equal(image, alone[key])


# ---- samples


def test_samples_are_seeded_and_editable(client):
    first = client.post("/api/sample", json={"temperature": 0.7, "seed": 7}).json()["id"]
    assert first == "s7t0.7"
    again = client.post("/api/sample", json={"seed": 7, "temperature": 0.7}).json()["id"]
    assert png(client.get(f"/api/face/{first}/input.png")).shape == (16, 16, 3)
    np.testing.assert_array_equal(render(client, first), render(client, again))
    other = client.post("/api/sample", json={"temperature": 0.7, "seed": 8}).json()["id"]
    assert not np.array_equal(render(client, first), render(client, other))
    assert not np.array_equal(render(client, first, edits=[("Smiling", 2)]), render(client, first))
    refused(client.post("/api/sample", json={"temperature": 2.5, "seed": 1}), 422, "temperature")
    refused(client.post("/api/sample", json={"temperature": 0.5, "seed": -1}), 422, "seed")
    refused(client.get("/api/face/s7t0.70/input.png"), 404)


# ---- the reproduce command


@pytest.mark.parametrize(
    ("edits", "units"),
    [([("Smiling", 1.35)], "file"), ([("Smiling", -0.8), ("Blond_Hair", 2.25)], "sigma"), ([], "file")],
)
def test_the_reproduce_command_writes_the_rendered_face(client, edits, units, tmp_path, monkeypatch):
    shown = render(client, "g2", edits=edits, units=units)
    body = {"face": "g2", "edits": [{"attr": a, "alpha": x} for a, x in edits], "units": units}
    answer = client.post("/api/command", json=body).json()
    argv = shlex.split(answer["command"])
    assert argv[:2] == ["latentlab", "manipulate"] and "--bare" in argv
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, argv[1:])
    assert result.exit_code == 0, result.output
    written = np.asarray(Image.open(tmp_path / argv[argv.index("--out") + 1]).convert("RGB"))
    assert written.shape == shown.shape
    np.testing.assert_array_equal(written, shown)


def test_a_toy_gallery_face_says_how_to_make_its_file_again(tiny_run, tmp_path, served, monkeypatch):
    """The toy gallery lives in the server's folder; the reason's toy-faces command writes the same file."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    monkeypatch.setattr("latentlab.studio.session.read_model_metadata", lambda path: {})  # no training folder
    studio = Studio.open(tmp_path / "work", model=run, vectors=served["studio"].vectors_path)
    answer = TestClient(create_app(studio)).post("/api/command", json={"face": "g3"}).json()
    assert answer["command"] and str(studio.workdir) in answer["command"]
    make = shlex.split(answer["reason"].split("`")[1])
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(cli, make[1:]).exit_code == 0
    remade = tmp_path / answer["reason"].split(" as ")[-1]
    assert remade.read_bytes() == studio.gallery[3].read_bytes()


def test_no_single_command_for_mixes_and_samples_says_why(client):
    mix = client.post("/api/command", json={"face": "g0", "mix": {"face": "g1", "t": 0.3}}).json()
    assert mix["command"] is None and "latentlab interpolate" in mix["reason"]
    sample = client.post("/api/command", json={"face": "s3t0.5"}).json()
    assert sample["command"] is None and "--seed 3 --temperature 0.5" in sample["reason"]
    bad = {"face": "g0", "edits": [{"attr": "Smilin", "alpha": 1}]}
    refused(client.post("/api/command", json=bad), 400, "Smiling")


# ---- uploads


def encode_image(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def photos() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    assert Image.fromarray(rgb[..., 0].astype(np.uint16)).mode.startswith("I;16")
    return {
        "rgba.png": encode_image(Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA")),
        "gray.png": encode_image(Image.fromarray(rgb[..., 0], "L")),
        "deep.png": encode_image(Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)),
        "cmyk.jpg": encode_image(Image.fromarray(rgb).convert("CMYK"), "JPEG"),
        "plain.jpg": encode_image(Image.fromarray(rgb), "JPEG"),
    }


@pytest.mark.parametrize("name", ["rgba.png", "gray.png", "deep.png", "cmyk.jpg", "plain.jpg"])
def test_uploads_of_every_mode_are_encoded_and_reported(client, name):
    data = photos()[name]
    answer = client.post("/api/upload", files={"file": (name, data)})
    assert answer.status_code == 200, answer.text
    face = answer.json()
    assert face["id"].startswith("u") and len(face["id"]) == 17 and face["name"] == name
    assert 0 <= face["max_error"] <= 1 and face["psnr"] > 0
    seen = png(client.get(f"/api/face/{face['id']}/input.png"))
    recon = png(client.get(f"/api/face/{face['id']}/reconstruction.png"))
    assert seen.shape == recon.shape == (16, 16, 3)
    assert face["max_error"] == pytest.approx(np.abs(seen / 255 - recon / 255).max())
    assert face["face_crop"] is False  # noise holds no face: the centre square, as plain `manipulate`
    assert render(client, face["id"]).shape == (16, 16, 3)


def test_uploads_that_are_no_image_too_big_or_malformed_are_refused(client):
    photo = photos()["plain.jpg"]
    refused(client.post("/api/upload", files={"file": ("face.jpg", photo[:200])}), 400, "face.jpg")
    refused(client.post("/api/upload", files={"file": ("notes.txt", b"hello, not a face")}), 400, "notes.txt")
    refused(client.post("/api/upload", files={"file": ("empty.png", b"")}), 400, "empty")
    refused(client.post("/api/upload", files={"other": ("face.jpg", photo)}), 400, "'file'")
    refused(client.post("/api/upload", content=b"raw bytes"), 400)
    big = photo + b"\0" * (MAX_UPLOAD + 1 - len(photo))
    refused(client.post("/api/upload", files={"file": ("big.jpg", big)}), 413, "20 MB")


def asgi_call(app, path: str, content_type: bytes, messages) -> tuple[list[dict], int]:
    """Call the app as a server would, with these body messages; what it sent back and how many it read."""
    import asyncio

    read = [0]
    messages = iter(messages)

    async def receive() -> dict:
        read[0] += 1
        return next(messages)

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", content_type)],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    return sent, read[0]


def test_an_upload_without_a_length_is_cut_off_at_the_limit(served):
    """A chunked upload says nothing of its size up front: the server counts as it reads and stops at 20 MB."""
    head = b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n'
    chunks = [head] + [b"\0" * 2**20] * 64  # 64 MB offered, 1 MB at a time
    messages = [{"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks]
    sent, read = asgi_call(create_app(served["studio"]), "/api/upload", b"multipart/form-data; boundary=x", messages)
    assert sent[0]["status"] == 413 and b"20 MB" in sent[1]["body"]
    assert read <= 23  # it stopped soon after the limit, not at the end of the stream


def test_a_render_whose_page_moved_on_is_dropped_unrendered(served, monkeypatch):
    """The page aborts a live render when a newer one starts; the server skips it instead of rendering for nobody."""
    from latentlab.studio import renders

    calls = []
    monkeypatch.setattr(renders, "render", lambda studio, body: calls.append(body) or b"")
    app = create_app(served["studio"])
    body = json.dumps({"face": "g0", "edits": [], "units": "file", "mix": None}).encode()
    messages = [{"type": "http.request", "body": body, "more_body": False}, {"type": "http.disconnect"}]
    sent, _ = asgi_call(app, "/api/render", b"application/json", messages)
    assert calls == [] and app.state.dropped_renders == 1
    assert sent[0]["status"] == 204
    answer = TestClient(app).post("/api/render", json={"face": "g0", "edits": [], "units": "file", "mix": None})
    assert answer.status_code == 200 and len(calls) == 1  # a page still waiting gets its picture


def test_an_upload_whose_face_is_found_is_reproduced_with_face_crop(client, served, monkeypatch):
    calls = []
    face = load_faces([list_images(served["faces"])[0]], 16)

    def load(paths, size, *, face_crop=False):  # stands in for a photo in which OpenCV finds a face
        calls.append(face_crop)
        return face

    monkeypatch.setattr("latentlab.studio.session.load_faces", load)
    answer = client.post("/api/upload", files={"file": ("me.jpg", b"a photo with a face")}).json()
    assert calls == [True] and answer["face_crop"]
    argv = shlex.split(client.post("/api/command", json={"face": answer["id"]}).json()["command"])
    assert argv[2:4] == ["me.jpg", "--face-crop"]


def test_the_upload_name_never_becomes_a_path(client, served):
    answer = client.post("/api/upload", files={"file": ("../../etc/evil.png", photos()["rgba.png"])}).json()
    assert answer["name"] == "evil.png"
    uploads = served["studio"].workdir / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())


# ---- exports


@pytest.mark.parametrize(("fmt", "magic"), [("gif", b"GIF8"), ("mp4", b"ftyp")])
def test_export_writes_a_sweep_animation(client, fmt, magic):
    body = {"face": "g1", "edits": [{"attr": "Blond_Hair", "alpha": 0.5}], "attr": "Smiling", "sweep": [-1, 1, 5]}
    answer = client.post("/api/export", json={**body, "format": fmt})
    assert answer.status_code == 200, answer.text
    assert magic in answer.content[:12]
    assert "Smiling_sweep" in answer.headers["content-disposition"]
    refused(client.post("/api/export", json={**body, "sweep": [-1, 1, 2.5]}), 422, "frame count")
    refused(client.post("/api/export", json={**body, "sweep": [-1, 1]}), 422, "sweep")
    refused(client.post("/api/export", json={**body, "attr": "Hat"}), 400, "Hat")


# ---- refusals


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ('{"face": "g0", "edits": [{"attr": "Smiling", "alpha": NaN}]}', 422, ["alpha", "finite"]),
        ('{"face": "g0", "edits": [{"attr": "Smiling", "alpha": Infinity}]}', 422, ["alpha"]),
        ('{"face": "g0", "edits": [{"attr": "Smiling", "alpha": 1e400}]}', 422, ["alpha"]),
        ('{"face": "g0", "edits": [{"attr": "Smiling", "alpha": 101}]}', 422, ["alpha", "100"]),
        ('{"face": "g0", "edits": [{"attr": "Smiling", "alpha": "1"}]}', 422, ["alpha"]),
        ('{"face": "g0", "edits": [{"attr": "Smilng", "alpha": 1}]}', 400, ["Smilng", "Smiling"]),
        ('{"face": "g0", "units": "raw"}', 422, ["units"]),
        ('{"face": "g0", "extra": 1}', 422, ["extra"]),
        ('{"face": "g0", "mix": {"face": "g1", "t": 1.5}}', 422, ["mix.t"]),
        ('{"face": "g0", "mix": {"face": "g1", "t": 0.5, "path": "bezier"}}', 422, ["path"]),
        ('{"face": "g0", "edits": {"Smiling": 1}}', 422, ["edits"]),
        ('{"face": "/etc/passwd"}', 422, ["face"]),
        ('{"face": "g9"}', 404, ["gallery"]),
        ('{"face": "u0000000000000000"}', 404, ["unknown face"]),
        ('{"face": "g0",', 422, ["malformed JSON"]),
        ("[1, 2]", 422, []),
        ("", 422, ["malformed JSON"]),
    ],
)
def test_bad_render_requests_are_4xx_with_a_message(client, body, status, words):
    for endpoint in ("/api/render", "/api/command"):
        answer = client.post(endpoint, content=body, headers={"content-type": "application/json"})
        refused(answer, status, *words)


def test_a_studio_without_directions_serves_samples_and_mixes(tiny_run, tmp_path, served):
    studio = Studio.open(tmp_path, model=tiny_run, faces=served["faces"])
    client = TestClient(create_app(studio))
    info = client.get("/api/info").json()
    assert not info["has_directions"] and info["directions"] == [] and "attribute-vectors" in info["hint"]
    sample = client.post("/api/sample", json={"temperature": 0.5, "seed": 1}).json()["id"]
    assert render(client, "g0", mix={"face": sample, "t": 0.5}).shape == (16, 16, 3)
    body = {"face": "g0", "edits": [{"attr": "Smiling", "alpha": 1}]}
    refused(client.post("/api/render", json=body), 400, "no direction file")
    assert client.post("/api/command", json={"face": "g0"}).json()["command"] is None


def test_without_a_folder_the_gallery_is_the_runs_training_images_else_toy_faces(tiny_run, tmp_path):
    studio = Studio.open(tmp_path / "a", model=tiny_run)
    assert studio.gallery and all(p.is_file() for p in studio.gallery)
    meta_less = tmp_path / "copy"
    shutil.copytree(tiny_run, meta_less)
    from latentlab.checkpoint import read_model_metadata  # the recorded training folder, moved away

    data = Path(read_model_metadata(meta_less / "model.safetensors")["train"]["data"])
    moved = data.with_name(data.name + "-moved")
    data.rename(moved)
    try:
        (tmp_path / "b").mkdir()
        toys = Studio.open(tmp_path / "b", model=meta_less)
        assert len(toys.gallery) == 16 and all(p.is_relative_to(tmp_path / "b") for p in toys.gallery)
    finally:
        moved.rename(data)


# ---- any body at all: 200 or 4xx JSON, never 5xx


def _nested(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["g0", "g1", "g77", "s3t0.5", "u0123456789abcdef", *ATTRS, "Smilng", "file", "sigma"]),
    _nested,
    max_leaves=12,
)
EDIT = st.fixed_dictionaries(
    {"attr": st.sampled_from([*ATTRS, "Nope", ""]) | JSON_VALUES, "alpha": JSON_VALUES | st.floats(-200, 200)}
)
BODIES = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {"face": st.sampled_from(["g0", "g3", "g4", "s1t0.7", "x"]) | JSON_VALUES},
        optional={
            "edits": st.lists(EDIT, max_size=3) | JSON_VALUES,
            "units": st.sampled_from(["file", "sigma", "raw"]) | JSON_VALUES,
            "mix": st.none() | st.fixed_dictionaries({"face": st.just("g1"), "t": JSON_VALUES}) | JSON_VALUES,
            "temperature": JSON_VALUES,
            "seed": JSON_VALUES,
            "unknown": JSON_VALUES,
        },
    ),
    st.fixed_dictionaries({"temperature": JSON_VALUES | st.floats(-1, 3), "seed": JSON_VALUES}),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES, endpoint=st.sampled_from(["/api/render", "/api/command", "/api/sample"]))
def test_random_bodies_never_cause_a_server_error(client, body, endpoint):
    content = json.dumps(body, allow_nan=True)
    answer = client.post(endpoint, content=content, headers={"content-type": "application/json"})
    assert answer.status_code == 200 or 400 <= answer.status_code < 500, (answer.status_code, answer.text)
    if answer.status_code != 200:
        assert isinstance(answer.json()["error"], str) and answer.json()["error"]


# ---- the command


def test_studio_command_serves_until_interrupted_and_removes_its_folder(tiny_run, served, monkeypatch):
    import uvicorn

    seen: dict = {}

    def run(server):  # stands in for serving: note what would be served, then Ctrl-C
        seen["port"] = server.config.port
        seen["folder"] = Path(server.config.app.state.studio.workdir)
        assert seen["folder"].is_dir()
        raise KeyboardInterrupt

    monkeypatch.setattr(uvicorn.Server, "run", run)
    result = CliRunner().invoke(cli, ["studio", "--model", str(tiny_run)])
    assert result.exit_code == 0, result.output
    assert f"http://127.0.0.1:{seen['port']}/" in result.output and "studio stopped" in result.output
    assert "attribute-vectors" in result.output  # no direction file: how to make one
    assert not seen["folder"].exists()


def test_studio_command_takes_the_next_free_port_and_warns_on_an_open_host(tiny_run, served, monkeypatch):
    import socket

    import uvicorn

    from latentlab.studio.serve import free_port

    ports: list[int] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda server: ports.append(server.config.port))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        assert free_port("127.0.0.1", taken) > taken
        args = ["studio", "--model", str(tiny_run), "--faces", str(served["faces"]), "--host", "0.0.0.0"]
        result = CliRunner().invoke(cli, [*args, "--port", str(taken)])
    assert result.exit_code == 0, result.output
    assert "anyone" in result.output and ports and ports[0] != taken


def test_studio_command_without_the_extra_says_how_to_install_it(monkeypatch):
    import sys

    for name in [m for m in sys.modules if m.startswith(("latentlab.studio.serve", "latentlab.studio.app"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fastapi", None)
    result = CliRunner().invoke(cli, ["studio"])
    assert result.exit_code == 1
    assert "pip install 'latentlab[studio]'" in result.output and len(result.output.strip().splitlines()) == 1
