"""What the data contracts need to know of an input file, standard library only (schemas/ imports nothing from
core/): its content hash, and the spellings `data.delimiter` accepts."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20
DELIMITERS = {"comma": ",", "semicolon": ";", "tab": "\t", "pipe": "|"}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes. Raises OSError if it cannot be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def parse_delimiter(value: str) -> str:
    """`data.delimiter` as given (`auto`, a name such as `semicolon`, `\\t`, or one character) as `auto` or the
    character; raises `ValueError` naming the accepted values."""
    text = str(value)
    if text.strip().lower() in ("", "auto"):
        return "auto"
    if text.strip().lower() in DELIMITERS:
        return DELIMITERS[text.strip().lower()]
    if text in ("\\t", "\t"):
        return "\t"
    if len(text) == 1 and text not in "\"\r\n" and not text.isalnum():
        return text
    raise ValueError(f"data.delimiter must be auto, {', '.join(DELIMITERS)}, or one character")
