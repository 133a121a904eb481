"""The identity of a sentence: its normalised text and the row id derived from it.

Two rows are the same sentence when their texts agree after Unicode NFKC normalisation, case folding and
whitespace collapsing. The row id is a hash of that normalised text, so it is stable across files,
re-orderings and re-trains, and later steps can use it as a key.
"""

from __future__ import annotations

import hashlib
import unicodedata


def normalize_text(text: str) -> str:
    """NFKC, case-folded, with runs of whitespace collapsed to one space and the ends stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def row_id(text: str) -> str:
    """A 16-hex-digit id of the sentence: the start of the sha256 of its normalised text."""
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()[:16]


def unit_hash(*parts: str) -> float:
    """A number in [0, 1) drawn from a sha256 of the parts: uniform, deterministic, order-free."""
    digest = hashlib.sha256("\0".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def sha256_hex(*parts: str) -> str:
    """Hex sha256 of the parts joined with NUL separators."""
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()
