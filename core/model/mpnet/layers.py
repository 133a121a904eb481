"""MPNet's layers in Keras 3: the padding-offset absolute positions, the shared relative-position bias and the
post-LN encoder block (Song et al. 2020, "MPNet: Masked and Permuted Pre-training for Language Understanding",
arXiv:2004.09297; the computation follows Hugging Face transformers' `models/mpnet/modeling_mpnet.py`:
`create_position_ids_from_input_ids`, `MPNetEncoder.compute_position_bias` / `relative_position_bucket`,
`MPNetSelfAttention`, `MPNetAttention`, `MPNetLayer`). Everything is `keras.ops`, so it runs on TensorFlow or JAX.
"""

from __future__ import annotations

import math

import keras
from keras import ops

PACKAGE = "retrain_mpnet"


def relative_position_bucket(relative_position, num_buckets: int = 32, max_distance: int = 128):
    """T5-style bucket (int32, same shape) of each relative position `memory - context` (int tensor).

    Half the buckets for each direction; within a direction, distances below a quarter of `num_buckets` get
    their own bucket and longer ones share logarithmically wider buckets up to `max_distance` (HF's
    `MPNetEncoder.relative_position_bucket`)."""
    n = -relative_position
    half = num_buckets // 2
    ret = ops.cast(n < 0, "int32") * half
    n = ops.abs(n)
    max_exact = half // 2
    # log(0) is never taken where it would matter (those cells are "small"); max(n, 1) keeps it finite
    scaled = ops.log(ops.cast(ops.maximum(n, 1), "float32") / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + ops.cast(scaled * (half - max_exact), "int32")  # truncation toward 0, as torch's .long()
    large = ops.minimum(large, half - 1)
    return ret + ops.where(n < max_exact, ops.cast(n, "int32"), large)


@keras.saving.register_keras_serializable(package=PACKAGE)
class PaddingOffsetPositionEmbedding(keras.layers.Layer):
    """Learned absolute positions numbered as RoBERTa and MPNet number them: the i-th real token (1-based) gets
    position `padding_idx + i`, padding gets `padding_idx` (HF's `create_position_ids_from_input_ids`, but read
    from the padding mask rather than from the pad id, so the ids written at padded places do not matter).
    Call with `padding_mask` int (batch, length) -> (batch, length, hidden_dim)."""

    def __init__(self, max_positions: int, hidden_dim: int, padding_idx: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.max_positions, self.hidden_dim, self.padding_idx = max_positions, hidden_dim, padding_idx
        self.embedding = keras.layers.Embedding(max_positions, hidden_dim, dtype=self.dtype_policy,
                                                name="embeddings")

    def build(self, input_shape):
        self.embedding.build(input_shape)
        self.built = True

    def call(self, padding_mask):
        mask = ops.cast(padding_mask, "int32")
        return self.embedding(ops.cumsum(mask, axis=1) * mask + self.padding_idx)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.hidden_dim)

    def get_config(self):
        return {**super().get_config(), "max_positions": self.max_positions, "hidden_dim": self.hidden_dim,
                "padding_idx": self.padding_idx}


@keras.saving.register_keras_serializable(package=PACKAGE)
class RelativePositionBias(keras.layers.Layer):
    """The attention bias of every block, computed once per forward pass from the sequence length alone:
    hidden states (batch, length, d) -> (1, num_heads, length, length), entry [0, h, i, j] the learned scalar of
    head h for the bucket of `j - i` (HF's `MPNetEncoder.compute_position_bias` without `position_ids`). It does
    not depend on the tokens or the padding, so the bottom and the top of a split network each compute it from
    their own input's length and get the same values."""

    def __init__(self, num_heads: int, num_buckets: int = 32, max_distance: int = 128, **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.num_buckets, self.max_distance = num_heads, num_buckets, max_distance
        self.embedding = keras.layers.Embedding(num_buckets, num_heads, dtype=self.dtype_policy, name="embeddings")

    def build(self, input_shape):
        self.embedding.build((None, None))
        self.built = True

    def call(self, hidden):
        length = ops.shape(hidden)[1]
        positions = ops.arange(length, dtype="int32")
        buckets = relative_position_bucket(positions[None, :] - positions[:, None], self.num_buckets,
                                           self.max_distance)
        values = self.embedding(buckets)  # (length, length, heads)
        return ops.expand_dims(ops.transpose(values, (2, 0, 1)), 0)

    def compute_output_shape(self, input_shape):
        return (1, self.num_heads, input_shape[1], input_shape[1])

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "num_buckets": self.num_buckets,
                "max_distance": self.max_distance}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MPNetEncoderLayer(keras.layers.Layer):
    """One MPNet block, post-LN like BERT: `x = LN(x + Dropout(O(attention(x))))`, then
    `x = LN(x + Dropout(W2 GELU(W1 x)))` (exact erf GELU, HF's "gelu"), where the attention adds the shared
    relative-position bias to the scaled dot products before the padding mask and the softmax.

    Call: `block(x, padding_mask=mask, position_bias=bias)`, `x` (batch, length, hidden_dim), `mask` int
    (batch, length) 1 on real tokens, `bias` (1 or batch, num_heads, length, length) from `RelativePositionBias`.
    """

    def __init__(self, hidden_dim: int, num_heads: int, intermediate_dim: int, dropout: float = 0.1,
                 layer_norm_epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim, self.num_heads, self.intermediate_dim = hidden_dim, num_heads, intermediate_dim
        self.dropout, self.layer_norm_epsilon = dropout, layer_norm_epsilon
        self.head_dim = hidden_dim // num_heads
        dense = lambda units, name, **kw: keras.layers.Dense(units, name=name, dtype=self.dtype_policy, **kw)  # noqa: E731
        self.query, self.key, self.value = dense(hidden_dim, "query"), dense(hidden_dim, "key"), dense(hidden_dim, "value")
        self.attention_output = dense(hidden_dim, "attention_output")
        self.attention_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy, name="attention_dropout")
        self.attention_output_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy,
                                                             name="attention_output_dropout")
        self.attention_norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=self.dtype_policy,
                                                              name="attention_layer_norm")
        # Keras' "gelu" is the exact erf form (approximate=False), HF's "gelu"
        self.intermediate = dense(intermediate_dim, "intermediate", activation="gelu")
        self.output_dense = dense(hidden_dim, "output")
        self.output_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy, name="output_dropout")
        self.output_norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=self.dtype_policy,
                                                           name="output_layer_norm")
        self.softmax = keras.layers.Softmax(axis=-1, dtype="float32", name="attention_softmax")

    def build(self, input_shape):
        for layer in (self.query, self.key, self.value, self.intermediate):
            layer.build(input_shape)
        self.attention_output.build(input_shape)
        self.attention_norm.build(input_shape)
        self.output_dense.build((*input_shape[:-1], self.intermediate_dim))
        self.output_norm.build(input_shape)
        self.built = True

    def _heads(self, x):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        return ops.transpose(ops.reshape(x, (batch, length, self.num_heads, self.head_dim)), (0, 2, 1, 3))

    def call(self, x, padding_mask=None, position_bias=None, training=None):
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / ops.cast(math.sqrt(self.head_dim), q.dtype)
        if position_bias is not None:
            scores = scores + ops.cast(position_bias, scores.dtype)
        mask = None if padding_mask is None else ops.cast(padding_mask, "bool")[:, None, None, :]
        probs = ops.cast(self.softmax(ops.cast(scores, "float32"), mask=mask), v.dtype)
        context = ops.matmul(self.attention_dropout(probs, training=training), v)
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (batch, length, self.hidden_dim))
        attended = self.attention_output_dropout(self.attention_output(context), training=training)
        x = self.attention_norm(x + attended)
        ffn = self.output_dropout(self.output_dense(self.intermediate(x)), training=training)
        return self.output_norm(x + ffn)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim, "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim, "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon}
