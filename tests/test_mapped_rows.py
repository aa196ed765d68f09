"""Rows of .npy files through short-lived memory maps: reads and writes equal the array's, files shrink in place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentlab.data import mapped_rows
from latentlab.data.mapped_rows import MappedRows, shrink_rows
from latentlab.errors import DataError


def test_rows_read_and_write_like_the_array(tmp_path: Path) -> None:
    values = np.random.default_rng(0).standard_normal((50, 6)).astype(np.float16)
    np.save(tmp_path / "a.npy", values)
    rows = MappedRows(tmp_path / "a.npy")
    assert rows.shape == (50, 6) and rows.dtype == np.float16 and len(rows) == 50 and rows.nbytes == values.nbytes
    np.testing.assert_array_equal(rows[3:17], values[3:17])
    np.testing.assert_array_equal(rows[7], values[7])
    picked = np.array([0, 1, 2, 7, 9, 10, 49])
    np.testing.assert_array_equal(rows[picked], values[picked])
    np.testing.assert_array_equal(np.asarray(rows), values)
    parts = [rows[3:17], rows[picked], rows[7]]
    MappedRows(tmp_path / "a.npy").write(0, np.zeros_like(values))  # copies, not views of the file
    for part, expected in zip(parts, (values[3:17], values[picked], values[7]), strict=True):
        assert type(part) is np.ndarray and part.flags.writeable
        np.testing.assert_array_equal(part, expected)
    assert not np.load(tmp_path / "a.npy").any()
    assert rows[60:70].shape == (0, 6)

    out = MappedRows.create(tmp_path / "b.npy", dtype="float32", shape=(20, 6))
    out.write(5, values[:10])
    out.sync()
    written = np.load(tmp_path / "b.npy")
    np.testing.assert_array_equal(written[5:15], values[:10].astype(np.float32))
    assert not written[:5].any() and not written[15:].any()
    with pytest.raises(ValueError, match="do not fit"):
        out.write(15, values[:10])


def test_a_damaged_file_is_a_data_error(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((40, 8), dtype=np.float32))
    data = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "a.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="not a readable .npy"):
        MappedRows(tmp_path / "a.npy")
    with pytest.raises(DataError):
        MappedRows(tmp_path / "missing.npy")


@pytest.mark.parametrize("in_place", [True, False])
def test_shrinking_keeps_the_first_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_place: bool) -> None:
    path = tmp_path / "rows.npy"
    rows = MappedRows.create(path, dtype="uint8", shape=(1000, 3, 2, 2))
    rows.write(0, np.broadcast_to((np.arange(1000) % 251).astype(np.uint8)[:, None, None, None], (1000, 3, 2, 2)))
    if not in_place:  # as for a header without room for the first axis to change: the rows are copied
        monkeypatch.setattr(mapped_rows, "_COPY_ROWS", 10)
        monkeypatch.setattr(np.lib.format, "write_array_header_1_0", lambda fh, meta: fh.write(b"x"))
    shrink_rows(path, 37)
    monkeypatch.undo()
    got = np.load(path)
    assert got.shape == (37, 3, 2, 2)
    np.testing.assert_array_equal(got[:, 0, 0, 0], np.arange(37))
    with open(path, "rb") as fh:
        np.lib.format.read_magic(fh)
        np.lib.format.read_array_header_1_0(fh)
        assert path.stat().st_size == fh.tell() + 37 * 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.npy"]
