"""A corpus of broken input files: each gives exit 65, names the row and column (or the file-level rule),
and leaves no model behind; a missing file gives 66. Files are in tests/data/bad (tests/data/make_bad_corpus.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.retrain import main
from schemas.config import DataConfig
from core.errors import InputNotFound, InvalidData
from tasks.validate import validate

BAD = Path(__file__).resolve().parent / "data" / "bad"

# file, extra arguments, fragments the error report must contain
CORPUS = [
    ("empty.csv", [], ["empty.csv: file: file is empty"]),
    ("header_only.csv", [], ["file: file has no data rows"]),
    ("missing_text_column.csv", [], ["file, column 'text': missing column 'text'", "--text-col"]),
    ("missing_label_column.tsv", [], ["file, column 'label': missing column 'label'", "category"]),
    ("blank_text.csv", [], ["line 5, column 'text': text is empty after stripping whitespace"]),
    ("empty_label.csv", [], ["line 4, column 'label': label is empty"]),
    ("numeric_text.csv", [], ["line 6, column 'text': text has no letters", "12345.6"]),
    ("wrong_field_count.csv", [], ["line 5: row has 3 fields, the header has 2"]),
    ("unterminated_quote.csv", [], ["line 6: row has 1 fields, the header has 2"]),
    ("mixed_encodings.csv", [], ["line 4: not valid utf-8", "mixes encodings"]),
    ("latin1.csv", [], ["line 4: not valid utf-8", "--set data.encoding=cp1252"]),
    ("utf16.csv", [], ["file: the file looks like UTF-16 without a byte-order mark", "--set data.encoding=utf-16-le"]),
    ("control_chars.csv", [], ["line 3, column 'text': text contains control characters"]),
    ("single_class.csv", [], ["file, column 'label': needs at least 2 classes"]),
    ("label_case.csv", [], ["line 8, column 'label': label 'Positive' differs from 'positive'"]),
    ("conflicting_labels.csv", [], ["line 5, column 'label': the same text has different labels",
                                    "line 8, column 'label'", "data.conflicts=drop"]),
    ("unknown_label.csv", ["--set", "data.labels=negative,neutral,positive"],
     ["line 8, column 'label': label is not one of data.labels", "postive"]),
    ("duplicate_header.csv", [], ["line 1: header repeats column 'text'"]),
    ("unknown_extension.xlsx", [], ["file: unknown file type '.xlsx'"]),
    ("broken_line.jsonl", [], ["line 4: not valid JSON"]),
    ("not_an_object.jsonl", [], ["line 7: a JSON-lines record must be an object"]),
    ("null_label.jsonl", [], ["line 7, column 'label': value is missing"]),
    ("numeric_text.jsonl", [], ["line 1, column 'text': text must be a string"]),
    ("bool_label.jsonl", [], ["line 7, column 'label': label must be a string or an integer"]),
    ("null_label.parquet", [], ["row 7, column 'label': value is missing"]),
    ("truncated.parquet", [], ["file: not a readable Parquet file"]),
    ("not_parquet.parquet", [], ["file: not a readable Parquet file"]),
    ("too_few_per_class.csv", [], ["class 'negative' has", "fewer than data.min_per_class=5"]),
    ("utf8_read_as_latin1.csv", ["--set", "data.encoding=latin-1"], ["mojibake"]),
    ("ambiguous_delimiter.csv", [], ["line 1: cannot tell which delimiter", "'text;label,extra'",
                                     "--set data.delimiter=comma"]),
    ("swapped_columns.csv", ["--text-col", "label", "--label-col", "text"],
     ["1 problem in", "the text and label columns look swapped", "run with --text-col text --label-col label"]),
]


def _run(args: list[str], workdir: Path, capsys) -> tuple[int, str]:
    code = main([*args, "--workdir", str(workdir)])
    return code, capsys.readouterr().err


def test_corpus_has_at_least_twenty_kinds():
    assert len(CORPUS) >= 20 and len({name for name, _, _ in CORPUS}) == len(CORPUS)
    assert {p.name for p in BAD.iterdir()} == {name for name, _, _ in CORPUS}


@pytest.mark.parametrize("name, extra, fragments", CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_file_exits_65_with_location(prefect_api, tmp_path: Path, capsys, name, extra, fragments):
    code, err = _run(["--data", str(BAD / name), *extra], tmp_path, capsys)
    assert code == 65, err[-2000:]
    for fragment in fragments:
        assert fragment in err, (fragment, err[-2000:])
    assert "Traceback" not in err
    assert not (tmp_path / "models").exists() and not list(tmp_path.glob("artifacts/finetune/*"))


def test_ten_megabyte_single_row(prefect_api, tmp_path: Path, capsys):
    path = tmp_path / "huge.csv"
    path.write_text("text,label\n" + "Profit rose " * 900_000 + ",positive\nSales fell,negative\n")
    assert path.stat().st_size > 10_000_000
    code, err = _run(["--data", str(path)], tmp_path / "work", capsys)
    assert code == 65 and "line 2, column 'text': text is longer than data.max_chars=2000" in err
    assert "(10800000 characters)" in err  # the value shown is cut short, with its real length


def test_report_is_capped_then_counted(prefect_api, tmp_path: Path, capsys):
    path = tmp_path / "many.csv"
    path.write_text("text,label\n" + "".join(f"Row {i} text,\n" for i in range(120)))
    code, err = _run(["--data", str(path), "--set", "validate.max_reported=10"], tmp_path / "w", capsys)
    assert code == 65 and "120 problems" in err and "... and 110 more" in err
    table = next((tmp_path / "w" / "runs").glob("*/validation_failures.csv"))
    assert len(table.read_text().strip().splitlines()) == 121  # header + every failure
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    run_id = table.parent.name
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["validation-failures"]), flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    assert artifact.type == "table" and "line 121" in str(artifact.data)


def test_missing_file_exits_66(tmp_path: Path, capsys):
    code, err = _run(["--data", str(tmp_path / "nowhere.csv")], tmp_path, capsys)
    assert code == 66 and "nowhere.csv does not exist" in err


def test_validate_only_reports_without_training(tmp_path: Path, capsys):
    code = main(["--validate-only", "--set", "data.conflicts=drop", "--workdir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0 and "4846 rows read, 4836 used" in err and "no reference" in err
    assert Path(out.strip().splitlines()[-1]).is_file()
    assert not (tmp_path / "models").exists()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=400) | st.text(max_size=300).map(str.encode),
       suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".parquet"]),
       encoding=st.sampled_from(["utf-8", "latin-1", "utf-16"]))
def test_reader_and_validator_never_raise_anything_else(tmp_path_factory, content, suffix, encoding):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / f"input{suffix}"
    path.write_bytes(b"text,label\n" + content if suffix == ".csv" and content[:1] != b"t" else content)
    try:
        validate(DataConfig(path=path, encoding=encoding, min_per_class=1), folder)
    except (InvalidData, InputNotFound) as exc:
        assert str(exc)
