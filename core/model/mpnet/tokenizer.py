"""`MPNetTokenizer`: keras-hub's WordPiece tokenizer with MPNet's special tokens.

MPNet's Hugging Face tokenizer (`tokenizer.json` of all-mpnet-base-v2) is BERT's uncased WordPiece: a
`BertNormalizer` (clean text, Chinese characters split, lower-cased, accents stripped because `strip_accents`
is null and `lowercase` true), the `BertPreTokenizer`, WordPiece over `vocab.txt` with `[UNK]` (id 104) for
unknown words, and RoBERTa's packing `<s> ... </s>` (ids 0 and 2) with `<pad>` (id 1); `<mask>` is id 30526.
keras-hub's `WordPieceTokenizer` computes the same ids once configured (lowercase, strip_accents,
oov_token="[UNK]"); only the special tokens differ from `BertTokenizer`'s, so this subclass names them.
"""

from __future__ import annotations

import keras
import keras_hub

from core.model.mpnet.layers import PACKAGE

CLS, SEP, PAD, UNK, MASK = "<s>", "</s>", "<pad>", "[UNK]", "<mask>"


@keras.saving.register_keras_serializable(package=PACKAGE)
class MPNetTokenizer(keras_hub.tokenizers.WordPieceTokenizer):
    """WordPiece ids of MPNet (no special tokens added: `pack` adds `<s>` and `</s>`). `vocabulary` is a list or
    the path of `vocab.txt`; `lowercase` as the tokenizer's `do_lower_case` (True for all-mpnet-base-v2)."""

    def __init__(self, vocabulary=None, lowercase: bool = True, strip_accents: bool | None = None, **kwargs):
        self._add_special_token(CLS, "cls_token")
        self._add_special_token(SEP, "sep_token")
        self._add_special_token(PAD, "pad_token")
        self._add_special_token(MASK, "mask_token")
        self._add_special_token(CLS, "start_token")
        self._add_special_token(SEP, "end_token")
        kwargs.setdefault("oov_token", UNK)
        # HF's BertNormalizer: strip_accents None follows lowercase
        super().__init__(vocabulary=vocabulary, lowercase=lowercase,
                         strip_accents=lowercase if strip_accents is None else strip_accents, **kwargs)
