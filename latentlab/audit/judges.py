"""The judges: one pixel-space classifier per labeled attribute, which shares nothing with the flow.

Each judge is a balanced logistic regression on the whitened leading principal components of the
face's colour pixels (downsampled to at most JUDGE_SIZE px), fitted on training faces as the model
sees them (reduced to its n_bits) and scored on held-out faces. BENCHMARKS.md compares this choice
with plain pixels and gradient histograms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from latentlab.errors import DataError

__all__ = ["JUDGE_SIZE", "Judges", "fit_judges", "judge_features"]

JUDGE_SIZE = 32  # larger faces are area-averaged down to this many pixels a side
COMPONENTS = 128  # principal components kept (whitened) before the classifiers
STRENGTH = 0.1  # inverse regularisation strength C of every classifier
MIN_CLASS = 5  # training faces needed on each side for a judge


def judge_features(images: torch.Tensor | np.ndarray, size: int = JUDGE_SIZE) -> np.ndarray:
    """uint8 faces (N, 3, S, S) -> float32 (N, 3·s·s) colours in [0, 1], s = min(S, size), area-averaged."""
    x = torch.as_tensor(np.asarray(images)).float() / 255.0
    if x.ndim != 4 or x.shape[1] != 3:
        raise DataError(f"judges need faces (N, 3, S, S); got shape {tuple(x.shape)}")
    if x.shape[-1] > size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="area")
    return x.reshape(x.shape[0], -1).numpy()


@dataclass(frozen=True)
class Judges:
    """Fitted judges: `names[j]` has a classifier; `skipped` says why the other attributes have none."""

    names: list[str]
    balanced_accuracy: dict[str, float]  # on the held-out faces (mean of true-positive and true-negative rates)
    majority_rate: dict[str, float]  # always answering the commoner class, on the same faces
    trained_on: int
    tested_on: int
    skipped: dict[str, str]
    size: int
    _pca: object = field(repr=False)
    _classifiers: list = field(repr=False)

    def probabilities(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """uint8 faces (N, 3, S, S) -> (N, J) float64: each judge's probability that the face has its attribute."""
        if not self.names:
            return np.zeros((len(images), 0))
        f = self._pca.transform(judge_features(images, self.size))
        return np.stack([c.predict_proba(f)[:, 1] for c in self._classifiers], axis=1)


def fit_judges(
    images: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    train: np.ndarray,
    test: np.ndarray,
    *,
    seed: int = 0,
) -> Judges:
    """Fit one judge per attribute on the `train` rows of uint8 `images` (N, 3, S, S) and ±1 `labels` (N, A).

    Scored on the `test` rows (bool masks (N,), disjoint). Attributes with fewer than MIN_CLASS
    training faces on either side, or no held-out face on one side, get no judge.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    train, test = np.asarray(train, dtype=bool), np.asarray(test, dtype=bool)
    if (train & test).any():
        raise ValueError("judge training and test faces overlap")
    if int(train.sum()) < 2 * MIN_CLASS or not test.any():
        raise DataError(
            f"{int(train.sum())} training and {int(test.sum())} held-out labeled faces are too few for the judges; "
            f"they need at least {2 * MIN_CLASS} and 1"
        )
    size = min(JUDGE_SIZE, images.shape[-1])
    features = judge_features(images, size)
    k = min(COMPONENTS, int(train.sum()) - 1, features.shape[1])
    pca = PCA(k, whiten=True, random_state=seed).fit(features[train])
    f_train, f_test = pca.transform(features[train]), pca.transform(features[test])
    y_train, y_test = labels[train] > 0, labels[test] > 0
    kept, classifiers, balanced, majority, skipped = [], [], {}, {}, {}
    for a, name in enumerate(names):
        pos, pos_test = int(y_train[:, a].sum()), int(y_test[:, a].sum())
        if min(pos, len(y_train) - pos) < MIN_CLASS or min(pos_test, len(y_test) - pos_test) < 1:
            skipped[name] = (
                f"{pos}/{len(y_train) - pos} training and {pos_test}/{len(y_test) - pos_test} held-out faces "
                f"with/without it; a judge needs {MIN_CLASS} training faces and 1 held-out face on each side"
            )
            continue
        clf = LogisticRegression(C=STRENGTH, class_weight="balanced", max_iter=500)
        clf.fit(f_train, y_train[:, a])
        said = clf.predict_proba(f_test)[:, 1] >= 0.5
        truth = y_test[:, a]
        kept.append(name)
        classifiers.append(clf)
        balanced[name] = float((said[truth].mean() + (~said[~truth]).mean()) / 2)
        majority[name] = float(max(truth.mean(), 1 - truth.mean()))
    return Judges(
        names=kept,
        balanced_accuracy=balanced,
        majority_rate=majority,
        trained_on=int(train.sum()),
        tested_on=int(test.sum()),
        skipped=skipped,
        size=size,
        _pca=pca,
        _classifiers=classifiers,
    )
