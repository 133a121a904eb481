"""Contrastive body tuning on sentence pairs, as SetFit does it (the few-shot regime's first phase).

SetFit (Tunstall et al. 2022, "Efficient Few-Shot Learning Without Prompts", arXiv:2209.11055; the `setfit`
library's `ContrastiveDataset` and sentence-transformers' `CosineSimilarityLoss`) tunes a sentence encoder
before any classifier sees it: pairs of training sentences with the same label get the target cosine
similarity 1, pairs with different labels 0, and the loss is the squared error between the two sentences'
cosine similarity and that target. With a few rows per class this gives the encoder n^2 examples to learn
from where a classifier has n, and pulls each class together in the embedding space a linear head then
separates. Here only the trainable top blocks are tuned, fed the stored output of the frozen bottom
(`tasks.embed`), so a pair costs two passes through the top blocks, never the whole backbone.

What differs from the library, and why:
- a sentence is never paired with itself (the library's pairs include (i, i)): its cosine is 1 whatever the
  weights, so such a pair has no gradient and only dilutes the batch;
- pairs are drawn from `seed` (the library shuffles with a fixed 42), so a seed ensemble's members see
  different pairs.
"""

from __future__ import annotations

import keras
import numpy as np

from core.model.inference import pad_hidden


def contrastive_pairs(labels: np.ndarray, iterations: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Balanced same/different-label pairs of the rows of `labels` (int, n).

    Returns (first, second, target): int64 row indices (m,) each and float32 targets (m,), 1.0 for a pair of
    the same label, 0.0 otherwise, positives and negatives alternating. As SetFit's `num_iterations` does:
    `iterations * n` positive and `iterations * n` negative pairs, each kind cycled through all its distinct
    pairs (i < j) in a random order from `seed` until the count is reached. A kind with no pair at all (one row
    per class: no positive; one class: no negative) is left out.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    first, second = np.triu_indices(len(labels), k=1)
    same = labels[first] == labels[second]
    count = iterations * len(labels)
    kinds = []
    for mask, target in ((same, 1.0), (~same, 0.0)):
        pool = np.flatnonzero(mask)
        if len(pool) == 0:
            continue
        order = pool[rng.permutation(len(pool))]
        picked = order[np.arange(count) % len(order)]
        kinds.append((first[picked], second[picked], np.full(count, target, np.float32)))
    if not kinds:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    # interleave: positive, negative, positive, ... (the library's zip_longest order)
    stacked = [np.stack(parts, axis=1).reshape(-1) for parts in zip(*kinds)]
    return stacked[0].astype(np.int64), stacked[1].astype(np.int64), stacked[2].astype(np.float32)


class PairBatches:
    """Batches of sentence pairs for `build_siamese`: each item is ({"hidden_a", "mask_a", "hidden_b",
    "mask_b"}, targets (b, 1) float32), both sides zero-padded to their own longest row (`pad_hidden`).

    `hidden` is the list of per-row stored token states (n_tokens, d); the pairs (`contrastive_pairs`) are cut
    into batches of `batch_size` in a shuffled order drawn anew from `seed`'s generator each epoch.
    `dataset()` is a tf.data pipeline with every batch and sequence dimension unknown (a PyDataset would fix
    any dimension its first two batches happen to agree on)."""

    def __init__(self, hidden, first: np.ndarray, second: np.ndarray, target: np.ndarray, batch_size: int, seed: int):
        self.hidden, self.first, self.second, self.target = hidden, first, second, target
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return -(-len(self.target) // self.batch_size)

    def batches(self):
        """One epoch of batches, in a new random order."""
        order = self.rng.permutation(len(self.target))
        for i in range(0, len(order), self.batch_size):
            rows = order[i: i + self.batch_size]
            a = pad_hidden([self.hidden[j] for j in self.first[rows]])
            b = pad_hidden([self.hidden[j] for j in self.second[rows]])
            yield ({"hidden_a": a["hidden"], "mask_a": a["padding_mask"], "hidden_b": b["hidden"],
                    "mask_b": b["padding_mask"]}, self.target[rows][:, None])

    def dataset(self):
        """The batches as a `tf.data.Dataset` (re-iterated, so re-shuffled, every epoch)."""
        import tensorflow as tf

        dim = self.hidden[0].shape[-1]
        states, mask = tf.TensorSpec((None, None, dim), tf.float32), tf.TensorSpec((None, None), tf.int32)
        signature = ({"hidden_a": states, "mask_a": mask, "hidden_b": states, "mask_b": mask},
                     tf.TensorSpec((None, 1), tf.float32))
        return tf.data.Dataset.from_generator(self.batches, output_signature=signature)


def build_siamese(encoder: keras.Model) -> keras.Model:
    """{"hidden_a", "mask_a", "hidden_b", "mask_b"} -> the cosine similarity (b, 1) of the two sides' sentence
    embeddings, both computed by the one shared `encoder` ({"hidden", "padding_mask"} -> embedding): trained
    with mean squared error against the pair targets, this is sentence-transformers' CosineSimilarityLoss."""
    dim = encoder.inputs[0].shape[-1]
    inputs = {"hidden_a": keras.Input(shape=(None, dim), name="hidden_a"),
              "mask_a": keras.Input(shape=(None,), dtype="int32", name="mask_a"),
              "hidden_b": keras.Input(shape=(None, dim), name="hidden_b"),
              "mask_b": keras.Input(shape=(None,), dtype="int32", name="mask_b")}
    a = encoder({"hidden": inputs["hidden_a"], "padding_mask": inputs["mask_a"]})
    b = encoder({"hidden": inputs["hidden_b"], "padding_mask": inputs["mask_b"]})
    cosine = keras.layers.Dot(axes=1, normalize=True, dtype="float32", name="cosine")([a, b])
    return keras.Model(inputs, cosine, name="siamese")


def logistic_head_weights(coef: np.ndarray, intercept: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """A fitted scikit-learn LogisticRegression's (`coef_`, `intercept_`) as the kernel (d, k) and bias (k,) of a
    softmax Dense layer giving the same probabilities: multinomial models are already softmax(x W + b); a
    binary one's P(class 1) = sigmoid(z) = softmax([0, z])[1], so its single logit becomes the second column."""
    coef, intercept = np.asarray(coef, np.float32), np.asarray(intercept, np.float32)
    if n_labels == 2 and coef.shape[0] == 1:
        return (np.concatenate([np.zeros_like(coef), coef]).T.copy(),
                np.concatenate([np.zeros_like(intercept), intercept]))
    return coef.T.copy(), intercept.copy()
