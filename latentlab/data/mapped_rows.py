"""Rows of a .npy file read and written through short-lived memory maps (np.load(mmap_mode=...)).

Each read or write maps the file only while it copies rows in or out, so the pages a pass goes
through leave the process's resident set as it goes: memory stays flat however many rows pass.
A map held for a whole pass would keep every page it touched resident, several GB for a large
latent store. Nothing stays mapped between calls, so a file can be renamed or removed at any time.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from latentlab.errors import DataError, OutputError

_COPY_ROWS = 4096  # rows per chunk when a file is copied into a smaller one


class MappedRows:
    """The rows of a C-ordered .npy file, indexed like a read-only array.

    `rows[lo:hi]`, `rows[i]` and `rows[int_array]` return writable copies; `write(lo, values)` writes
    rows in place. `np.asarray(rows)` reads every row (for small files and tests).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        array = self._map("r")
        if len(array.shape) < 1 or not array.flags.c_contiguous:
            raise DataError(f"{self.path} does not hold C-ordered rows")
        self.shape: tuple[int, ...] = tuple(array.shape)
        self.dtype = array.dtype

    @classmethod
    def create(cls, path: str | os.PathLike[str], *, dtype: str, shape: tuple[int, ...]) -> MappedRows:
        """A new .npy file of `shape`, zero-filled (sparse on disk), ready for `write`."""
        try:
            array = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=tuple(shape))
        except OSError as exc:
            raise OutputError(f"cannot create {path}: {exc.strerror or exc}") from None
        del array  # unmapped: `write` maps the rows it needs
        return cls(path)

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return len(self) * self.row_bytes

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: int | slice | np.ndarray) -> np.ndarray:
        part = self._map("r")[key]
        return np.array(part) if isinstance(part, np.memmap) else part  # fancy indexing already copied

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)

    def write(self, lo: int, values: np.ndarray) -> None:
        """Write `values` (cast to the file's dtype) as rows lo, lo + 1, ..."""
        data = np.asarray(values)
        if data.shape[1:] != self.shape[1:] or not 0 <= lo <= lo + len(data) <= len(self):
            raise ValueError(f"rows of shape {data.shape} do not fit at row {lo} of {self.shape}")
        if len(data):
            self._map("r+")[lo : lo + len(data)] = data

    def sync(self) -> None:
        """Make the rows written so far durable."""
        sync_file(self.path)

    def _map(self, mode: str) -> np.memmap:
        try:
            return np.load(self.path, mmap_mode=mode)
        except OSError as exc:
            if mode == "r+":
                raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}") from None
            raise DataError(f"{self.path} is not a readable .npy array ({exc.strerror or exc})") from None
        except ValueError as exc:
            raise DataError(f"{self.path} is not a readable .npy array ({exc})") from None


def shrink_rows(path: Path, rows: int) -> None:
    """Cut a C-ordered .npy down to its first `rows` rows.

    numpy leaves room in the headers it writes for the first axis to change, so the header is
    rewritten in place and the file truncated; a header without that room means a copy.
    """
    fmt = np.lib.format
    source = MappedRows(path)
    with open(path, "r+b") as fh:
        version = fmt.read_magic(fh)
        fmt.read_array_header_1_0(fh) if version == (1, 0) else fmt.read_array_header_2_0(fh)
        offset = fh.tell()
        header = io.BytesIO()
        meta = {"descr": fmt.dtype_to_descr(source.dtype), "fortran_order": False, "shape": (rows, *source.shape[1:])}
        (fmt.write_array_header_1_0 if version == (1, 0) else fmt.write_array_header_2_0)(header, meta)
        if len(header.getvalue()) == offset:
            fh.seek(0)
            fh.write(header.getvalue())
            fh.truncate(offset + rows * source.row_bytes)
            return
    _copy_first_rows(source, rows)


def _copy_first_rows(source: MappedRows, rows: int) -> None:
    """`shrink_rows` by a copy of the first `rows` rows (in bounded chunks) renamed over the file."""
    smaller = source.path.with_name(f".{source.path.name}.part")
    dest = MappedRows.create(smaller, dtype=source.dtype.str, shape=(rows, *source.shape[1:]))
    for start in range(0, rows, _COPY_ROWS):
        dest.write(start, source[start : min(rows, start + _COPY_ROWS)])
    os.replace(smaller, source.path)


def sync_file(path: Path) -> None:
    """fsync the file at `path`: what was written to it, through a map or not, is on disk."""
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())
