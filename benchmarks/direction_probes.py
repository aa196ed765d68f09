"""The honest probe for every way of fitting a direction: balanced accuracy on held-out faces, majority rate beside it.

Encodes the labeled faces once into a latent store (kept in --latents and reused; the --mirror variants
add a store of the faces' mirror images in --latents/mirror), then fits each variant
with `latentlab.directions.fit.fit_directions` exactly as `attribute-vectors` does: a seeded random 20%
of the faces held out, the direction fitted on the rest, a threshold along it fitted on the rest for
balanced accuracy and scored on the held-out faces. Each variant runs on several splits (--seeds); the
table gives the first split's figures (what the command prints with --seed 0) and the mean and spread
of the balanced accuracy over all of them.

usage: python benchmarks/direction_probes.py --model models/celeba32 --labels celeba-sample/list_attr_celeba.csv
       [--images DIR] [--latents DIR] [--attrs Smiling,Male,Blond_Hair] [--seeds 0,1,2,3,4] [--variants ...]
Prints a markdown table (variant x attribute).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from latentlab.checkpoint import load_model  # noqa: E402
from latentlab.data.labels import load_labels  # noqa: E402
from latentlab.directions.fit import fit_directions  # noqa: E402
from latentlab.latents import default_image_folder, encode_to_store  # noqa: E402

CONDITIONS = ("Male", "Young")
VARIANTS = {
    "mean-diff": {"method": "mean-diff"},
    "mean-diff ⟂ Male,Young": {"method": "mean-diff", "orthogonal_to": CONDITIONS},
    "mean-diff-shrunk 1": {"method": "mean-diff-shrunk", "shrink": 1.0},
    "mean-diff-shrunk 1.5": {"method": "mean-diff-shrunk", "shrink": 1.5},
    "mean-diff-shrunk 2": {"method": "mean-diff-shrunk", "shrink": 2.0},
    "mean-diff-shrunk 1.5 ⟂ Male,Young": {"method": "mean-diff-shrunk", "orthogonal_to": CONDITIONS},
    "logistic": {"method": "logistic"},
    "logistic ⟂ Male,Young": {"method": "logistic", "orthogonal_to": CONDITIONS},
    # --mirror: every face's mirror image encoded too (a second store, in --latents/mirror) and fitted with it
    "mean-diff --mirror": {"method": "mean-diff", "mirror": True},
    "mean-diff-shrunk 1.5 --mirror": {"method": "mean-diff-shrunk", "mirror": True},
    "logistic --mirror": {"method": "logistic", "mirror": True},
}


def probe_arguments(description: str, *, attrs: str) -> argparse.ArgumentParser:
    """The options every probe benchmark takes: model, labels, images, latent folder, attributes, seeds."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--images", type=Path)
    parser.add_argument("--latents", type=Path, default=Path("latents/direction-probes"))
    parser.add_argument("--attrs", default=attrs)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    return parser


def probe_latents(
    args: argparse.Namespace, names: list[str], *, mirror: bool
) -> tuple[torch.nn.Module, np.ndarray, np.ndarray | None, np.ndarray]:
    """(model, faces' latents float32 (N, D), their mirror images' or None, labels int8 (N, len(names))).

    The stores are encoded into `args.latents` (mirrors into its `mirror/`) once and reused after.
    """
    table = load_labels(args.labels)
    table.attrs["source"] = str(args.labels)
    images = args.images or default_image_folder(args.labels)
    model = load_model(args.model)
    store = encode_to_store(model, images, args.latents, labels=table, dtype="float32")
    zm = None
    if mirror:
        mirrored = encode_to_store(model, images, args.latents / "mirror", labels=table, dtype="float32", mirror=True)
        zm = np.asarray(mirrored.latents, dtype=np.float32)
    return model, np.asarray(store.latents, dtype=np.float32), zm, store.labels[names].to_numpy(dtype=np.int8)


def main() -> None:
    parser = probe_arguments(__doc__, attrs="Smiling,Male,Blond_Hair,Eyeglasses,Young")
    parser.add_argument("--variants", default=";".join(VARIANTS), help="names from VARIANTS, separated by ;")
    args = parser.parse_args()

    attrs = args.attrs.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = args.variants.split(";")
    names = list(dict.fromkeys([*attrs, *CONDITIONS]))
    _, z, zm, labels = probe_latents(args, names, mirror=any(VARIANTS[v].get("mirror") for v in variants))
    print(f"{len(z)} faces, D = {z.shape[1]}, seeds {seeds}\n")

    header = "| variant | " + " | ".join(attrs) + " |"
    print(header + "\n|" + "---|" * (len(attrs) + 1))
    majority = None
    for variant in variants:
        options = dict(VARIANTS[variant])
        if options.pop("mirror", False):
            options["mirrored"] = zm
        runs = []
        for seed in seeds:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                runs.append(fit_directions(z, labels, names, seed=seed, **options).extra)
        first = runs[0]
        majority = majority or first["probe_majority_rate"]
        cells = []
        for a in attrs:
            if first["probe_balanced_accuracy"].get(a) is None:
                cells.append("— (" + (first["skipped"].get(a) or "no probe") + ")")
                continue
            spread = [run["probe_balanced_accuracy"][a] for run in runs]
            sd = f" ± {statistics.stdev(spread):.3f}" if len(spread) > 1 else ""
            cells.append(
                f"**{first['probe_balanced_accuracy'][a]:.3f}** (mean {statistics.mean(spread):.3f}{sd}; "
                f"plain {first['probe_accuracy'][a]:.3f})"
            )
        print(f"| {variant} | " + " | ".join(cells) + " |", flush=True)
    print("| majority rate (seed 0 held-out faces) | " + " | ".join(f"{majority[a]:.3f}" for a in attrs) + " |")


if __name__ == "__main__":
    main()
