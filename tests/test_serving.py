"""The exported SavedModel tokenizes inside its graph exactly as the pipeline tokenizes in Python.

keras-hub runs its tokenizer's pure-Python path eagerly (`encode_for_model`: tokenize, the gate, batch
prediction) and its TensorFlow Text path inside a graph (the SavedModel's `serve`): two implementations of one
WordPiece, held equal here on the real data and on the inputs where they could part (accents and other marks,
case folding, CJK, zero-width characters, over-long words and sentences, the empty string). The end-to-end
check of the exported model (probabilities equal to evaluate's, in a fresh process) is in test_registry_gate.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import phrasebank_rows
from tests.unicode_samples import random_texts

EDGE_CASES = [
    "",  # the pipeline refuses an empty text, a serving caller may still send one
    "   ",
    "Café Müller's naïve façade: Ålesund, Øresund, Łódź, İstanbul, straße, ǅ, ﬁnance, ＡＢＣ ½ ² Ⅻ",
    "Ελληνικά, русский, 中文字符 日本語 한국어, emoji 😀 👍🏽",
    "zero\u200bwidth soft\u00adhyphen, tab\tand\nnewline",
    "[PAD] [CLS] [SEP] [UNK] [MASK] written as text",
    "a" * 150 + " " + "é" * 60,  # words longer than WordPiece takes: [UNK]
    " ".join(["profit"] * 300),  # over any sequence length: truncated
]
@pytest.mark.parametrize("sequence_length", [8, 64])
def test_the_graph_packs_text_exactly_as_encode_for_model(backbone, sequence_length):
    import tensorflow as tf

    from core.model.backbone import encode_for_model, special_ids
    from core.model.inference import pad_batch
    from core.model.serving import text_packer

    texts = [row["text"] for row in phrasebank_rows()] + EDGE_CASES + random_texts(2000, seed=sequence_length)
    expected = encode_for_model(backbone.path, texts, sequence_length)
    assert any(not t.isascii() for t in texts[:-2000]) and max(map(len, expected)) == sequence_length  # truncation
    pack = tf.function(text_packer(backbone.path, sequence_length), input_signature=[tf.TensorSpec([None], tf.string)])
    token_ids, mask = (t.numpy() for t in pack(tf.constant(texts)))
    want = pad_batch(expected, multiple=sequence_length, pad_id=special_ids(backbone.path)[2])
    assert token_ids.dtype == mask.dtype == np.int32 and token_ids.shape == (len(texts), sequence_length)
    differ = np.flatnonzero((token_ids != want["token_ids"]).any(axis=1) | (mask != want["padding_mask"]).any(axis=1))
    assert not len(differ), [(texts[i][:60], expected[i][:12], token_ids[i][:12].tolist()) for i in differ[:3]]


def test_a_sequence_length_without_room_for_cls_and_sep_is_refused(backbone):
    from core.model.serving import text_packer

    with pytest.raises(ValueError, match="sequence_length must be >= 2"):
        text_packer(backbone.path, 1)
