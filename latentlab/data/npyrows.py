"""Row-wise reads and writes of a 2-D .npy file through pread/pwrite.

Unlike a memory map, nothing is left mapped in the process, so resident memory stays flat however many
rows pass through: used for latent stores of hundreds of thousands of images.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from latentlab.errors import DataError, OutputError


class NpyRows:
    """Rows of a C-ordered .npy file, read and written with pread/pwrite instead of a memory map.

    Indexing mimics an array for what the pipeline needs: `rows[lo:hi]` and `rows[int_array]` return
    writable copies. Nothing is mapped, so resident memory does not grow as a pass goes through the file.
    """

    def __init__(self, path: Path, *, write: bool = False) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDWR if write else os.O_RDONLY)
        try:
            with open(self.path, "rb") as fh:
                fmt = np.lib.format
                version = fmt.read_magic(fh)
                header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                shape, fortran, dtype = header(fh)
                self.offset = fh.tell()
        except (OSError, ValueError) as exc:
            os.close(self._fd)
            raise DataError(f"{self.path} is not a readable .npy array ({exc})") from None
        if fortran or len(shape) < 1:
            os.close(self._fd)
            raise DataError(f"{self.path} does not hold C-ordered rows")
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize

    @classmethod
    def create(cls, path: Path, *, dtype: str, shape: tuple[int, ...]) -> NpyRows:
        """A new zero-filled (sparse) .npy file of `shape`, open for writing."""
        fmt = np.lib.format
        try:
            with open(path, "wb") as fh:
                fmt.write_array_header_1_0(fh, {"descr": fmt.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                                                "shape": tuple(shape)})  # fmt: skip
                fh.truncate(fh.tell() + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
        except OSError as exc:
            raise OutputError(f"cannot create {path}: {exc.strerror or exc}") from None
        return cls(path, write=True)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice | np.ndarray) -> np.ndarray:
        if isinstance(key, slice):
            lo, hi, step = key.indices(len(self))
            if step != 1:
                raise IndexError("NpyRows reads contiguous slices only")
            return self._read(lo, max(lo, hi))
        rows = np.asarray(key, dtype=np.int64)
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        if len(rows):
            breaks = np.flatnonzero(np.diff(rows) != 1) + 1  # read each run of consecutive rows at once
            for run, start in zip(np.split(rows, breaks), np.concatenate([[0], breaks]), strict=True):
                out[start : start + len(run)] = self._read(int(run[0]), int(run[0]) + len(run))
        return out

    def _read(self, lo: int, hi: int) -> np.ndarray:
        if not 0 <= lo <= hi <= len(self):
            raise IndexError(f"rows {lo}..{hi} outside 0..{len(self)}")
        out = np.empty((hi - lo, *self.shape[1:]), dtype=self.dtype)
        if out.size == 0:
            return out
        view, done = memoryview(out.reshape(-1)).cast("B"), 0
        while done < len(view):
            got = os.preadv(self._fd, [view[done:]], self.offset + lo * self.row_bytes + done)
            if got <= 0:
                raise DataError(f"{self.path} is shorter than its header says; it is damaged")
            done += got
        return out

    def write(self, lo: int, values: np.ndarray) -> None:
        """Write rows lo.. from `values` (cast to the file's dtype)."""
        data = np.ascontiguousarray(values, dtype=self.dtype)
        if data.shape[1:] != self.shape[1:] or not 0 <= lo <= lo + len(data) <= len(self):
            raise ValueError(f"rows of shape {data.shape} do not fit at row {lo} of {self.shape}")
        if data.size == 0:
            return
        view, done = memoryview(data.reshape(-1)).cast("B"), 0
        while done < len(view):
            done += os.pwrite(self._fd, view[done:], self.offset + lo * self.row_bytes + done)

    def sync(self) -> None:
        """Make the rows written so far durable."""
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> NpyRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
