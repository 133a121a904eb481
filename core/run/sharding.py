"""Shards: contiguous slices of a table's rows, the unit of work of the data-parallel steps.

augment, tokenize and embed each run as one task per shard (on a Dask cluster with `runner=dask`, or one
shard in-process by default) and a merge task that joins the shards in row order. Every row's result depends
only on the row itself (and the step's settings), never on which shard held it, so any sharding gives the
same merged output, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Shard(BaseModel):
    """Shard `index` of `count` equal, contiguous slices."""

    model_config = ConfigDict(frozen=True)

    index: int = Field(ge=0)
    count: int = Field(ge=1)

    def bounds(self, rows: int) -> tuple[int, int]:
        """[start, stop) of this shard in a table of `rows` rows (numpy.array_split's division)."""
        size, extra = divmod(rows, self.count)
        start = self.index * size + min(self.index, extra)
        return start, start + size + (1 if self.index < extra else 0)


WHOLE = Shard(index=0, count=1)


@dataclass(frozen=True)
class ShardedStep:
    """A data-parallel step's three Prefect tasks: `whole` (the table in one pass: the threads runner and plain
    runs), `shard` (one run per shard) and `merge` (joins the shards in row order: with `runner=dask`)."""

    whole: Any
    shard: Any
    merge: Any

    @property
    def name(self) -> str:
        """The step's stage name (its whole task's name)."""
        return self.whole.name
