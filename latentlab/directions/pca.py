"""Directions without labels: the leading principal components of encoded faces, in two streaming passes.

Pass 1 feeds scikit-learn's IncrementalPCA batch by batch, so memory is O((K + batch) · D) whatever the
number of faces N. Pass 2 projects every face on the K components (an (N, K) array, small) for the
spread behind --units sigma, the alpha scale and, when labels are given, which attribute each tracks.

Alpha means for a component what it means for an attribute: split the faces at their mean along pc_k
into "above" (the positives) and "below" (the negatives); the stored vector is the gap between the two
halves' mean projections, so alpha = 1 moves an average face below the mean to an average face above
it. For a Gaussian spread that gap is 2·sqrt(2/pi)·σ, about 1.6σ: alpha = ±1 is a clear, in-range edit.
A component's sign is the SVD's (arbitrary but deterministic): a sweep shows both ends.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from latentlab.data.mapped_rows import MappedRows
from latentlab.directions.file import DirectionSet
from latentlab.errors import ConfigError, DataError
from latentlab.latents import latent_chunks
from latentlab.progress import progress_bar

__all__ = ["DEFAULT_COMPONENTS", "PCA_BATCH_BYTES", "component_names", "pca_batch_rows", "principal_directions"]

DEFAULT_COMPONENTS = 10
PCA_BATCH_BYTES = 2**26  # float64 rows per IncrementalPCA step: 64 MiB (its SVD holds about three such)


def component_names(k: int) -> list[str]:
    """["pc1", ..., "pck"]: the names the components get in a direction file."""
    return [f"pc{i + 1}" for i in range(k)]


def pca_batch_rows(components: int, dim: int, *, budget: int = PCA_BATCH_BYTES) -> int:
    """Rows per IncrementalPCA step: 256 or 10·K, within `budget` bytes of float64, never under 2·K.

    Each step is an SVD of (K + rows, D), so the whole pass costs about N · rows · D: small steps are
    cheaper, and rows well above K keep what each truncation drops small.
    """
    return max(2 * components, min(max(256, 10 * components), budget // (8 * max(dim, 1))))


def _batches(latents: np.ndarray | MappedRows, rows: int, minimum: int) -> Iterator[np.ndarray]:
    """float64 (rows, D) blocks of the latents; the last is merged into the one before if under `minimum`."""
    n = latents.shape[0]
    starts = list(range(0, n, rows))
    if len(starts) > 1 and n - starts[-1] < minimum:
        starts.pop()
    for i, lo in enumerate(starts):
        hi = starts[i + 1] if i + 1 < len(starts) else n
        block = np.asarray(latents[lo:hi], dtype=np.float64)
        if not np.isfinite(block).all():
            raise DataError("latents contain NaN or inf; the model or the images are broken")
        yield block


def principal_directions(
    latents: np.ndarray | MappedRows,
    *,
    components: int = DEFAULT_COMPONENTS,
    labels: np.ndarray | None = None,
    names: Sequence[str] = (),
    batch_rows: int | None = None,
    progress: bool = False,
) -> DirectionSet:
    """The first `components` principal components of latents (N, D), as a direction set named pc1, pc2, ...

    Streamed: IncrementalPCA over float64 blocks of `batch_rows` (default `pca_batch_rows`).
    Vectors are the unit components scaled to the gap between the mean projections of the faces above and
    below the mean (see the module docstring); `latent_std` is each component's σ (the spread of the
    projections); pos/neg counts are the faces above/below the mean. `extra` holds explained_variance
    (per component, in latent units²), explained_variance_ratio (of the total variance, sorted, summing to
    at most 1), total_variance, pca_rows and pca_batch_rows; with `labels` (N, A) in {-1, 0, +1} for
    `names`, also pca_correlations {pc: {attribute: r}} (Pearson r of projection and label over the labeled
    faces) and pca_tracks {pc: [attribute, r]} (the attribute of largest |r|).
    """
    from sklearn.decomposition import IncrementalPCA

    n, dim = latents.shape
    if components < 1:
        raise ConfigError(f"components {components} must be at least 1")
    if components > dim:
        raise ConfigError(f"components {components} exceeds the latent size {dim}")
    if n < components + 1:
        raise DataError(f"{components} principal components need at least {components + 1} faces; got {n}")
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int8)
        if labels.shape != (n, len(names)):
            raise DataError(f"labels have shape {labels.shape}; expected ({n}, {len(names)}) to match the latents")
    rows = batch_rows or pca_batch_rows(components, dim)
    rows = min(max(rows, components), n)
    pca = IncrementalPCA(n_components=components)
    with progress_bar("principal components", n, enabled=progress, unit="z") as advance:
        for block in _batches(latents, rows, minimum=components):
            pca.partial_fit(block)
            advance(len(block))

    units = torch.from_numpy(np.ascontiguousarray(pca.components_, dtype=np.float64))  # (K, D) orthonormal
    mean = torch.from_numpy(np.asarray(pca.mean_, dtype=np.float64))  # (D,)
    proj = _projections(latents, units, mean, progress=progress)  # (N, K), centred
    above = proj > 0
    gap = np.array([proj[above[:, k], k].mean() - proj[~above[:, k], k].mean() for k in range(components)])
    pcs = component_names(components)
    variance = np.asarray(pca.explained_variance_, dtype=np.float64)
    ratio = np.asarray(pca.explained_variance_ratio_, dtype=np.float64)
    extra = {
        "explained_variance": dict(zip(pcs, variance.tolist(), strict=True)),
        "explained_variance_ratio": dict(zip(pcs, ratio.tolist(), strict=True)),
        "total_variance": float(variance.sum() / ratio.sum()) if ratio.sum() > 0 else None,
        "pca_rows": int(n),
        "pca_batch_rows": int(rows),
        "skipped": {},
    }
    if labels is not None and len(names):
        correlations = _label_correlations(proj, labels, names, pcs)
        extra["pca_correlations"] = correlations
        extra["pca_tracks"] = {
            pc: list(max(corr.items(), key=lambda item: abs(item[1]))) for pc, corr in correlations.items() if corr
        }
    return DirectionSet(
        vectors={pc: units[k] * float(gap[k]) for k, pc in enumerate(pcs)},
        method="pca",
        pos_counts={pc: int(above[:, k].sum()) for k, pc in enumerate(pcs)},
        neg_counts={pc: int((~above[:, k]).sum()) for k, pc in enumerate(pcs)},
        latent_std={pc: float(proj[:, k].std()) for k, pc in enumerate(pcs)},
        extra=extra,
    )


def _projections(
    latents: np.ndarray | MappedRows, units: torch.Tensor, mean: torch.Tensor, *, progress: bool
) -> np.ndarray:
    """(N, K) float64: (z - mean) · u_k for every face, streamed."""
    out = np.empty((latents.shape[0], units.shape[0]), dtype=np.float64)
    with progress_bar("projections", latents.shape[0], enabled=progress, unit="z") as advance:
        for lo, z in latent_chunks(latents):
            out[lo : lo + len(z)] = ((torch.from_numpy(z) - mean) @ units.T).numpy()
            advance(len(z))
    return out


def _label_correlations(
    proj: np.ndarray, labels: np.ndarray, names: Sequence[str], pcs: Sequence[str]
) -> dict[str, dict[str, float]]:
    """{pc: {attribute: Pearson r between the projection and the ±1 label}} over each attribute's labeled faces."""
    out: dict[str, dict[str, float]] = {pc: {} for pc in pcs}
    for a, name in enumerate(names):
        known = labels[:, a] != 0
        y = labels[known, a].astype(np.float64)
        if y.size < 2 or y.std() == 0:
            continue
        for k, pc in enumerate(pcs):
            p = proj[known, k]
            if p.std() > 0:
                out[pc][name] = float(np.corrcoef(p, y)[0, 1])
    return out
