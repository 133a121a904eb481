"""Issue 23's families, tried again with siblings of the instances that were fixed: other look-alike
letters, missing-value markers, UTF-32, JSON objects of columns, a header line alone ending with a delimiter,
titles of several lines. Each is checked through the layer that owns it (`validate`, `read_texts`), which retrain,
`--validate-only` and predict share; the files are small and written here."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from core.errors import InvalidData
from schemas.config import DataConfig
from schemas.raw import MISSING_MARKERS, label_key
from tasks.predict import output_collisions
from core.text.inputs import read_texts
from tasks.validate import validate
from tests.conftest import first_per_label, write_table

ROWS = [(row["text"], row["label"]) for row in first_per_label(8)]  # 24 real sentences, 8 per label


def _write(path: Path, rows: list[tuple[object, object]]) -> Path:
    frame = pd.DataFrame(rows, columns=["text", "label"])
    return write_table(path, frame)


def _relabel(old: str, new: str, k: int = 2) -> list[tuple[object, object]]:
    rows, done = [], 0
    for text, label in ROWS:
        if label == old and done < k:
            label, done = new, done + 1
        rows.append((text, label))
    return rows


def _failures(path: Path, **settings) -> list[str]:
    with pytest.raises(InvalidData) as caught:
        validate(DataConfig(path=path, min_per_class=1, **settings), path.parent / "work")
    return [f.describe() for f in caught.value.failures]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
@pytest.mark.parametrize("look_alike, letter", [("p\u043esitive", "U+043E CYRILLIC SMALL LETTER O"),
                                                ("p\u03bfsitive", "U+03BF GREEK SMALL LETTER OMICRON"),
                                                ("\u0440ositive", "U+0440 CYRILLIC SMALL LETTER ER")])
def test_a_label_with_a_letter_of_another_alphabet_is_refused_naming_it(tmp_path: Path, suffix, look_alike, letter):
    failures = _failures(_write(tmp_path / f"x{suffix}", _relabel("positive", look_alike)))
    assert len(failures) == 2, failures
    assert all(f"differs from 'positive'" in f and letter in f and "use one spelling" in f for f in failures)
    assert all(("line " if suffix != ".parquet" else "row ") in f for f in failures)


def test_a_look_alike_of_a_given_label_is_refused(tmp_path: Path):
    rows = [(text, "p\u043esitive" if label == "positive" else label) for text, label in ROWS]
    failures = _failures(_write(tmp_path / "x.csv", rows), labels=("positive", "negative", "neutral"))
    assert failures and all("(data.labels) only in look-alike letters" in f for f in failures)


def test_labels_wholly_in_another_alphabet_stay_distinct():
    # no two letters of one alphabet share a key: two Russian (or Greek) labels never merge with each other
    assert label_key("позитив") != label_key("негатив") and label_key("θετικό") != label_key("αρνητικό")
    assert label_key("ос") == label_key("oc")  # Cyrillic o-es drawn as Latin o-c: one label to a reader


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
@pytest.mark.parametrize("marker", ["N/A", "n/a", " NaN ", "null", "<NA>"])
def test_a_missing_value_marker_is_not_a_class(tmp_path: Path, suffix, marker):
    failures = _failures(_write(tmp_path / f"x{suffix}", _relabel("neutral", marker)))
    assert len(failures) == 2 and all("label is a missing-value marker, not a class" in f for f in failures)


def test_a_class_named_like_a_missing_marker_is_kept_when_data_labels_lists_it(tmp_path: Path):
    path = _write(tmp_path / "x.csv", [(t, "NA" if label == "neutral" else label) for t, label in ROWS])
    ref = validate(DataConfig(path=path, min_per_class=1, labels=("positive", "negative", "NA")), tmp_path / "w")
    assert ref.rows == len(ROWS)
    assert set(MISSING_MARKERS) >= {"N/A", "NaN", "null"} and "None" not in MISSING_MARKERS


@pytest.mark.parametrize("order", ["le", "be"])
def test_utf32_without_a_mark_is_named_as_utf32(tmp_path: Path, order):
    path = tmp_path / "x.csv"
    path.write_bytes("text,label\nProfit rose .,positive\nSales fell .,negative\n".encode(f"utf-32-{order}"))
    (failure,) = _failures(path)
    assert "UTF-32 without a byte-order mark" in failure and f"--set data.encoding=utf-32-{order}" in failure


@pytest.mark.parametrize("orient, name", [("columns", "x.json"), ("columns", "x.jsonl"), ("split", "x.json"),
                                          ("index", "x.jsonl")])
def test_a_json_object_of_columns_is_named_with_the_fix(tmp_path: Path, orient, name):
    path = tmp_path / name
    pd.DataFrame(ROWS, columns=["text", "label"]).to_json(path, orient=orient)
    (failure,) = _failures(path)
    assert "line 1: the file is one JSON object of columns" in failure and "orient='records', lines=True" in failure
    with pytest.raises(InvalidData):
        read_texts(path, "text")


def test_a_json_lines_file_of_one_record_is_still_read(tmp_path: Path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"text": ROWS[0][0], "extra": {"a": 1}}) + "\n", encoding="utf-8")
    assert read_texts(path, "text").frame.shape[0] == 1


def test_a_trailing_delimiter_on_the_header_line_only_is_read(tmp_path: Path):
    path = tmp_path / "x.csv"
    body = pd.DataFrame(ROWS, columns=["text", "label"]).to_csv(index=False)
    path.write_text(body.replace("\n", ",\n", 1), encoding="utf-8")
    ref = validate(DataConfig(path=path, min_per_class=1), tmp_path / "w")
    assert ref.rows == len(ROWS)
    assert any("the header line ends with 1 comma" in note for note in ref.meta["read_notes"])
    assert read_texts(path, "text").frame.shape == (len(ROWS), 2)


@pytest.mark.parametrize("title, lines", [
    ("Quarterly sentiment export\nGenerated by the reporting desk on Monday\n", "lines 1 to 2"),
    ("Quarterly sentiment export\nGenerated by the reporting desk\nConfidential\n", "lines 1 to 3"),
    ("Quarterly sentiment export,,\n", "line 1"),
    ("Quarterly sentiment export\n\n", "line 1"),
])
def test_title_lines_above_the_header_are_named(tmp_path: Path, title, lines):
    path = tmp_path / "x.csv"
    path.write_text(title + pd.DataFrame(ROWS, columns=["text", "label"]).to_csv(index=False), encoding="utf-8")
    (failure,) = _failures(path)
    assert f"line 1: {lines} 'Quarterly sentiment export" in failure and f"delete {lines}" in failure, failure
    with pytest.raises(InvalidData) as caught:
        read_texts(path, "text")
    assert f"delete {lines}" in caught.value.failures[0].rule


@pytest.mark.parametrize("column", ["Predicted_Label", "predicted_label ", "PROB_b", "prob_\uff42", "predicted\u200b_label"])
def test_an_input_column_a_person_cannot_tell_from_an_added_one_is_refused(column):
    # a Parquet file keeps a trailing space or case in a column name (a CSV header is stripped): written beside
    # `predicted_label`, it would be two columns that read the same, and one to case-insensitive tools (SQL, Excel)
    (failure,) = output_collisions("f.parquet", ["text", column], ["a", "b"], "refuse")
    assert repr(column) in failure.rule and "rename or drop it" in failure.rule
    assert output_collisions("f.parquet", ["text", "prob_c", "predicted"], ["a", "b"], "refuse") == []


@pytest.mark.parametrize("suffix, labels", [(".csv", ["1", "0", "True", "False"]),
                                            (".jsonl", [1, 0, True, False]),
                                            (".csv", ["1", "0", "true", "FALSE"])])
def test_a_boolean_label_column_written_two_ways_is_refused_the_same_in_every_file_type(tmp_path: Path, suffix,
                                                                                         labels):
    rows = [(text, labels[i % 4] if i % 5 else labels[i % 2]) for i, (text, _) in enumerate(ROWS)]
    failures = _failures(_write(tmp_path / f"x{suffix}", rows))
    assert failures and all("one truth value written two ways" in f for f in failures), failures
    # the minority spelling's rows, each on its line
    words = sum(str(label).casefold() in ("true", "false") for _, label in rows)
    assert len(failures) == min(words, len(rows) - words)


@pytest.mark.parametrize("labels", [["yes", "no"], ["TRUE", "FALSE"], ["1", "0"], [True, False]])
def test_boolean_labels_written_one_way_are_classes(tmp_path: Path, labels):
    rows = [(text, labels[i % 2]) for i, (text, _) in enumerate(ROWS)]
    ref = validate(DataConfig(path=_write(tmp_path / "x.jsonl", rows), min_per_class=1), tmp_path / "w")
    assert ref.rows == len(ROWS) and len(ref.meta["labels"]) == 2


@pytest.mark.parametrize("header, difference, option", [
    ("Text", "case or spacing", "--text-col Text"),
    ("t\u0435xt", "look-alike letters of another alphabet (U+0435 CYRILLIC SMALL LETTER IE", None),
    ("\uff54\uff45\uff58\uff54", "compatibility forms", None),
    ("text\u200b", "invisible characters (U+200B ZERO WIDTH SPACE)", None),
])
def test_a_header_that_reads_as_the_column_asked_for_is_named_with_the_difference(tmp_path: Path, header, difference,
                                                                                 option):
    path = tmp_path / "x.csv"
    path.write_text(f"{header},label\n" + "".join(f'"{t}",{label}\n' for t, label in ROWS), encoding="utf-8")
    for failures in (_failures(path), [_read_texts_failure(path)]):
        (failure,) = failures
        assert f"missing column 'text': the header has '{header.encode('unicode_escape').decode()}'" in failure
        assert difference in failure and "rename that header to 'text'" in failure
        assert (option in failure) if option else "--text-col" not in failure  # no hint that cannot be typed


def _read_texts_failure(path: Path) -> str:
    with pytest.raises(InvalidData) as caught:
        read_texts(path, "text")
    return caught.value.failures[0].describe()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_a_missing_value_marker_is_not_a_text_to_learn_or_score(tmp_path: Path, suffix):
    rows = [("N/A" if i == 3 else "null" if i == 5 else text, label) for i, (text, label) in enumerate(ROWS)]
    path = _write(tmp_path / f"x{suffix}", rows)
    failures = _failures(path)
    assert len(failures) == 2 and all("text is a missing-value marker" in f for f in failures), failures
    kept = read_texts(path, "text", on_invalid="keep")
    assert kept.frame.shape[0] == len(ROWS)  # rows in = rows out: kept with a reason when asked
    assert sum("missing-value marker" in reason for reason in kept.reasons) == 2
