"""The reference port trained for the 15-minute race on the same faces, as its own train.py trains it.

The port is not part of latentlab: give the path of its `model.py` (rosinality/glow-pytorch's layout, as
for `against_port.py`). It gets the race's architecture (config A's: 32 px, L=3, K=8, coupling width 128,
affine, LU), the celeba32 preset's 5 bits, and its own recipe: Adam at 1e-4 with no schedule, batch 16,
uniform dequantisation noise, left-right flips. Its faces come from latentlab's uint8 cache of the same
folders with the same crop, so both models see the same pixels. The clock starts after the cache is
ready and stops at --minutes; the held-out figure uses latentlab's own fixed evaluation noise.

usage: python benchmarks/port_race.py PORT_MODEL_PY --train celeba/train --held-out celeba/held_out
                                      [--minutes 15] [--threads 2] [--lr 1e-4] [--seed 0]
Prints one JSON line: steps, images/s, held-out bits/dim and its standard error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from against_port import load_port  # noqa: E402

from latentlab._malloc import tune_malloc  # noqa: E402
from latentlab.bench import CONFIGS  # noqa: E402
from latentlab.data.cache import prepare_cache  # noqa: E402
from latentlab.data.quantize import dequantize  # noqa: E402
from latentlab.train.evaluate import EVAL_NOISE_SEED  # noqa: E402

N_BITS = 5  # the celeba32 preset's
BATCH = 16


def bits_per_dim(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The port's loss per image: -log p(x) in bits per dimension, the bins' volume included."""
    log_p, logdet, _ = model(x)
    n_dims = x[0].numel()
    return -(log_p + logdet - math.log(2**N_BITS) * n_dims) / (math.log(2) * n_dims)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=Path, help="the port's model.py")
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--held-out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tune_malloc()  # the settings latentlab's CLI applies, as in against_port.py
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    cfg = CONFIGS["A"].model
    train = np.asarray(prepare_cache(args.train, cfg.image_size).images)
    held = np.asarray(prepare_cache(args.held_out, cfg.image_size).images)
    port = load_port(args.port, cfg.width)
    model = port.Glow(3, cfg.steps, cfg.levels, affine=True, conv_lu=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    def batch() -> torch.Tensor:
        x8 = torch.from_numpy(train[rng.integers(0, len(train), BATCH)])
        flip = torch.from_numpy(rng.random(BATCH) < 0.5)
        x8[flip] = x8[flip].flip(-1)
        return dequantize(x8, N_BITS)

    model.train()
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < 60 * args.minutes:
        loss = bits_per_dim(model, batch()).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
        if steps % 500 == 0:
            print(f"step {steps}: train {loss.item():.4f} bits/dim", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start

    model.eval()
    gen = torch.Generator().manual_seed(EVAL_NOISE_SEED)
    values = []
    with torch.inference_mode():
        for lo in range(0, len(held), 64):
            x = dequantize(torch.from_numpy(held[lo : lo + 64].copy()), N_BITS, generator=gen)
            values.append(bits_per_dim(model, x).double().numpy())
    bpd = np.concatenate(values)
    print(
        json.dumps(
            {
                "steps": steps,
                "seconds": round(seconds, 1),
                "images_per_s": round(steps * BATCH / seconds, 1),
                "held_out_bits_per_dim": round(float(bpd.mean()), 4),
                "std_error": round(float(bpd.std(ddof=1) / math.sqrt(len(bpd))), 4),
                "held_out_images": len(bpd),
                "threads": torch.get_num_threads(),
                "lr": args.lr,
            }
        )
    )


if __name__ == "__main__":
    main()
