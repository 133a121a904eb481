"""Step 5b, pseudo_label: self-training with `train.unlabelled=PATH` (off by default; see below why).

Self-training (Scudder 1965; Yarowsky 1995; "pseudo-labelling", Lee 2013): the current champion labels the
sentences of an unlabelled file; those it is confident about (top probability >= `train.pseudo_threshold`,
default 0.9) join the *training* split with the label it gave, and the new model trains on both. Provenance:
every row of this step's features carries `pseudo_labelled` (true for the added rows), and the step's meta names
the file, the model that labelled it, the threshold and the counts (summary.json `self_training`). A pseudo-
labelled row is never in the validation or test split (it is added as `train`, and a sentence already in the
labelled data is never added), so model selection and the gate see labelled rows only.

With no champion yet (a first run), or a champion of another backbone or label set, nothing is added and the
step says why. Without `train.unlabelled` the step returns its input unchanged, so every later cache key is
what it was.

Measured (`make bench B=active_learning`, logistic regression on the cached embeddings as each round's model,
5 seeds, 48 to 288 labels): see benchmarks/RESULTS.md "active_learning" and README; it did not win on validation
across sizes, so it stays off by default.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.config import DataConfig, TrainConfig
from schemas.tables import FEATURES_SCHEMA
from core.model.backbone import Backbone, encode_for_model
from core import registry
from core.storage.artifacts import ArtifactRef, read_parquet, write_parquet
from core.storage.caching import step_task
from core.text.identity import row_id
from core.registry.version import Version

log = logging.getLogger(__name__)
PSEUDO_SCHEMA = FEATURES_SCHEMA.append(pa.field("pseudo_labelled", pa.bool_()))


def pseudo_label(features: ArtifactRef, train: TrainConfig, data: DataConfig, model_name: str,
                 champion: str | None, backbone: Backbone, workdir: Path) -> ArtifactRef:
    """`features` (embed's output) plus, with `train.unlabelled` set, the confident pseudo-labelled rows of that
    file as training rows (the `pseudo_labelled` column marks them). `champion` is the version that labels them
    (the current champion of `model_name`, read by the flow; None: nothing to label with). Returns `features`
    itself when `train.unlabelled` is unset. The unlabelled file is read as predict reads (`data`'s reading
    settings, its text column; invalid rows skipped and counted); raises `InvalidData` for a file-level fault."""
    from core.model.features import cached_features
    from core.text.inputs import read_texts
    from core.registry.scoring import score_with_cache

    if train.unlabelled is None:
        return features
    table = read_parquet(features, workdir)
    labels = list(features.meta["labels"])
    report = {"file": str(train.unlabelled), "threshold": train.pseudo_threshold, "model": champion, "rows": 0,
              "invalid": 0, "already_labelled": 0, "candidates": 0, "added": 0, "added_per_label": {}, "skipped": ""}
    inputs = read_texts(Path(train.unlabelled), data.text_col, data.encoding, data.max_chars, data.max_file_mb,
                        data.delimiter, on_invalid="keep")
    report["rows"], report["invalid"] = len(inputs.frame), len(inputs.frame) - len(inputs.valid)
    known = set(table.column("row_id").to_pylist())
    texts: dict[str, str] = {}
    for i in inputs.valid:
        text = str(inputs.frame[data.text_col].iloc[i])
        texts.setdefault(row_id(text), text)
    fresh = {rid: text for rid, text in texts.items() if rid not in known}
    report["already_labelled"], report["candidates"] = len(texts) - len(fresh), len(fresh)
    folder = _labeller(workdir, model_name, champion, labels, backbone, report)
    if folder is None or not fresh:
        log.info("pseudo_label: nothing added (%s)", report["skipped"] or "no new sentences in the file")
        return _write(table, [], features, report, workdir)
    ids, sentences = list(fresh), list(fresh.values())
    scored = score_with_cache(folder, sentences, backbone, workdir)
    proba = scored.proba[:, [scored.labels.index(label) for label in labels]]  # this run's label order
    sure = np.flatnonzero(proba.max(axis=1) >= train.pseudo_threshold)
    sequences = encode_for_model(backbone.path, [sentences[i] for i in sure], int(features.meta["sequence_length"]))
    embeddings, hidden, _ = cached_features(backbone, sequences, int(features.meta["frozen_blocks"]), workdir)
    added = [{"row_id": ids[i], "split": "train", "label_id": int(proba[i].argmax()), "is_augmented": False,
              "embedding": embeddings[j].tolist(), "n_tokens": len(sequences[j]),
              "hidden": hidden[j].tobytes() if hidden is not None else None} for j, i in enumerate(sure)]
    report["added"] = len(added)
    report["added_per_label"] = {label: int(sum(r["label_id"] == k for r in added)) for k, label in enumerate(labels)}
    log.info("pseudo_label: %d of %d rows of %s added as training rows, labelled by %s with probability >= %.2f "
             "(%s); %d already labelled, %d invalid", len(added), report["rows"], train.unlabelled, champion,
             train.pseudo_threshold, report["added_per_label"], report["already_labelled"], report["invalid"])
    return _write(table, added, features, report, workdir)


def _labeller(workdir: Path, model_name: str, champion: str | None, labels: list[str], backbone: Backbone,
              report: dict) -> Path | None:
    """The champion's folder if it can label this run's sentences, else None with the reason in `report`."""

    if champion is None:
        report["skipped"] = "no champion yet to label the unlabelled rows: this run trains on labelled rows only"
        return None
    folder = registry.version_dir(workdir, model_name, champion)
    card = Version(folder).read_card()
    if sorted(card["labels"]) != sorted(labels):
        report["skipped"] = f"the champion {champion} has other labels ({', '.join(card['labels'])})"
    elif card.get("backbone_sha256") != backbone.sha256:
        report["skipped"] = f"the champion {champion} was trained on another backbone"
    return None if report["skipped"] else folder


def _write(table: pa.Table, added: list[dict], features: ArtifactRef, report: dict, workdir: Path) -> ArtifactRef:
    flags = pa.array([False] * table.num_rows + [True] * len(added), pa.bool_())
    extra = pa.Table.from_pylist(added, schema=FEATURES_SCHEMA) if added else FEATURES_SCHEMA.empty_table()
    merged = pa.concat_tables([table.select(FEATURES_SCHEMA.names).cast(FEATURES_SCHEMA), extra])
    out = merged.append_column("pseudo_labelled", flags)
    meta = {**features.meta, "self_training": report, "rows_in": table.num_rows, "rows_out": out.num_rows}
    return write_parquet(workdir, "pseudo_label", out, meta)


pseudo_label_task = step_task(pseudo_label)
