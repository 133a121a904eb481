"""Step 5a, embed: run the frozen part of the backbone once per sentence, ever, and store what it produces.

Whatever is frozen gives the same output for a sentence in every epoch, so it is computed here, once:
- always, the pooled sentence embedding of the whole frozen backbone (the head trains on it first);
- with `train.unfreeze_top = n > 0`, also the token-level output of the `frozen_blocks = blocks - n` frozen
  bottom blocks (float16), from which the top n blocks train (`blocks`: the backbone's own count).
Before computing, each distinct sentence is looked up in the workdir's feature cache (`core.storage.feature_cache`),
shared by all runs and datasets: a re-train on 10 % more rows runs the backbone on those rows only. What is
computed runs in length-grouped batches, so the backbone never pays for padding it does not need (at 32
tokens it is about 3x faster than at 64).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.config import ConfigError
from schemas.tables import FEATURES_SCHEMA
from core.model.backbone import Backbone
from core.model.features import cached_features, planned_order
from core.storage.caching import step_task
from core.storage.feature_cache import sentence_key
from core.storage.artifacts import ArtifactRef, read_parquet, store_json, write_parquet
from core.run.sharding import Shard, ShardedStep

log = logging.getLogger(__name__)


def frozen_blocks_for(tokenized: ArtifactRef, backbone: Backbone, unfreeze_top: int) -> int:
    """The number of bottom blocks kept frozen (the backbone's blocks - `unfreeze_top`), after checking the
    settings fit this backbone. Raises `ConfigError` naming `train.unfreeze_top` when it is above the
    backbone's number of blocks, or `tokenize.max_length` when the tokenized sequences are longer than the
    backbone's positions (both before the backbone runs)."""
    length, positions = int(tokenized.meta["sequence_length"]), backbone.architecture.max_positions
    if length > positions:
        raise ConfigError(f"the sequence length {length} is longer than the backbone {backbone.path} takes "
                          f"({positions} positions): set tokenize.max_length to {positions} or less")
    return backbone.frozen_blocks(unfreeze_top)


def embed_shard(tokenized: ArtifactRef, backbone: Backbone, unfreeze_top: int, shard: Shard,
                workdir: Path) -> ArtifactRef:
    """One shard of embed on the Dask runner: make sure the feature cache holds the sentences of a contiguous
    range of the planned batches (`planned_order`), running the backbone on those it lacks. Returns a small
    JSON artifact with the shard's counts."""
    batches = planned_order(read_parquet(tokenized, workdir, columns=["token_ids"]).column("token_ids").to_pylist())
    start, stop = shard.bounds(len(batches))
    mine = [s for batch in batches[start:stop] for s in batch]  # length order: run_bottom keeps the batches
    _, _, counts = cached_features(backbone, mine, frozen_blocks_for(tokenized, backbone, unfreeze_top), workdir)
    return store_json(workdir, "embed-shards", counts, rows=len(mine), meta={"backbone_runs": counts})


def embed_merge(shards: list[ArtifactRef], tokenized: ArtifactRef, backbone: Backbone, unfreeze_top: int,
                workdir: Path) -> ArtifactRef:
    """After the shards (Dask runner) filled the feature cache: every row's features read from it, written by
    `write_features`; `meta["backbone_runs"]` sums the shards' counts of sentences computed and reused."""
    table = read_parquet(tokenized, workdir)
    frozen_blocks = frozen_blocks_for(tokenized, backbone, unfreeze_top)
    embeddings, hidden, _ = cached_features(backbone, table.column("token_ids").to_pylist(), frozen_blocks, workdir)
    counts = {key: sum(ref.meta["backbone_runs"][key] for ref in shards) for key in ("distinct", "computed", "reused")}
    return write_features(table, embeddings, hidden, tokenized, backbone, unfreeze_top, frozen_blocks, counts,
                          len(shards), workdir)


def embed(tokenized: ArtifactRef, backbone: Backbone, unfreeze_top: int, workdir: Path) -> ArtifactRef:
    """The frozen features of every tokenized row in one pass (the threads runner): the backbone runs, in the
    planned batches, on the distinct sentences the feature cache lacks; byte-identical to the Dask runner's
    shards and merge."""
    table = read_parquet(tokenized, workdir)
    frozen_blocks = frozen_blocks_for(tokenized, backbone, unfreeze_top)
    planned = [s for batch in planned_order(table.column("token_ids").to_pylist()) for s in batch]
    embeddings, hidden, counts = cached_features(backbone, planned, frozen_blocks, workdir)
    position = {sentence_key(s): i for i, s in enumerate(planned)}
    rows = [position[sentence_key(s)] for s in table.column("token_ids").to_pylist()]
    return write_features(table, embeddings[rows], [hidden[i] for i in rows] if hidden is not None else None,
                          tokenized, backbone, unfreeze_top, frozen_blocks, counts, 1, workdir)


def write_features(table: pa.Table, embeddings: np.ndarray, hidden: list[np.ndarray] | None, tokenized: ArtifactRef,
                   backbone: Backbone, unfreeze_top: int, frozen_blocks: int, counts: dict[str, int], shards: int,
                   workdir: Path) -> ArtifactRef:
    """Write the features Parquet (`schemas.tables.FEATURES_SCHEMA`): `table` the tokenized rows, `embeddings`
    (rows, hidden_dim) float32 and `hidden` (one (n_tokens, hidden_dim) float16 array per row, or None with the
    backbone wholly frozen) in its row order; `counts` the backbone's runs (distinct, computed, reused)."""
    out = pa.Table.from_pydict({
        "row_id": table.column("row_id"),
        "split": table.column("split"),
        "label_id": table.column("label_id"),
        "is_augmented": table.column("is_augmented"),
        "embedding": pa.array(list(embeddings), pa.list_(pa.float32())),
        "n_tokens": table.column("n_tokens"),
        "hidden": pa.array([h.tobytes() for h in hidden] if hidden else [None] * table.num_rows, pa.binary()),
    }, schema=FEATURES_SCHEMA)
    meta = {"labels": tokenized.meta["labels"], "sequence_length": tokenized.meta["sequence_length"],
            "backbone_sha256": backbone.sha256, "blocks": backbone.architecture.blocks,
            "hidden_dim": backbone.architecture.hidden_dim, "unfreeze_top": unfreeze_top,
            "frozen_blocks": frozen_blocks, "rows_in": table.num_rows, "rows_out": table.num_rows,
            "backbone_runs": {"sentences": table.num_rows, **{k: counts[k] for k in ("distinct", "computed", "reused")}},
            "shards": shards}
    return write_parquet(workdir, "embed", out, meta)


embed_task = step_task(embed)
embed_shard_task = step_task(embed_shard)
embed_merge_task = step_task(embed_merge)
embed_sharded = ShardedStep(embed_task, embed_shard_task, embed_merge_task)
