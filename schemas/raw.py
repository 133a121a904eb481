"""The pandera schema of a raw labelled file, after its two columns are renamed to `text` and `label`.

Each check carries the sentence a person reads in the error report, so the rule and its message live in
one place. Checks are written to fire once per problem: a value that is not a string fails "must be
text" and nothing else.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import pandera.pandas as pa


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
    ]
    if labels:
        allowed = ", ".join(labels)
        label_checks.append(pa.Check(lambda v: not isinstance(v, str) or not v.strip() or v in set(labels),
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
