"""The built wheel on its own: installed (not editable) into a fresh environment, run from an unrelated folder.

Offline by construction: the wheel is built without build isolation and installed with --no-deps --no-index;
the fresh environment reaches torch and the other dependencies through a .pth file naming the running
interpreter's site-packages (a path line in a .pth file does not run that folder's own .pth files, so an
editable install of latentlab there stays invisible).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_PRESETS = ["celeba32", "celeba64", "celebahq256", "glowjax64", "toy32"]
# What a build may see of the project: the packaging files and every top-level folder that must stay out of the wheel
PROJECT = ("pyproject.toml", "README.md", "latentlab", "tests", "benchmarks", "scripts")


def _run(cmd: list[str | Path], *, cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    """Run a command, failing the test with its output when it exits non-zero."""
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _clean_env() -> dict[str, str]:
    """The test's environment without anything that would put the source tree on the path or configure pip."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LATENTLAB_MODELS"):
        env.pop(name, None)
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def _build_wheel(tmp: Path, env: dict[str, str]) -> Path:
    """Build the wheel from a copy of the project, so the build leaves nothing in the source tree."""
    src = tmp / "src"
    src.mkdir()
    for name in PROJECT:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif (ROOT / name).is_file():
            shutil.copy2(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", ".", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp / "dist"], cwd=src, env=env)
    (wheel,) = (tmp / "dist").glob("latentlab-*.whl")
    return wheel


def _fresh_env(tmp: Path, wheel: Path, env: dict[str, str]) -> Path:
    """A virtual environment holding only the wheel, then given the running interpreter's dependencies."""
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp, env=env)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", python]
    _run([*pip, "install", "--no-deps", "--no-index", "--no-compile", wheel], cwd=tmp, env=env)
    (purelib,) = venv.glob("lib/python*/site-packages")
    shared = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    (purelib / "_dependencies.pth").write_text("".join(f"{p}\n" for p in shared if Path(p).is_dir()))
    return venv


@pytest.mark.slow
def test_wheel_installs_and_trains_from_an_unrelated_folder(tmp_path: Path):
    env = _clean_env()
    wheel = _build_wheel(tmp_path, env)

    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"latentlab", wheel.name.split("-py")[0] + ".dist-info"}, names
    assert {f"latentlab/presets/{p}.toml" for p in SHIPPED_PRESETS} <= set(names)
    assert {f"latentlab/studio/static/{f}" for f in ("index.html", "studio.js", "studio.css")} <= set(names)
    assert not [n for n in names if "/tests/" in n or "/benchmarks/" in n or "/scripts/" in n]

    venv = _fresh_env(tmp_path, wheel, env)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = "import latentlab.config as c; print(c.__file__); print(c.available_presets())"
    found = _run([venv / "bin" / "python", "-c", probe], cwd=elsewhere, env=env).splitlines()
    assert Path(found[0]).resolve().is_relative_to(venv.resolve()), f"latentlab imported from {found[0]}"
    assert found[1] == str(SHIPPED_PRESETS)

    cli = venv / "bin" / "latentlab"
    assert "train" in _run([cli, "--help"], cwd=elsewhere, env=env)
    tiny = ["image_size=16", "levels=2", "steps=1", "width=8", "toy_count=40", "workers=1"]
    train = [cli, "train", "--max-steps", "2", "--out", tmp_path / "run", "--quiet", "--batch-size", "8"]
    train += ["--device", "cpu", "--precision", "fp32", *[a for s in tiny for a in ("--set", s)]]
    _run(train, cwd=elsewhere, env=env, timeout=300)
    assert (tmp_path / "run" / "model.safetensors").stat().st_size > 0
