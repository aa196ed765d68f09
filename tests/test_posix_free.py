"""Where POSIX-only modules do not exist (Windows), latentlab imports, and a model saves, loads, encodes and decodes.

A fresh process imports the third-party packages first (they bring their own platform code), then makes
every POSIX-only module unimportable and the POSIX-only os and signal names disappear, and only then
imports each latentlab module and uses the public API.
"""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import importlib, importlib.abc, os, pkgutil, signal, sys, tempfile
import filelock, numpy, PIL.Image, safetensors.torch, torch

POSIX_ONLY = {"fcntl", "resource", "pwd", "grp", "termios", "tty", "pty", "syslog"}


class BlockPosixOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in POSIX_ONLY:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


for name in [n for n in sys.modules if n.split(".")[0] in POSIX_ONLY]:
    del sys.modules[name]
sys.meta_path.insert(0, BlockPosixOnly())
for attr in ("pread", "pwrite", "preadv", "pwritev", "getloadavg", "fork", "killpg", "getuid"):
    if hasattr(os, attr):
        delattr(os, attr)
for attr in ("SIGKILL", "SIGUSR1", "SIGHUP"):
    if hasattr(signal, attr):
        delattr(signal, attr)

import latentlab

for module in pkgutil.walk_packages(latentlab.__path__, "latentlab."):
    if module.name.rsplit(".", 1)[-1] == "__main__":
        continue
    try:
        importlib.import_module(module.name)
    except ModuleNotFoundError as exc:
        if exc.name.split(".")[0] in POSIX_ONLY:
            raise
        print(f"skipped {module.name}: optional {exc.name} missing")

from latentlab import Glow, GlowConfig, load_model, save_model

torch.manual_seed(0)
x = torch.rand(4, 3, 8, 8) - 0.5
model = Glow(GlowConfig(image_size=8, levels=2, steps=2, width=8))
model.initialize(x)
with tempfile.TemporaryDirectory() as folder:
    save_model(model, folder)
    loaded = load_model(folder)
with torch.no_grad():
    z = loaded.encode(x)
    assert torch.equal(z, model.encode(x))
    assert (loaded.decode(z) - x).abs().max() < 1e-5
print("ok")
"""


def test_latentlab_works_without_posix_only_modules(tmp_path):
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "ok"
