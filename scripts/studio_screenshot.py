"""Screenshot the studio editing a face, for the README: serve a model, set sliders, save the page as a PNG.

usage: python scripts/studio_screenshot.py OUT.png --model RUN [--vectors FILE] [--faces DIR] [--face 0]
       [--set Smiling=0.8 --set Blond_Hair=0.6] [--units sigma] [--search Blond]
Needs the studio extra, Playwright for Python and Debian's chromium (/usr/bin/chromium).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

from latentlab.studio.serve import free_port

CHROMIUM = "/usr/bin/chromium"


def _serve(args: argparse.Namespace, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "latentlab", "studio", "--model", str(args.model), "--port", str(port)]
    if args.vectors:
        cmd += ["--vectors", str(args.vectors)]
    if args.faces:
        cmd += ["--faces", str(args.faces)]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the studio exited: {process.stdout.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=2):
                return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    sys.exit("the studio did not start within 2 minutes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--vectors", type=Path)
    parser.add_argument("--faces", type=Path)
    parser.add_argument("--face", type=int, default=0, help="gallery index of the face to edit")
    parser.add_argument("--set", action="append", default=[], help="ATTR=ALPHA, repeatable")
    parser.add_argument("--units", choices=("file", "sigma"), default="file")
    parser.add_argument("--search", default="", help="text typed into the attribute search box")
    parser.add_argument("--smooth", action="store_true", help="smooth instead of nearest upscaling")
    args = parser.parse_args()
    port = free_port("127.0.0.1", 8000)
    server = _serve(args, port)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("window.studio && window.studio.renders.length > 0")
            page.locator("#gallery button").nth(args.face).click()
            if args.units == "sigma":
                page.click("#units-sigma")
            if args.smooth:
                page.click("#scale-smooth")
            for item in args.set:
                attr, alpha = item.split("=")
                page.evaluate(
                    """([attr, alpha]) => {
                        const s = document.getElementById('alpha-' + attr);
                        s.value = alpha;
                        s.dispatchEvent(new Event('input', { bubbles: true }));
                        s.dispatchEvent(new Event('change', { bubbles: true }));
                    }""",
                    [attr, alpha],
                )
            if args.search:
                page.fill("#search", args.search)
            page.wait_for_timeout(1500)  # the last render and the reproduce command arrive
            if args.set:  # once more, now that the face is encoded: the latency shown is a slider move's
                attr, alpha = args.set[-1].split("=")
                page.evaluate(
                    "([a, x]) => { const s = document.getElementById('alpha-' + a); s.value = x;"
                    " s.dispatchEvent(new Event('input', { bubbles: true })); }",
                    [attr, alpha],
                )
                page.wait_for_timeout(1000)
            page.screenshot(path=str(args.out))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
