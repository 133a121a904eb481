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
import math
from pathlib import Path

import pandas as pd

from schemas.tables import SPLIT_SCHEMA, SplitTable, to_arrow
from core.storage.caching import step_task
from schemas.config import SplitConfig
from core.run.errors import Failure, InvalidData
from core.estimate import unmeasurable
from core.text.identity import unit_hash
from core.storage.artifacts import ArtifactRef, read_parquet, write_parquet

log = logging.getLogger(__name__)


def split(validated: ArtifactRef, cfg: SplitConfig, max_train_rows: int, min_per_class: int,
          workdir: Path, min_test_per_class: int = 0) -> ArtifactRef:
    """Add a `split` column (train/val/test) to the validated rows and write them.

    `max_train_rows` (0 = all) keeps a stratified, hash-ordered subset of the training split; the dropped
    rows are not moved to another split. Raises `InvalidData` if a class has fewer than `min_per_class`
    training rows, naming the cause (too few rows, the split fractions, or `data.max_train_rows`). A class with
    no validation or no test rows is not an error but cannot be measured there: `meta["unmeasured_classes"]`
    names each (with a warning in the log). Returns the reference, with per-split and per-class counts in `meta`.

    Estimate mode (`core.estimate.unmeasurable`): when some class is expected to get fewer than
    `min_test_per_class` test rows (`evaluate.min_test_per_class`), every row goes to train, no hold-out, and
    `meta["estimate"]` says why (quality is then estimated by cross-validation, `tasks.estimate`).
    """
    frame = read_parquet(validated, workdir).to_pandas()
    draw = frame["row_id"].map(lambda rid: unit_hash(cfg.salt, rid))
    frame["split"] = "train"
    frame.loc[draw < cfg.test_fraction + cfg.val_fraction, "split"] = "val"
    frame.loc[draw < cfg.test_fraction, "split"] = "test"
    estimate = unmeasurable({str(k): int(n) for k, n in frame["label"].value_counts().items()},
                            cfg.test_fraction, min_test_per_class)
    if estimate:
        frame["split"] = "train"  # a hold-out that measures nothing would cost a third of the rows
        log.warning("split: %s; no hold-out: every labelled row trains the model, and quality is estimated by "
                    "cross-validation", estimate["reason"])
    uncapped = frame
    if max_train_rows:
        frame = _cap_training_rows(frame, draw, max_train_rows)
    _check_class_sizes(frame, uncapped, min_per_class, max_train_rows, cfg, validated)
    counts = frame.groupby(["split", "label"]).size()
    meta = {
        "labels": validated.meta["labels"],
        "split_rows": {s: int(n) for s, n in frame["split"].value_counts().items()},
        "split_class_counts": {f"{s}/{lab}": int(n) for (s, lab), n in counts.items()},
        "unmeasured_classes": unmeasured_classes(frame, validated.meta["labels"], cfg),
    }
    if estimate:
        meta["estimate"] = estimate
        meta["unmeasured_classes"]["warnings"] = []  # no hold-out on purpose: the estimate's message says it
    log.info("split %d rows: %s", len(frame), meta["split_rows"])
    for warning in meta["unmeasured_classes"]["warnings"]:
        log.warning("split: %s", warning)
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


def unmeasured_classes(frame: pd.DataFrame, labels: list[str], cfg: SplitConfig) -> dict:
    """The classes that have no validation rows (`val`) or no test rows (`test`): early stopping cannot see
    them, or the test metrics and the gate cannot measure them; with one warning per class saying what to do."""
    counts = frame.groupby(["label", "split"]).size()
    out: dict = {"val": [], "test": [], "warnings": []}
    for label in labels:
        have = {part: int(counts.get((label, part), 0)) for part in ("train", "val", "test")}
        missing = [part for part in ("val", "test") if not have[part]]
        for part in missing:
            out[part].append(label)
        if missing:
            total = sum(have.values())
            fraction = min(cfg.val_fraction, cfg.test_fraction)
            need = math.ceil(1 / fraction)
            words = " or ".join({"val": "validation", "test": "test"}[p] for p in missing)
            out["warnings"].append(
                f"class {label!r} has no {words} rows ({total} rows: {have['train']} train, {have['val']} "
                f"validation, {have['test']} test), so it is not measured there"
                + (" (test metrics and the gate do not cover it)" if "test" in missing else "")
                + f"; add rows of it (about {need} or more give each split a row on average), or raise "
                f"split.val_fraction / split.test_fraction")
    return out


def _check_class_sizes(frame: pd.DataFrame, uncapped: pd.DataFrame, min_per_class: int, max_train_rows: int,
                       cfg: SplitConfig, validated: ArtifactRef) -> None:
    labels = validated.meta["labels"]
    train_counts = frame.loc[frame["split"] == "train", "label"].value_counts()
    uncapped_counts = uncapped.loc[uncapped["split"] == "train", "label"].value_counts()
    failures = []
    for label in labels:
        have = int(train_counts.get(label, 0))
        if have >= min_per_class:
            continue
        rows = frame.loc[frame["label"] == label, "location"].tolist()
        where = ", ".join(rows[:5]) + (" ..." if len(rows) > 5 else "")
        before = int(uncapped_counts.get(label, 0))
        if max_train_rows and before >= min_per_class:
            kept, total = int((frame["split"] == "train").sum()), int((uncapped["split"] == "train").sum())
            advice = (f"the cause is data.max_train_rows={max_train_rows}: it keeps {kept} of {total} training "
                      "rows, each class in "
                      f"proportion, which leaves this class {have} of its {before}; raise data.max_train_rows (0 = all "
                      "training rows) or lower data.min_per_class")
        elif len(rows) >= min_per_class:
            held = len(rows) - before
            advice = (f"it has {len(rows)} rows, of which the split holds out {held} for validation and test "
                      f"(split.val_fraction={cfg.val_fraction}, split.test_fraction={cfg.test_fraction}); add "
                      "examples, lower the split fractions, or lower data.min_per_class")
        else:
            advice = "add examples, fix a misspelt label, or lower data.min_per_class"
        failures.append(Failure(validated.meta["source"], "file", validated.meta["label_col"],
                                f"class {label!r} has {have} training rows, fewer than data.min_per_class="
                                f"{min_per_class}; {advice} (rows with it: {where or 'none'})"))
    if failures:
        raise InvalidData(failures)


split_task = step_task(split)
