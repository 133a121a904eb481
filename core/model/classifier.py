"""The saved classifier that finetune writes and evaluate, gate, predict and suggest read: its files, its loader
(Keras safe mode, after the artifact's hash is checked), its card, and the stored features of one split
(`SplitFeatures`) that training and scoring read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.storage.artifacts import ArtifactRef, CorruptArtifact, read_parquet


# The files of a trained and evaluated classifier: a finetune artifact holds the model and its card, an evaluate
# artifact the test metrics and predictions; a registered version holds all four (core.registry.version.Version).
MODEL_FILE = "model.keras"
CARD_FILE = "model.json"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.parquet"


class SplitFeatures:
    """The stored features of one split: `row_ids`, `labels` (int32), `embeddings` (n, hidden_dim) float32 and,
    when blocks are unfrozen, `hidden`: each row's frozen-bottom output (n_tokens, hidden_dim) float16 (else
    None). A split with no rows has embeddings of shape (0, 0) and no hidden states."""

    def __init__(self, features: ArtifactRef, workdir: Path, split: str):
        rows = read_parquet(features, workdir, filters=[("split", "==", split)]).to_pandas()
        self.row_ids = rows["row_id"].to_numpy(dtype=object)
        self.embeddings = (np.stack(rows["embedding"].to_numpy()).astype(np.float32) if len(rows)
                           else np.zeros((0, 0), np.float32))
        self.labels = rows["label_id"].to_numpy(dtype=np.int32)
        self.is_augmented = (rows["is_augmented"].to_numpy(dtype=bool) if "is_augmented" in rows
                             else np.zeros(len(rows), bool))
        self.hidden = None
        if rows["hidden"].notna().any():  # stored exactly when some block trains (tasks.embed)
            self.hidden = [np.frombuffer(blob, dtype=np.float16).reshape(n, -1)
                           for blob, n in zip(rows["hidden"], rows["n_tokens"])]


def load_classifier(model: ArtifactRef, workdir: Path):
    """The saved classifier of a finetune artifact, after checking its hash."""
    if not model.is_intact(workdir):
        raise CorruptArtifact(f"model {model.resolve(workdir)} is missing or altered")
    return load_classifier_file(model.resolve(workdir) / MODEL_FILE)


def load_classifier_file(path: Path):
    """A saved classifier, loaded with Keras safe mode on (no arbitrary code from the file)."""
    import keras

    import core.model.layers  # noqa: F401  (registers the custom layers before loading)

    return keras.saving.load_model(path, safe_mode=True)


def read_card(model: ArtifactRef, workdir: Path) -> dict:
    """The model's card: labels, tokenizer settings, training parameters and curves."""
    return json.loads((model.resolve(workdir) / CARD_FILE).read_text())
