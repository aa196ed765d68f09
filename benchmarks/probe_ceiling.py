"""How far any linear classifier gets on the probe's splits: the ceiling the shipped directions are judged against.

The shipped methods are fitted by `benchmarks/direction_probes.py`. This script fits plain linear classifiers
(none of them shipped) on the same splits (`held_out_rows`, seeds 0-4 by default) and scores them with the
same probe (`probe_score`: a threshold for balanced accuracy fitted on the training faces, balanced accuracy
on the held-out ones), every classifier fitted on the training faces and their mirror images:
- on the latents: logistic regression with an L2 or an L1 penalty over a grid of C, and linear discriminant
  analysis with Ledoit-Wolf shrinkage of the covariance;
- on the pixels the model sees (the latents decoded, so exactly the crop the model was given): logistic
  regression with an L2 penalty over a grid of C;
- a latent direction made from the pixel classifier: the gradient of its score through the decoder,
  averaged over the training faces and mirrors (`pull_back`), scored like any direction (projections of z).
Each figure is the mean balanced accuracy over the splits; the best C of a grid is chosen on those same
splits, so the grid's best is an optimistic figure. The shipped fit (mean-diff-shrunk 1.5 --mirror) is also
given on a quarter, a half and three quarters of each split's training faces (the same held-out faces):
how much more labeled faces would buy.

The latent stores are the ones `benchmarks/direction_probes.py` writes (faces, and mirror images in
`--latents/mirror`); they are encoded here if missing.

usage: python benchmarks/probe_ceiling.py --model models/celeba32 --labels celeba-sample/list_attr_celeba.csv
       [--images DIR] [--latents DIR] [--attrs Smiling,Male,Blond_Hair] [--seeds 0,1,2,3,4] [--rows TEXT]
Prints a markdown table (classifier x attribute).
"""

from __future__ import annotations

import inspect
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from direction_probes import probe_arguments, probe_latents  # noqa: E402  (this script's folder)

from latentlab.directions.fit import fit_directions  # noqa: E402
from latentlab.directions.probe import held_out_rows, probe_score  # noqa: E402

Fit = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (rows, features), labels ±1 -> weight vector


def logistic(c: float, penalty: str) -> Fit:
    """Class-balanced logistic regression; returns its weight vector."""
    from sklearn.linear_model import LogisticRegression

    # scikit-learn 1.8 replaced `penalty` by `l1_ratio`; older releases ignore l1_ratio without it
    new_api = inspect.signature(LogisticRegression).parameters["penalty"].default == "deprecated"
    kind = {"l1_ratio": 1.0 if penalty == "l1" else 0.0} if new_api else {"penalty": penalty}

    def fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        solver = "liblinear" if penalty == "l1" else "lbfgs"
        model = LogisticRegression(C=c, solver=solver, class_weight="balanced", max_iter=500, **kind)
        return model.fit(x, y > 0).coef_[0]

    return fit


def lda(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Linear discriminant analysis with a Ledoit-Wolf shrunk covariance; returns its weight vector."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    return LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(x, y > 0).coef_[0]


def decoded_pixels(model: torch.nn.Module, z: np.ndarray, batch: int = 256) -> np.ndarray:
    """The images the latents stand for, as the model's input values (N, 3·H·W)."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(z), batch):
            out.append(model.decode(torch.from_numpy(z[start : start + batch])).flatten(1).numpy())
    return np.concatenate(out).astype(np.float64)


def pull_back(model: torch.nn.Module, w: np.ndarray, z: np.ndarray) -> np.ndarray:
    """A latent direction from a pixel classifier's weights w: the gradient of w · decode(z), averaged over z.

    The latent direction that raises the pixel classifier's score most, on average over those faces.
    """
    weights = torch.from_numpy(w).float()
    grad = torch.zeros(z.shape[1], dtype=torch.float64)
    for start in range(0, len(z), 128):
        rows = torch.from_numpy(z[start : start + 128]).float().requires_grad_()
        (model.decode(rows).flatten(1) @ weights).sum().backward()
        grad += rows.grad.double().sum(0)
    return (grad / len(z)).numpy()


def mean_balanced(
    fit: Fit,
    x: np.ndarray,
    xm: np.ndarray,
    labels: np.ndarray,
    seeds: list[int],
    latents: tuple[torch.nn.Module, np.ndarray, np.ndarray] | None = None,
) -> tuple[float, float]:
    """Mean and spread over the splits of the held-out balanced accuracy of `fit` (faces and mirrors fitted).

    With `latents` (model, z, z of the mirrors), x being the decoded pixels, the pixel classifier is pulled
    back to a latent direction (`pull_back`) and the probe scores the latents' projections on it.
    """
    scores = []
    for seed in seeds:
        held_out = held_out_rows(len(labels), seed=seed)
        train = ~held_out & (labels != 0)
        w = fit(np.concatenate([x[train], xm[train]]), np.concatenate([labels[train], labels[train]]))
        if latents is None:
            scores.append(probe_score(x @ w, labels, held_out).balanced_accuracy)
            continue
        model, z, zm = latents
        v = pull_back(model, w, np.concatenate([z[train], zm[train]]))
        scores.append(probe_score(z @ v, labels, held_out).balanced_accuracy)
    return statistics.mean(scores), statistics.stdev(scores) if len(scores) > 1 else 0.0


def main() -> None:
    parser = probe_arguments(__doc__, attrs="Smiling,Male,Blond_Hair")
    parser.add_argument("--rows", default="", help="only the classifiers whose name contains this text")
    args = parser.parse_args()

    attrs = args.attrs.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    model, z32, zm32, labels = probe_latents(args, attrs, mirror=True)
    pixels, pixels_m = decoded_pixels(model, z32), decoded_pixels(model, zm32)
    z, zm = z32.astype(np.float64), zm32.astype(np.float64)
    print(f"{len(z)} faces, D = {z.shape[1]}, seeds {seeds}; mean held-out balanced accuracy ± spread\n")
    print("| classifier | " + " | ".join(attrs) + " | seconds |\n|" + "---|" * (len(attrs) + 2))

    def shipped(a: int, share: float = 1.0) -> tuple[float, float]:
        """The shipped fit on a seeded `share` of each split's training faces (the rest unlabeled: unfitted)."""
        runs = []
        for seed in seeds:
            masked = labels.copy()
            train = np.flatnonzero(~held_out_rows(len(labels), seed=seed))
            dropped = np.random.default_rng((seed, 2)).permutation(train)[: int(round((1 - share) * len(train)))]
            masked[dropped] = 0
            fit = fit_directions(z, masked, attrs, method="mean-diff-shrunk", mirrored=zm, seed=seed)
            runs.append(fit.extra["probe_balanced_accuracy"][attrs[a]])
        return statistics.mean(runs), statistics.stdev(runs) if len(runs) > 1 else 0.0

    rows: list[tuple[str, Callable[[int], tuple[float, float]]]] = [
        (f"mean-diff-shrunk 1.5 --mirror (shipped), {share:.0%} of the training faces", partial(shipped, share=share))
        for share in (0.25, 0.5, 0.75, 1.0)
    ]
    for penalty, grid in (("l2", (1e-4, 3e-4, 1e-3)), ("l1", (0.01, 0.03, 0.1))):
        for c in grid:
            rows.append(
                (f"latents: logistic {penalty.upper()}, C = {c:g}", _on(logistic(c, penalty), z, zm, labels, seeds))
            )
    rows.append(("latents: LDA, Ledoit-Wolf shrinkage (minutes)", _on(lda, z, zm, labels, seeds)))
    for c in (0.01, 0.1, 1.0):
        rows.append((f"pixels: logistic L2, C = {c:g}", _on(logistic(c, "l2"), pixels, pixels_m, labels, seeds)))
    pixel_fit = logistic(0.1, "l2")
    rows.append(
        (
            "latents: the pixels' logistic (C = 0.1) pulled back through the decoder",
            lambda a: mean_balanced(pixel_fit, pixels, pixels_m, labels[:, a], seeds, latents=(model, z, zm)),
        )
    )
    for name, score in [row for row in rows if args.rows in row[0]]:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cells = [score(a) for a in range(len(attrs))]
        text = " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in cells)
        print(f"| {name} | {text} | {time.perf_counter() - start:.0f} |", flush=True)


def _on(
    fit: Fit, x: np.ndarray, xm: np.ndarray, labels: np.ndarray, seeds: list[int]
) -> Callable[[int], tuple[float, float]]:
    return lambda a: mean_balanced(fit, x, xm, labels[:, a], seeds)


if __name__ == "__main__":
    main()
