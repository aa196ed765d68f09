"""latentlab against a reference PyTorch Glow port, measured side by side on this machine.

The port is not part of latentlab: give the path of its `model.py` (rosinality/glow-pytorch's layout:
`Glow(in_channel, n_flow, n_block, affine, conv_lu)`, `forward(x) -> (log_p, logdet, z_list)`,
`reverse(z_list, reconstruct=True)`). Its coupling width is fixed at 512 there; it is set to the config's
width here (128 for A, 256 for B) by changing the constructor's default, without editing its file.

Speed: both models live in one process and are timed in alternating windows (latentlab, port, latentlab,
...), so a machine whose speed drifts (this one does, by ±15% or more) moves both alike; the figure that
counts is the median of the per-window ratios. Training is one optimiser step each (forward, bits/dim
loss, backward, torch.optim.Adam at 1e-4: latentlab's as its trainer builds it, the port's with torch's
defaults and its uniform dequantisation, as its own train.py does). Encode/decode are eval mode under
inference_mode. Memory: each model and phase in a fresh process of its own (resident-set peak, MiB,
torch's own ~220 MB included). `--malloc tuned` (the default) gives both models the glibc malloc
settings that the latentlab CLI applies at start-up; `--malloc default` leaves glibc's defaults for both.

usage: python benchmarks/against_port.py PORT_MODEL_PY [--configs A,B] [--rounds 5] [--infer-batch 16,64]
                                         [--malloc tuned|default]
Prints a markdown table; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from latentlab._malloc import tune_malloc  # noqa: E402
from latentlab.bench import CONFIGS, bench_images, perturb_output_convs  # noqa: E402
from latentlab.flow.glow import Glow  # noqa: E402
from latentlab.train.optimizer import make_optimizer  # noqa: E402


def load_port(path: Path, width: int):
    """Import the port's model.py as a module, its coupling width set to `width`."""
    spec = importlib.util.spec_from_file_location("glow_port", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    init = module.AffineCoupling.__init__
    defaults = list(init.__defaults__)
    defaults[0] = width  # (filter_size, affine)
    init.__defaults__ = tuple(defaults)
    return module


def build(which: str, config: str, port_path: Path, batch: int):
    """(model, x, train_step, encode, decode) for latentlab or the port at a benchmark config."""
    bench = CONFIGS[config]
    cfg = bench.model
    torch.manual_seed(0)
    x = bench_images(max(batch, bench.batch_size), cfg.image_size, n_bits=cfg.n_bits)
    xt, xi = x[: bench.batch_size], x[:batch]
    n_dims = xt[0].numel()
    if which == "latentlab":
        model = Glow(cfg)
        model.initialize(xt)
        perturb_output_convs(model, seed=1)
        optimizer = None  # made at the first step, as the port's: inference never imports torch.optim's ~70 MB

        def train_step() -> None:
            nonlocal optimizer
            optimizer = optimizer or make_optimizer(model.parameters(), lr=1e-4)
            loss = model.bits_per_dim_from_log_prob(model(xt)).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return model, xi, train_step, lambda: model.encode(xi), lambda z: model.decode(z)
    port = load_port(port_path, cfg.width)
    model = port.Glow(3, cfg.steps, cfg.levels, affine=True, conv_lu=True)
    with torch.no_grad():
        model(xt)  # its ActNorm initialises itself on the first batch
    n_bins = 2**cfg.n_bits
    optimizer = None

    def port_step() -> None:
        nonlocal optimizer
        optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=1e-4)
        log_p, logdet, _ = model(xt + torch.rand_like(xt) / n_bins)
        loss = -((-(math.log(n_bins) * n_dims) + logdet + log_p).mean()) / (math.log(2) * n_dims)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return model, xi, port_step, lambda: model(xi)[2], lambda z: model.reverse(z, reconstruct=True)


def _window(fn: Callable[[], object], images: int, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n * images / (time.perf_counter() - start)


def speed(config: str, port_path: Path, *, rounds: int, infer_batch: int, seconds: float = 2.0) -> dict:
    """Median img/s of each and the median per-window ratio latentlab/port, for train, encode, decode."""
    ours, port = (build(w, config, port_path, infer_batch) for w in ("latentlab", "port"))
    train_batch = CONFIGS[config].batch_size
    out: dict[str, dict[str, float]] = {}

    def compare(phase: str, fa: Callable, fb: Callable, images: int) -> None:
        for _ in range(2):
            fa(), fb()
        a, b = [], []
        for _ in range(rounds):
            a.append(_window(fa, images, seconds))
            b.append(_window(fb, images, seconds))
        ratios = [p / q for p, q in zip(a, b, strict=True)]
        out[phase] = {
            "latentlab": statistics.median(a),
            "port": statistics.median(b),
            "ratio": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
        }

    ours[0].train(), port[0].train()
    compare("train", ours[2], port[2], train_batch)
    ours[0].eval(), port[0].eval()
    with torch.inference_mode():
        z_ours, z_port = ours[3](), port[3]()
        compare("encode", ours[3], port[3], infer_batch)
        compare("decode", lambda: ours[4](z_ours), lambda: port[4](z_port), infer_batch)
    return out


def peak_memory(which: str, config: str, port_path: Path, phase: str, batch: int, *, tuned: bool) -> float:
    """Resident-set peak (MiB, Linux) of a fresh process that runs one model's phase a few times."""
    code = (
        "import sys, torch\n"
        f"sys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
        "import against_port as ap\n"
        f"if {tuned}: ap.tune_malloc()\n"
        f"m, x, step, enc, dec = ap.build({which!r}, {config!r}, ap.Path({str(port_path)!r}), {batch})\n"
        f"phase = {phase!r}\n"
        "if phase == 'train':\n"
        "    m.train()\n"
        "    for _ in range(3): step()\n"
        "else:\n"
        "    m.eval()\n"
        "    with torch.inference_mode():\n"
        "        z = enc()\n"
        "        for _ in range(3): enc(); dec(z)\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork and exec
        "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) / 1024)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{which} {config} {phase}: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return float(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=Path, help="the port's model.py")
    parser.add_argument("--configs", default="A,B")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--infer-batch", default="", help="inference batch sizes (default: the config's)")
    parser.add_argument(
        "--malloc",
        choices=("tuned", "default"),
        default="tuned",
        help="glibc malloc settings for both models: the CLI's (tuned) or glibc's own",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tuned = args.malloc == "tuned"
    if tuned and not tune_malloc():  # as `latentlab bench --malloc tuned`: never measure something else silently
        raise SystemExit("--malloc tuned needs glibc's mallopt (Linux) and no MALLOC_* variables of your own")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {_cpu()}, "
        f"malloc {'tuned' if tuned else 'glibc defaults'}",
        file=sys.stderr,
    )
    rows = []
    for config in args.configs.split(","):
        batches = [int(b) for b in args.infer_batch.split(",") if b] or [CONFIGS[config].batch_size]
        for batch in batches:
            result = {
                "config": config,
                "infer_batch": batch,
                **speed(config, args.port, rounds=args.rounds, infer_batch=batch),
            }
            for which in ("latentlab", "port"):
                for phase in ("train", "infer"):
                    result[f"{which}_{phase}_peak_mb"] = peak_memory(
                        which, config, args.port, phase, batch, tuned=tuned
                    )
            rows.append(result)
            if not args.json:
                _print_row(result, header=len(rows) == 1)
    if args.json:
        print(json.dumps(rows))


def _print_row(r: dict, *, header: bool) -> None:
    if header:
        print("| config | inference batch | phase | latentlab img/s | port img/s | ratio (median, min–max) |")
        print("|---|---|---|---|---|---|")
    for phase in ("train", "encode", "decode"):
        p = r[phase]
        print(
            f"| {r['config']} | {r['infer_batch'] if phase != 'train' else '—'} | {phase} | {p['latentlab']:.1f} "
            f"| {p['port']:.1f} | **{p['ratio']:.2f}×** ({p['ratio_min']:.2f}–{p['ratio_max']:.2f}) |"
        )
    print(
        f"| {r['config']} | | peak RSS MB | train {r['latentlab_train_peak_mb']:.0f}, inference "
        f"{r['latentlab_infer_peak_mb']:.0f} | train {r['port_train_peak_mb']:.0f}, inference "
        f"{r['port_infer_peak_mb']:.0f} | |",
        flush=True,
    )


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
