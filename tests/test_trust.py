"""Trust, round three (issue 23): look-alike labels, files others can read, rows never lost, messages that point
the right way. Each family is checked in the layer that owns it and through the commands a user runs:
`--validate-only`, a run and `flows.predict` give the same outcome for the same file. The files are in
tests/data/real (copies of the instances that failed) or written here."""

from __future__ import annotations

import json
import os
import stat
import unicodedata
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import InvalidData
from core.storage import artifacts
from core.text.readers import read_raw
from flows import predict as predict_cli
from flows import registry as registry_cli
from flows.retrain import main as retrain_main
from schemas.config import DataConfig
from schemas.raw import SPREADSHEET_ERRORS, canonical_spelling, escaped, label_key
from tasks.predict import output_collisions
from core.text.inputs import read_texts
from tasks.validate import validate
from tests.conftest import first_per_label, write_csv, write_table

REAL = Path(__file__).resolve().parent / "data" / "real"
ROWS = first_per_label(12)  # 36 real sentences, 12 per label


def _labelled(path: Path, labels: list[object]) -> Path:
    """A CSV, JSON-lines or Parquet file (by suffix) of len(labels) real sentences with these labels."""
    texts = [row["text"] for row in first_per_label(len(labels))][: len(labels)]
    frame = pd.DataFrame({"text": texts, "label": labels})
    return write_table(path, frame)


def _failures(path: Path, **settings) -> list[str]:
    with pytest.raises(InvalidData) as caught:
        validate(DataConfig(path=path, min_per_class=1, **settings), path.parent / "work")
    return [f.describe() for f in caught.value.failures]


def _validate_only(args: list[str], workdir: Path, capsys) -> tuple[int, str]:
    code = retrain_main(["--validate-only", *args, "--workdir", str(workdir)])
    return code, capsys.readouterr().err


# ------------------------------------------------------------------------------------- 1. look-alike labels

@pytest.mark.parametrize("name, shown", [
    ("label_zero_width_space.csv", ["label 'positive\\u200b' differs from 'positive'", "U+200B ZERO WIDTH SPACE"]),
    ("label_nfc_nfd.csv", ["label 'ne\\u0301gatif' differs from 'n\\xe9gatif'", "Unicode normal form"]),
    ("label_excel_na.csv", ["label is a spreadsheet error value, not a class", "(value: #N/A)"]),
])
def test_look_alike_labels_and_error_values_are_refused_showing_both_spellings(tmp_path: Path, capsys, name, shown):
    failures = _failures(REAL / name)
    assert all(fragment in "\n".join(failures) for fragment in shown), failures[:3]
    code, err = _validate_only(["--data", str(REAL / name)], tmp_path, capsys)
    assert code == 65 and all(fragment in err for fragment in shown) and "Traceback" not in err


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_every_file_type_refuses_the_same_look_alikes(tmp_path: Path, suffix):
    labels = ["positive", "positive\u200b", "negative", "ne\u0301gatif", "négatif", "negative"] * 3
    failures = _failures(_labelled(tmp_path / f"in{suffix}", labels))
    assert len(failures) == 6  # 3 rows of the zero-width spelling, 3 of the NFD one (the rarer ones)
    assert sum("'positive\\u200b' differs from 'positive'" in f for f in failures) == 3
    assert sum("invisible characters (U+200B ZERO WIDTH SPACE)" in f for f in failures) == 3
    assert sum("Unicode normal form" in f for f in failures) == 3


def test_one_spelling_written_oddly_is_stored_canonically_and_said(tmp_path: Path):
    labels = ["ne\u0301gatif", "positive\u2060", "neutre"] * 4  # NFD, a word joiner: but one spelling each
    ref = validate(DataConfig(path=_labelled(tmp_path / "in.csv", labels), min_per_class=1), tmp_path)
    assert ref.meta["labels"] == ["neutre", "négatif", "positive"]
    assert unicodedata.is_normalized("NFC", ref.meta["labels"][1])
    notes = "\n".join(ref.meta["read_notes"])
    assert "label 'ne\\u0301gatif' stored as 'n\\xe9gatif' (Unicode normal form" in notes
    assert "label 'positive\\u2060' stored as 'positive' (invisible characters (U+2060 WORD JOINER)" in notes


def test_data_labels_are_read_by_the_same_rule(tmp_path: Path):
    path = _labelled(tmp_path / "in.csv", ["positive\u200b", "negative"] * 4)
    ref = validate(DataConfig(path=path, min_per_class=1, labels=("positive", "negative")), tmp_path)
    assert ref.meta["labels"] == ["positive", "negative"]
    full_width = _labelled(tmp_path / "fw.csv", ["ｐｏｓｉｔｉｖｅ", "negative"] * 4)
    failures = _failures(full_width, labels=("positive", "negative"))
    assert len(failures) == 4 and "differs from 'positive' (data.labels) only in compatibility forms" in failures[0]
    failures = _failures(path, labels=("positive", "Positive\u200b", "negative"))
    assert failures == [f"{path}: file, column 'label': data.labels names 'positive' and 'Positive\\u200b', which "
                        "differ only in invisible characters (U+200B ZERO WIDTH SPACE); give each label once"]


@pytest.mark.parametrize("value", [*SPREADSHEET_ERRORS, " #n/a "])
def test_spreadsheet_error_values_are_neither_classes_nor_texts(tmp_path: Path, value):
    failures = _failures(_labelled(tmp_path / "in.csv", ["positive", "negative", value] * 2))
    assert len(failures) == 2 and all("label is a spreadsheet error value" in f for f in failures)
    scoring = tmp_path / "score.csv"
    scoring.write_text(f"text\nProfit rose .\n{value}\n", encoding="utf-8")
    inputs = read_texts(scoring, "text", on_invalid="keep")
    assert inputs.reasons[1].startswith("text is a spreadsheet error value") and inputs.reasons[0] == ""


# Labels a person may type, and ways to write each that a person cannot tell apart on screen.
BASES = ["positive", "negative", "neutral", "négatif", "très bon", "ﬁnance"]
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u200e", "\u200f"]


@st.composite
def look_alike(draw) -> str:
    """One label: a base word in NFC, NFD, NFKC or full width, with invisible characters inserted anywhere."""
    text = draw(st.sampled_from(BASES))
    form = draw(st.sampled_from(["NFC", "NFD", "NFKC", "NFKD", "full width", "as typed"]))
    if form == "full width":
        text = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
    elif form != "as typed":
        text = unicodedata.normalize(form, text)
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(INVISIBLE)) + text[at:]
    return text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labels=st.lists(look_alike(), min_size=2, max_size=8), suffix=st.sampled_from([".csv", ".jsonl", ".parquet"]))
def test_look_alikes_give_the_canonical_label_set_or_a_refusal_naming_both(tmp_path_factory, labels, suffix):
    """Validation either yields one canonical label per look-alike group (NFC, no invisible format characters but
    the meaningful joiners, no two a person cannot tell apart), or refuses naming two spellings of one group."""
    folder = tmp_path_factory.mktemp("lookalike")
    rows = [label for label in labels for _ in range(2)]
    path = _labelled(folder / f"in{suffix}", rows)
    spellings = {label.strip() for label in labels}
    groups = {label_key(label) for label in spellings}
    try:
        ref = validate(DataConfig(path=path, min_per_class=1), folder)
    except InvalidData as exc:
        for failure in exc.failures:
            if "needs at least 2 classes" in failure.rule:
                assert len(groups) < 2
                continue
            assert "differs from" in failure.rule, failure.rule
            named = failure.rule.split("'")[1::2][:2]  # the two spellings, escaped
            by_escape = {escaped(s): s for s in spellings}
            assert len(named) == 2 and named[0] != named[1] and all(n in by_escape for n in named), named
            assert label_key(by_escape[named[0]]) == label_key(by_escape[named[1]])
        return
    produced = ref.meta["labels"]
    assert len(groups) >= 2 and len(produced) == len(groups) == len({label_key(p) for p in produced})
    assert set(produced) == {canonical_spelling(s) for s in spellings}
    for label in produced:
        assert unicodedata.is_normalized("NFC", label)
        assert all(unicodedata.category(ch) != "Cf" or ch in "\u200c\u200d" for ch in label)


# ------------------------------------------------------------------------------------- 5. boolean labels

@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_a_boolean_label_column_gives_the_classes_true_and_false_in_every_file_type(tmp_path: Path, suffix):
    ref = validate(DataConfig(path=_labelled(tmp_path / f"in{suffix}", [True, False] * 5), min_per_class=1), tmp_path)
    assert ref.meta["labels"] == ["False", "True"]


def test_a_stray_boolean_among_words_is_one_failure_on_its_row(tmp_path: Path):
    path = _labelled(tmp_path / "in.jsonl", ["positive", "negative"] * 3 + [True])
    assert _failures(path) == [f"{path}: line 7, column 'label': label must be a string or an integer (value: True)"]


# ------------------------------------------------------------------------------------- 2. the user's umask

@pytest.fixture
def umask():
    """Set the process umask for a test; restore the previous one after."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o027])
def test_atomic_writes_honour_the_umask(tmp_path: Path, umask, mask):
    umask(mask)
    assert artifacts.current_umask() == mask
    written = [artifacts.write_json_atomic(tmp_path / "a.json", {"a": 1}),
               artifacts.write_bytes_atomic(tmp_path / "b.bin", b"x"),
               artifacts.write_parquet(tmp_path, "step", pa.table({"a": [1]})).resolve(tmp_path)]
    with artifacts.staging(artifacts.artifact_dir(tmp_path, "store"), is_dir=True) as folder:
        (folder / "f.txt").write_text("x")
        ref = artifacts.store_dir(tmp_path, "store", folder, 1, {})
    assert all(_mode(path) == 0o666 & ~mask for path in written), [oct(_mode(p)) for p in written]
    assert _mode(ref.resolve(tmp_path)) == 0o777 & ~mask
    assert _mode(ref.resolve(tmp_path) / "f.txt") == 0o666 & ~mask


# ------------------------------------------------------------------------------------- 3/4. reading what the file says

@pytest.mark.parametrize("name, note", [
    ("utf16_bom.csv", "read as UTF-16 (the file starts with its byte-order mark)"),
    ("records_array.json", "read as a JSON array of 180 records (not JSON lines)"),
    ("excel_sep_hint.csv", "line 1 'sep=;' (Excel's delimiter line) read as the delimiter and skipped"),
    ("trailing_comma_rows.csv", "every data row ends with 1 comma that the header lacks"),
])
def test_what_the_file_says_of_itself_is_read_and_noted(tmp_path: Path, capsys, name, note):
    ref = validate(DataConfig(path=REAL / name), tmp_path)
    assert ref.rows == 180 and ref.meta["rows_read"] == 180 and any(note in n for n in ref.meta["read_notes"])
    code, err = _validate_only(["--data", str(REAL / name)], tmp_path, capsys)
    assert code == 0 and f"note: {note}" in err
    scored = read_texts(REAL / name, "text")
    assert len(scored.frame) == 180 and scored.frame["text"].iloc[0].startswith("In addition")


def test_json_arrays_are_read_record_by_record_and_json_lines_stay_json_lines(tmp_path: Path):
    array = tmp_path / "a.json"
    array.write_text('[\n {"text": "Profit rose .", "label": "positive"},\n 3,\n {"text": "Sales fell .", "label": '
                     '"negative"}\n]\n', encoding="utf-8")
    table = read_raw(array)
    assert table.locations == ["line 2", "line 4"] and table.failures[0].location == "line 3"
    assert "not an object" in table.failures[0].rule
    lines = tmp_path / "b.jsonl"  # JSON lines whose first record is an array: every line is still read
    lines.write_text('["a", "b"]\n{"text": "Profit rose .", "label": "positive"}\n', encoding="utf-8")
    table = read_raw(lines)
    assert table.locations == ["line 2"] and "must be an object" in table.failures[0].rule
    broken = tmp_path / "c.json"
    broken.write_text('[{"text": "Profit rose .", "label": "positive"},\n {"text": oops}]', encoding="utf-8")
    with pytest.raises(InvalidData) as caught:
        read_raw(broken)
    assert "line 2: the file is a JSON array (not JSON lines) that is not valid JSON" in str(caught.value)


def test_excel_sep_line_keeps_the_file_line_numbers(tmp_path: Path):
    path = tmp_path / "x.csv"
    path.write_text("sep=;\r\ntext;label\r\nProfit rose .;positive\r\n;negative\r\n", encoding="utf-8")
    assert any("line 4, column 'text': text is empty" in f for f in _failures(path))


@pytest.mark.parametrize("name, fragments", [
    ("dup_header_mid.csv", ["line 92: this line repeats the header (two exports joined into one file?): delete it"]),
    ("title_row_above_header.csv", ["line 1: line 1 'Sentiment review Q3 2026 - desk EMEA' looks like a title above "
                                    "the header", "delete line 1"]),
    ("predict_no_header.csv", ["line 1: no header line? line 1 looks like a data row", "--set data.header=none"]),
])
def test_files_that_cannot_be_read_safely_name_the_cause_and_fix(tmp_path: Path, capsys, name, fragments):
    code, err = _validate_only(["--data", str(REAL / name)], tmp_path, capsys)
    assert code == 65 and all(f in err for f in fragments) and err.count("\n  ") <= 2, err[-1500:]
    with pytest.raises(InvalidData) as caught:
        read_texts(REAL / name, "text")  # refused as by default (with --on-invalid keep a repeated header is a kept row)
    assert all(f in "\n".join(x.describe() for x in caught.value.failures) for f in fragments)


def test_a_one_column_csv_whose_sentences_hold_commas_is_not_a_title(tmp_path: Path):
    path = tmp_path / "x.csv"
    path.write_text("Customer comments\nProfit rose, sales fell\nMargins, again, were thin\nNothing, changed\n",
                    encoding="utf-8")
    with pytest.raises(InvalidData) as caught:  # the unquoted commas are what is wrong, as before
        read_texts(path, "Customer comments")
    assert all("an unquoted comma or quote?" in f.rule for f in caught.value.failures)
    path.write_text('Customer comments\n"Profit rose, sales fell"\n"Margins, again, were thin"\nNothing changed\n',
                    encoding="utf-8")
    assert read_texts(path, "Customer comments").frame.shape == (3, 1)


def test_a_trailing_comma_on_some_rows_says_so(tmp_path: Path):
    path = tmp_path / "x.csv"
    path.write_text("text,label\nProfit rose .,positive,\nSales fell .,negative\n", encoding="utf-8")
    assert any("row has 3 fields, the header has 2 (a trailing comma at the end of the row?)" in f
               for f in _failures(path))


def test_utf16_without_a_mark_is_named(tmp_path: Path):
    path = tmp_path / "x.csv"
    path.write_bytes("text,label\nProfit rose .,positive\n".encode("utf-16-le"))
    assert "--set data.encoding=utf-16-le" in _failures(path)[0]


def test_a_header_less_file_of_short_rows_is_named_by_its_labels(tmp_path: Path):
    path = tmp_path / "x.csv"
    path.write_text("Profit rose,positive\nSales fell,negative\nCosts were flat,neutral\nMargins grew,positive\n")
    (failure,) = _failures(path)
    assert "line 1: no header line? line 1 looks like a data row ('positive')" in failure
    ref = validate(DataConfig(path=path, text_col="1", label_col="2", header="none", min_per_class=1), tmp_path)
    assert ref.meta["rows_read"] == 4


def test_a_header_less_file_is_read_whole_with_data_header_none(tmp_path: Path):
    no_header = REAL / "predict_no_header.csv"
    lines = sum(1 for line in no_header.read_text(encoding="utf-8").splitlines() if line.strip())
    inputs = read_texts(no_header, "text", header="none")
    assert len(inputs.frame) == lines == 20 and inputs.text_col == "1" and inputs.locations[0] == "line 1"
    # following the old hint (the first sentence as the column's name) is refused, not 19 rows of 20
    first = pd.read_csv(no_header, nrows=0).columns[0]
    with pytest.raises(InvalidData) as caught:
        read_texts(no_header, first)
    assert "--set data.header=none" in caught.value.failures[0].rule
    # data.header=first says line 1 is the header, whatever it holds
    assert len(read_texts(no_header, first, header="first").frame) == 19
    # training: columns by position
    data = tmp_path / "train.csv"
    data.write_text("".join(f'"{r["text"]}",{r["label"]}\n' for r in ROWS), encoding="utf-8")
    ref = validate(DataConfig(path=data, text_col="1", label_col="2", header="none", min_per_class=1), tmp_path)
    assert ref.meta["rows_read"] == len(ROWS)


# ------------------------------------------------------------------------------------- 5. predict's own columns

def test_output_columns_that_would_overwrite_the_input_are_named():
    assert output_collisions("f.csv", ["text", "note"], ["a", "b"], "refuse") == []
    (failure,) = output_collisions("f.csv", ["text", "predicted_label", "prob_b", "reason"], ["a", "b"], "keep")
    assert "'predicted_label', 'prob_b', 'reason'" in failure.rule and "rename or drop them" in failure.rule


def test_registry_on_a_missing_workdir_says_so(tmp_path: Path, capsys):
    for command in (["list"], ["show", "champion"], ["rollback"]):
        assert registry_cli.main([*command, "--workdir", str(tmp_path / "nowhere")]) == 66
        err = capsys.readouterr().err
        assert f"the workdir {tmp_path / 'nowhere'} does not exist" in err and "--workdir" in err
    (tmp_path / "models" / "other").mkdir(parents=True)
    assert registry_cli.main(["list", "--workdir", str(tmp_path)]) == 0
    assert "no versions of model 'default'" in capsys.readouterr().out


# ------------------------------------------------------------------------------------- 6. settings the backbone bounds

@pytest.mark.parametrize("setting, fragment", [
    ("train.unfreeze_top=9", "train.unfreeze_top=9, but the backbone"),
    ("train.fewshot_unfreeze_top=7", "train.fewshot_unfreeze_top=7, but the backbone"),
    ("model.backbone=/nonexistent", "model.backbone=/nonexistent: no keras-hub or Hugging Face preset there"),
])
def test_settings_the_backbone_bounds_exit_2_before_anything_starts(tmp_path: Path, capsys, setting, fragment):
    for extra in (["--validate-only"], []):
        with pytest.raises(SystemExit) as caught:
            retrain_main([*extra, "--set", setting, "--workdir", str(tmp_path)])
        err = capsys.readouterr().err
        assert caught.value.code == 2 and fragment in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "validation").exists()


def test_backbone_check_reads_config_json_only():
    """Without TensorFlow: the check runs in a fresh interpreter that never imports it."""
    import subprocess
    import sys

    code = ("import sys; from schemas.config import RetrainConfig, ConfigError; from flows import cli\n"
            "cfg = RetrainConfig.from_parameters(overrides={'train.unfreeze_top': 9})\n"
            "try:\n    cli.check_backbone_settings(cfg)\nexcept ConfigError as e:\n    print('refused', e)\n"
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert "refused train.unfreeze_top=9" in out and out.strip().endswith("False")


# ------------------------------------------------------------------------------------- the same outcome on every path

SAME_OUTCOME = ["label_zero_width_space.csv", "label_nfc_nfd.csv", "label_excel_na.csv", "dup_header_mid.csv",
                "title_row_above_header.csv", "predict_no_header.csv", "utf16_bom.csv", "records_array.json",
                "excel_sep_hint.csv", "trailing_comma_rows.csv"]


@pytest.mark.parametrize("name", SAME_OUTCOME)
def test_validate_only_and_a_run_give_the_same_outcome(prefect_api, tmp_path: Path, capsys, name):
    """A run stops at the same validation failures as --validate-only (or passes validation as it does)."""
    only, only_err = _validate_only(["--data", str(REAL / name)], tmp_path / "a", capsys)
    if only == 0:
        return  # a valid file: the runs of the model tests train on such files
    code = retrain_main(["--data", str(REAL / name), "--workdir", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == only == 65
    failures = [line for line in only_err.splitlines() if line.startswith(f"  {REAL / name}")]
    assert failures and all(line in err for line in failures) and "Traceback" not in err
    assert not (tmp_path / "b" / "models").exists()


@pytest.fixture(scope="module")
def model_workdir(prefect_api, tmp_path_factory):
    """One small real model (frozen backbone, 2 epochs, 36 sentences), trained under umask 027 (files 0640,
    folders 0750: neither mkstemp's 0600 nor the usual 0644)."""
    from flows.retrain import retrain

    root = tmp_path_factory.mktemp("trust-model")
    data = write_csv(root / "train.csv", ROWS)
    previous = os.umask(0o027)
    try:
        summary = json.loads(Path(retrain(data=str(data), workdir=str(root / "work"), overrides={
            "train.unfreeze_top": 0, "train.max_epochs": 2, "augment.n_aug": 0, "data.min_per_class": 3,
            "gate.on_label_change": "promote", "evaluate.min_test_per_class": 0})).read_text())
        if not summary["promoted"]:
            from core import registry

            registry.promote(root / "work", "default", summary["model"]["version"], "for the test")
    finally:
        os.umask(previous)
    return root / "work"


def test_registry_files_and_version_folders_honour_the_umask(model_workdir: Path):
    root = model_workdir / "models" / "default"
    (version,) = [p for p in (root / "versions").iterdir() if not p.name.startswith(".")]
    files = [root / "champion.json", root / "promotions.jsonl", *(version / n for n in (
        "lineage.json", "metrics.json", "model.json", "model.keras", "predictions.parquet", "report.html"))]
    assert {p.name: oct(_mode(p)) for p in files} == {p.name: oct(0o640) for p in files}
    assert _mode(version) == 0o750 and _mode(version / "saved_model") == 0o750
    summary = next((model_workdir / "runs").glob("*/summary.json"))
    assert _mode(summary) == 0o640


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_predict_output_honours_the_umask(model_workdir: Path, tmp_path: Path, capsys, umask, mask):
    umask(mask)
    out = tmp_path / "scored.parquet"
    data = write_csv(tmp_path / "in.csv", ROWS[:5])
    assert predict_cli.main(["--data", str(data), "--out", str(out), "--workdir", str(model_workdir)]) == 0
    assert _mode(out) == 0o666 & ~mask


def test_predict_gives_the_same_outcome_as_validation(model_workdir: Path, tmp_path: Path, capsys):
    out = tmp_path / "o.parquet"

    def run(*args: str) -> tuple[int, str]:
        code = predict_cli.main(["--out", str(out), "--workdir", str(model_workdir), *args])
        return code, capsys.readouterr().err

    # header-less: named, then read whole with data.header=none: 20 lines in, 20 rows out
    code, err = run("--data", str(REAL / "predict_no_header.csv"))
    assert code == 65 and "--set data.header=none" in err and not out.exists()
    code, err = run("--data", str(REAL / "predict_no_header.csv"), "--set", "data.header=none")
    assert code == 0 and len(pq.read_table(out)) == 20, err[-1500:]
    # files whose cause is named the same way as in training
    for name in ("dup_header_mid.csv", "title_row_above_header.csv"):
        code, err = run("--data", str(REAL / name))
        assert code == 65 and "delete" in err
    # files read the same way as in training: every row scored
    for name in ("utf16_bom.csv", "records_array.json", "excel_sep_hint.csv", "trailing_comma_rows.csv"):
        code, err = run("--data", str(REAL / name))
        table = pq.read_table(out)
        assert code == 0 and len(table) == 180 and table.column_names[:3] == ["text", "label", "predicted_label"], err
    # an input column the output would overwrite: refused, nothing written
    out.unlink()
    scored_again = tmp_path / "again.csv"
    write_csv(scored_again, [{**r, "predicted_label": "mine"} for r in ROWS[:4]], fields=("text", "predicted_label"))
    code, err = run("--data", str(scored_again))
    assert code == 65 and "already has column 'predicted_label'" in err and not out.exists()
