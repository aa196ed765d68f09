"""Directions without labels: the leading principal components of encoded faces, streamed.

The components come from randomized subspace iteration (Halko, Martinsson and Tropp, 2011) run as
passes over the latents: a pass for the mean and total variance, `power_iterations` passes that each
multiply an orthonormal (D, l) block by the covariance (sum over batches of Bᵀ(B·Q), B centred), a
Rayleigh-Ritz pass, and a pass projecting every face on the K components. Memory is O(D · l + batch · D)
whatever the number of faces N; the (N, K) projections are small. scikit-learn's IncrementalPCA, which
truncates to K after every batch, lost much of the top components on Glow latents, whose spectrum is
nearly flat (ε ~ N(0, I) under the model); BENCHMARKS.md has the comparison with an exact SVD.

Alpha means for a component what it means for an attribute: split the faces at their mean along pc_k
into "above" (the positives) and "below" (the negatives); the stored vector is the gap between the two
halves' mean projections, so alpha = 1 moves an average face below the mean to an average face above
it. For a Gaussian spread that gap is 2·sqrt(2/pi)·σ, about 1.6σ: alpha = ±1 is a clear, in-range edit.
A component's sign is fixed so that its largest coordinate is positive (arbitrary, but deterministic).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from latentlab.data.mapped_rows import MappedRows
from latentlab.directions.file import DirectionSet
from latentlab.errors import ConfigError, DataError
from latentlab.latents import latent_chunks
from latentlab.progress import progress_bar

__all__ = ["DEFAULT_COMPONENTS", "POWER_ITERATIONS", "component_names", "principal_directions", "subspace_size"]

DEFAULT_COMPONENTS = 10
POWER_ITERATIONS = 8  # passes multiplying the block by the covariance
OVERSAMPLING = 90  # extra columns in the block: the nearly flat spectrum needs many to converge in few passes


def component_names(k: int) -> list[str]:
    """["pc1", ..., "pck"]: the names the components get in a direction file."""
    return [f"pc{i + 1}" for i in range(k)]


def subspace_size(components: int, dim: int) -> int:
    """Columns l of the iterated block: K + OVERSAMPLING (at least 2·K), at most D."""
    return min(dim, max(components + OVERSAMPLING, 2 * components))


def _chunks(latents: np.ndarray | MappedRows, rows: int | None) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, float64 tensor of the rows) over the latents, refusing NaN or inf."""
    for lo, block in latent_chunks(latents, rows=rows):
        if not np.isfinite(block).all():
            raise DataError("latents contain NaN or inf; the model or the images are broken")
        yield lo, torch.from_numpy(block)


def principal_directions(
    latents: np.ndarray | MappedRows,
    *,
    components: int = DEFAULT_COMPONENTS,
    labels: np.ndarray | None = None,
    names: Sequence[str] = (),
    power_iterations: int = POWER_ITERATIONS,
    seed: int = 0,
    batch_rows: int | None = None,
    progress: bool = False,
) -> DirectionSet:
    """The first `components` principal components of latents (N, D), as a direction set named pc1, pc2, ...

    Streamed in blocks of `batch_rows` (default: about 4M values per block). Vectors are the unit
    components scaled to the gap between the mean projections of the faces above and below the mean (see
    the module docstring); `latent_std` is each component's σ (the spread of the projections); pos/neg
    counts are the faces above/below the mean. `extra` holds explained_variance (per component, latent
    units², ddof 1), explained_variance_ratio (of the total variance: sorted, summing to at most 1),
    total_variance, pca_rows, pca_subspace and pca_power_iterations; with `labels` (N, A) in {-1, 0, +1}
    for `names`, also pca_correlations {pc: {attribute: r}} (Pearson r of projection and label over the
    labeled faces) and pca_tracks {pc: [attribute, r]} (the attribute of largest |r|).
    """
    n, dim = latents.shape
    if components < 1:
        raise ConfigError(f"components {components} must be at least 1")
    if components > dim:
        raise ConfigError(f"components {components} exceeds the latent size {dim}")
    if power_iterations < 1:
        raise ConfigError(f"power iterations {power_iterations} must be at least 1")
    if n < components + 1:
        raise DataError(f"{components} principal components need at least {components + 1} faces; got {n}")
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int8)
        if labels.shape != (n, len(names)):
            raise DataError(f"labels have shape {labels.shape}; expected ({n}, {len(names)}) to match the latents")
    width = subspace_size(components, dim)
    passes = power_iterations + 3  # mean, iterations, Rayleigh-Ritz, projections
    with progress_bar("principal components", passes * n, enabled=progress, unit="z") as advance:
        total = torch.zeros(dim, dtype=torch.float64)
        squares = torch.zeros(dim, dtype=torch.float64)
        for _, z in _chunks(latents, batch_rows):
            total += z.sum(0)
            squares += z.square().sum(0)
            advance(len(z))
        mean = total / n
        total_variance = float((squares - n * mean.square()).clamp(min=0).sum() / (n - 1))
        generator = torch.Generator().manual_seed(seed)
        q = torch.linalg.qr(torch.randn(dim, width, generator=generator, dtype=torch.float64))[0]  # (D, l)
        for _ in range(power_iterations):
            y = torch.zeros(dim, width, dtype=torch.float64)
            for _, z in _chunks(latents, batch_rows):
                zc = z - mean
                y += zc.T @ (zc @ q)  # (D, l): the covariance times the block, never formed
                advance(len(z))
            q = torch.linalg.qr(y)[0]
        gram = torch.zeros(width, width, dtype=torch.float64)
        for _, z in _chunks(latents, batch_rows):
            p = (z - mean) @ q
            gram += p.T @ p
            advance(len(z))
        eigenvalues, vectors = torch.linalg.eigh(gram)  # ascending
        order = torch.argsort(eigenvalues, descending=True)[:components]
        units = (q @ vectors[:, order]).T.contiguous()  # (K, D) orthonormal rows
        largest = units.abs().argmax(dim=1)
        units = units * torch.sign(units[torch.arange(components), largest])[:, None]
        variance = (eigenvalues[order].clamp(min=0) / (n - 1)).numpy()
        proj = _projections(latents, units, mean, batch_rows=batch_rows, advance=advance)  # (N, K), centred

    above = proj > 0
    gap = np.array([proj[above[:, k], k].mean() - proj[~above[:, k], k].mean() for k in range(components)])
    pcs = component_names(components)
    ratio = variance / total_variance if total_variance > 0 else np.zeros_like(variance)
    extra = {
        "explained_variance": dict(zip(pcs, variance.tolist(), strict=True)),
        "explained_variance_ratio": dict(zip(pcs, ratio.tolist(), strict=True)),
        "total_variance": total_variance,
        "pca_rows": int(n),
        "pca_subspace": int(width),
        "pca_power_iterations": int(power_iterations),
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
    latents: np.ndarray | MappedRows,
    units: torch.Tensor,
    mean: torch.Tensor,
    *,
    batch_rows: int | None,
    advance: Callable[[int], None],
) -> np.ndarray:
    """(N, K) float64: (z - mean) · u_k for every face, streamed."""
    out = np.empty((latents.shape[0], units.shape[0]), dtype=np.float64)
    for lo, z in _chunks(latents, batch_rows):
        out[lo : lo + len(z)] = ((z - mean) @ units.T).numpy()
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
