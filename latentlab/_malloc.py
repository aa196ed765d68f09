"""glibc malloc settings that keep freed activation memory for reuse (the CLI applies them at start-up).

By default glibc serves large blocks (a 1-8 MiB activation) with fresh mmaps, or trims them off the heap
when they are freed, so every new activation is page-faulted in again, 4 KiB at a time; what that costs
is in BENCHMARKS.md (benchmarks/malloc_faults.py counts the faults).
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping

# The same as MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_TOP_PAD_=67108864
MMAP_THRESHOLD = 32 * 2**20  # blocks below this come from the heap, which is reused, not from fresh mmaps
TRIM_THRESHOLD = 2**30  # free memory at the heap's top is handed back only above this
TOP_PAD = 64 * 2**20  # the heap grows in steps of at least this
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # mallopt's option numbers (malloc.h)
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def user_has_malloc_settings(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the user set glibc's malloc variables themselves (then theirs stand)."""
    return any(name in environ for name in USER_SETTINGS)


def tune_malloc() -> bool:
    """Apply the settings above to this process (inherited by forked workers); True if they were applied.

    Process-wide and glibc-only: False on other platforms, where mallopt is missing, or where the user
    set glibc's malloc variables. A start-up detail of the CLI, not part of the library's API.
    """
    if not sys.platform.startswith("linux") or user_has_malloc_settings():
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    settings = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD))
    return all(mallopt(option, value) == 1 for option, value in settings)
