"""Real users' files (issue 15): each kind of export mistake handled the same way by training, `--validate-only`
and `flows.predict`. The files are in tests/data/real (copies of the failing instances) or written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows import cli
from flows import predict as predict_cli
from flows import registry as registry_cli
from flows.retrain import main as retrain_main
from core.text import eda
from tasks.augment import augment
from schemas.config import AugmentConfig, DataConfig, SplitConfig
from core.run.errors import InvalidData
from tasks.predict import read_texts
from core.text.readers import read_raw
from tasks.split import split
from tasks.validate import canonical_label, validate
from tests.conftest import first_per_label, write_csv

REAL = Path(__file__).resolve().parent / "data" / "real"


def _validate_only(args: list[str], workdir: Path, capsys) -> tuple[int, str, str]:
    code = retrain_main(["--validate-only", *args, "--workdir", str(workdir)])
    out, err = capsys.readouterr()
    return code, out, err


def _rows(ref, workdir: Path) -> pd.DataFrame:
    return pq.read_table(ref.resolve(workdir)).to_pandas()


# ------------------------------------------------------------------------- 1. one label, one spelling, any type

@pytest.mark.parametrize("value, expected", [
    (1, "1"), (1.0, "1"), ("1.0", "1"), ("1", "1"), (" 2.00 ", "2"), (np.int64(0), "0"), (np.float64(2.0), "2"),
    (-0.0, "0"), (0.5, "0.5"), ("0.5", "0.5"), ("positive", "positive"), (True, True), (None, None)])
def test_an_integral_number_is_that_integer_whatever_its_type(value, expected):
    assert canonical_label(value) == expected


def test_labels_read_the_same_from_csv_ints_and_floats_and_parquet_floats(tmp_path: Path):
    tables = []
    for name in ("labels_mixed_int_float.csv", "labels_float_strings.csv", "float_label.parquet"):
        ref = validate(DataConfig(path=REAL / name), tmp_path)
        assert ref.meta["labels"] == ["0", "1", "2"], name
        tables.append(_rows(ref, tmp_path)[["row_id", "text", "label"]])
    assert pq.read_schema(REAL / "float_label.parquet").field("label").type == pa.float64()
    for table in tables[1:]:  # the same rows and labels: the same model, whichever format
        pd.testing.assert_frame_equal(table, tables[0])


def test_data_labels_given_as_floats_match_integer_labels(tmp_path: Path):
    ref = validate(DataConfig(path=REAL / "labels_mixed_int_float.csv", labels=("0.0", "1", "2.0")), tmp_path)
    assert ref.meta["labels"] == ["0", "1", "2"]


# ------------------------------------------------------------------------------------------ 2. other delimiters

@pytest.mark.parametrize("name, delimiter", [("tsv_with_csv_ext.csv", "\t"), ("semicolon.csv", ";")])
def test_a_csv_with_another_delimiter_is_detected_and_said(tmp_path: Path, capsys, caplog, name, delimiter):
    ref = validate(DataConfig(path=REAL / name), tmp_path)
    assert ref.rows == 180 and ref.meta["delimiter"] == delimiter
    shown = "\\t" if delimiter == "\t" else delimiter
    assert any(f"columns separated by '{shown}' (detected" in note for note in ref.meta["read_notes"])
    assert f"columns separated by '{shown}'" in caplog.text  # the run's log says which
    code, _, err = _validate_only(["--data", str(REAL / name)], tmp_path, capsys)
    assert code == 0 and "180 rows read, 180 used" in err and f"columns separated by '{shown}'" in err


def test_an_explicit_delimiter_wins_and_a_wrong_one_shows_the_header_escaped(tmp_path: Path, capsys):
    path = REAL / "tsv_with_csv_ext.csv"
    assert validate(DataConfig(path=path, delimiter="tab"), tmp_path).rows == 180
    code, _, err = _validate_only(["--data", str(path), "--set", "data.delimiter=comma"], tmp_path, capsys)
    assert code == 65
    assert "missing column 'text' (columns found: 'text\\tlabel')" in err
    assert "if the columns are separated by tabs, name it with --set data.delimiter=tab" in err
    with pytest.raises(SystemExit) as caught:
        _validate_only(["--data", str(path), "--set", "data.delimiter=??"], tmp_path, capsys)
    assert caught.value.code == 2
    assert "data.delimiter must be auto, comma, semicolon, tab, pipe" in capsys.readouterr().err


def test_a_tsv_named_file_with_commas_says_how_to_set_the_delimiter(tmp_path: Path):
    path = tmp_path / "data.tsv"
    path.write_text("text,label\nProfit rose,positive\nSales fell,negative\n")
    with pytest.raises(InvalidData) as caught:
        validate(DataConfig(path=path), tmp_path)
    rule = caught.value.failures[0].rule
    assert "(columns found: 'text,label')" in rule and "--set data.delimiter=comma" in rule
    assert validate(DataConfig(path=path, delimiter="comma", min_per_class=1), tmp_path).rows == 2


def test_commas_inside_a_semicolon_file_and_a_one_column_file(tmp_path: Path):
    path = tmp_path / "eu.csv"
    path.write_text("text;label\nSales rose, strongly;positive\nProfit, as expected, fell;negative\n")
    raw = read_raw(path)
    assert raw.delimiter == ";" and raw.frame["text"].tolist()[0] == "Sales rose, strongly"
    one = tmp_path / "one.csv"
    one.write_text('text\n"Sales rose, strongly"\nProfit fell\n')
    raw = read_raw(one)
    assert list(raw.frame.columns) == ["text"] and len(raw.frame) == 2


# ----------------------------------------------------------------------------- 3. Excel's trailing empty columns

def test_unnamed_columns_empty_on_every_row_are_ignored_with_a_note(tmp_path: Path, capsys):
    ref = validate(DataConfig(path=REAL / "excel_trailing_empty_cols.csv"), tmp_path)
    assert ref.rows == 180
    assert any("ignored 2 unnamed columns empty on every row (columns 3, 4" in n for n in ref.meta["read_notes"])
    code, _, err = _validate_only(["--data", str(REAL / "excel_trailing_empty_cols.csv")], tmp_path, capsys)
    assert code == 0 and "note: ignored 2 unnamed columns" in err


def test_unnamed_columns_that_hold_values_are_still_refused(tmp_path: Path):
    path = tmp_path / "x.csv"
    path.write_text("text,label,,\nProfit rose,positive,a,\nSales fell,negative,,b\n")
    with pytest.raises(InvalidData, match="header repeats column ''"):
        read_raw(path)
    pq.write_table(pa.table({"text": ["a b c", "d e f"], "label": ["x", "y"], "Unnamed: 2": [None, None]}),
                   tmp_path / "x.parquet")
    assert list(read_raw(tmp_path / "x.parquet").frame.columns) == ["text", "label"]


# -------------------------------------------------------------------------- 4. swapped columns, bounded reports

def test_swapped_columns_are_named_in_a_short_report(tmp_path: Path, capsys):
    code, _, err = _validate_only(["--data", str(REAL / "baseline_180.csv"), "--text-col", "label",
                                   "--label-col", "text"], tmp_path, capsys)
    assert code == 65 and len(err) < 3000, len(err)  # was 429 KB
    assert "the text and label columns look swapped" in err and "run with --text-col text --label-col label" in err


def test_every_reported_line_and_value_is_cut_short(tmp_path: Path, capsys):
    long = "Profit rose strongly in every region " * 20
    rows = [{"text": long, "label": f"{long} label {i % 2}"} for i in range(60)]
    path = write_csv(tmp_path / "conflicts.csv", rows)
    code, _, err = _validate_only(["--data", str(path)], tmp_path, capsys)
    lines = [line for line in err.splitlines() if line.startswith("  ")]
    assert code == 65 and "the same text has different labels" in err and "... and 10 more" in err
    assert len(lines) == 51 and max(map(len, lines)) <= cli.MAX_LINE + 10
    assert "characters)" in err  # a value cut short says how long it was


# ------------------------------------------------------------------------------------------ 7. registry options

def test_registry_options_go_before_or_after_the_sub_command(tmp_path: Path, capsys):
    for argv in (["list", "--workdir", str(tmp_path), "--name", "m"], ["--workdir", str(tmp_path), "--name", "m", "list"],
                 ["--workdir", str(tmp_path / "elsewhere"), "list", "--workdir", str(tmp_path), "--name", "m"]):
        assert registry_cli.main(argv) == 0
        assert f"no versions of model 'm' in {tmp_path}\n" == capsys.readouterr().out
    assert registry_cli.main(["prune", "--dry-run", "--workdir", str(tmp_path)]) == 0
    with pytest.raises(SystemExit) as caught:
        registry_cli.main(["list", "--bogus"])
    assert caught.value.code == 2


# ------------------------------------------------------------------------- 8. splits that cannot measure a class

def test_classes_without_validation_or_test_rows_are_named(tmp_path: Path, capsys, caplog):
    ref = split(validate(DataConfig(path=REAL / "ten_classes_12_each.csv"), tmp_path), SplitConfig(), 0, 5, tmp_path)
    unmeasured = ref.meta["unmeasured_classes"]
    table = _rows(ref, tmp_path)
    for part in ("val", "test"):
        present = set(table.loc[table["split"] == part, "label"])
        assert set(unmeasured[part]) == set(ref.meta["labels"]) - present
    assert unmeasured["val"] and len(unmeasured["warnings"]) == len(set(unmeasured["val"]) | set(unmeasured["test"]))
    assert f"class {unmeasured['val'][0]!r} has no validation" in caplog.text
    code, _, err = _validate_only(["--data", str(REAL / "one_class_6_rows.csv"), "--set",
                                   "evaluate.min_test_per_class=0"], tmp_path, capsys)  # with a hold-out
    assert code == 0 and "warning: class 'negative' has no validation rows (6 rows: 5 train, 0 validation" in err
    assert "add rows of it" in err


def test_too_few_training_rows_caused_by_max_train_rows_names_that_setting(tmp_path: Path):
    path = write_csv(tmp_path / "d.csv", first_per_label(100))
    with pytest.raises(InvalidData) as caught:
        split(validate(DataConfig(path=path, conflicts="drop"), tmp_path), SplitConfig(), 12, 5, tmp_path)
    rule = caught.value.failures[0].rule
    assert "the cause is data.max_train_rows=12" in rule and "raise data.max_train_rows" in rule


def test_a_class_the_split_holds_out_says_what_to_do(tmp_path: Path):
    rows = first_per_label(40)
    small = [r for r in first_per_label(120) if r["label"] == "positive"][:7]
    path = write_csv(tmp_path / "d.csv", [r for r in rows if r["label"] != "positive"] + small)
    validated = validate(DataConfig(path=path, conflicts="drop"), tmp_path)
    with pytest.raises(InvalidData) as caught:  # 7 rows, and the split holds out enough to leave fewer than 7
        split(validated, SplitConfig(test_fraction=0.5, val_fraction=0.3), 0, 7, tmp_path)
    rule = caught.value.failures[0].rule
    assert "the split holds out" in rule and "lower the split fractions" in rule


# ---------------------------------------------------------------------------- 9. augmentation across languages

def test_eda_leaves_other_languages_untouched_and_counts_them(tmp_path: Path):
    assert eda.skip_reason("Der Vorstand bestätigte die Prognose für das Gesamtjahr.") == "de"
    assert eda.skip_reason("董事会确认了全年预测。") == "zh"
    assert eda.skip_reason("Operating profit rose to EUR 13.1 mn from EUR 8.7 mn .") is None
    assert eda.skip_reason("Die Aktie blieb unverändert.", "en") is None  # the data's language, declared

    validated = validate(DataConfig(path=REAL / "multilang_long_for_training.csv", max_chars=25000), tmp_path)
    splits = split(validated, SplitConfig(), 0, 5, tmp_path)
    ref = augment(splits, AugmentConfig(n_aug=2), 13, tmp_path)
    table = _rows(ref, tmp_path)
    source = dict(zip(table["row_id"], table["text"]))
    foreign = {rid for rid, text in source.items() if eda.language_of(text) in ("de", "zh")}
    train_foreign = table[(table["split"] == "train") & table["row_id"].isin(foreign) & ~table["is_augmented"]]
    assert len(train_foreign) >= 3
    assert not table.loc[table["is_augmented"], "source_id"].isin(foreign).any()
    assert ref.meta["skipped_languages"].get("de", 0) + ref.meta["skipped_languages"].get("zh", 0) == len(train_foreign)
    assert ref.meta["skipped_not_english"] >= len(train_foreign) and ref.meta["augmented_rows"] > 100

    none = augment(splits, AugmentConfig(n_aug=2, language="de"), 13, tmp_path)
    assert none.meta["augmented_rows"] == 0 and none.meta["skipped_not_english"] == (table["split"] == "train").sum() \
        - table["is_augmented"].sum()


# ------------------------------------------------------------- 5, 6. prediction: same reading, rows in = rows out

@pytest.mark.parametrize("name, kept_blank", [("predict_one_col_empty_line.csv", ["line 3", "line 5"]),
                                             ("predict_one_col_empty_line_only.csv", ["line 3", "line 5"]),
                                             ("predict_min_empty_line.csv", ["line 3"])])
def test_blank_lines_are_rows_when_scoring(name, kept_blank):
    with pytest.raises(InvalidData) as caught:
        read_texts(REAL / name, "text")
    assert [f.location for f in caught.value.failures] == kept_blank  # every bad line listed
    inputs = read_texts(REAL / name, "text", on_invalid="keep")
    lines = (REAL / name).read_text().splitlines()
    assert len(inputs.frame) == len(lines) - 1  # rows in = rows out
    assert [inputs.locations[i] for i, r in enumerate(inputs.reasons) if r] == kept_blank


def test_every_file_type_keeps_its_blank_and_broken_rows_in_place(tmp_path: Path):
    (tmp_path / "a.jsonl").write_text('{"text": "Sales rose"}\n\n{"text": "Profit fell"}\nnot json\n{"text": "ok"}\n\n')
    inputs = read_texts(tmp_path / "a.jsonl", "text", on_invalid="keep")
    assert inputs.locations == ["line 1", "line 2", "line 3", "line 4", "line 5"]  # the trailing blank ends the file
    assert [bool(r) for r in inputs.reasons] == [False, True, False, True, False]
    (tmp_path / "b.csv").write_text("id,text\n1,Sales rose\n2,Profit, fell\n,\n3,ok\n")
    inputs = read_texts(tmp_path / "b.csv", "text", on_invalid="keep")
    assert inputs.frame["id"].tolist() == ["1", None, "", "3"] and "row has 3 fields" in inputs.reasons[1]
    pq.write_table(pa.table({"text": ["Sales rose", None, "  "]}), tmp_path / "c.parquet")
    inputs = read_texts(tmp_path / "c.parquet", "text", on_invalid="keep")
    assert inputs.locations == ["row 1", "row 2", "row 3"] and inputs.valid == [0]


def test_training_skips_blank_lines_and_says_so(tmp_path: Path):
    path = tmp_path / "t.csv"
    rows = first_per_label(10)
    path.write_text("text,label\n" + "".join(f'"{r["text"]}",{r["label"]}\n' + ("\n" if i == 3 else "")
                                             for i, r in enumerate(rows)) + "\n\n")
    ref = validate(DataConfig(path=path, min_per_class=1), tmp_path)
    assert ref.rows == 30 and ref.meta["blank_lines_skipped"] == 1
    assert "1 blank line skipped (line 6)" in ref.meta["read_notes"]


def test_predict_refuses_settings_it_does_not_read(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as caught:
        predict_cli.main(["--data", str(REAL / "predict_long_text.csv"), "--out", str(tmp_path / "o.parquet"),
                          "--set", "train.max_epochs=2"])
    assert caught.value.code == 2 and "data.max_chars" in capsys.readouterr().err


@pytest.fixture(scope="module")
def model_workdir(prefect_api, tmp_path_factory):
    """One small real model (frozen backbone, 2 epochs, 90 sentences), trained with data.max_chars=3000."""
    from flows.retrain import retrain

    root = tmp_path_factory.mktemp("real-model")
    data = write_csv(root / "train.csv", first_per_label(30))
    summary = json.loads(Path(retrain(data=str(data), workdir=str(root / "work"), overrides={
        "train.unfreeze_top": 0, "train.max_epochs": 2, "augment.n_aug": 0, "data.min_per_class": 3,
        "data.max_chars": 3000, "evaluate.min_test_per_class": 0, "gate.on_label_change": "promote"})).read_text())
    if not summary["promoted"]:
        from core.storage import registry

        registry.promote(root / "work", "default", summary["model"]["version"], "for the test")
    return root / "work"


def _predict(args: list[str], workdir: Path, out: Path, capsys) -> tuple[int, str]:
    code = predict_cli.main(["--out", str(out), "--workdir", str(workdir), *args])
    return code, capsys.readouterr().err


def test_predict_reads_like_retrain_and_keeps_every_row(model_workdir: Path, tmp_path: Path, capsys):
    out = tmp_path / "o.parquet"
    # limits: the model's own training setting (3000) is the default; --set raises it
    code, err = _predict(["--data", str(REAL / "predict_long_text.csv")], model_workdir, out, capsys)
    assert code == 65 and "data.max_chars=3000" in err and "--set data.max_chars=N" in err
    assert "trained or promoted" not in err and "--on-invalid keep" in err and not out.exists()
    code, err = _predict(["--data", str(REAL / "predict_long_text.csv"), "--set", "data.max_chars=25000"],
                         model_workdir, out, capsys)
    assert code == 0, err
    assert len(pq.read_table(out)) == len(pd.read_csv(REAL / "predict_long_text.csv"))
    # encodings: the hint names predict's own option, which works
    code, err = _predict(["--data", str(REAL / "cp1252_euro.csv")], model_workdir, out, capsys)
    assert code == 65 and "--set data.encoding=cp1252" in err
    code, err = _predict(["--data", str(REAL / "cp1252_euro.csv"), "--set", "data.encoding=cp1252"],
                         model_workdir, out, capsys)
    assert code == 0 and "€" in pq.read_table(out).column("text")[0].as_py()
    # delimiters: detected as for training
    code, err = _predict(["--data", str(REAL / "semicolon.csv")], model_workdir, out, capsys)
    assert code == 0 and pq.read_table(out).column_names[:3] == ["text", "label", "predicted_label"]
    # rows in = rows out: refused by default, kept with a reason on request
    blank = REAL / "predict_one_col_empty_line.csv"
    code, err = _predict(["--data", str(blank)], model_workdir, out, capsys)
    assert code == 65 and "line 3, column 'text'" in err and "line 5, column 'text'" in err
    code, err = _predict(["--data", str(blank), "--on-invalid", "keep"], model_workdir, out, capsys)
    scored = pq.read_table(out).to_pandas()
    assert code == 0 and len(scored) == 5
    assert scored["predicted_label"].isna().tolist() == [False, True, False, True, False]
    assert scored["reason"].tolist()[1].startswith("text is empty") and scored["reason"].tolist()[0] == ""
    probs = scored[[c for c in scored.columns if c.startswith("prob_")]]
    assert probs.iloc[[1, 3]].isna().all().all() and np.allclose(probs.iloc[[0, 2, 4]].sum(axis=1), 1.0)
