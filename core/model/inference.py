"""Batched inference, in one place: rows in any order go in, results come back in *input row order*.

Every path that scores text or features goes through `predict_in_order`: evaluation (stored features),
the gate (the champion on the same stored features, or on token ids), batch prediction, the embed step
(the frozen bottom), and the benchmarks. It groups rows of similar length into a batch so the model never
computes on padding it does not need, and writes each batch's output to exactly the rows that went into
that batch. Training's datasets (which reorder their batches every epoch) are never used for inference:
an earlier version scored the test split through the training dataset and gave two batches each other's
predictions (3.5 points of accuracy lost on paper, and a gate that could not promote an equal model).

The padding invariant this relies on: with the padding masked, a row's output does not depend on how
far its batch was padded, so a row scored in a batch equals the row scored alone (tests check both).
Nothing here imports TensorFlow at module level.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
BATCH = 64
PAD_MULTIPLE = 8


def length_batches(lengths: Sequence[int] | np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row indices (int64 arrays) grouped into batches of similar length, shortest first; every row once."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


def padded_length(longest: int, multiple: int = PAD_MULTIPLE) -> int:
    """`longest` rounded up to a multiple of `multiple` (fewer distinct shapes, fewer graph retraces)."""
    return -(-max(int(longest), 1) // multiple) * multiple


def pad_batch(sequences: Sequence[Sequence[int]], multiple: int = PAD_MULTIPLE, pad_id: int = 0) -> dict[str, np.ndarray]:
    """Token id lists -> {"token_ids": int32 (b, L), "padding_mask": int32 (b, L)}, right-padded to the longest
    (rounded up to `multiple`); the mask is 1 on real tokens."""
    lengths = np.array([len(s) for s in sequences])
    length = padded_length(lengths.max(), multiple)
    ids = np.full((len(sequences), length), pad_id, dtype=np.int32)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = seq
    return {"token_ids": ids, "padding_mask": (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)}


def pad_hidden(hidden: Sequence[np.ndarray], multiple: int = PAD_MULTIPLE) -> dict[str, np.ndarray]:
    """Token-level hidden states, each (n_tokens, d) of any float dtype -> {"hidden": float32 (b, L, d),
    "padding_mask": int32 (b, L)}, zero-padded to the longest (rounded up to `multiple`)."""
    lengths = np.array([len(h) for h in hidden])
    length = padded_length(lengths.max(), multiple)
    x = np.zeros((len(hidden), length, hidden[0].shape[1]), dtype=np.float32)
    for i, h in enumerate(hidden):
        x[i, : len(h)] = h
    return {"hidden": x, "padding_mask": (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)}


Output = np.ndarray | dict[str, np.ndarray]


def predict_in_order(run_batch: Callable[[np.ndarray], Output], lengths: Sequence[int] | np.ndarray,
                     batch_size: int = BATCH, progress: str | None = None,
                     after_batch: Callable[[], None] | None = None) -> Output:
    """Apply `run_batch` to length-grouped batches of rows and return its outputs in input row order.

    `run_batch(rows)` gets the int64 indices of one batch's rows (into the caller's data) and returns an
    array whose first axis matches `rows` (or a dict of such arrays; an object array holds ragged outputs).
    The result has one entry per row of `lengths`, entry i being what `run_batch` returned for row i.
    `progress` names the step in the progress log lines (batches, sentences, sentences per second);
    `after_batch` runs after each batch (a fault point, say). With no rows it returns an empty array.
    Raises `ValueError` if a batch's output does not have one entry per row.
    """
    n = len(lengths)
    batches = length_batches(lengths, batch_size)
    out: dict[str, np.ndarray] | None = None
    single = False
    started, done = time.perf_counter(), 0
    for number, rows in enumerate(batches, start=1):
        result = run_batch(rows)
        if not isinstance(result, dict):
            single, result = True, {"": result}
        if out is None:
            out = {key: _allocate(np.asarray(value) if value.dtype != object else value, n)
                   for key, value in result.items()}
        for key, value in result.items():
            if len(value) != len(rows):
                raise ValueError(f"run_batch returned {len(value)} rows of {key or 'output'!r} for a batch of "
                                 f"{len(rows)}")
            out[key][rows] = value
        done += len(rows)
        if after_batch is not None:
            after_batch()
        if progress and (number % 20 == 0 or number == len(batches)):
            log.info("%s: batch %d/%d, %d/%d sentences, %.0f sentences/s", progress, number, len(batches), done, n,
                     done / max(time.perf_counter() - started, 1e-9))
    if out is None:  # no rows, so no output to take shapes from: callers with rows of their own never see this
        return np.zeros((0,))
    return out[""] if single else out


def _allocate(first: Any, n: int) -> np.ndarray:
    if first.dtype == object:
        return np.empty(n, dtype=object)
    return np.zeros((n, *first.shape[1:]), dtype=first.dtype)


def forward(model):
    """`model`'s inference pass as one TensorFlow graph with every batch and sequence dimension unknown, called
    with numpy inputs and returning numpy outputs (an array, or a dict of arrays for a dict-output model).

    Why not `model.predict_on_batch`: it traces a graph for the first batch's exact shape and a relaxed one
    once shapes vary, and the two can differ in the last bits of float32; a batch then scored first in one
    process and third in another (a Dask shard against the threads runner) got other features. One graph for
    every shape makes a row's output independent of what ran before it.
    """
    import tensorflow as tf

    structure = model.input
    if isinstance(structure, (list, tuple)) and len(structure) == 1:  # one input given as a list: take it bare
        structure = structure[0]
    spec = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), structure)
    graph = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    return lambda batch: tf.nest.map_structure(lambda t: t.numpy(), graph(batch))


def predict_token_ids(model, sequences: Sequence[Sequence[int]], batch_size: int = BATCH,
                      progress: str | None = None, run: Callable | None = None) -> np.ndarray:
    """Class probabilities, float64 (n, k) in input order, of a whole classifier (token ids in, as saved in
    `model.keras`) for `[CLS] ... [SEP]` id lists, each row renormalised to sum to 1 (float32 softmax sums
    drift by ~1e-7). `run` is `forward(model)` when the caller scores many times (one graph, traced once)."""
    k = int(model.output_shape[-1])
    if not len(sequences):
        return np.zeros((0, k))
    run = run or forward(model)
    proba = predict_in_order(lambda rows: run(pad_batch([sequences[i] for i in rows])),
                             [len(s) for s in sequences], batch_size, progress).astype(np.float64)
    return proba / proba.sum(axis=1, keepdims=True)


def predict_stored(classifier, embeddings: np.ndarray, hidden: Sequence[np.ndarray] | None, frozen_blocks: int,
                   batch_size: int = BATCH) -> np.ndarray:
    """Class probabilities, float64 (n, k) in input order, of a saved classifier applied to stored features:
    only its trainable part runs (the blocks above its `frozen_blocks` bottom ones, and the head), from what
    the frozen bottom stored.

    `embeddings` is (n, hidden_dim) float32 (used when `frozen_blocks` is the backbone's depth: nothing
    unfrozen); `hidden` holds each row's output of the `frozen_blocks` bottom blocks, (n_tokens, hidden_dim),
    when blocks are unfrozen. Equals the whole classifier on the token ids to 2e-3 (the stored inputs are
    float16). Raises `ValueError` for an ensemble whose members trained blocks below `frozen_blocks`.
    """
    from core.model.graph import stored_part

    part, takes_hidden = stored_part(classifier, frozen_blocks)  # a single model's head or top, or an ensemble's
    k = int(part.output_shape[-1])
    if not takes_hidden:
        if not len(embeddings):
            return np.zeros((0, k))
        run = forward(part)
        proba = predict_in_order(lambda rows: run(embeddings[rows]), np.zeros(len(embeddings)), 1024).astype(np.float64)
    else:
        if not hidden:
            return np.zeros((0, k))
        run = forward(part)
        proba = predict_in_order(lambda rows: run(pad_hidden([hidden[i] for i in rows])),
                                 [len(h) for h in hidden], batch_size).astype(np.float64)
    return proba / proba.sum(axis=1, keepdims=True)
