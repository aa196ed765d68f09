"""Split ../shared/celeba-sample into train/ and held_out/ folders of symbolic links (fixed seed).

The celeba32 figures in BENCHMARKS.md train on train/ and report bits/dim on held_out/, which
training never sees. usage: python benchmarks/celeba_split.py SAMPLE_IMAGES OUT [--held-out 300] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path, help="the sample's images/ folder")
    parser.add_argument("out", type=Path, help="where train/ and held_out/ are made")
    parser.add_argument("--held-out", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    order = np.random.default_rng(args.seed).permutation(len(files))
    held = set(order[: args.held_out].tolist())
    for part in ("train", "held_out"):
        (args.out / part).mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(files):
        link = args.out / ("held_out" if i in held else "train") / path.name
        if not link.exists():
            link.symlink_to(path.resolve())
    print(f"{len(files) - len(held)} training and {len(held)} held-out images under {args.out}")


if __name__ == "__main__":
    main()
