"""tokenize: the backbone's real WordPiece tokenizer into Parquet, with the length chosen from the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from schemas.tables import TOKENIZED_SCHEMA
from tasks.augment import augment
from core.model.backbone import encode_texts, load_tokenizer, special_ids
from schemas.config import AugmentConfig, DataConfig, SplitConfig, TokenizeConfig
from tasks.split import split
from tasks.tokenization import choose_length, tokenize
from tasks.validate import validate
from tests.conftest import first_per_label, write_csv


def _augmented(tmp_path: Path, rows):
    path = write_csv(tmp_path / "d.csv", rows)
    splits = split(validate(DataConfig(path=path), tmp_path), SplitConfig(), 0, 5, tmp_path)
    return augment(splits, AugmentConfig(n_aug=1), 1, tmp_path)


def test_tokenized_parquet_has_schema_metadata_and_special_tokens(tmp_path: Path, backbone):
    ref = tokenize(_augmented(tmp_path, first_per_label(20)), TokenizeConfig(), backbone, tmp_path)
    file = pq.ParquetFile(ref.resolve(tmp_path))
    assert file.schema_arrow.remove_metadata().equals(TOKENIZED_SCHEMA)
    assert file.metadata.row_group(0).column(0).compression == "ZSTD"
    meta = file.schema_arrow.metadata
    assert meta[b"retrain.sequence_length"] == str(ref.meta["sequence_length"]).encode()
    assert len(meta[b"retrain.vocab_sha256"]) == 64
    table = file.read().to_pandas()
    cls_id, sep_id, _ = special_ids(backbone.path)
    assert all(ids[0] == cls_id and ids[-1] == sep_id for ids in table["token_ids"])
    assert (table["n_tokens"] == table["token_ids"].map(len)).all()
    assert (table["n_tokens"] <= ref.meta["sequence_length"]).all()
    assert ref.meta["sequence_length"] % 8 == 0


def test_fixed_length_truncates_and_counts(tmp_path: Path, backbone):
    ref = tokenize(_augmented(tmp_path, first_per_label(14)), TokenizeConfig(max_length=16), backbone, tmp_path)
    table = pq.read_table(ref.resolve(tmp_path)).to_pandas()
    assert table["n_tokens"].max() == 16
    assert ref.meta["truncated_rows"] == int(table["truncated"].sum()) > 0


def test_length_is_a_percentile_rounded_up_to_eight():
    counts = np.array([10] * 98 + [41, 90])
    assert choose_length(counts, TokenizeConfig()) == 48  # 99th percentile ~41.5 -> 48
    assert choose_length(counts, TokenizeConfig(length_percentile=50)) == 16
    assert choose_length(counts, TokenizeConfig(max_length=64)) == 64


def test_accents_are_stripped_not_unknown(backbone):
    unk = load_tokenizer(backbone.path).token_to_id("[UNK]")
    (ids,) = encode_texts(backbone.path, ["Seppälä and Nestlé report café sales"])
    assert unk not in ids
    (plain,) = encode_texts(backbone.path, ["Seppala and Nestle report cafe sales"])
    assert ids == plain
