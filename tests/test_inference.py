"""Batched inference returns rows in input order, whatever the lengths, the batch size and the row order.

The bug this guards against: the evaluation once scored the test split through the training dataset, whose
batch order is reshuffled, and wrote each batch's output onto another batch's rows. The property tests run
a padding-aware model on random inputs; the real-model tests run the saved classifier's two inference paths
(stored features, whole model on token ids) over many batches of mixed lengths in scrambled order.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.model.backbone import encode_for_model, fresh_backbone, load_backbone
from schemas.config import TrainConfig
from core.model.inference import length_batches, pad_batch, pad_hidden, predict_in_order, predict_stored, predict_token_ids
from core.model.graph import build_bottom, build_classifier, build_head
from tests.conftest import first_per_label

VOCAB = np.random.default_rng(0).normal(size=(50, 4))


def masked_mean_model(batch: dict[str, np.ndarray]) -> np.ndarray:
    """A padding-aware stand-in for a network: tanh of the masked mean of per-token vectors, (b, 4)."""
    vectors = VOCAB[batch["token_ids"]] * batch["padding_mask"][..., None]
    return np.tanh(vectors.sum(axis=1) / batch["padding_mask"].sum(axis=1, keepdims=True))


rows_strategy = st.lists(st.lists(st.integers(1, 49), min_size=1, max_size=30), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(sequences=rows_strategy, batch_size=st.integers(1, 17), seed=st.integers(0, 2**31 - 1))
def test_each_output_row_is_the_model_on_that_row_alone(sequences, batch_size, seed):
    order = np.random.default_rng(seed).permutation(len(sequences))
    shuffled = [sequences[i] for i in order]
    out = predict_in_order(lambda rows: masked_mean_model(pad_batch([shuffled[i] for i in rows])),
                           [len(s) for s in shuffled], batch_size)
    alone = np.concatenate([masked_mean_model(pad_batch([s], multiple=1)) for s in shuffled])
    np.testing.assert_allclose(out, alone, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(sequences=rows_strategy, batch_size=st.integers(1, 9))
def test_dict_and_ragged_outputs_come_back_in_row_order(sequences, batch_size):
    hidden = [VOCAB[np.array(s)].astype(np.float32) for s in sequences]

    def run_batch(rows):
        padded = pad_hidden([hidden[i] for i in rows])
        ragged = np.empty(len(rows), dtype=object)
        for j, i in enumerate(rows):
            ragged[j] = padded["hidden"][j, : len(hidden[i])]
        return {"sum": padded["hidden"].sum(axis=1), "tokens": ragged, "n": padded["padding_mask"].sum(axis=1)}

    out = predict_in_order(run_batch, [len(h) for h in hidden], batch_size)
    np.testing.assert_array_equal(out["n"], [len(s) for s in sequences])
    np.testing.assert_allclose(out["sum"], np.stack([h.sum(axis=0) for h in hidden]), rtol=1e-5)
    for got, want in zip(out["tokens"], hidden):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_batches_cover_every_row_once_and_a_wrong_sized_output_is_refused():
    lengths = np.random.default_rng(3).integers(1, 40, 101)
    batches = length_batches(lengths, 8)
    assert sorted(np.concatenate(batches).tolist()) == list(range(101))
    assert all(lengths[b].max() <= lengths[c].min() for b, c in zip(batches, batches[1:]))
    with pytest.raises(ValueError, match="returned 1 rows"):
        predict_in_order(lambda rows: np.zeros((1, 2)), lengths, 8)


# ------------------------------------------------------------------------------------------ the real model

@pytest.fixture(scope="module")
def sentences(backbone):
    """30 real sentences of very different lengths, in scrambled order, packed as the model takes them."""
    texts = [r["text"] for r in first_per_label(10)]
    order = np.random.default_rng(7).permutation(len(texts))
    texts = [texts[i] for i in order]
    return texts, encode_for_model(backbone.path, texts, 64)


def _confident_classifier(backbone, seed: int):
    """A classifier with a random but decisive head, so rows differ clearly in their probabilities."""
    keras.utils.set_random_seed(seed)
    head = build_head(3, TrainConfig(dropout=0.0), backbone.architecture.hidden_dim)
    kernel, bias = head.get_layer("head_output").get_weights()
    head.get_layer("head_output").set_weights([kernel * 40, bias])
    return build_classifier(fresh_backbone(backbone.path), head)


@pytest.mark.parametrize("unfreeze_top", [0, 2])
def test_stored_features_and_whole_model_agree_row_by_row_over_many_batches(backbone, sentences, unfreeze_top):
    """Both inference paths, batches of 4 over 30 mixed-length rows, against each row scored alone."""
    texts, sequences = sentences
    frozen_blocks = backbone.frozen_blocks(unfreeze_top)
    classifier = _confident_classifier(backbone, seed=unfreeze_top)
    bottom = build_bottom(load_backbone(backbone.path), frozen_blocks)
    stored = [bottom.predict_on_batch(pad_batch([s], multiple=1)) for s in sequences]
    embeddings = np.concatenate([o["embedding"] for o in stored])
    hidden = ([o["hidden"][0].astype(np.float16) for o in stored] if unfreeze_top else None)  # as stored on disk
    alone = np.concatenate([classifier.predict_on_batch(pad_batch([s], multiple=1)) for s in sequences])

    whole = predict_token_ids(classifier, sequences, batch_size=4)
    piecewise = predict_stored(classifier, embeddings, hidden, frozen_blocks, batch_size=4)

    np.testing.assert_allclose(whole, alone, atol=1e-5)
    np.testing.assert_allclose(piecewise, alone, atol=2e-3)
    # The rows really differ, so a swap of two batches could not pass unnoticed.
    spread = np.abs(alone[:, None, :] - alone[None, :, :]).max(axis=2)
    assert np.median(spread[np.triu_indices(len(alone), 1)]) > 0.05
