"""`MPNetTokenizer`: keras-hub's WordPiece tokenizer with MPNet's special tokens.

MPNet's Hugging Face tokenizer (`tokenizer.json` of all-mpnet-base-v2) is BERT's uncased WordPiece: a
`BertNormalizer` (clean text, Chinese characters split, lower-cased, accents stripped because `strip_accents`
is null and `lowercase` true), the `BertPreTokenizer`, WordPiece over `vocab.txt` with `[UNK]` (id 104) for
unknown words, and RoBERTa's packing `<s> ... </s>` (ids 0 and 2) with `<pad>` (id 1); `<mask>` is id 30526.
keras-hub's `WordPieceTokenizer` computes the same ids once configured (strip_accents, oov_token="[UNK]") but
for one thing, which this subclass changes besides naming MPNet's special tokens: keras-hub lower-cases with
Unicode NFKC case folding (`tf_text.case_fold_utf8`), which also rewrites compatibility characters ("¼" -> "1⁄4",
"ﬁ" -> "fi", full-width "Ａ" -> "a", "ß" -> "ss"), where Hugging Face's normalizer lower-cases each character
alone (Rust's `char::to_lowercase`) and keeps them. So the base class runs with `lowercase=False` and the text is
lower-cased here first, character by character (Python's `str.lower` per character; in a graph
`tf.strings.lower(..., encoding="utf-8")`); accents are then stripped (NFD, marks removed) as HF strips them.
Lower-casing before stripping accents gives the same text as HF's order (strip, then lower) for what NFD and
lower-casing both touch ("İ" -> "i"). HF's `clean_text` is done here too: tab, newline, carriage return and every
Unicode space (category Z) become spaces (keras-hub's splitting in a graph knows ASCII spaces only), and every
other "other" character (controls, formats such as the soft hyphen and zero-width spaces, private use;
not unassigned code points) and U+FFFD are removed, so "fi\u00adnance" is one word as in HF.
"""

from __future__ import annotations

import unicodedata

import keras
import keras_hub

from core.model.mpnet.layers import PACKAGE

CLS, SEP, PAD, UNK, MASK = "<s>", "</s>", "<pad>", "[UNK]", "<mask>"
WHITESPACE = "\t\n\r"  # kept as spaces by HF's clean_text, though category Cc
# What HF's clean_text removes (and RE2's \p{C} matches): controls, formats, private use, surrogates; not
# unassigned code points (Cn), which HF keeps (checked against the reference fixture)
REMOVED = {"Cc", "Cf", "Co", "Cs"}


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
        self.lowercase_text = bool(lowercase)  # done here, per character (the base class's would case-fold)
        # HF's BertNormalizer: strip_accents None follows lowercase
        super().__init__(vocabulary=vocabulary, lowercase=False,
                         strip_accents=lowercase if strip_accents is None else strip_accents, **kwargs)

    def tokenize(self, inputs):
        """WordPiece ids of a string or a batch of strings (keras-hub's `tokenize`), lower-cased as HF does."""
        self._check_vocabulary()
        if self._use_tf_workflow():
            import tensorflow as tf

            text = tf.strings.regex_replace(tf.convert_to_tensor(inputs), r"[\p{C}\x{FFFD}]", "")
            text = tf.strings.regex_replace(text, r"[\t\n\r\p{Z}]", " ")
            if self.lowercase_text:
                text = tf.strings.lower(text, encoding="utf-8")
            return self._tokenize_tf(text)
        return self._tokenize_python(_clean(inputs, self.lowercase_text))

    def get_config(self):
        return {**super().get_config(), "lowercase": self.lowercase_text}


def _clean(inputs, lowercase: bool):
    """HF's clean_text, then (with `lowercase`) each character lower-cased alone (no final-sigma context), in a
    string or a (nested) list or array of strings."""
    if isinstance(inputs, bytes):
        inputs = inputs.decode("utf-8")
    if isinstance(inputs, str):
        kept = (" " if c in WHITESPACE or unicodedata.category(c).startswith("Z") else c for c in inputs
                if c in WHITESPACE or not (unicodedata.category(c) in REMOVED or c == "\ufffd"))
        return "".join(c.lower() for c in kept) if lowercase else "".join(kept)
    return [_clean(x, lowercase) for x in (inputs.tolist() if hasattr(inputs, "tolist") else inputs)]
