"""`MPNetBackbone`: MPNet's encoder as a keras-hub `Backbone` (Song et al. 2020, arXiv:2004.09297; layout and
arithmetic as Hugging Face transformers' `MPNetModel` in `models/mpnet/modeling_mpnet.py`).

token ids + padding mask -> {"sequence_output": (batch, length, hidden_dim)}: word embeddings plus
padding-offset absolute positions, LayerNorm, dropout, then `num_layers` post-LN blocks that all add one
relative-position bias, computed once (`RelativePositionBias`). The layer names are the seams the rest of the
pipeline cuts along (`core.model.graph`): `token_embedding`, `position_embedding`, `embeddings_add`,
`embeddings_layer_norm`, `embeddings_dropout`, `relative_position_bias`, `transformer_layer_<i>`. HF's pooler
(tanh of the first token) is not ported: sentence-transformers' mean pooling does not use it.
"""

from __future__ import annotations

import keras
import keras_hub

from core.model.mpnet.layers import PACKAGE, MPNetEncoderLayer, PaddingOffsetPositionEmbedding, RelativePositionBias


@keras.saving.register_keras_serializable(package=PACKAGE)
class MPNetBackbone(keras_hub.models.Backbone):
    """MPNet encoder. Arguments are the Hugging Face config's: `vocabulary_size` (vocab_size), `num_layers`
    (num_hidden_layers), `num_heads`, `hidden_dim` (hidden_size), `intermediate_dim` (intermediate_size),
    `dropout` (hidden and attention dropout), `max_sequence_length` (max_position_embeddings, 514: 512 tokens plus
    the padding offset), `num_buckets` (relative_attention_num_buckets), `max_distance` (128, fixed in HF),
    `layer_norm_epsilon` (layer_norm_eps), `padding_idx` (pad_token_id). Inputs: {"token_ids", "padding_mask"}
    int32 (batch, length)."""

    def __init__(self, vocabulary_size: int, num_layers: int, num_heads: int, hidden_dim: int,
                 intermediate_dim: int, dropout: float = 0.1, max_sequence_length: int = 514, num_buckets: int = 32,
                 max_distance: int = 128, layer_norm_epsilon: float = 1e-5, padding_idx: int = 1, dtype=None,
                 **kwargs):
        # Layers first (keras-hub's Backbone pattern), then the functional graph through them.
        self.token_embedding = keras.layers.Embedding(vocabulary_size, hidden_dim, dtype=dtype, name="token_embedding")
        self.position_embedding = PaddingOffsetPositionEmbedding(max_sequence_length, hidden_dim, padding_idx,
                                                                 dtype=dtype, name="position_embedding")
        self.embeddings_add = keras.layers.Add(dtype=dtype, name="embeddings_add")
        self.embeddings_layer_norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype,
                                                                     name="embeddings_layer_norm")
        self.embeddings_dropout = keras.layers.Dropout(dropout, dtype=dtype, name="embeddings_dropout")
        self.relative_position_bias = RelativePositionBias(num_heads, num_buckets, max_distance, dtype=dtype,
                                                           name="relative_position_bias")
        self.transformer_layers = [
            MPNetEncoderLayer(hidden_dim, num_heads, intermediate_dim, dropout, layer_norm_epsilon, dtype=dtype,
                              name=f"transformer_layer_{i}") for i in range(num_layers)]

        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        x = self.embeddings_add((self.token_embedding(token_ids), self.position_embedding(padding_mask)))
        x = self.embeddings_dropout(self.embeddings_layer_norm(x))
        bias = self.relative_position_bias(x)
        for block in self.transformer_layers:
            x = block(x, padding_mask=padding_mask, position_bias=bias)
        super().__init__(inputs={"token_ids": token_ids, "padding_mask": padding_mask},
                         outputs={"sequence_output": x}, dtype=dtype, **kwargs)

        self.vocabulary_size, self.num_layers, self.num_heads = vocabulary_size, num_layers, num_heads
        self.hidden_dim, self.intermediate_dim, self.dropout = hidden_dim, intermediate_dim, dropout
        self.max_sequence_length, self.num_buckets, self.max_distance = max_sequence_length, num_buckets, max_distance
        self.layer_norm_epsilon, self.padding_idx = layer_norm_epsilon, padding_idx

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in (
            "vocabulary_size", "num_layers", "num_heads", "hidden_dim", "intermediate_dim", "dropout",
            "max_sequence_length", "num_buckets", "max_distance", "layer_norm_epsilon", "padding_idx")})
        return config
