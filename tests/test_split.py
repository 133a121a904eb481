"""split: hash-based, stratified, independent of the training seed, stable when the data grows."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from schemas.config import DataConfig, SplitConfig
from core.errors import InvalidData
from core.text.identity import normalize_text
from tasks.split import split
from tasks.validate import validate
from tests.conftest import first_per_label, write_csv


def _split_table(rows, tmp_path: Path, name: str, cfg: SplitConfig = SplitConfig(), max_train_rows: int = 0):
    path = write_csv(tmp_path / f"{name}.csv", rows)
    validated = validate(DataConfig(path=path, conflicts="drop"), tmp_path)
    ref = split(validated, cfg, max_train_rows, 5, tmp_path)
    return ref, pq.read_table(ref.resolve(tmp_path)).to_pandas()


def test_superset_keeps_every_old_row_where_it_was(tmp_path: Path):
    small, small_table = _split_table(first_per_label(100), tmp_path, "small")
    big, big_table = _split_table(first_per_label(100) + first_per_label(80, skip=100), tmp_path, "big")
    before = dict(zip(small_table["row_id"], small_table["split"]))
    after = dict(zip(big_table["row_id"], big_table["split"]))
    assert len(after) > len(before)
    assert all(after[row] == where for row, where in before.items())


def test_split_is_stratified_and_disjoint(tmp_path: Path):
    ref, table = _split_table(first_per_label(200), tmp_path, "strat")
    for label, rows in table.groupby("label"):
        share = (rows["split"] == "test").mean()
        assert 0.12 < share < 0.28, (label, share)  # 0.2 up to binomial noise at n=200
    norms = table.assign(norm=table["text"].map(normalize_text)).groupby("norm")["split"].nunique()
    assert (norms == 1).all()
    assert sum(ref.meta["split_rows"].values()) == len(table)


def test_salt_changes_the_split(tmp_path: Path):
    _, one = _split_table(first_per_label(60), tmp_path, "a")
    _, two = _split_table(first_per_label(60), tmp_path, "b", SplitConfig(salt="another"))
    assert (one["split"].to_numpy() != two["split"].to_numpy()).any()


def test_max_train_rows_keeps_a_stratified_subset(tmp_path: Path):
    ref, table = _split_table(first_per_label(200), tmp_path, "cap", max_train_rows=90)
    train = table[table["split"] == "train"]
    assert abs(len(train) - 90) <= 3
    assert set(train["label"].value_counts()) <= {29, 30, 31}
    full_ref, full = _split_table(first_per_label(200), tmp_path, "nocap")
    assert (table["split"] != "train").sum() == (full["split"] != "train").sum()  # held-out rows untouched


def test_too_few_rows_of_a_class_names_the_class(tmp_path: Path):
    rows = [r for r in first_per_label(30) if r["label"] != "positive"] + first_per_label(2)[-2:]
    path = write_csv(tmp_path / "rare.csv", rows)
    validated = validate(DataConfig(path=path), tmp_path)
    with pytest.raises(InvalidData) as caught:
        split(validated, SplitConfig(), 0, 5, tmp_path)
    (failure,) = caught.value.failures
    assert "class 'positive'" in failure.rule and "data.min_per_class=5" in failure.rule
