"""Keras layers of the classifier, registered so a saved model loads with `safe_mode=True` (no lambdas)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="retrain")
class MaskedMeanPooling(keras.layers.Layer):
    """Mean of the token vectors where `padding_mask` is 1: a sentence embedding blind to its padding."""

    def call(self, sequence, padding_mask):
        mask = ops.expand_dims(ops.cast(padding_mask, sequence.dtype), -1)
        total = ops.sum(sequence * mask, axis=1)
        count = ops.maximum(ops.sum(mask, axis=1), ops.cast(1e-9, sequence.dtype))
        return total / count

    def compute_output_shape(self, sequence_shape, padding_mask_shape=None):
        return (sequence_shape[0], sequence_shape[2])


@keras.saving.register_keras_serializable(package="retrain")
class L2Normalize(keras.layers.Layer):
    """Scale each vector to unit length, as sentence-transformers' Normalize module does for this model."""

    def call(self, inputs):
        return inputs / ops.maximum(ops.sqrt(ops.sum(ops.square(inputs), axis=-1, keepdims=True)), 1e-12)


@keras.saving.register_keras_serializable(package="retrain")
class ZerosLike(keras.layers.Layer):
    """Segment ids for single-sentence input: zeros shaped like the token ids."""

    def call(self, token_ids):
        return ops.zeros_like(token_ids)


# MPNet's layers and backbone register themselves when imported: a saved classifier on either body loads in safe
# mode wherever this module is imported first.
import core.model.mpnet  # noqa: E402,F401
