"""Label files: both CelebA formats, encodings, bad files, matching to images, attribute names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latentlab.data.labels import (
    CELEBA_ATTRIBUTES,
    check_attributes,
    load_labels,
    match_labels,
    suggest_attribute,
)
from latentlab.errors import AttributeNameError, DataError

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "celeba-sample"
ATTRS = ["Smiling", "Male", "Eyeglasses"]
ROWS = {
    "000001.jpg": [1, -1, -1],
    "000002.jpg": [-1, 1, 1],
    "000003.jpg": [1, 1, -1],
    "000004.jpg": [-1, -1, 1],
}


def _expected() -> pd.DataFrame:
    table = pd.DataFrame.from_dict(ROWS, orient="index", columns=ATTRS).astype(np.int8)
    table.index.name = "image_id"
    return table


def _csv(rows: dict[str, list[int]] = ROWS, *, id_name: str = "image_id", newline: str = "\n") -> str:
    lines = [",".join([id_name, *ATTRS])] + [",".join([k, *map(str, v)]) for k, v in rows.items()]
    return newline.join(lines) + newline


def _txt(rows: dict[str, list[int]] = ROWS, *, newline: str = "\n") -> str:
    """The original list_attr_celeba.txt layout: count, names (one fewer field), padded rows."""
    lines = [str(len(rows)), " ".join(ATTRS) + " "]
    lines += [f"{k} " + " ".join(f"{v:>2}" for v in values) for k, values in rows.items()]
    return newline.join(lines) + newline


def _write(tmp_path: Path, text: str, name: str = "labels.csv", *, bom: bool = False) -> Path:
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


@pytest.mark.parametrize(
    ("text", "name", "bom"),
    [
        (_csv(), "labels.csv", False),
        (_txt(), "list_attr_celeba.txt", False),
        (_csv(newline="\r\n"), "labels.csv", True),
        (_txt(newline="\r\n"), "list_attr_celeba.txt", True),
        (_csv({k: [max(v, 0) for v in vs] for k, vs in ROWS.items()}), "zero_one.csv", False),
        (_csv(id_name="Filename"), "labels.csv", False),
        (_csv(id_name="ID"), "labels.csv", False),
        (_csv(id_name=""), "unnamed_index.csv", False),
        (_csv().replace("\n", ",\n"), "trailing_commas.csv", False),
    ],
    ids=[
        "kaggle-csv",
        "original-txt",
        "csv-bom-crlf",
        "txt-bom-crlf",
        "zero-one",
        "filename",
        "ID",
        "unnamed",
        "trailing",
    ],
)
def test_every_layout_loads_to_the_same_table(tmp_path: Path, text: str, name: str, bom: bool) -> None:
    table = load_labels(_write(tmp_path, text, name, bom=bom))
    pd.testing.assert_frame_equal(table, _expected())
    assert set(np.unique(table.to_numpy())) <= {-1, 1}


def test_txt_converted_from_csv_matches(tmp_path: Path) -> None:
    csv_table = load_labels(_write(tmp_path, _csv(), "a.csv"))
    frame = pd.read_csv(tmp_path / "a.csv", index_col=0)
    txt = [str(len(frame)), " ".join(frame.columns)]
    txt += [f"{i}  " + "  ".join(f"{v:2d}" for v in row) for i, row in zip(frame.index, frame.to_numpy(), strict=True)]
    pd.testing.assert_frame_equal(load_labels(_write(tmp_path, "\n".join(txt) + "\n", "a.txt")), csv_table)


BAD_FILES = [
    ("", r"label file is empty"),
    ("\n  \n", r"label file is empty"),
    ("image_id,Smiling\n", r"header but no label rows"),
    ("a,b\n1,-1\n-1,1\n", r"no image-id column \(found 'a', 'b'\)"),
    ("image_id\n000001.jpg\n", r"no attribute columns"),
    ("image_id,Smiling\n000001.jpg,1\n000002.jpg,1\n000001.jpg,-1\n", r"'000001.jpg' appears more than once \(1 ids"),
    ("image_id,Smiling,Male\n000001.jpg,1,2\n", r"column 'Male', image '000001.jpg' has value '2'"),
    ("image_id,Smiling,Male\n000001.jpg,1,yes\n", r"column 'Male', image '000001.jpg' has value 'yes'"),
    ("image_id,Smiling,Male\n000001.jpg,NaN,1\n", r"column 'Smiling', image '000001.jpg' has value 'NaN'"),
    ("image_id,Smiling,Male\n000001.jpg,1,\n", r"column 'Male', image '000001.jpg' has an empty value"),
    ("image_id,Smiling,Male\n000001.jpg,1,-1\n000002.jpg,0,1\n", r"mixes -1 and 0"),
    ("image_id,Smiling\n000001.jpg,1,1,1\n", r"header has 2 fields but the first row has 4"),
    ("image_id,Smiling,Smiling\n000001.jpg,1,1\n", r"'Smiling' appears more than once"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_bad_label_files_give_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(DataError, match=message) as info:
        load_labels(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_missing_label_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_labels(tmp_path / "nope.csv")


def test_ids_keep_leading_zeros_and_are_strings(tmp_path: Path) -> None:
    table = load_labels(_write(tmp_path, "image_id,Smiling\n000062,1\n000099,-1\n"))
    assert list(table.index) == ["000062", "000099"]


# ---- matching ------------------------------------------------------------------------------------


def test_match_labels_by_path_name_and_stem() -> None:
    images = ["000001.jpg", "sub/000002.jpg", "000003.png", "000009.jpg"]
    match = match_labels(_expected(), images)
    assert list(match.indices) == [0, 1, 2]
    assert list(match.labels.index) == ["000001.jpg", "sub/000002.jpg", "000003.png"]
    np.testing.assert_array_equal(match.labels.to_numpy(), _expected().iloc[:3].to_numpy())
    assert match.labels_without_image == ["000004.jpg"]
    assert match.images_without_labels == ["000009.jpg"]
    assert len(match) == 3 and "1 images without labels (e.g. 000009.jpg)" in match.summary()


def test_match_labels_without_extensions_and_in_image_order() -> None:
    labels = _expected().rename(index=lambda i: i.removesuffix(".jpg"))
    match = match_labels(labels, ["000004.png", "000002.png"])
    assert list(match.labels.index) == ["000004.png", "000002.png"]
    np.testing.assert_array_equal(match.labels.to_numpy(), _expected().loc[["000004.jpg", "000002.jpg"]].to_numpy())
    assert sorted(match.labels_without_image) == ["000001", "000003"]


def test_each_label_row_matches_at_most_one_image() -> None:
    match = match_labels(_expected(), ["a/000001.jpg", "b/000001.jpg"])
    assert list(match.labels.index) == ["a/000001.jpg"] and match.images_without_labels == ["b/000001.jpg"]


# ---- attribute names -----------------------------------------------------------------------------


def test_celeba_attribute_names() -> None:
    assert len(CELEBA_ATTRIBUTES) == 40 == len(set(CELEBA_ATTRIBUTES))
    assert CELEBA_ATTRIBUTES[0] == "5_o_Clock_Shadow" and CELEBA_ATTRIBUTES[-1] == "Young"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Blond", "unknown attribute 'Blond'; did you mean Blond_Hair?"),
        ("smiling", "did you mean Smiling? (names are case-sensitive)"),
        ("Glasses", "did you mean Eyeglasses?"),
        ("Smilng", "did you mean Smiling?"),
        ("Xyzzy", "valid names are 5_o_Clock_Shadow, Arched_Eyebrows"),
    ],
)
def test_unknown_attribute_suggestions(name: str, expected: str) -> None:
    assert expected in suggest_attribute(name, CELEBA_ATTRIBUTES)
    with pytest.raises(AttributeNameError, match=f"unknown attribute '{name}'"):
        check_attributes(["Smiling", name], CELEBA_ATTRIBUTES)


def test_known_attributes_pass_through() -> None:
    assert check_attributes(("Smiling", "Male"), CELEBA_ATTRIBUTES) == ["Smiling", "Male"]


# ---- real CelebA ---------------------------------------------------------------------------------


@pytest.mark.skipif(not (SAMPLE / "list_attr_celeba.csv").is_file(), reason="shared/celeba-sample is not present")
def test_real_celeba_labels_load_and_match_the_images(tmp_path: Path) -> None:
    table = load_labels(SAMPLE / "list_attr_celeba.csv")
    assert table.shape == (3000, 40) and tuple(table.columns) == CELEBA_ATTRIBUTES
    assert (table.dtypes == np.int8).all() and table.index[0] == "000062.jpg"
    names = sorted(p.name for p in (SAMPLE / "images").iterdir())
    match = match_labels(table, names)
    assert len(match) == 3000 and not match.labels_without_image and not match.images_without_labels
    head = table.iloc[:50]
    txt = ["202599", " ".join(head.columns)] + [f"{i} " + " ".join(f"{v:2d}" for v in r) for i, r in head.iterrows()]
    pd.testing.assert_frame_equal(load_labels(_write(tmp_path, "\r\n".join(txt), "list_attr_celeba.txt")), head)
