"""The pandera schema of a raw labelled file, after its two columns are renamed to `text` and `label`.

Each check carries the sentence a person reads in the error report, so the rule and its message live in
one place. Checks are written to fire once per problem: a value that is not a string fails "must be
text" and nothing else.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import pandera.pandas as pa

# Excel's and LibreOffice's error values: what a cell shows when its formula failed. In a label column they are
# a broken export, never a class; in a text column, never a sentence to learn from or to score.
SPREADSHEET_ERRORS = ("#N/A", "#VALUE!", "#REF!", "#DIV/0!", "#NAME?", "#NUM!", "#NULL!", "#N/A N/A", "#SPILL!",
                      "#CALC!", "#GETTING_DATA", "#FIELD!", "#BLOCKED!", "#CONNECT!", "#BUSY!", "#UNKNOWN!")
_SPREADSHEET_ERRORS = frozenset(SPREADSHEET_ERRORS)
# How a missing value is written when an export prints it (pandas' default `na_values`, less the empty string and
# `None`, which is a real class in many label sets): a label never typed, not a class. A label set that really has
# a class named so lists it in `data.labels`.
MISSING_MARKERS = ("N/A", "NA", "NaN", "nan", "-NaN", "-nan", "NULL", "null", "<NA>", "NaT", "#NA", "n/a", "-1.#IND",
                   "1.#QNAN", "-1.#QNAN", "1.#IND")
_MISSING_MARKERS = frozenset(m.casefold() for m in MISSING_MARKERS)
# Letters of the Cyrillic and Greek alphabets drawn like a Latin letter (the lower-case pairs of Unicode's
# confusables.txt, UTS #39, for these scripts; one Latin letter per script so no two letters of one script share a
# key). A label typed with one of them among Latin letters (a Cyrillic `о` in `pоsitive`) looks the same as the
# Latin one. Applied after case folding.
_LOOK_ALIKE_LETTERS = str.maketrans({
    "а": "a", "с": "c", "ԁ": "d", "е": "e", "һ": "h", "і": "i", "ј": "j",
    "о": "o", "р": "p", "ԛ": "q", "ѕ": "s", "ԝ": "w", "х": "x", "у": "y",
    "ӏ": "l",
    "α": "a", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "υ": "u",
    "χ": "x", "γ": "y",
})
# Format characters (Unicode category Cf) that keep a meaning where they stand: the zero-width non-joiner and
# joiner change how Arabic-script and Indic words and emoji render, so a label keeps them (they still do not make
# a label distinct from its look-alike without them: `label_key` drops them).
_MEANINGFUL_FORMAT = frozenset("\u200c\u200d")


def is_spreadsheet_error(value: object) -> bool:
    """True for a cell that holds a spreadsheet error value (`#N/A`, `#VALUE!`, ... in any case, spaces around)."""
    return isinstance(value, str) and value.strip().upper() in _SPREADSHEET_ERRORS


def is_missing_marker(value: object) -> bool:
    """True for a cell that spells a missing value (`N/A`, `nan`, `null`, ... in any case, spaces around)."""
    return isinstance(value, str) and value.strip().casefold() in _MISSING_MARKERS


def canonical_spelling(label: str) -> str:
    """The one spelling a label is stored under: Unicode NFC, without invisible format characters (category Cf:
    zero-width space, word joiner, BOM, soft hyphen, direction marks; the zero-width (non-)joiner kept), ends
    stripped. `négatif` typed on macOS (NFD: e + U+0301) and on Windows (NFC) is one label; so is `positive`
    with a zero-width space pasted after it. (Unicode Standard Annex #15 for the normal forms.)"""
    # the format characters go first: one between a letter and its accent would keep NFC from composing them
    text = "".join(ch for ch in label if unicodedata.category(ch) != "Cf" or ch in _MEANINGFUL_FORMAT)
    return unicodedata.normalize("NFC", text).strip()


def label_key(label: str) -> str:
    """What a person sees of a label: compatibility forms folded (NFKC: full-width letters, ligatures,
    superscripts), every format character dropped, case folded, runs of whitespace collapsed. Two spellings with
    one key are one label written two ways."""
    text = unicodedata.normalize("NFKC", "".join(ch for ch in label if unicodedata.category(ch) != "Cf"))
    return " ".join(text.casefold().translate(_LOOK_ALIKE_LETTERS).split())


def spelling_difference(a: str, b: str) -> str:
    """In words, how two spellings with one `label_key` differ: invisible characters (named), Unicode normal form,
    case or spacing, or compatibility forms, the first that applies."""
    hidden = sorted({f"U+{ord(ch):04X} {unicodedata.name(ch, 'format character')}" for ch in a + b
                     if unicodedata.category(ch) == "Cf"})
    if hidden:
        return f"invisible characters ({', '.join(hidden)})"
    if unicodedata.normalize("NFC", a) == unicodedata.normalize("NFC", b):
        return "Unicode normal form (NFC and NFD: an accent stored as one character or as two)"
    def folded(text: str) -> str:
        return " ".join(unicodedata.normalize("NFC", text).casefold().split())
    if folded(a) == folded(b):
        return "case or spacing"
    def compatible(text: str) -> str:
        return " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    if compatible(a) == compatible(b):
        return "compatibility forms (full-width letters, ligatures, superscripts: NFKC)"
    foreign = sorted({f"U+{ord(ch):04X} {unicodedata.name(ch, 'letter')}" for ch in compatible(a) + compatible(b)
                      if ch.translate(_LOOK_ALIKE_LETTERS) != ch})
    return f"look-alike letters of another alphabet ({', '.join(foreign)}: Unicode confusables, UTS #39)"


def escaped(value: str) -> str:
    """A label as a message shows it: ASCII, every other character as a Python escape (`ne\\u0301gatif`), so two
    spellings that look the same on screen look different in the message."""
    return value.encode("unicode_escape").decode("ascii")


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _not_blank(value: object) -> bool:
    return not isinstance(value, str) or bool(value.strip())


def _no_control_chars(value: object) -> bool:
    return not isinstance(value, str) or not any(
        unicodedata.category(ch) == "Cc" and ch not in "\t\n\r" for ch in value)


def _has_letter(value: object) -> bool:
    return not isinstance(value, str) or not value.strip() or any(ch.isalpha() for ch in value)


def text_checks(max_chars: int) -> list[pa.Check]:
    """The rules every input text obeys, for training and for prediction alike."""
    return [
        pa.Check(_is_str, element_wise=True, error="text must be a string"),
        pa.Check(_not_blank, element_wise=True, error="text is empty after stripping whitespace"),
        pa.Check(lambda v: not is_spreadsheet_error(v), element_wise=True,
                 error="text is a spreadsheet error value (a formula failed in the export): fix the formula or "
                       "re-export the values, or remove the row"),
        pa.Check(_has_letter, element_wise=True,
                 error="text has no letters (a number or symbols only: are the columns swapped?)"),
        pa.Check(lambda v: not isinstance(v, str) or len(v) <= max_chars, element_wise=True,
                 error=f"text is longer than data.max_chars={max_chars} characters (raise the limit with "
                       "--set data.max_chars=N)"),
        pa.Check(_no_control_chars, element_wise=True,
                 error="text contains control characters (NUL or similar: a binary or corrupted file?)"),
    ]


def text_schema(max_chars: int) -> pa.DataFrameSchema:
    """Schema of a file to predict on: the text column alone."""
    return pa.DataFrameSchema({"text": pa.Column(None, nullable=False, checks=text_checks(max_chars))},
                              strict=False, name="text to classify")


def raw_schema(labels: Sequence[str] | None, max_chars: int) -> pa.DataFrameSchema:
    """Schema of the raw input: a non-empty text of at most `max_chars` characters and a known label."""
    label_checks = [
        pa.Check(_is_str, element_wise=True, error="label must be a string or an integer"),
        pa.Check(_not_blank, element_wise=True, error="label is empty"),
        pa.Check(lambda v: not is_spreadsheet_error(v), element_wise=True,
                 error="label is a spreadsheet error value, not a class (a formula failed in the export, e.g. a "
                       "VLOOKUP that found nothing): fix the formula or re-export the values, or remove the row"),
    ]
    given = {label_key(label) for label in labels or ()}
    label_checks.append(pa.Check(lambda v: not is_missing_marker(v) or label_key(v) in given, element_wise=True,
                                 error="label is a missing-value marker, not a class (an empty cell as an export "
                                       "wrote it): fill in the label or remove the row (if it is a class, list it "
                                       "in data.labels)"))
    if labels:
        allowed = ", ".join(labels)
        # a look-alike spelling of a given label passes here and is named by the spelling check, with both shown
        keys = {label_key(label) for label in labels}
        label_checks.append(pa.Check(lambda v: not isinstance(v, str) or not v.strip() or is_spreadsheet_error(v)
                                     or is_missing_marker(v) or label_key(v) in keys,
                                     element_wise=True, error=f"label is not one of data.labels ({allowed})"))
    return pa.DataFrameSchema(
        {
            "text": pa.Column(None, nullable=False, checks=text_checks(max_chars)),
            "label": pa.Column(None, nullable=False, checks=label_checks),
        },
        strict=False,
        name="raw labelled text",
    )


# pandera names a null failure "not_nullable"; this is what a person reads instead.
RULE_WORDING = {"not_nullable": "value is missing (empty or null)"}
