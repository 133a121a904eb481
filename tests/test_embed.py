"""embed + feature cache: the backbone runs once per distinct sentence, ever; damage is recomputed, not served."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from core.model import features as features_module
from tasks.augment import augment
from schemas.config import AugmentConfig, DataConfig, SplitConfig, TokenizeConfig
from tasks.embed import embed
from core.storage.feature_cache import FeatureCache, cache_root
from tasks.split import split
from tasks.tokenization import tokenize
from tasks.validate import validate
from tests.conftest import first_per_label, write_csv


def _tokenized(workdir: Path, rows, backbone, name: str, max_length: int = 0):
    path = write_csv(workdir / f"{name}.csv", rows)
    validated = validate(DataConfig(path=path, conflicts="drop", min_per_class=1), workdir)
    splits = split(validated, SplitConfig(), 0, 1, workdir)
    augmented = augment(splits, AugmentConfig(n_aug=0), 1, workdir)
    return tokenize(augmented, TokenizeConfig(max_length=max_length), backbone, workdir)


@pytest.fixture
def counted(monkeypatch):
    """Counts the sentences the backbone really runs on."""
    calls: list[int] = []
    real = features_module.run_bottom

    def counting(preset, sequences, frozen_blocks, batch_size=features_module.BATCH):
        calls.append(len(sequences))
        return real(preset, sequences, frozen_blocks, batch_size)

    monkeypatch.setattr(features_module, "run_bottom", counting)
    return calls


@pytest.mark.parametrize("unfreeze_top", [0, 2])
def test_appending_ten_percent_runs_the_backbone_on_the_new_rows_only(tmp_path, backbone, counted, unfreeze_top):
    base = first_per_label(30)
    grown = base + first_per_label(3, skip=30)  # 10 % more
    first = embed(_tokenized(tmp_path, base, backbone, "base", 128), backbone, unfreeze_top, tmp_path)
    again = embed(_tokenized(tmp_path, base, backbone, "base", 128), backbone, unfreeze_top, tmp_path)
    second = embed(_tokenized(tmp_path, grown, backbone, "grown", 128), backbone, unfreeze_top, tmp_path)
    assert counted == [90, 9]  # the repeat computed nothing: the backbone was not even called
    assert first.meta["backbone_runs"]["computed"] == 90 and again.meta["backbone_runs"]["reused"] == 90
    assert second.meta["backbone_runs"] == {"sentences": 99, "distinct": 99, "computed": 9, "reused": 90}
    old = pq.read_table(first.resolve(tmp_path)).to_pandas().set_index("row_id")
    new = pq.read_table(second.resolve(tmp_path)).to_pandas().set_index("row_id")
    np.testing.assert_array_equal(np.stack(old["embedding"]), np.stack(new.loc[old.index, "embedding"]))


def test_a_longer_chosen_length_keeps_untruncated_sentences_cached(tmp_path, backbone, counted):
    short = [{"text": r["text"], "label": r["label"]} for r in first_per_label(40) if len(r["text"]) < 140]
    long_rows = [{"text": " ".join([r["text"]] * 4), "label": r["label"]} for r in first_per_label(8, skip=60)]
    first_tok = _tokenized(tmp_path, short, backbone, "short")
    second_tok = _tokenized(tmp_path, short + long_rows, backbone, "long")
    assert second_tok.meta["sequence_length"] > first_tok.meta["sequence_length"]
    embed(first_tok, backbone, 0, tmp_path)
    embed(second_tok, backbone, 0, tmp_path)
    truncated_before = first_tok.meta["truncated_rows"]
    assert counted[1] <= len(long_rows) + truncated_before


def test_a_damaged_segment_is_set_aside_and_recomputed(tmp_path, backbone, counted):
    tokenized = _tokenized(tmp_path, first_per_label(10), backbone, "d")
    first = embed(tokenized, backbone, 0, tmp_path)
    (segment,) = (cache_root(tmp_path)).rglob("*.parquet")
    segment.write_bytes(segment.read_bytes()[: segment.stat().st_size // 2])
    (tmp_path / "artifacts" / "embed").rename(tmp_path / "old-embed")
    second = embed(tokenized, backbone, 0, tmp_path)
    assert counted == [30, 30]
    assert list(cache_root(tmp_path).rglob("*.corrupt"))
    assert second.sha256 == first.sha256  # recomputed, bit for bit


def test_cache_round_trips_float16_hidden_states(tmp_path):
    cache = FeatureCache(tmp_path, "f" * 16, "hidden-frozen4")
    entries = {"a" * 32: np.random.default_rng(0).normal(size=(7, 384)).astype(np.float16),
               "b" * 32: np.ones((3, 384), np.float16)}
    cache.put(entries)
    got = cache.get({"a" * 32, "b" * 32, "c" * 32})
    assert set(got) == {"a" * 32, "b" * 32}
    np.testing.assert_array_equal(got["a" * 32], entries["a" * 32])
