"""The exported SavedModel tokenizes inside its graph exactly as the pipeline tokenizes in Python.

keras-hub runs its tokenizer's pure-Python path eagerly (`encode_for_model`: tokenize, the gate, batch
prediction) and its TensorFlow Text path inside a graph (the SavedModel's `serve`): two implementations of one
WordPiece, held equal here on the real data and on the inputs where they could part (accents and other marks,
case folding, CJK, zero-width characters, over-long words and sentences, the empty string). The end-to-end
check of the exported model (probabilities equal to evaluate's, in a fresh process) is in test_registry_gate.py.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from tests.conftest import phrasebank_rows

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
# Unicode blocks where a pure-Python and an ICU/RE2 implementation could disagree.
BLOCKS = [range(0x20, 0x7F), range(0xA0, 0x250), range(0x300, 0x370), range(0x370, 0x500), range(0x2000, 0x2070),
          range(0x3040, 0x3100), range(0x4E00, 0x4E80), range(0xAC00, 0xAC40), range(0x1F300, 0x1F340),
          range(0xFB00, 0xFB07), range(0xFF01, 0xFF5E), [0x200B, 0xAD, 0x200D, 0xFEFF, 0x130, 0x131, 0x1E9E, 0xDF]]


def random_texts(n: int, seed: int) -> list[str]:
    """`n` strings of 0-60 characters mixing the blocks above with ASCII letters, spaces and punctuation."""
    rng = random.Random(seed)
    return ["".join(chr(rng.choice(rng.choice(BLOCKS))) if rng.random() < 0.6 else rng.choice(" abcXYZ.,'-")
                    for _ in range(rng.randint(0, 60))) for _ in range(n)]


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
