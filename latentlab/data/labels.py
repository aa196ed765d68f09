"""CelebA-style attribute label files: Kaggle CSV or the original list_attr_celeba.txt -> one ±1 table."""

from __future__ import annotations

import csv
import difflib
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from latentlab.errors import AttributeNameError, DataError

CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
)

ID_COLUMN_NAMES = ("image_id", "image", "filename", "file", "id", "file_name", "image_name")
_FILE_NAME = re.compile(r"^\S+\.[A-Za-z0-9]{2,5}$")
_NUMBER = re.compile(r"^[+-]?\d+(\.\d*)?$")


def load_labels(path: Path) -> pd.DataFrame:
    """Read a label file -> DataFrame (N, A) int8 of -1/+1, index = image id ("000062.jpg"), columns = attributes.

    Accepts Kaggle CSV and the original whitespace .txt (count line, header of names, rows), 0/1 or
    -1/1 values (0 -> -1), a UTF-8 BOM and CRLF line endings. Problems raise a one-line DataError.
    """
    path = Path(path)
    lines = _read_lines(path)
    header, body = (lines[1], lines[2:]) if _is_count_line(lines[0]) and len(lines) > 1 else (lines[0], lines[1:])
    if not body:
        raise DataError(f"{path}: has a header but no label rows")
    table = _parse_table(path, header, body)
    id_column = _find_id_column(path, table)
    ids = table.pop(id_column).astype(str).str.strip()
    table = table.drop(columns=[c for c in table.columns if _is_empty_filler(c, table[c])])
    if table.shape[1] == 0:
        raise DataError(f"{path}: no attribute columns besides the image ids in {id_column!r}")
    _check_ids(path, ids)
    values = _to_plus_minus_one(path, table, ids)
    values.index = pd.Index(ids.to_numpy(), name="image_id")
    values.columns = pd.Index([str(c) for c in values.columns])
    return values


def _read_lines(path: Path) -> list[str]:
    if not path.exists():
        raise DataError(f"label file {path} does not exist; give list_attr_celeba.csv or list_attr_celeba.txt")
    if path.is_dir():
        raise DataError(f"{path} is a folder; give the label file (list_attr_celeba.csv or .txt)")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); save the label file as UTF-8 CSV") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataError(f"{path}: label file is empty")
    return lines


def _is_count_line(line: str) -> bool:
    return line.strip().isdigit()


def _split(line: str, comma: bool) -> list[str]:
    return next(csv.reader([line])) if comma else line.split()


def _parse_table(path: Path, header: str, body: list[str]) -> pd.DataFrame:
    """Strings table; a header one field short (the .txt layout) gains an `image_id` first column."""
    comma = "," in header
    names = [name.strip() for name in _split(header, comma)]
    n_fields = len(_split(body[0], comma))
    if n_fields == len(names) + 1:
        names = ["image_id", *names]
    elif n_fields != len(names):
        raise DataError(f"{path}: the header has {len(names)} fields but the first row has {n_fields}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"{path}: column {repeated[0]!r} appears more than once in the header")
    # Ids stay strings (000062 must not become 62); value columns parse as numbers in C, fast.
    as_text = {n: str for i, n in enumerate(names) if i == 0 or n.lower() in ID_COLUMN_NAMES}
    sep = "," if comma else r"\s+"
    try:
        return pd.read_csv(
            io.StringIO("\n".join(body)), header=None, names=names, dtype=as_text, keep_default_na=False, sep=sep
        )
    except (pd.errors.ParserError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[-1]
        raise DataError(f"{path}: rows do not match the header ({detail})") from None


def _find_id_column(path: Path, table: pd.DataFrame) -> str:
    """The image-id column: by name (image_id, filename, …), else a first column of file names."""
    for column in table.columns:
        if str(column).strip().lower() in ID_COLUMN_NAMES:
            return column
    first = table.columns[0]
    values = table[first].astype(str).str.strip()
    if len(values) and values.map(lambda v: bool(_FILE_NAME.match(v)) and not _NUMBER.match(v)).all():
        return first
    found = ", ".join(repr(str(c)) for c in table.columns[:6]) + (", …" if table.shape[1] > 6 else "")
    raise DataError(f"{path}: no image-id column (found {found}); name the file-name column image_id")


def _is_empty_filler(name: object, column: pd.Series) -> bool:
    """A nameless, valueless column, as a trailing comma on every line makes."""
    return (str(name).strip() == "" or str(name).startswith("Unnamed")) and column.astype(str).str.strip().eq("").all()


def _check_ids(path: Path, ids: pd.Series) -> None:
    if ids.eq("").any():
        row = int(np.flatnonzero(ids.eq("").to_numpy())[0])
        raise DataError(f"{path}: label row {row + 1} has an empty image id")
    repeated = ids[ids.duplicated()]
    if len(repeated):
        n = repeated.nunique()
        raise DataError(
            f"{path}: image id {repeated.iloc[0]!r} appears more than once ({n} ids are repeated); "
            "keep one row per image"
        )


def _to_plus_minus_one(path: Path, table: pd.DataFrame, ids: pd.Series) -> pd.DataFrame:
    """Strings -> int8 ±1; anything but -1/0/1 (or a file mixing -1 and 0) is reported with column, id and value."""
    numbers = table.apply(_as_numbers)
    grid = numbers.to_numpy(dtype=np.float64)  # (N, A); NaN where a cell was not a number
    valid = (grid == 1) | (grid == 0) | (grid == -1)
    if not valid.all():
        row, col = np.argwhere(~valid)[0]
        raw = table.iat[row, col]
        shown = "an empty value" if pd.isna(raw) or str(raw).strip() == "" else f"value {str(raw).strip()!r}"
        raise DataError(
            f"{path}: column {table.columns[col]!r}, image {ids.iat[row]!r} has {shown}; labels must be -1/1 or 0/1"
        )
    zeros, minus = grid == 0, grid == -1
    if zeros.any() and minus.any():
        row, col = np.argwhere(zeros)[0]
        raise DataError(
            f"{path}: mixes -1 and 0 as negatives (column {table.columns[col]!r}, image {ids.iat[row]!r} "
            "has 0); use -1/1 or 0/1 throughout"
        )
    return pd.DataFrame(np.where(zeros, -1, grid).astype(np.int8), columns=table.columns)


def _as_numbers(column: pd.Series) -> pd.Series:
    """Numbers as parsed; text columns (a stray word or empty cell) coerced, bad cells -> NaN."""
    if column.dtype.kind in "iuf":
        return column
    return pd.to_numeric(column.astype(str).str.strip(), errors="coerce")


@dataclass(frozen=True)
class LabelMatch:
    """Label rows aligned to a folder's images, plus what did not match (reported, not fatal)."""

    labels: pd.DataFrame  # (M, A) int8 ±1, rows in image order, index = the folder's image ids
    indices: np.ndarray  # (M,) int64 positions of those images in the `image_ids` given to match_labels
    labels_without_image: list[str]
    images_without_labels: list[str]

    def __len__(self) -> int:
        return len(self.indices)

    def summary(self) -> str:
        """One line for the CLI: how many matched, and an example of each kind of miss."""
        parts = [f"{len(self)} labeled images"]
        misses = {"label rows without an image": self.labels_without_image}
        misses["images without labels"] = self.images_without_labels
        for what, names in misses.items():
            if names:
                parts.append(f"{len(names)} {what} (e.g. {names[0]})")
        return "; ".join(parts)


def match_labels(labels: pd.DataFrame, image_ids: Sequence[str]) -> LabelMatch:
    """Align label rows to `image_ids` (relative paths, in array order) by path, file name, then stem.

    The stem fallback lets labels that say 000001.jpg match a folder holding 000001.png.
    """
    label_ids = [str(i) for i in labels.index]
    by_path = {i: i for i in label_ids}
    by_name: dict[str, str] = {}
    for i in label_ids:
        by_name.setdefault(PurePosixPath(i).name, i)
    used: set[str] = set()
    chosen: dict[int, str] = {}
    for pos, image in enumerate(image_ids):
        hit = by_path.get(image) or by_name.get(PurePosixPath(image).name)
        if hit is not None and hit not in used:
            chosen[pos] = hit
            used.add(hit)
    stems: dict[str, list[str]] = {}
    for i in label_ids:
        if i not in used:
            stems.setdefault(_stem(i), []).append(i)
    for pos, image in enumerate(image_ids):
        candidates = stems.get(_stem(image), []) if pos not in chosen else []
        if len(candidates) == 1 and candidates[0] not in used:
            chosen[pos] = candidates[0]
            used.add(candidates[0])
    order = sorted(chosen)
    table = labels.loc[[chosen[pos] for pos in order]].copy()
    table.index = pd.Index([image_ids[pos] for pos in order], name="image_id")
    return LabelMatch(
        labels=table,
        indices=np.asarray(order, dtype=np.int64),
        labels_without_image=[i for i in label_ids if i not in used],
        images_without_labels=[image for pos, image in enumerate(image_ids) if pos not in chosen],
    )


def _stem(image_id: str) -> str:
    return PurePosixPath(image_id).stem


def suggest_attribute(name: str, known: Sequence[str], *, where: str | os.PathLike[str] | None = None) -> str:
    """The error message for an unknown attribute: close names (case-insensitive), else a few valid ones.

    `where` names the file the attribute was looked up in, when there is one. Label tables and
    direction files both answer with this message, so a typo reads the same everywhere.
    """
    known = list(known)
    unknown = f"unknown attribute {name!r}" + (f" in {where}" if where is not None else "")
    lowered = {k.lower(): k for k in known}
    needle = str(name).lower()
    if needle in lowered:
        return f"{unknown}; did you mean {lowered[needle]}? (names are case-sensitive)"
    containing = [k for k in known if len(needle) >= 3 and needle in k.lower()]
    close = [lowered[k] for k in difflib.get_close_matches(needle, list(lowered), n=3, cutoff=0.6)]
    candidates = list(dict.fromkeys(containing or close))[:3]
    if candidates:
        listed = candidates[0] if len(candidates) == 1 else ", ".join(candidates[:-1]) + " or " + candidates[-1]
        return f"{unknown}; did you mean {listed}?"
    if not known:
        return f"{unknown}; no attributes are available"
    shown = ", ".join(known[:6]) + (f", … ({len(known)} in all)" if len(known) > 6 else "")
    return f"{unknown}; valid names are {shown}"


def check_attributes(names: Sequence[str], known: Sequence[str]) -> list[str]:
    """Return `names` as a list if every one is in `known`; else raise AttributeNameError with a suggestion."""
    known_set = set(known)
    for name in names:
        if name not in known_set:
            raise AttributeNameError(suggest_attribute(name, known))
    return list(names)
