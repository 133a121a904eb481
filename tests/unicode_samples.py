"""Seeded random-Unicode strings for tokenizer checks: the serving test and the MPNet reference script
(benchmarks/mpnet_reference.py, run in .venv-peers) draw them from here, so this module needs the standard library
only."""

from __future__ import annotations

import random

# Unicode blocks where a pure-Python and a native (ICU/RE2, Rust tokenizers) implementation could disagree: Latin
# with accents, combining marks, Greek/Cyrillic, punctuation and spaces, kana, CJK, Hangul, emoji, ligatures,
# full-width forms, zero-width and case-folding oddities.
BLOCKS = [range(0x20, 0x7F), range(0xA0, 0x250), range(0x300, 0x370), range(0x370, 0x500), range(0x2000, 0x2070),
          range(0x3040, 0x3100), range(0x4E00, 0x4E80), range(0xAC00, 0xAC40), range(0x1F300, 0x1F340),
          range(0xFB00, 0xFB07), range(0xFF01, 0xFF5E), [0x200B, 0xAD, 0x200D, 0xFEFF, 0x130, 0x131, 0x1E9E, 0xDF]]


def random_texts(n: int, seed: int) -> list[str]:
    """`n` strings of 0-60 characters mixing the blocks above with ASCII letters, spaces and punctuation."""
    rng = random.Random(seed)
    return ["".join(chr(rng.choice(rng.choice(BLOCKS))) if rng.random() < 0.6 else rng.choice(" abcXYZ.,'-")
                    for _ in range(rng.randint(0, 60))) for _ in range(n)]
