"""The tables the steps write: a pandera model of each one's content rules and the pyarrow schema of its file.

A step validates what it writes against its model before the file is stored, so these classes are the
documentation of every intermediate artifact.
"""

from __future__ import annotations

import numpy as np
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
    copy: Series[np.int16] = pa.Field(ge=0, description="0 for the original, 1..n_aug for its augmented copies")

    class Config:
        strict = True

    @pa.dataframe_check(error="augmented rows must come from the training split")
    def _augmented_only_in_train(cls, df):  # noqa: N805 (pandera passes the class)
        return ~df["is_augmented"] | (df["split"] == "train")

    @pa.dataframe_check(error="an original row is its own source; an augmented row is not")
    def _source_consistent(cls, df):  # noqa: N805
        return (df["source_id"] == df["row_id"]) != df["is_augmented"]


class TokenizedTable(pa.DataFrameModel):
    """tokenize's output: WordPiece ids of every row, `[CLS] ... [SEP]`, truncated to the sequence length."""

    row_id: Series[str] = pa.Field(unique=True, str_matches=ROW_ID)
    split: Series[str] = pa.Field(isin=SPLITS)
    label: Series[str]
    label_id: Series[np.int32] = pa.Field(ge=0)
    token_ids: Series[object] = pa.Field(description="list of int32 token ids")
    n_tokens: Series[np.int32] = pa.Field(ge=2)
    truncated: Series[bool]
    is_augmented: Series[bool]
    source_id: Series[str] = pa.Field(str_matches=ROW_ID)

    class Config:
        strict = True

    @pa.dataframe_check(error="n_tokens must equal the number of token ids")
    def _counts_match(cls, df):  # noqa: N805
        return df["n_tokens"] == df["token_ids"].map(len)


def predictions_schema(labels: list[str], strict: bool = False) -> pa.DataFrameSchema:
    """Predictions (evaluation's and flows.predict's): a known predicted label and one probability per label."""
    prob_columns = {f"prob_{label}": pa.Column(float, pa.Check.in_range(0.0, 1.0)) for label in labels}

    def sums_to_one(df):
        return (df[list(prob_columns)].sum(axis=1) - 1.0).abs() < 1e-4

    return pa.DataFrameSchema(
        {"predicted_label": pa.Column(str, pa.Check.isin(labels)), **prob_columns},
        checks=[pa.Check(sums_to_one, error="probabilities of a row must sum to 1")],
        strict=strict, name="predictions",
    )


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
                  metadata={"doc": "float16 bytes of the frozen bottom's output, n_tokens x the backbone's hidden "
                                   "size, row-major; null when the whole backbone is frozen"}),
])


def to_arrow(frame, schema: pyarrow.Schema) -> pyarrow.Table:
    """A pandas frame as an Arrow table of exactly `schema` (column order, types, no pandas index)."""
    return pyarrow.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
