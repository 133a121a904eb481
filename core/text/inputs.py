"""A file of sentences to score, read whole and checked row by row (`read_texts`): rows in = rows out, each
invalid row kept in its place with its reason, or refused; and the rows written back as Arrow
(`rows_to_arrow`: every column of the user's file kept, a mixed one as text). Batch prediction (tasks/predict.py) reads the same
way in chunks; suggest, pseudo_label and the embed command read through `read_texts`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from core.errors import InvalidData
from core.text.checks import schema_failures
from core.text.readers import RawTable, line_number, read_raw
from schemas.raw import text_schema


ON_INVALID = ("refuse", "keep")


@dataclass
class Inputs:
    """Every row of a file (or a chunk) to score, in file order: its cells (a row that could not be parsed has
    empty cells), its location, and why it cannot be scored ("" for a row that can)."""

    frame: pd.DataFrame
    locations: list[str]
    reasons: list[str]
    text_col: str = "text"

    @property
    def valid(self) -> list[int]:
        """Positions of the rows that can be scored."""
        return [i for i, reason in enumerate(self.reasons) if not reason]


def read_texts(path: Path, text_col: str, encoding: str = "utf-8", max_chars: int = 2000, max_file_mb: int = 512,
               delimiter: str = "auto", on_invalid: str = "refuse", header: str = "auto") -> Inputs:
    """The whole input file as read, one entry per row (rows in = rows out), after checking its text column row
    by row. (Batch prediction reads in chunks, `predict_file`; this whole-file form is its reference.)

    Blank lines between rows are rows (with an empty text), in every file type. With `on_invalid="refuse"`
    (the default) any invalid row raises `InvalidData` listing every one; with `"keep"` they stay, each with
    its reason. A fault of the whole file (missing column, undecodable bytes, unreadable CSV) always raises.
    """
    check_on_invalid(on_invalid)
    name = str(path)
    raw = read_raw(path, encoding, max_file_mb, delimiter, blank_lines="rows", header=header)
    text_col = header_text_col(raw, text_col, header)
    check_columns(raw, name, text_col)
    unparsed, failures = check_rows(raw, name, text_col, max_chars)
    if failures and on_invalid == "refuse":
        raise InvalidData(sorted(failures, key=lambda f: line_number(f.location)))
    inputs = assemble(raw, unparsed, failures)
    inputs.text_col = text_col
    return inputs


def check_on_invalid(on_invalid: str) -> None:
    if on_invalid not in ON_INVALID:
        raise ValueError(f"on_invalid must be one of {ON_INVALID}, got {on_invalid!r}")


def header_text_col(raw: RawTable, text_col: str, header: str) -> str:
    """The text column: `text_col`, or with `data.header=none` and one column, that column whatever its name."""
    if header == "none" and raw.delimiter is not None and raw.frame.shape[1] == 1 and text_col not in raw.frame.columns:
        return str(raw.frame.columns[0])  # no header, one column: that column is the text, whatever its name
    return text_col


def check_columns(raw: RawTable, name: str, text_col: str) -> None:
    """Raise `InvalidData` when the text column is missing, or exists only because line 1, a data row, was taken
    for the header (`RawTable.check_header`). `raw` may hold no rows: its columns are what counts."""
    if text_col not in raw.frame.columns:
        raise InvalidData([raw.missing_column(name, text_col, "--text-col")])
    if failures := raw.check_header(name, {"--text-col": text_col}, "--text-col"):
        raise InvalidData(failures)


def check_rows(raw: RawTable, name: str, text_col: str, max_chars: int) -> tuple[list, list]:
    """The rows of `raw` (a whole file or a chunk) that could not be parsed, and every row failure (those
    included: unparsed rows first, then the text column's rule failures). Raises `InvalidData` for a fault of
    the whole file among `raw.failures` (an unreadable CSV). A text column absent from a chunk (JSON lines whose
    records there lack the key) is a missing value on each of its rows."""
    unparsed = [f for f in raw.failures if f.location.startswith(("line ", "row "))
                and not f.rule.startswith("unreadable")]
    if len(unparsed) != len(raw.failures):
        raise InvalidData(raw.failures)
    texts = raw.frame[text_col].to_numpy() if text_col in raw.frame.columns else [np.nan] * len(raw.frame)
    failures = unparsed + schema_failures(text_schema(max_chars), pd.DataFrame({"text": texts}, dtype=object),
                                          raw.locations, {"text": text_col}, name)
    return unparsed, failures


def assemble(raw: RawTable, unparsed: list, failures: list) -> Inputs:
    """`raw`'s rows with the unparsed ones in their place (empty cells), each with its reason."""
    frame, locations = raw.frame.reset_index(drop=True), list(raw.locations)
    if unparsed:  # rows that could not be parsed keep their place, with empty cells
        blank = pd.DataFrame([[None] * frame.shape[1]] * len(unparsed), columns=frame.columns, dtype=object)
        locations += [f.location for f in unparsed]
        order = np.argsort([line_number(loc) for loc in locations], kind="stable")
        frame = pd.concat([frame, blank], ignore_index=True).iloc[order].reset_index(drop=True)
        locations = [locations[i] for i in order]
    why: dict[str, list[str]] = {}
    for failure in failures:
        why.setdefault(failure.location, []).append(failure.rule)
    return Inputs(frame, locations, ["; ".join(why.get(loc, [])) for loc in locations])


def arrow_type(values: pd.Series) -> pa.DataType | None:
    """The Arrow type `rows_to_arrow` gives these values (None: mixed, written as text)."""
    try:
        return pa.array(values.tolist()).type
    except (pa.ArrowException, TypeError, ValueError):
        return None


def unify_types(types: set) -> pa.DataType:
    """One type for a column whose chunks gave `types`: theirs if they agree (nulls aside), a common numeric
    type for ints and floats, else text (what the whole column would have become)."""
    known = {t for t in types if t is not None and not pa.types.is_null(t)}
    if None in types:
        return pa.string()
    if not known:
        return pa.null()
    if len(known) == 1:
        return known.pop()
    try:
        return pa.unify_schemas([pa.schema([("c", t)]) for t in known], promote_options="permissive").field("c").type
    except (pa.ArrowException, TypeError):
        return pa.string()


def rows_to_arrow(frame: pd.DataFrame, schema: pa.Schema | None = None) -> pa.Table:
    """The frame as Arrow; an input column of mixed types (numbers and text, say) becomes text. With `schema`
    (the whole file's, `check_file`) each column takes its type there: a chunk's ints in a column of floats
    become floats, and values in a column that is text elsewhere become their text."""
    columns = {}
    for name in frame.columns:
        target = schema.field(str(name)).type if schema is not None else None
        values = frame[name].tolist()
        try:
            array = pa.array(values)
            if target is not None and array.type != target:
                if pa.types.is_string(target):
                    raise TypeError("text elsewhere in the column")
                array = array.cast(target)
            columns[str(name)] = array
        except (pa.ArrowException, TypeError, ValueError):
            columns[str(name)] = pa.array([None if v is None else str(v) for v in values], pa.string())
    return pa.table(columns, schema=schema) if schema is not None else pa.table(columns)
