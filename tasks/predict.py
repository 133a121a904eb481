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
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.raw import text_schema
from schemas.tables import predictions_schema
from tasks import registry
from tasks.backbone import Backbone, encode_texts, special_ids
from tasks.errors import Failure, InvalidData
from tasks.io import atomic_path
from tasks.readers import read_raw
from tasks.validate import schema_failures

log = logging.getLogger(__name__)
BATCH = 64


def resolve_version(workdir: Path, name: str, model: str) -> Path:
    """The folder of `model` (`champion` or a version) of `name`, after checking every file against the hashes
    recorded at registration; raises `RegistryError` if there is none or it was altered."""
    if model == "champion":
        current = registry.champion(workdir, name)
        if current is None:
            raise registry.RegistryError(f"model {name!r} has no champion in {workdir}: run the retrain flow first, "
                                         "or name a version with --model")
        model = current["version"]
    folder = registry.version_dir(workdir, name, model)
    if not (folder / "model.keras").is_file():
        raise registry.RegistryError(f"model {name!r} has no version {model!r} in {workdir}; see "
                                     "`python -m flows.registry list`")
    registry.verify(workdir, name, model)  # every file still has the hash recorded at registration
    return folder


def read_texts(path: Path, text_col: str, encoding: str, max_chars: int, max_file_mb: int) -> pd.DataFrame:
    """The input file as read, after checking its text column row by row; raises `InvalidData`."""
    raw = read_raw(path, encoding, max_file_mb)
    if text_col not in raw.frame.columns:
        found = ", ".join(map(str, raw.frame.columns)) or "none"
        raise InvalidData([Failure(str(path), "file", text_col, f"missing column {text_col!r} (columns found: "
                                   f"{found}); name the right one with --text-col")])
    failures = list(raw.failures) + schema_failures(
        text_schema(max_chars), pd.DataFrame({"text": raw.frame[text_col].to_numpy()}, dtype=object),
        raw.locations, {"text": text_col}, str(path))
    if failures:
        raise InvalidData(failures)
    return raw.frame


def score(folder: Path, texts: list[str], backbone: Backbone) -> tuple[np.ndarray, list[str]]:
    """Class probabilities of `texts` under the model in `folder`, and its labels (column order)."""
    from tasks.finetune import load_classifier_file
    from tasks.model import length_batches, pad_batch

    card = json.loads((folder / "model.json").read_text())
    if card.get("backbone_sha256") != backbone.sha256:
        raise registry.RegistryError(f"{folder.name} was trained on another backbone (sha256 "
                                     f"{card.get('backbone_sha256', '?')[:12]}); install that one, or retrain")
    length = int(card["tokenizer"]["sequence_length"])
    cls_id, sep_id, _ = special_ids(backbone.path)
    sequences = [[cls_id, *ids[: length - 2], sep_id] for ids in encode_texts(backbone.path, texts)]
    model = load_classifier_file(folder / "model.keras")
    proba = np.zeros((len(texts), len(card["labels"])))
    batches = length_batches(np.array([len(s) for s in sequences]), BATCH)
    started = time.perf_counter()
    for number, rows in enumerate(batches, start=1):
        proba[rows] = model.predict_on_batch(pad_batch([sequences[i] for i in rows]))
        if number % 20 == 0 or number == len(batches):
            done = sum(len(b) for b in batches[:number])
            log.info("predict: batch %d/%d, %d/%d sentences, %.0f sentences/s", number, len(batches), done,
                     len(texts), done / (time.perf_counter() - started))
    proba /= proba.sum(axis=1, keepdims=True)
    return proba, list(card["labels"])


def predict_file(data: Path, out: Path, folder: Path, text_col: str, backbone: Backbone, encoding: str = "utf-8",
                 max_chars: int = 2000, max_file_mb: int = 512) -> dict:
    """Score every row of `data` with the model in `folder`; write `out` atomically; returns figures."""
    frame = read_texts(data, text_col, encoding, max_chars, max_file_mb)
    started = time.perf_counter()
    proba, labels = score(folder, frame[text_col].astype(str).tolist(), backbone)
    seconds = time.perf_counter() - started
    result = frame.copy()
    result["predicted_label"] = [labels[i] for i in proba.argmax(axis=1)]
    for i, label in enumerate(labels):
        result[f"prob_{label}"] = proba[:, i]
    predictions_schema(labels).validate(result)
    table = _to_arrow(result)
    with atomic_path(Path(out)) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    rate = len(result) / seconds if seconds else 0.0
    log.info("predict: %d rows scored with %s in %.1f s (%.0f sentences/s) -> %s", len(result), folder.name, seconds,
             rate, out)
    return {"rows": len(result), "model": folder.name, "seconds": round(seconds, 3), "sentences_per_second": round(rate, 1)}


def _to_arrow(frame: pd.DataFrame) -> pa.Table:
    """The frame as Arrow; an input column of mixed types (numbers and text, say) becomes text."""
    columns = {}
    for name in frame.columns:
        try:
            columns[str(name)] = pa.array(frame[name].tolist())
        except (pa.ArrowException, TypeError, ValueError):
            columns[str(name)] = pa.array([None if v is None else str(v) for v in frame[name]], pa.string())
    return pa.table(columns)
