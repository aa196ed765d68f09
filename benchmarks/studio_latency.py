"""Slider latency of `latentlab studio` in a real browser: from the slider's input event to the new face on screen.

Serves each model with `latentlab studio` in a subprocess, opens the page in Debian's chromium (Playwright),
picks the first gallery face and drags one slider with the mouse over `--positions` positions, waiting at each
for the new picture; the page itself times each render from the input event to the frame after the image
decoded. Then one fast drag, without waiting, shows that stale renders are cancelled. Directions are random
(the latency does not depend on what they mean); `--preset` builds an untrained model of a preset's
architecture (ActNorm set from toy faces), whose decode costs what a trained one's does.

usage: python benchmarks/studio_latency.py [RUN_FOLDER ...] [--preset toy32] [--preset celeba64] [--positions 40]
Prints one markdown row per model: size, median, p90, min, max (ms), renders shown / aborted in the fast drag.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from latentlab.checkpoint import load_model, model_fingerprint, save_model  # noqa: E402
from latentlab.config import load_preset  # noqa: E402
from latentlab.data.toy_faces import render_toy_face, sample_toy_attributes  # noqa: E402
from latentlab.directions.file import save_directions  # noqa: E402
from latentlab.flow.glow import Glow  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ATTRIBUTES = 40
VIEWPORT = {"width": 1280, "height": 900}
HEADER = "| model | size | median ms | p90 ms | min ms | max ms | fast drag: shown / aborted |\n" + "|---" * 7 + "|"


def build_untrained(preset: str, folder: Path) -> Path:
    """An untrained model of the preset's architecture, ActNorm set from 64 toy faces, saved in `folder`."""
    config = load_preset(preset).model
    torch.manual_seed(0)
    model = Glow(config)
    rng = np.random.default_rng(0)
    faces = [np.asarray(render_toy_face(sample_toy_attributes(rng), rng, config.image_size)) for _ in range(64)]
    x = torch.from_numpy(np.stack(faces).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        model.initialize(model.preprocess(x))
    save_model(model, folder)
    return folder


def random_directions(run: Path, out: Path) -> Path:
    """A direction file of ATTRIBUTES random unit-norm directions for the model in `run`."""
    model = load_model(run)
    g = torch.Generator().manual_seed(0)
    names = [f"Attribute_{i:02d}" for i in range(ATTRIBUTES)]
    vectors = {n: torch.nn.functional.normalize(torch.randn(model.latent_dim, generator=g), dim=0) for n in names}
    return save_directions(
        out,
        vectors=vectors,
        pos_counts=[10] * ATTRIBUTES,
        neg_counts=[10] * ATTRIBUTES,
        method="mean-diff",
        model_fingerprint=model_fingerprint(model),
        latent_std=[1.0] * ATTRIBUTES,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(run: Path, vectors: Path) -> tuple[subprocess.Popen, str]:
    """Start `latentlab studio` on a free port and wait until it answers."""
    port = free_port()
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    cmd = [sys.executable, "-m", "latentlab", "studio", "--model", str(run), "--vectors", str(vectors)]
    process = subprocess.Popen([*cmd, "--port", str(port)], env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"latentlab studio exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url + "api/info", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.25)
    process.kill()
    raise SystemExit("latentlab studio did not answer within 120 s")


def renders(page) -> int:
    return page.evaluate("window.studio.renders.length")


def drag(page, url: str, positions: int) -> dict:
    """Latencies (ms) of a slow drag that waits for each picture, and the counts of a fast drag that does not."""
    page.goto(url)
    page.wait_for_function("window.studio && window.studio.renders.length > 0", timeout=60_000)
    box = page.locator(".slider input").first.bounding_box()
    y = box["y"] + box["height"] / 2
    xs = [box["x"] + box["width"] * (0.5 + 0.3 * i / positions) for i in range(positions + 3)]
    page.mouse.move(box["x"] + box["width"] / 2, y)
    page.mouse.down()
    times: list[float] = []
    value = "Number(document.querySelector('.slider input').value)"
    for x in xs:
        before, old = renders(page), page.evaluate(value)
        page.mouse.move(x, y)
        if page.evaluate(value) == old:  # under a pixel of the slider's step: no input event
            continue
        page.wait_for_function(
            """(n) => {
                const r = window.studio.renders;
                const v = Number(document.querySelector('.slider input').value);
                const failed = !document.getElementById('message').hidden;
                return failed || (r.length > n && (r.at(-1).body.edits[0] || {alpha: 0}).alpha === v);
            }""",
            arg=before,
            timeout=60_000,
        )
        if page.locator("#message").is_visible():
            raise SystemExit(f"the page reports: {page.locator('#message').inner_text()}")
        times.append(page.evaluate("window.studio.renders.at(-1).ms"))
    page.mouse.up()

    shown, aborted = renders(page), page.evaluate("window.studio.aborted")
    page.mouse.move(box["x"] + box["width"] * 0.8, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.2, y, steps=positions)
    page.mouse.up()
    page.wait_for_function(
        """() => Number(document.querySelector('.slider input').value) ===
                 (window.studio.renders.at(-1).body.edits[0] || {alpha: 0}).alpha""",
        timeout=60_000,
    )
    times = times[3:]  # the first few warm up the server's caches and the browser
    return {
        "size": page.evaluate("window.studio.info.image_size"),
        "times": times,
        "fast_shown": renders(page) - shown,
        "fast_aborted": page.evaluate("window.studio.aborted") - aborted,
    }


def row(name: str, result: dict) -> str:
    """A markdown row: the model, its image size, the drag's latency figures and the fast drag's counts."""
    t = sorted(result["times"])
    p90 = t[min(len(t) - 1, round(0.9 * (len(t) - 1)))]
    return (
        f"| {name} | {result['size']} | {statistics.median(t):.0f} | {p90:.0f} | {t[0]:.0f} | {t[-1]:.0f} "
        f"| {result['fast_shown']} / {result['fast_aborted']} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run folders or model files (default: --preset toy32)")
    parser.add_argument("--preset", action="append", default=[], help="an untrained model of this preset's size")
    parser.add_argument("--positions", type=int, default=40, help="slider positions in the timed drag")
    parser.add_argument("--url", help="measure a studio already running at this address instead")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    if args.url:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            print(HEADER)
            print(row(args.url, drag(browser.new_page(viewport=VIEWPORT), args.url, args.positions)))
            browser.close()
        return

    presets = args.preset or ([] if args.runs else ["toy32"])
    with tempfile.TemporaryDirectory(prefix="studio-latency-") as tmp:
        models = [(str(run), Path(run)) for run in args.runs]
        models += [(f"untrained {p}", build_untrained(p, Path(tmp) / p)) for p in presets]
        print(f"CPU threads available: {os.cpu_count()}; torch threads in the server: its default")
        print(HEADER)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for name, run in models:
                vectors = random_directions(run, Path(tmp) / f"{run.name}-directions.safetensors")
                process, url = serve(run, vectors)
                try:
                    page = browser.new_page(viewport=VIEWPORT)
                    result = drag(page, url, args.positions)
                    page.close()
                finally:
                    process.terminate()
                    process.wait(timeout=30)
                print(row(name, result))
            browser.close()


if __name__ == "__main__":
    main()
