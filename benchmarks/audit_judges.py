"""Which features make the audit's judges: balanced accuracy of one classifier per attribute on held-out faces.

Faces at 32 px reduced to 5 bits (what a celeba32 model sees), a seeded 20% held out; every variant
is a balanced logistic regression per attribute. usage:
  python benchmarks/audit_judges.py LABELS IMAGES [--size 32] [--bits 5] [--variants pca128,pixels16,gradients]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def gradient_histograms(images: np.ndarray, cell: int = 4, bins: int = 9) -> np.ndarray:
    """Grey-level gradient orientation histograms per cell x cell block, each block L2-normalised (HOG-like)."""
    grey = images.astype(np.float32).mean(1) / 255
    gy, gx = np.gradient(grey, axis=(1, 2))
    magnitude, angle = np.hypot(gx, gy), np.mod(np.arctan2(gy, gx), np.pi)
    which = np.minimum((angle / np.pi * bins).astype(int), bins - 1)
    n, s, _ = grey.shape
    votes = np.eye(bins, dtype=np.float32)[which] * magnitude[..., None]
    blocks = votes.reshape(n, s // cell, cell, s // cell, cell, bins).sum((2, 4))
    blocks /= np.linalg.norm(blocks, axis=-1, keepdims=True) + 1e-3
    return blocks.reshape(n, -1)


def main() -> None:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from latentlab.audit.judges import fit_judges, judge_features
    from latentlab.data.cache import prepare_cache
    from latentlab.data.labels import load_labels, match_labels
    from latentlab.directions.probe import held_out_rows

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labels", type=Path)
    parser.add_argument("images", type=Path)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--bits", type=int, default=5)
    parser.add_argument("--variants", default="pca128,pixels16,gradients")
    args = parser.parse_args()
    cache = prepare_cache(args.images, args.size, progress=False)
    match = match_labels(load_labels(args.labels), cache.names)
    step = 2 ** (8 - args.bits)
    faces = (np.asarray(cache.images[match.indices]) // step) * step + step // 2  # bin centres, as the model sees
    labels = match.labels.to_numpy()
    names = list(match.labels.columns)
    held = held_out_rows(len(faces), 0.2, seed=0)
    for variant in args.variants.split(","):
        start = time.perf_counter()
        if variant == "pca128":  # what the audit uses
            judges = fit_judges(faces, labels, names, ~held, held)
            scores = [judges.balanced_accuracy.get(n, np.nan) for n in names]
        else:
            if variant == "pixels16":
                features, strength = judge_features(faces, 16), 0.001
                features = StandardScaler().fit(features[~held]).transform(features)
            elif variant == "gradients":
                both = np.concatenate([gradient_histograms(faces), judge_features(faces, 16)], axis=1)
                both = StandardScaler().fit(both[~held]).transform(both)
                features, strength = PCA(256, whiten=True, random_state=0).fit(both[~held]).transform(both), 0.01
            else:
                raise SystemExit(f"unknown variant {variant!r}")
            scores = []
            for a in range(len(names)):
                y = labels[:, a] > 0
                clf = LogisticRegression(C=strength, class_weight="balanced", max_iter=500).fit(
                    features[~held], y[~held]
                )
                said = clf.predict(features[held])
                scores.append((said[y[held]].mean() + (~said[~y[held]]).mean()) / 2)
        scores = np.array(scores)
        seconds = time.perf_counter() - start
        print(
            f"{variant}: mean balanced accuracy {np.nanmean(scores):.3f} over {len(names)} attributes, {seconds:.1f} s"
        )
        print("  " + ", ".join(f"{n} {s:.2f}" for n, s in zip(names, scores, strict=True)))


if __name__ == "__main__":
    main()
