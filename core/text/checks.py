"""Row checks that training (tasks/validate.py) and scoring (tasks/predict.py) share: a pandera schema's
failures as `Failure`s, each located by the row's line in the file."""

from __future__ import annotations

import math

import pandas as pd
import pandera.pandas as pa

from core.errors import Failure
from core.text.readers import show_invisible
from schemas.raw import RULE_WORDING


def schema_failures(schema: pa.DataFrameSchema, frame: pd.DataFrame, locations: list[str],
                    columns: dict[str, str], name: str) -> list[Failure]:
    """Every row-level failure of `frame` against `schema` (lazily, all at once), located and worded.

    `columns` maps the schema's column names to the user's (e.g. text -> sentence) for the report.
    """
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return []
    failures = []
    for case in cases.itertuples(index=False):
        if case.index is None or (isinstance(case.index, float) and math.isnan(case.index)):
            continue  # a rule about the whole frame; the column checks before this cover those
        failures.append(Failure(name, locations[int(case.index)], columns.get(case.column, case.column),
                                RULE_WORDING.get(case.check, case.check), shorten(case.failure_case)))
    return failures


def shorten(value: object, limit: int = 80) -> str:
    """A value as shown in a message: invisible characters escaped, cut to `limit` with its real length."""
    return show_invisible("" if value is None else str(value), limit)
