"""Batch prediction with a registered model: validate the input's text column, score, write Parquet.

The model is the champion of `name` or a named version. Its card says which backbone, labels and sequence
length it was trained with; the texts are tokenized the same way and scored in length-grouped batches (no
padding computed that is not needed), with progress and throughput in the logs. The output has the input's
columns, `predicted_label` and one `prob_<label>` per label, written atomically.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.raw import label_key, text_schema
from schemas.tables import predictions_schema
from core.storage import registry
from core.storage.registry import resolve_version  # noqa: F401  (the CLI's entry point to the registry)
from core.model.backbone import Backbone, encode_for_model
from core.run.errors import Failure, InvalidData
from core.storage.artifacts import atomic_path
from core.text.readers import read_raw
from tasks.validate import schema_failures

log = logging.getLogger(__name__)
BATCH = 64


ON_INVALID = ("refuse", "keep")


@dataclass
class Inputs:
    """Every row of a file to score, in file order: its cells (a row that could not be parsed has empty cells),
    its location, and why it cannot be scored ("" for a row that can)."""

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
    """The input file as read, one entry per row (rows in = rows out), after checking its text column row by row.

    Blank lines between rows are rows (with an empty text), in every file type. With `on_invalid="refuse"`
    (the default) any invalid row raises `InvalidData` listing every one; with `"keep"` they stay, each with
    its reason. A fault of the whole file (missing column, undecodable bytes, unreadable CSV) always raises.
    """
    if on_invalid not in ON_INVALID:
        raise ValueError(f"on_invalid must be one of {ON_INVALID}, got {on_invalid!r}")
    name = str(path)
    raw = read_raw(path, encoding, max_file_mb, delimiter, blank_lines="rows", header=header)
    if header == "none" and raw.delimiter is not None and raw.frame.shape[1] == 1 and text_col not in raw.frame.columns:
        text_col = str(raw.frame.columns[0])  # no header, one column: that column is the text, whatever its name
    if text_col not in raw.frame.columns:
        raise InvalidData([raw.missing_column(name, text_col, "--text-col")])
    if failures := raw.check_header(name, {"--text-col": text_col}, "--text-col"):
        raise InvalidData(failures)
    unparsed = [f for f in raw.failures if f.location.startswith(("line ", "row "))
                and not f.rule.startswith("unreadable")]
    if len(unparsed) != len(raw.failures):
        raise InvalidData(raw.failures)
    failures = unparsed + schema_failures(
        text_schema(max_chars), pd.DataFrame({"text": raw.frame[text_col].to_numpy()}, dtype=object),
        raw.locations, {"text": text_col}, name)
    if failures and on_invalid == "refuse":
        raise InvalidData(sorted(failures, key=lambda f: _number(f.location)))
    frame, locations = raw.frame.reset_index(drop=True), list(raw.locations)
    if unparsed:  # rows that could not be parsed keep their place, with empty cells
        blank = pd.DataFrame([[None] * frame.shape[1]] * len(unparsed), columns=frame.columns, dtype=object)
        locations += [f.location for f in unparsed]
        order = np.argsort([_number(loc) for loc in locations], kind="stable")
        frame = pd.concat([frame, blank], ignore_index=True).iloc[order].reset_index(drop=True)
        locations = [locations[i] for i in order]
    why: dict[str, list[str]] = {}
    for failure in failures:
        why.setdefault(failure.location, []).append(failure.rule)
    return Inputs(frame, locations, ["; ".join(why.get(loc, [])) for loc in locations], text_col)


def _number(location: str) -> int:
    tail = location.rpartition(" ")[2]
    return int(tail) if tail.isdigit() else 0


def trained_backbone(folder: Path) -> Backbone:
    """The backbone the version in `folder` was trained on: its lineage's `model.backbone` setting (a preset
    folder), else the bundled one. Raises `ConfigError` when that folder is no longer a backbone preset."""
    try:
        setting = json.loads((folder / "lineage.json").read_text())["config"]["model"]["backbone"]
    except (OSError, ValueError, KeyError, TypeError):
        setting = None  # versions registered before the setting existed used the bundled backbone
    return Backbone.resolve(setting)


def score(folder: Path, texts: list[str], backbone: Backbone) -> tuple[np.ndarray, list[str]]:
    """Class probabilities, float64 (len(texts), k) in the order of `texts`, of the model in `folder`, and its
    labels (the column order). Raises `RegistryError` if the model was trained on another backbone."""
    from tasks.finetune import load_classifier_file
    from core.model.inference import predict_token_ids

    card = json.loads((folder / "model.json").read_text())
    if card.get("backbone_sha256") != backbone.sha256:
        raise registry.RegistryError(f"{folder.name} was trained on another backbone (sha256 "
                                     f"{card.get('backbone_sha256', '?')[:12]}); install that one, or retrain")
    sequences = encode_for_model(backbone.path, texts, int(card["tokenizer"]["sequence_length"]))
    model = load_classifier_file(folder / "model.keras")
    return predict_token_ids(model, sequences, BATCH, progress="predict"), list(card["labels"])


def output_collisions(name: str, columns: list[str], labels: list[str], on_invalid: str) -> list[Failure]:
    """The input columns the output would overwrite (`predicted_label`, `prob_<label>` of the model's labels, and
    `reason` with `--on-invalid keep`): one file-level failure naming them and the fix. A column of the user's
    file is never overwritten (CONTRACT.md); an earlier output scored again is the usual cause. A column that a
    person cannot tell from an added one (`label_key`: case, spacing, invisible characters, look-alike letters,
    as Parquet keeps them: `Predicted_Label`, `predicted_label `) is refused too: written beside it, it would be
    two columns that read the same, and one column to case-insensitive tools (SQL engines, spreadsheets)."""
    added = {label_key(column): column for column in
             ["predicted_label", *(f"prob_{label}" for label in labels), *(["reason"] if on_invalid == "keep" else [])]}
    clash = [str(c) for c in columns if label_key(str(c)) in added]
    if not clash:
        return []
    named = ", ".join(repr(c) + (f" (read as {added[label_key(c)]!r})" if added[label_key(c)] != c else "")
                      for c in clash)
    return [Failure(name, "file", clash[0], f"the input already has column{'s' * (len(clash) > 1)} "
                    f"{named}, which the output adds (predicted_label, prob_<label> per "
                    "label): scoring would overwrite the file's own values; rename or drop "
                    f"{'them' if len(clash) > 1 else 'it'} in the input (is it an earlier output scored again?), or "
                    "score only the text column")]


def predict_file(data: Path, out: Path, folder: Path, text_col: str, backbone: Backbone | None = None,
                 encoding: str = "utf-8", max_chars: int = 2000, max_file_mb: int = 512, delimiter: str = "auto",
                 on_invalid: str = "refuse", header: str = "auto") -> dict:
    """Score every row of `data` with the model in `folder`; write `out` atomically; returns figures.

    `backbone` defaults to the one the model was trained on (`trained_backbone`). Rows in = rows out, in
    input order. With `on_invalid="keep"` an invalid row is written with an empty `predicted_label`, empty
    probabilities and its `reason`; by default any invalid row refuses the file."""
    inputs = read_texts(data, text_col, encoding, max_chars, max_file_mb, delimiter, on_invalid, header)
    text_col = inputs.text_col
    model_labels = list(json.loads((folder / "model.json").read_text())["labels"])
    if clash := output_collisions(str(data), list(inputs.frame.columns), model_labels, on_invalid):
        raise InvalidData(clash)
    valid = inputs.valid
    started = time.perf_counter()
    if valid:
        proba, labels = score(folder, inputs.frame[text_col].iloc[valid].astype(str).tolist(),
                              backbone or trained_backbone(folder))
    else:
        labels = list(json.loads((folder / "model.json").read_text())["labels"])
        proba = np.zeros((0, len(labels)))
    seconds = time.perf_counter() - started
    result = inputs.frame.copy()
    predicted = np.full(len(result), None, dtype=object)
    predicted[valid] = [labels[i] for i in proba.argmax(axis=1)]
    result["predicted_label"] = pd.Series(predicted, index=result.index, dtype=object)  # None stays null
    for i, label in enumerate(labels):
        column = np.full(len(result), np.nan)
        column[valid] = proba[:, i]
        result[f"prob_{label}"] = column
    if on_invalid == "keep":
        result["reason"] = inputs.reasons
    predictions_schema(labels).validate(result.iloc[valid])
    table = _to_arrow(result)
    with atomic_path(Path(out)) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    rate = len(valid) / seconds if seconds else 0.0
    kept = len(result) - len(valid)
    log.info("predict: %d rows in, %d rows out: %d scored with %s in %.1f s (%.0f sentences/s)%s -> %s", len(result),
             len(result), len(valid), folder.name, seconds, rate,
             f", {kept} invalid kept with an empty prediction and a reason" if kept else "", out)
    return {"rows": len(result), "scored": len(valid), "invalid_kept": kept, "model": folder.name,
            "seconds": round(seconds, 3), "sentences_per_second": round(rate, 1)}


def _to_arrow(frame: pd.DataFrame) -> pa.Table:
    """The frame as Arrow; an input column of mixed types (numbers and text, say) becomes text."""
    columns = {}
    for name in frame.columns:
        try:
            columns[str(name)] = pa.array(frame[name].tolist())
        except (pa.ArrowException, TypeError, ValueError):
            columns[str(name)] = pa.array([None if v is None else str(v) for v in frame[name]], pa.string())
    return pa.table(columns)
