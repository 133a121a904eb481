"""The model registry under the workdir: immutable versions and an atomically replaced champion pointer.

Layout, per model name (several classifiers can share a workdir):
    <workdir>/models/<name>/versions/<version>/   model.keras, model.json, metrics.json, lineage.json
    <workdir>/models/<name>/champion.json         {"version": ..., "previous": ..., "promoted_at": ...}
A version folder is written under a temporary name and renamed into place, then never changed; the champion
pointer is one small JSON file replaced with an atomic rename, so a reader always sees a whole pointer.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tasks.io import ArtifactRef, staging, write_json_atomic

CHAMPION = "champion.json"


def model_root(workdir: Path, name: str) -> Path:
    """The registry folder of one model name."""
    return Path(workdir) / "models" / name


def version_dir(workdir: Path, name: str, version: str) -> Path:
    """The folder of one registered version."""
    return model_root(workdir, name) / "versions" / version


def new_version(model: ArtifactRef) -> str:
    """A unique, sortable version string: UTC time and the start of the model's content hash."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}-{model.sha256[:8]}"


def register(model: ArtifactRef, evaluation: ArtifactRef, name: str, lineage: dict[str, Any],
             workdir: Path) -> str:
    """Copy a trained model and its evaluation into a new immutable version folder; returns the version."""
    version = new_version(model)
    dest = version_dir(workdir, name, version)
    with staging(dest.parent, is_dir=True) as folder:
        for source in (model.resolve(workdir), evaluation.resolve(workdir)):
            for path in source.iterdir():
                shutil.copy2(path, folder / path.name)
        write_json_atomic(folder / "lineage.json", {**lineage, "version": version, "model_sha256": model.sha256})
        os.replace(folder, dest)
    return version


def champion(workdir: Path, name: str) -> dict[str, Any] | None:
    """The champion pointer of `name`, or None if no version was promoted yet."""
    pointer = model_root(workdir, name) / CHAMPION
    try:
        return json.loads(pointer.read_text())
    except FileNotFoundError:
        return None


def promote(workdir: Path, name: str, version: str, reason: str) -> dict[str, Any]:
    """Make `version` the champion (atomic pointer swap); promoting the champion again changes nothing."""
    if not version_dir(workdir, name, version).is_dir():
        raise FileNotFoundError(f"model {name!r} has no version {version!r}")
    current = champion(workdir, name)
    if current and current["version"] == version:
        return current
    pointer = {
        "version": version,
        "previous": current["version"] if current else None,
        "promoted_at": datetime.now(timezone.utc).isoformat(),
        "reason": reason,
    }
    write_json_atomic(model_root(workdir, name) / CHAMPION, pointer)
    return pointer

