"""Printing what the model thinks of the photos: bits/dim and reconstruction PSNR beside the model's own figure.

A few photos get a line each; many get a summary line, and the ones far above the model's figure are
listed (at most MAX_LISTED) as warnings, since their edits will look wrong.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape

from latentlab.cli.common import console, err_console

if TYPE_CHECKING:  # the CLI starts without torch; the report arrives with the job's result
    from latentlab.latents.likelihood import FitReport, ImageFit

ONE_LINE_EACH = 8  # up to this many photos, one line each; more, a summary
MAX_LISTED = 10  # outliers named one by one; the rest are counted


def _reference(report: FitReport) -> str:
    ref = report.reference
    if ref is None:
        return "the model records no bits/dim of its own to compare with"
    return f"model: {ref.bits_per_dim:.3f} {ref.source}"


def _psnr(value: float) -> str:
    return "exact" if value == float("inf") else f"{value:.0f} dB"


def print_fit(report: FitReport, *, what: str = "photo") -> None:
    """The figures on stdout, the far-off photos as yellow warnings on stderr."""
    if not report.images:
        return
    if len(report.images) <= ONE_LINE_EACH:
        for f in report.images:
            line = f"{f.name}: {f.bits_per_dim:.3f} bits/dim ({_reference(report)}), reconstruction {_psnr(f.psnr_db)}"
            console.print(escape(line), highlight=False, soft_wrap=True)
    else:
        values = sorted(f.bits_per_dim for f in report.images)
        line = (
            f"{len(values)} {what}s: bits/dim median {report.median_bits_per_dim():.3f} "
            f"(from {values[0]:.3f} to {values[-1]:.3f}; {_reference(report)}), "
            f"reconstruction {_psnr(report.min_psnr())} or better"
        )
        console.print(escape(line), highlight=False, soft_wrap=True)
    far = sorted(report.far, key=lambda f: -f.bits_per_dim if f.bits_per_dim == f.bits_per_dim else float("-inf"))
    if far:
        _warn_far(report, far, what)


def _warn_far(report: FitReport, far: list[ImageFit], what: str) -> None:
    ref = report.reference
    assert ref is not None  # `far` is empty without a reference
    count = f"{len(far)} of {len(report.images)} {what}s lie" if len(report.images) > 1 else f"the {what} lies"
    err_console.print(
        f"[yellow]warning:[/] {count} more than {report.margin:g} bit/dim above the model's {ref.source} "
        f"{ref.bits_per_dim:.3f}: the model knows no faces like them, so their edits will look wrong "
        "(crop the face as the training faces are, e.g. --face-crop, or use a model trained on such photos)",
        highlight=False,
        soft_wrap=True,
    )
    for f in far[:MAX_LISTED]:
        err_console.print(f"  {escape(f.name)}: {f.bits_per_dim:.3f} bits/dim", highlight=False, soft_wrap=True)
    if len(far) > MAX_LISTED:
        err_console.print(f"  and {len(far) - MAX_LISTED} more", highlight=False, soft_wrap=True)
