"""The tables the steps write: a pandera model of each one's content rules and the pyarrow schema of its file.

A step validates what it writes against its model before the file is stored, so these classes are the
documentation of every intermediate artifact.
"""

from __future__ import annotations

import pandera.pandas as pa
import pyarrow
from pandera.typing import Series

SPLITS = ("train", "val", "test")
ROW_ID = r"^[0-9a-f]{16}$"


class ValidatedTable(pa.DataFrameModel):
    """validate's output: one row per distinct sentence, in file order."""

    row_id: Series[str] = pa.Field(unique=True, str_matches=ROW_ID)
    text: Series[str] = pa.Field(str_length={"min_value": 1})
    label: Series[str]
    location: Series[str] = pa.Field(description="where the row was in the input: line N or row N")

    class Config:
        strict = True


class SplitTable(ValidatedTable):
    """split's output: every validated row with the split it belongs to."""

    split: Series[str] = pa.Field(isin=SPLITS)


class AugmentedTable(pa.DataFrameModel):
    """augment's output: every split row, plus augmented copies of training rows tagged with their source."""

    row_id: Series[str] = pa.Field(unique=True, str_matches=ROW_ID)
    text: Series[str] = pa.Field(str_length={"min_value": 1})
    label: Series[str]
    split: Series[str] = pa.Field(isin=SPLITS)
    source_id: Series[str] = pa.Field(str_matches=ROW_ID)
    is_augmented: Series[bool]
    ops: Series[str] = pa.Field(description="'+'-joined EDA operations applied; empty for original rows")
    copy: Series[int] = pa.Field(ge=0, description="0 for the original, 1..n_aug for its augmented copies")

    class Config:
        strict = True

    @pa.dataframe_check(error="augmented rows must come from the training split")
    def _augmented_only_in_train(cls, df):  # noqa: N805 (pandera passes the class)
        return ~df["is_augmented"] | (df["split"] == "train")

    @pa.dataframe_check(error="an original row is its own source; an augmented row is not")
    def _source_consistent(cls, df):  # noqa: N805
        return (df["source_id"] == df["row_id"]) != df["is_augmented"]


VALIDATED_SCHEMA = pyarrow.schema([
    ("row_id", pyarrow.string()), ("text", pyarrow.string()), ("label", pyarrow.string()),
    ("location", pyarrow.string()),
])

SPLIT_SCHEMA = VALIDATED_SCHEMA.append(pyarrow.field("split", pyarrow.string()))

AUGMENTED_SCHEMA = pyarrow.schema([
    ("row_id", pyarrow.string()), ("text", pyarrow.string()), ("label", pyarrow.string()),
    ("split", pyarrow.string()), ("source_id", pyarrow.string()), ("is_augmented", pyarrow.bool_()),
    ("ops", pyarrow.string()), ("copy", pyarrow.int16()),
])

TOKENIZED_SCHEMA = pyarrow.schema([
    ("row_id", pyarrow.string()), ("split", pyarrow.string()), ("label", pyarrow.string()),
    ("label_id", pyarrow.int32()), ("token_ids", pyarrow.list_(pyarrow.int32())),
    ("n_tokens", pyarrow.int32()), ("truncated", pyarrow.bool_()), ("is_augmented", pyarrow.bool_()),
    ("source_id", pyarrow.string()),
])

FEATURES_SCHEMA = pyarrow.schema([
    ("row_id", pyarrow.string()), ("split", pyarrow.string()), ("label_id", pyarrow.int32()),
    ("is_augmented", pyarrow.bool_()),
    pyarrow.field("embedding", pyarrow.list_(pyarrow.float32()),
                  metadata={"doc": "the frozen backbone's pooled, L2-normalised sentence embedding"}),
    pyarrow.field("n_tokens", pyarrow.int32()),
    pyarrow.field("hidden", pyarrow.binary(), nullable=True,
                  metadata={"doc": "float16 bytes of the frozen bottom's output, n_tokens x 384, row-major; "
                                   "null when the whole backbone is frozen"}),
])


def to_arrow(frame, schema: pyarrow.Schema) -> pyarrow.Table:
    """A pandas frame as an Arrow table of exactly `schema` (column order, types, no pandas index)."""
    return pyarrow.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
