"""Step 2, split: assign every validated row to train, val or test by a hash of its normalised text.

A row's split depends only on its own text and `split.salt`, never on the other rows, their order or the
training seed: re-training on a superset of the data keeps every old row where it was, so a test row can
never leak into training later. The row id is itself the hash of the normalised text, so identical texts
share one row and no sentence can sit in two splits. Every class is cut at the same hash thresholds, so each
class is split in the configured proportions up to sampling noise (stratified in expectation); an exact
per-class count would have to move old rows when new ones arrive, which is the one thing this must not do.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from schemas.tables import SPLIT_SCHEMA, SplitTable, to_arrow
from tasks.caching import step_task
from tasks.config import SplitConfig
from tasks.errors import Failure, InvalidData
from tasks.identity import unit_hash
from tasks.io import ArtifactRef, read_parquet, write_parquet

log = logging.getLogger(__name__)


def split(validated: ArtifactRef, cfg: SplitConfig, max_train_rows: int, min_per_class: int,
          workdir: Path) -> ArtifactRef:
    """Add a `split` column (train/val/test) to the validated rows and write them.

    `max_train_rows` (0 = all) keeps a stratified, hash-ordered subset of the training split; the dropped
    rows are not moved to another split. Raises `InvalidData` if a class has fewer than `min_per_class`
    training rows. Returns the reference, with per-split and per-class counts in `meta`.
    """
    frame = read_parquet(validated, workdir).to_pandas()
    draw = frame["row_id"].map(lambda rid: unit_hash(cfg.salt, rid))
    frame["split"] = "train"
    frame.loc[draw < cfg.test_fraction + cfg.val_fraction, "split"] = "val"
    frame.loc[draw < cfg.test_fraction, "split"] = "test"
    if max_train_rows:
        frame = _cap_training_rows(frame, draw, max_train_rows)
    _check_class_sizes(frame, min_per_class, validated)
    counts = frame.groupby(["split", "label"]).size()
    meta = {
        "labels": validated.meta["labels"],
        "split_rows": {s: int(n) for s, n in frame["split"].value_counts().items()},
        "split_class_counts": {f"{s}/{lab}": int(n) for (s, lab), n in counts.items()},
    }
    log.info("split %d rows: %s", len(frame), meta["split_rows"])
    frame = SplitTable.validate(frame[SPLIT_SCHEMA.names])
    return write_parquet(workdir, "split", to_arrow(frame, SPLIT_SCHEMA), meta)


def _cap_training_rows(frame: pd.DataFrame, draw: pd.Series, cap: int) -> pd.DataFrame:
    """Keep about `cap` training rows, each class in proportion, the lowest hash draws first."""
    train = frame[frame["split"] == "train"]
    if len(train) <= cap:
        return frame
    keep_idx = []
    for _, rows in train.groupby("label", sort=True):
        quota = max(1, round(cap * len(rows) / len(train)))
        keep_idx.extend(draw.loc[rows.index].sort_values(kind="stable").index[:quota])
    keep = (frame["split"] != "train") | frame.index.isin(keep_idx)
    return frame[keep].reset_index(drop=True)


def _check_class_sizes(frame: pd.DataFrame, min_per_class: int, validated: ArtifactRef) -> None:
    labels = validated.meta["labels"]
    train_counts = frame.loc[frame["split"] == "train", "label"].value_counts()
    failures = []
    for label in labels:
        have = int(train_counts.get(label, 0))
        if have < min_per_class:
            rows = frame.loc[frame["label"] == label, "location"].tolist()
            where = ", ".join(rows[:10]) + (" ..." if len(rows) > 10 else "")
            failures.append(Failure(validated.meta["source"], "file", validated.meta["label_col"],
                                    f"class {label!r} has {have} training rows, fewer than data.min_per_class="
                                    f"{min_per_class} (rows with it: {where or 'none'}); add examples, fix "
                                    "a misspelt label, or lower data.min_per_class"))
    if failures:
        raise InvalidData(failures)


split_task = step_task(split)
