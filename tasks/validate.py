"""Step 1, validate: read the raw labelled file, check every row, resolve duplicates, write validated Parquet.

Every broken rule of every row is collected before anything fails (pandera's lazy validation), so a person
fixes the file once, not once per error. Duplicates (equal after normalisation) with the same label are
kept once; with different labels they follow `data.conflicts`.
"""

from __future__ import annotations

import logging
import math
import numbers
import re
import statistics
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from schemas.raw import canonical_spelling, escaped, label_key, raw_schema, spelling_difference
from schemas.tables import VALIDATED_SCHEMA, ValidatedTable, to_arrow
from core.storage.caching import step_task
from schemas.config import DataConfig
from core.errors import Failure, InvalidData
from core.text.identity import normalize_text, row_id
from core.storage.artifacts import ArtifactRef, sha256_file, write_parquet
from core.text.checks import schema_failures, shorten
from core.text.readers import RawTable, read_raw

log = logging.getLogger(__name__)


def validate(data: DataConfig, workdir: Path) -> ArtifactRef:
    """Validate `data.path` and write one row per distinct sentence (`row_id, text, label, location`).

    Returns the reference of the validated Parquet, whose `meta` counts rows read, duplicates and
    conflicts dropped, and lists the label set. Raises `InvalidData` listing every failure found.
    """
    name = str(data.path)
    raw = read_raw(data.path, data.encoding, data.max_file_mb, data.delimiter, header=data.header)
    frame = _select_columns(raw, data, name)
    frame["label"] = boolean_labels(frame["label"]).map(canonical_label)
    if swapped := _swapped_columns(frame, data, name):
        raise InvalidData([swapped])
    columns = {"text": data.text_col, "label": data.label_col}
    given = [canonical_spelling(str(canonical_label(label))) for label in data.labels] if data.labels else None
    if given and (failures := _given_label_failures(data.labels, name, data.label_col)):
        raise InvalidData(failures)
    failures = list(raw.failures) + schema_failures(raw_schema(given, data.max_chars), frame, raw.locations,
                                                    columns, name)
    if failures:
        raise InvalidData(_in_file_order(failures))

    frame["text"] = frame["text"].str.strip()
    frame["label"] = frame["label"].str.strip()
    frame["location"] = raw.locations
    if failures := _label_spelling_failures(frame, data.label_col, name, given) or _truth_value_failures(
            frame, data.label_col, name):
        raise InvalidData(failures)
    frame["label"], label_notes = _canonical_labels(frame["label"])
    raw.notes.extend(label_notes)
    for note in label_notes:
        log.info("%s: %s", name, note)
    frame["norm"] = frame["text"].map(normalize_text)
    frame, counts = _resolve_duplicates(frame, data, name)

    labels = list(dict.fromkeys(given)) if given else sorted(frame["label"].unique())
    if len(set(frame["label"])) < 2:
        raise InvalidData([Failure(name, "file", data.label_col, f"needs at least 2 classes, found "
                                   f"{sorted(set(frame['label']))}")])
    frame["row_id"] = frame["norm"].map(row_id)
    frame = ValidatedTable.validate(frame[VALIDATED_SCHEMA.names])
    meta = {
        "source": name,
        "source_sha256": sha256_file(data.path),
        "label_col": data.label_col,
        "rows_read": raw.rows_read,
        "rows_used": len(frame),
        "labels": labels,
        "class_counts": dict(Counter(frame["label"])),
        "delimiter": raw.delimiter,
        "blank_lines_skipped": len(raw.blank_lines),
        "read_notes": raw.notes,
        **counts,
    }
    log.info("validated %s: %d rows read, %d used (%d duplicates, %d conflicting rows dropped)",
             name, raw.rows_read, len(frame), counts["duplicates_dropped"], counts["conflicts_dropped"])
    for conflict in counts["conflicts"]:
        log.warning("conflicting labels at %s (%s): %s", ", ".join(conflict["locations"]),
                    ", ".join(conflict["labels"]), conflict["resolution"])
    return write_parquet(workdir, "validate", to_arrow(frame, VALIDATED_SCHEMA), meta)


def _select_columns(raw: RawTable, data: DataConfig, name: str) -> pd.DataFrame:
    frame = raw.frame
    found = [str(c) for c in frame.columns]
    missing = [(flag, col) for flag, col in (("--text-col", data.text_col), ("--label-col", data.label_col))
               if col not in found]
    fix = "--text-col 1 --label-col 2"
    if missing and raw.data_like_header is not None:
        raise InvalidData([Failure(name, "line 1", "", raw.header_rule(fix))])
    if missing:
        raise InvalidData([raw.missing_column(name, col, flag) for flag, col in missing])
    if failures := raw.check_header(name, {"--text-col": data.text_col, "--label-col": data.label_col}, fix):
        raise InvalidData(failures)
    return pd.DataFrame({"text": frame[data.text_col].to_numpy(), "label": frame[data.label_col].to_numpy()},
                        dtype=object)


_INTEGRAL_TEXT = re.compile(r"^\s*[+-]?\d+(\.0*)?\s*$")


def canonical_label(value: object) -> object:
    """One spelling per label, whatever the file or column type: a number that is integral is that integer's
    digits (1, 1.0, numpy 1.0, "1.0", " 01 " -> "1"); any other number is its shortest decimal (0.5 -> "0.5");
    text is kept as written (stripped later). Booleans, nulls and other types are left for the schema to judge."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            return None if math.isnan(value) else value
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str) and _INTEGRAL_TEXT.match(value):
        return str(int(value.strip().split(".")[0]))
    return value


def boolean_labels(labels: pd.Series) -> pd.Series:
    """A label column of booleans only (JSON `true`/`false`, a Parquet boolean column) as the classes `True` and
    `False` (Python's spelling, as pandas writes them to CSV, so the same data gives the same classes in every file
    type). A boolean among other labels is left for the schema to refuse: a stray `true` in a column of words is a
    mistake, not a class."""
    present = [v for v in labels if v is not None and not (isinstance(v, float) and math.isnan(v))]
    # booleans beside the integers 0 and 1 (JSON `true` and `1` in one column) are spelled too, for
    # `_truth_value_failures` to name the two ways of writing one truth value, as it does for a CSV
    if present and any(isinstance(v, (bool, np.bool_)) for v in present) and all(
            isinstance(v, (bool, np.bool_)) or (isinstance(v, numbers.Integral) and v in (0, 1)) for v in present):
        return labels.map(lambda v: str(bool(v)) if isinstance(v, (bool, np.bool_)) else v)
    return labels


_TRUTH = {"true": "1", "false": "0", "1": "1", "0": "0"}


def _truth_value_failures(frame: pd.DataFrame, column: str, name: str) -> list[Failure]:
    """A label column of truth values written both as words and as digits (`True` and `1`, `false` and `0`): one
    column of booleans exported in parts, never four classes. Each row of the less frequent way fails, naming
    the other spelling of its value."""
    labels = Counter(frame["label"])
    if not labels or not all(label.casefold() in _TRUTH for label in labels):
        return []
    words = {label for label in labels if not label.isdigit()}
    if not words or len(words) == len(labels):
        return []
    minority = words if sum(labels[w] for w in words) <= sum(labels.values()) / 2 else set(labels) - words
    other = {_TRUTH[label.casefold()]: label for label in sorted(set(labels) - minority, key=labels.get)}
    failures = []
    for label in minority:
        twin = other.get(_TRUTH[label.casefold()])
        said = (f"'{twin}' ({labels[twin]} rows)" if twin else
                f"{' and '.join(repr(x) for x in sorted(set(labels) - minority))}")
        for location in frame.loc[frame["label"] == label, "location"]:
            failures.append(Failure(name, location, column, f"label '{label}' is one truth value written two ways: "
                                    f"other rows write it as {said}; use one spelling (words or 1/0) for "
                                    "the whole column", label))
    return _in_file_order(failures)


def _canonical_labels(labels: pd.Series) -> tuple[pd.Series, list[str]]:
    """Each label in its `canonical_spelling` (NFC, no invisible format characters), and a note for each label
    whose spelling changed (both shown escaped). Called once no two spellings of one label are left."""
    changed = {label: canonical_spelling(label) for label in set(labels) if canonical_spelling(label) != label}
    notes = [f"label '{escaped(old)}' stored as '{escaped(new)}' ({spelling_difference(old, new)}: one spelling "
             "for a label a person cannot tell apart)" for old, new in sorted(changed.items())]
    return labels.map(lambda v: changed.get(v, v)), notes


def _given_label_failures(labels: tuple[str, ...], name: str, column: str) -> list[Failure]:
    """`data.labels` naming one label twice in spellings a person cannot tell apart."""
    seen: dict[str, str] = {}
    failures = []
    for label in (str(canonical_label(v)) for v in labels):
        other = seen.setdefault(label_key(label), label)
        if other != label:
            failures.append(Failure(name, "file", column, f"data.labels names '{escaped(other)}' and "
                                    f"'{escaped(label)}', which differ only in {spelling_difference(other, label)}; "
                                    "give each label once"))
    return failures


def _swapped_columns(frame: pd.DataFrame, data: DataConfig, name: str) -> Failure | None:
    """The likely cause when the text column holds a few short distinct values and the label column long free
    text: the two columns are swapped. Returns the failure that says so (and how to fix it), or None."""
    texts = [v for v in frame["text"] if isinstance(v, str) and v.strip()]
    labels = [v for v in frame["label"] if isinstance(v, str) and v.strip()]
    if len(texts) < 10 or len(labels) < 10:
        return None
    text_values, label_values = set(texts), set(labels)
    short_texts = len(text_values) <= max(20, len(texts) // 10) and statistics.median(map(len, texts)) <= 20
    long_labels = (len(label_values) > len(labels) / 2 and statistics.median(map(len, labels)) >= 25
                   and sum(len(v.split()) >= 4 for v in labels) > len(labels) / 2)
    if not (short_texts and long_labels):
        return None
    shown = ", ".join(repr(v) for v in sorted(text_values)[:5]) + (" ..." if len(text_values) > 5 else "")
    return Failure(name, "file", data.text_col,
                   f"the text and label columns look swapped: column {data.text_col!r} (--text-col) holds "
                   f"{len(text_values)} short distinct values ({shown}) and column {data.label_col!r} (--label-col) "
                   f"holds {len(label_values)} distinct sentences; run with --text-col {data.label_col} "
                   f"--label-col {data.text_col}")


def _label_spelling_failures(frame: pd.DataFrame, column: str, name: str,
                              given: list[str] | None = None) -> list[Failure]:
    """Labels a person cannot tell apart are one label written two ways: spellings with one `label_key` (case,
    spacing, Unicode normal form, invisible format characters, compatibility forms). Each row of a spelling other
    than the most frequent one (or than the one `data.labels` gives) fails, both spellings shown escaped."""
    counts = Counter(frame["label"])
    failures = []
    by_key: dict[str, list[str]] = {}
    for label in counts:
        by_key.setdefault(label_key(label), []).append(label)
    preferred = {label_key(label): label for label in given or ()}
    for key, variants in by_key.items():
        if len(variants) < 2 and (key not in preferred or canonical_spelling(variants[0]) == preferred[key]):
            continue
        main = preferred.get(key) or max(variants, key=lambda v: (counts[v], canonical_spelling(v) == v, v))
        source = "data.labels" if key in preferred else f"{counts[main]} rows"
        for variant in variants:
            if variant == main:
                continue
            for location in frame.loc[frame["label"] == variant, "location"]:
                failures.append(Failure(name, location, column, f"label '{escaped(variant)}' differs from "
                                        f"'{escaped(main)}' ({source}) only in {spelling_difference(variant, main)}; "
                                        "use one spelling", shorten(variant)))
    return _in_file_order(failures)


def _resolve_duplicates(frame: pd.DataFrame, data: DataConfig, name: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """Keep one row per normalised text; settle texts seen with several labels by `data.conflicts`."""
    policy = data.conflicts
    labels_per_text = frame.groupby("norm", sort=False)["label"].agg(lambda s: Counter(s))
    conflicting = labels_per_text[labels_per_text.map(len) > 1]
    if len(conflicting) and policy == "error":
        raise InvalidData(_conflict_failures(frame, conflicting.index, name, data.label_col))
    keep_label: dict[str, str | None] = {}
    details = []
    for norm, counts in conflicting.items():
        (top, top_n), *rest = counts.most_common()
        keep_label[norm] = top if policy == "majority" and top_n > rest[0][1] else None
        rows = frame[frame["norm"] == norm]
        details.append({"text": shorten(rows["text"].iloc[0]), "locations": rows["location"].tolist(),
                        "labels": rows["label"].tolist(),
                        "resolution": f"kept {keep_label[norm]!r}" if keep_label[norm] else "dropped"})
    resolved = frame["norm"].map(lambda n: keep_label.get(n, ""))
    is_conflict = frame["norm"].isin(conflicting.index)
    keep = ~is_conflict | (frame["label"] == resolved)
    conflicts_dropped = int((~keep).sum())
    kept = frame[keep]
    deduped = kept.drop_duplicates("norm", keep="first")
    dropped = kept[kept.duplicated("norm", keep="first")]
    counts = {
        "duplicates_dropped": len(kept) - len(deduped),
        "duplicate_locations": dropped["location"].tolist()[:100],
        "conflicts_dropped": conflicts_dropped,
        "conflicting_texts": len(conflicting),
        "conflicts": details[:100],
    }
    return deduped.reset_index(drop=True), counts


def _conflict_failures(frame: pd.DataFrame, conflicting: pd.Index, name: str, column: str) -> list[Failure]:
    failures = []
    for norm in conflicting:
        rows = frame[frame["norm"] == norm]
        pairs = [f"{loc} ({shorten(lab, 30)})" for loc, lab in zip(rows["location"], rows["label"])]
        where = ", ".join(pairs[:5]) + (f" and {len(pairs) - 5} more" if len(pairs) > 5 else "")
        for location, label in zip(rows["location"], rows["label"]):
            failures.append(Failure(name, location, column, f"the same text has different labels: {where}; fix "
                                    "the labels, or set data.conflicts=drop or data.conflicts=majority",
                                    shorten(label)))
    return failures


def _in_file_order(failures: list[Failure]) -> list[Failure]:
    def key(failure: Failure) -> tuple[int, str]:
        number = failure.location.rpartition(" ")[2]
        return (int(number) if number.isdigit() else 0, failure.column)
    return sorted(failures, key=key)


validate_task = step_task(validate)
