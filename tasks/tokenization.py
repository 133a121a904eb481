"""Step 4, tokenize: WordPiece ids of every row, written as Parquet with the figures that describe them.

The sequence length is read from the data (a percentile of the token counts, rounded up to a multiple of 8)
unless `tokenize.max_length` is set, so short-sentence datasets never pay for 512-token padding. Ids are
stored unpadded, `[CLS] ... [SEP]`, already truncated: what the backbone sees, and nothing more.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.tables import TOKENIZED_SCHEMA, TokenizedTable
from core.storage.caching import step_task
from core.model.backbone import MAX_POSITIONS, Backbone, encode_texts, pack, vocab_hash
from schemas.config import TokenizeConfig
from core.storage.artifacts import ArtifactRef, read_parquet, write_parquet
from core.run.sharding import WHOLE, Shard, ShardedStep

log = logging.getLogger(__name__)
BATCH = 4096


def choose_length(counts: np.ndarray, cfg: TokenizeConfig) -> int:
    """The sequence length: `cfg.max_length` if set, else the chosen percentile of `counts` rounded up to 8."""
    if cfg.max_length:
        return cfg.max_length
    if len(counts) == 0:
        return 8
    length = int(math.ceil(np.percentile(counts, cfg.length_percentile) / 8) * 8)
    return int(min(max(length, 8), MAX_POSITIONS))


def wordpiece_ids(texts: list[str], backbone: Backbone, shard: Shard = WHOLE) -> list[list[int]]:
    """WordPiece ids (no special tokens, untruncated) of `texts`, which are `shard`'s rows (for the progress log)."""
    ids: list[list[int]] = []
    for begin in range(0, len(texts), BATCH):
        ids.extend(encode_texts(backbone.path, texts[begin:begin + BATCH]))
        log.info("tokenize: %d/%d sentences of shard %d/%d", min(begin + BATCH, len(texts)), len(texts),
                 shard.index + 1, shard.count)
    return ids


def tokenize_shard(augmented: ArtifactRef, cfg: TokenizeConfig, backbone: Backbone, shard: Shard,
                   workdir: Path) -> ArtifactRef:
    """One shard of tokenize on the Dask runner: the WordPiece ids of its rows, written as `row_id, ids`."""
    table = read_parquet(augmented, workdir, columns=["row_id", "text"])
    start, stop = shard.bounds(table.num_rows)
    ids = wordpiece_ids(table.column("text").slice(start, stop - start).to_pylist(), backbone, shard)
    out = pa.table({"row_id": table.column("row_id").slice(start, stop - start),
                    "ids": pa.array(ids, pa.list_(pa.int32()))})
    return write_parquet(workdir, "tokenize-shards", out, {"rows_in": stop - start})


def tokenize_merge(shards: list[ArtifactRef], augmented: ArtifactRef, cfg: TokenizeConfig, backbone: Backbone,
                   workdir: Path) -> ArtifactRef:
    """Join the shards' ids (Dask runner) in row order and write the step's output (`write_tokenized`)."""
    ids = [x for ref in shards for x in read_parquet(ref, workdir).column("ids").to_pylist()]
    return write_tokenized(read_parquet(augmented, workdir), ids, augmented, cfg, backbone, workdir, len(shards))


def write_tokenized(table: pa.Table, ids: list[list[int]], augmented: ArtifactRef, cfg: TokenizeConfig,
                    backbone: Backbone, workdir: Path, shards: int = 1) -> ArtifactRef:
    """Choose the sequence length from every row's token count, truncate, and write the tokenized Parquet.

    `table` is the augmented table, `ids` its rows' WordPiece ids in row order. `meta` (and the file's Parquet
    metadata) record the vocabulary hash, the sequence length, the label order, and how many sentences were
    truncated.
    """
    full = np.array([len(x) + 2 for x in ids], dtype=np.int64)
    length = choose_length(full, cfg)
    token_ids = pack(ids, length, backbone.path)
    truncated = full > length

    labels = list(augmented.meta["labels"])
    label_index = {label: i for i, label in enumerate(labels)}
    label_ids = [label_index[label] for label in table.column("label").to_pylist()]
    meta = {
        "labels": labels,
        "sequence_length": length,
        "vocab_sha256": vocab_hash(backbone.path),
        "truncated_rows": int(truncated.sum()),
        "truncated_share": float(truncated.mean()) if len(truncated) else 0.0,
        "token_count_p50": float(np.percentile(full, 50)) if len(full) else 0.0,
        "token_count_max": int(full.max()) if len(full) else 0,
        "rows_in": table.num_rows,
        "rows_out": table.num_rows,
    }
    out = pa.Table.from_pydict({
        "row_id": table.column("row_id"),
        "split": table.column("split"),
        "label": table.column("label"),
        "label_id": pa.array(label_ids, pa.int32()),
        "token_ids": pa.array(token_ids, pa.list_(pa.int32())),
        "n_tokens": pa.array([len(x) for x in token_ids], pa.int32()),
        "truncated": pa.array(truncated.tolist(), pa.bool_()),
        "is_augmented": table.column("is_augmented"),
        "source_id": table.column("source_id"),
    }, schema=TOKENIZED_SCHEMA.with_metadata({f"retrain.{k}": str(v) for k, v in meta.items()}))
    TokenizedTable.validate(out.to_pandas())
    meta["shards"] = shards  # not in the file's metadata: the bytes must not depend on the sharding
    log.info("tokenize: sequence length %d, %d of %d sentences truncated (%.2f%%)", length,
             meta["truncated_rows"], table.num_rows, 100 * meta["truncated_share"])
    return write_parquet(workdir, "tokenize", out, meta)


def tokenize(augmented: ArtifactRef, cfg: TokenizeConfig, backbone: Backbone, workdir: Path) -> ArtifactRef:
    """Tokenize every row of the augmented table and write the tokenized Parquet: the whole table in one pass
    (the threads runner), byte-identical to the shards joined by `tokenize_merge`."""
    table = read_parquet(augmented, workdir)
    return write_tokenized(table, wordpiece_ids(table.column("text").to_pylist(), backbone), augmented, cfg,
                           backbone, workdir)


tokenize_task = step_task(tokenize)
tokenize_shard_task = step_task(tokenize_shard)
tokenize_merge_task = step_task(tokenize_merge)
tokenize_sharded = ShardedStep(tokenize_task, tokenize_shard_task, tokenize_merge_task)
