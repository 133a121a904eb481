"""Re-evaluate a registered version on its recorded test rows, as a new, logged record (never silently).

Versions registered before batched inference returned rows in input order (see `core.model.inference`) hold
`metrics.json` and `predictions.parquet` in which two batches had each other's predictions. A version is
immutable (its files are hashed in `lineage.json`), so re-evaluation does not overwrite them: it scores
the whole saved model on the same test sentences (the texts from `predictions.parquet`, or, for versions
that did not record them, from the dataset named in the lineage, matched by row id), and writes
    <version>/reevaluations/<UTC time>/metrics.json, predictions.parquet
plus one line in `<model>/reevaluations.jsonl` (when, version, old and new figures). The registry's listing
and `show` report the newest re-evaluation beside the figures recorded at registration.
"""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.storage import registry
from core.model.backbone import Backbone
from core.storage.artifacts import atomic_path, staging, write_json_atomic

log = logging.getLogger(__name__)
FOLDER = "reevaluations"
LOG = "reevaluations.jsonl"


def recorded_texts(folder: Path, predictions: pd.DataFrame, data: Path | None) -> list[str]:
    """The test sentences of a version's `predictions.parquet`, in its row order.

    From its `text` column when it has one; else from `data` (default: the dataset path in the lineage),
    validated with the version's own data settings and matched on row id. Raises `RegistryError` when a
    test row cannot be found there.
    """
    if "text" in predictions.columns:
        return predictions["text"].astype(str).tolist()
    from schemas.config import DataConfig
    from core.storage.artifacts import read_parquet
    from tasks.validate import validate

    lineage = json.loads((folder / "lineage.json").read_text())
    settings = dict(lineage.get("config", {}).get("data", {}))
    settings["path"] = str(data or lineage.get("dataset_path", ""))
    if not Path(settings["path"]).is_file():
        raise registry.RegistryError(f"version {folder.name} did not record its test texts and its dataset "
                                     f"{settings['path']} is not there; give it with --data PATH")
    with tempfile.TemporaryDirectory() as tmp:
        validated = validate(DataConfig(**settings), Path(tmp))
        table = read_parquet(validated, Path(tmp), columns=["row_id", "text"]).to_pandas().set_index("row_id")
    missing = sorted(set(predictions["row_id"]) - set(table.index))
    if missing:
        raise registry.RegistryError(f"{len(missing)} test rows of version {folder.name} are not in "
                                     f"{settings['path']} (e.g. row id {missing[0]}); give the data it was trained "
                                     "on with --data PATH")
    return table.loc[predictions["row_id"].to_numpy(), "text"].tolist()


def reevaluate(workdir: Path, name: str, version: str, backbone: Backbone | None = None,
               data: Path | None = None) -> dict[str, Any]:
    """Score `version` of `name` again on its recorded test rows; write and log the new metrics.

    `backbone` defaults to the one the version's lineage names (`model.backbone`, else the bundled one).
    Returns the log entry: version, time, folder, the recorded and the new accuracy and macro-F1.
    Raises `RegistryError` for an unknown or damaged version, or test rows that cannot be found.
    """
    from schemas.tables import predictions_schema
    from tasks.evaluate import classification_metrics
    from tasks.predict import score, trained_backbone

    folder = registry.resolve_version(workdir, name, version)
    version = folder.name
    backbone = backbone or trained_backbone(folder)
    old = pq.read_table(folder / "predictions.parquet").to_pandas()
    if not len(old):
        raise registry.RegistryError(f"version {version} has no test rows to re-score: it was trained on every "
                                     "labelled row (estimate mode); its quality is the cross-validated estimate in "
                                     "its metrics.json")
    texts = recorded_texts(folder, old, data)
    proba, labels = score(folder, texts, backbone)
    y = old["label"].map(labels.index).to_numpy()
    metrics = classification_metrics(y, proba, labels)
    predictions = pd.DataFrame({"row_id": old["row_id"], "text": texts, "label": old["label"]})
    predictions["predicted_label"] = [labels[i] for i in proba.argmax(axis=1)]
    for i, label in enumerate(labels):
        predictions[f"prob_{label}"] = proba[:, i]
    predictions_schema(labels).validate(predictions)
    recorded = json.loads((folder / "metrics.json").read_text())["test"]
    stamp = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}"
    dest = folder / FOLDER / stamp
    with staging(dest.parent, is_dir=True) as tmp:
        write_json_atomic(tmp / "metrics.json", {"test": metrics, "reevaluated_at": stamp,
                                                 "recorded_at_registration": {k: recorded.get(k) for k in
                                                                              ("accuracy", "macro_f1", "n")}})
        pq.write_table(pa.Table.from_pandas(predictions, preserve_index=False), tmp / "predictions.parquet",
                       compression="zstd")
        tmp.rename(dest)
    entry = {"version": version, "reevaluated_at": stamp, "folder": str(dest), "n": metrics["n"],
             "recorded": {"accuracy": recorded.get("accuracy"), "macro_f1": recorded.get("macro_f1")},
             "new": {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]},
             "changed_predictions": int((predictions["predicted_label"] != old["predicted_label"]).sum())}
    _append(registry.model_root(workdir, name) / LOG, entry)
    log.info("reevaluate: %s version %s: accuracy %.4f -> %.4f, macro-F1 %.4f -> %.4f on %d test rows "
             "(%d predictions changed)", name, version, recorded.get("accuracy", float("nan")), metrics["accuracy"],
             recorded.get("macro_f1", float("nan")), metrics["macro_f1"], metrics["n"], entry["changed_predictions"])
    return entry


def latest(folder: Path) -> dict[str, Any] | None:
    """The newest re-evaluation's metrics of a version folder, or None if it was never re-evaluated."""
    runs = sorted((folder / FOLDER).glob("*/metrics.json")) if (folder / FOLDER).is_dir() else []
    return json.loads(runs[-1].read_text()) if runs else None


def _append(path: Path, entry: dict[str, Any]) -> None:
    lines = path.read_text() if path.is_file() else ""
    with atomic_path(path) as tmp:
        tmp.write_text(lines + json.dumps(entry, sort_keys=True) + "\n")
