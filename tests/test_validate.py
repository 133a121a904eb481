"""validate: every bad row reported at once with its line and column; duplicates and conflicts handled."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from schemas.config import DataConfig
from core.errors import InputNotFound, InvalidData
from tasks.validate import validate
from tests.conftest import first_per_label, write_csv


def test_valid_slice_writes_one_row_per_sentence(slice_csv: Path, tmp_path: Path):
    ref = validate(DataConfig(path=slice_csv), tmp_path)
    table = pq.read_table(ref.resolve(tmp_path)).to_pandas()
    assert ref.rows == len(table) == 150
    assert ref.is_intact(tmp_path)
    assert ref.meta["labels"] == ["negative", "neutral", "positive"]
    assert table["row_id"].is_unique
    assert table["location"].iloc[0] == "line 2"  # the header is line 1


def test_every_bad_row_is_reported_with_line_and_column(tmp_path: Path):
    rows = first_per_label(5)
    rows[1]["text"] = "   "
    rows[3]["label"] = ""
    rows[6]["text"] = "12345.6"
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(InvalidData) as caught:
        validate(DataConfig(path=path), tmp_path / "work")
    found = {(f.location, f.column, f.rule.split(" (")[0]) for f in caught.value.failures}
    assert ("line 3", "text", "text is empty after stripping whitespace") in found
    assert ("line 5", "label", "label is empty") in found
    assert ("line 8", "text", "text has no letters") in found
    assert not (tmp_path / "work" / "artifacts").exists()  # nothing half-written


def test_line_numbers_follow_multiline_quoted_fields(tmp_path: Path):
    path = tmp_path / "multiline.csv"
    path.write_text('text,label\n"first line\nsecond line",positive\n"",negative\nfine text,neutral\n')
    with pytest.raises(InvalidData) as caught:
        validate(DataConfig(path=path), tmp_path)
    assert [f.location for f in caught.value.failures] == ["line 4"]


def test_unknown_label_when_labels_are_given(slice_csv: Path, tmp_path: Path):
    with pytest.raises(InvalidData) as caught:
        validate(DataConfig(path=slice_csv, labels=("negative", "positive")), tmp_path)
    assert len(caught.value.failures) == 50
    assert {f.value for f in caught.value.failures} == {"neutral"}
    assert all("not one of data.labels" in f.rule for f in caught.value.failures)


def test_missing_column_names_the_file_and_the_fix(slice_csv: Path, tmp_path: Path):
    with pytest.raises(InvalidData) as caught:
        validate(DataConfig(path=slice_csv, text_col="sentence"), tmp_path)
    (failure,) = caught.value.failures
    assert failure.location == "file" and "missing column 'sentence'" in failure.rule and "--text-col" in failure.rule


def test_missing_file_is_input_not_found(tmp_path: Path):
    with pytest.raises(InputNotFound):
        validate(DataConfig(path=tmp_path / "nope.csv"), tmp_path)


def test_wrong_encoding_names_line_byte_and_hint(tmp_path: Path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\nProfit rose,positive\nSepp\xe4l\xe4 sold shares,neutral\n".encode("latin-1"))
    with pytest.raises(InvalidData) as caught:
        validate(DataConfig(path=path), tmp_path)
    (failure,) = caught.value.failures
    assert failure.location == "line 3"
    assert "data.encoding=" in failure.rule
    ref = validate(DataConfig(path=path, encoding="latin-1", min_per_class=1), tmp_path)
    assert "Seppälä sold shares" in pq.read_table(ref.resolve(tmp_path)).column("text").to_pylist()


@pytest.mark.parametrize("policy, kept_labels", [("drop", set()), ("majority", {"positive"})])
def test_conflicting_labels_follow_the_policy(tmp_path: Path, policy: str, kept_labels: set[str]):
    rows = first_per_label(3) + [
        {"text": "Sales  GREW strongly", "label": "positive"},
        {"text": "sales grew strongly", "label": "positive"},
        {"text": "Sales grew strongly ", "label": "neutral"},
        {"text": "Profit was flat", "label": "neutral"},
        {"text": "profit was flat", "label": "neutral"},
    ]
    path = write_csv(tmp_path / "conflicts.csv", rows)
    with pytest.raises(InvalidData) as caught:
        validate(DataConfig(path=path), tmp_path)
    assert {f.location for f in caught.value.failures} == {"line 11", "line 12", "line 13"}
    ref = validate(DataConfig(path=path, conflicts=policy), tmp_path)
    table = pq.read_table(ref.resolve(tmp_path)).to_pandas()
    grew = table[table["text"].str.lower().str.contains("grew strongly")]
    assert set(grew["label"]) == kept_labels
    assert (table["text"].str.lower() == "profit was flat").sum() == 1
    assert ref.meta["duplicates_dropped"] == 1 + (1 if policy == "majority" else 0)


def test_bundled_phrasebank_duplicates_and_conflicts_are_counted(tmp_path: Path):
    ref = validate(DataConfig(conflicts="drop"), tmp_path)
    assert ref.meta["rows_read"] == 4846
    assert ref.meta["conflicting_texts"] == 2
    assert ref.meta["conflicts_dropped"] == 4
    assert ref.meta["duplicates_dropped"] == 6
    assert ref.meta["rows_used"] == 4846 - 10
