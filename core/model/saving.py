"""Saving a Keras model so that the file's bytes depend on the model alone (its content hash is its identity)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import keras


def _renumber_shared_objects(config: object, ids: dict[int, int]) -> object:
    """Replace Keras's `shared_object_id`s (Python object ids, different in every process) by 1, 2, 3...
    in order of first appearance: the sharing is kept, the process-specific numbers are not."""
    if isinstance(config, dict):
        return {key: (ids.setdefault(value, len(ids) + 1) if key == "shared_object_id" else
                      _renumber_shared_objects(value, ids)) for key, value in config.items()}
    if isinstance(config, list):
        return [_renumber_shared_objects(value, ids) for value in config]
    return config


def save_reproducibly(model: keras.Model, path: Path) -> None:
    """Save `model` as a `.keras` file whose bytes depend only on the model. Keras stamps the save time into
    metadata.json and the zip entries, and Python object ids into config.json, which would give identical
    weights a new content hash on every save (and a new registry version for the same model)."""
    path = Path(path)
    raw = path.with_name(f".{path.name}.raw.keras")
    model.save(raw)
    try:
        with zipfile.ZipFile(raw) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
            for item in sorted(source.infolist(), key=lambda i: i.filename):
                data = source.read(item.filename)
                if item.filename == "metadata.json":
                    metadata = json.loads(data)
                    metadata.pop("date_saved", None)
                    data = json.dumps(metadata, sort_keys=True).encode()
                elif item.filename == "config.json":
                    data = json.dumps(_renumber_shared_objects(json.loads(data), {})).encode()
                target.writestr(zipfile.ZipInfo(item.filename, date_time=(1980, 1, 1, 0, 0, 0)), data,
                                compress_type=zipfile.ZIP_DEFLATED)
    finally:
        raw.unlink(missing_ok=True)
