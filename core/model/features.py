"""The frozen part's output, computed once per sentence, ever: the feature cache's front door.

`cached_features` returns each sentence's pooled embedding (and, when blocks are left to train, the output of
the frozen bottom blocks), reading the workdir's feature cache (`core.storage.feature_cache`) and running the
backbone (`run_bottom`, length-grouped batches) on the missing sentences only. The embed step, the embed
command, suggest and pseudo_label share it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from core import faults
from core.model.backbone import Backbone, load_backbone
from core.storage.feature_cache import FeatureCache, sentence_key
from core.storage.versions import runtime_version
from core.text.identity import sha256_hex

log = logging.getLogger(__name__)


BATCH = 64


def run_bottom(preset: Path, sequences: list[list[int]], frozen_blocks: int,
               batch_size: int = BATCH) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """Pooled embeddings (n, hidden_dim) float32 and, if `frozen_blocks` is below the backbone's number of
    blocks, each sentence's output of the `frozen_blocks` bottom blocks (n_tokens, hidden_dim) float16 (else
    None), both in the order of `sequences` (length-grouped batches, `core.model.inference`)."""
    from core.model.inference import forward, pad_batch, predict_in_order
    from core.model.graph import build_bottom

    backbone = load_backbone(preset)
    embeddings = np.zeros((len(sequences), backbone.hidden_dim), dtype=np.float32)
    hidden: list[np.ndarray] | None = ([np.zeros((0, backbone.hidden_dim), np.float16)] * len(sequences)
                                       if frozen_blocks < backbone.num_layers else None)
    if not sequences:
        return embeddings, hidden
    bottom = forward(build_bottom(backbone, frozen_blocks))

    def run_batch(rows: np.ndarray) -> dict[str, np.ndarray]:
        out = bottom(pad_batch([sequences[i] for i in rows]))
        result = {"embedding": out["embedding"]}
        if hidden is not None:  # each row's real tokens only, as stored on disk
            result["hidden"] = np.empty(len(rows), dtype=object)
            for j, i in enumerate(rows):
                result["hidden"][j] = np.asarray(out["hidden"][j, : len(sequences[i])], dtype=np.float16)
        return result

    out = predict_in_order(run_batch, [len(s) for s in sequences], batch_size, progress="embed",
                           after_batch=lambda: faults.point("embed:batch"))
    return out["embedding"].astype(np.float32), (list(out["hidden"]) if hidden is not None else None)


def feature_source(backbone: Backbone) -> str:
    """The feature cache's name for what computes the features: the backbone's weights and the runtime
    (library versions, accelerator) of this step, so an upgraded TensorFlow never serves old numbers."""
    runtime = sha256_hex(json.dumps(runtime_version(__name__), sort_keys=True))
    return f"{backbone.sha256[:16]}-{runtime[:8]}"


def cached_features(backbone: Backbone, sequences: list[list[int]], frozen_blocks: int,
                    workdir: Path) -> tuple[np.ndarray, list[np.ndarray] | None, dict[str, int]]:
    """Embeddings (and outputs of the `frozen_blocks` bottom blocks, when blocks are left to train) of
    `sequences`: from the feature cache, computing only what is missing.

    Returns the arrays in the order of `sequences` and the counts: sentences, distinct, computed, reused.
    """
    keys = [sentence_key(s) for s in sequences]
    distinct = dict(zip(keys, sequences))
    source = feature_source(backbone)
    embedding_cache = FeatureCache(workdir, source, "embedding")
    shape = backbone.architecture
    hidden_cache = (FeatureCache(workdir, source, f"hidden-frozen{frozen_blocks}") if frozen_blocks < shape.blocks
                    else None)
    have_embedding = embedding_cache.get(set(distinct))
    have_hidden = hidden_cache.get(set(distinct)) if hidden_cache else {}
    missing = [k for k in distinct if k not in have_embedding or (hidden_cache and k not in have_hidden)]
    log.info("embed: %d sentences, %d distinct, %d in the feature cache, %d to compute", len(keys), len(distinct),
             len(distinct) - len(missing), len(missing))
    if missing:
        new_embeddings, new_hidden = run_bottom(backbone.path, [distinct[k] for k in missing], frozen_blocks)
        embedding_cache.put({k: new_embeddings[i][None, :] for i, k in enumerate(missing) if k not in have_embedding})
        have_embedding.update({k: new_embeddings[i][None, :] for i, k in enumerate(missing)})
        if hidden_cache is not None:
            hidden_cache.put({k: new_hidden[i] for i, k in enumerate(missing) if k not in have_hidden})
            have_hidden.update({k: new_hidden[i] for i, k in enumerate(missing)})
    embeddings = (np.stack([have_embedding[k][0] for k in keys]) if keys
                  else np.zeros((0, shape.hidden_dim), np.float32))
    hidden = [have_hidden[k] for k in keys] if hidden_cache is not None else None
    counts = {"sentences": len(keys), "distinct": len(distinct), "computed": len(missing),
              "reused": len(distinct) - len(missing)}
    return embeddings.astype(np.float32), hidden, counts


def planned_order(sequences: list[list[int]]) -> list[list[list[int]]]:
    """The distinct sentences of `sequences` in the batches the backbone runs them in, planned over the whole
    table (grouped by length, `core.model.inference.length_batches`).

    Each sentence is computed in the same batch, and so to the same bits, whichever runner ran it and however
    many shards there were: padding is masked, but a batch of another shape sums in another order, which moves
    float32 results in the last bits, enough to change a trained model."""
    from core.model.inference import length_batches

    distinct = list({sentence_key(s): s for s in sequences}.values())
    return [[distinct[i] for i in batch] for batch in length_batches([len(s) for s in distinct], BATCH)]
