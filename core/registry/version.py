"""A registered version's folder and its layout (`Version`): the one place the names of its files are spelt.

    <workdir>/models/<name>/versions/<version>/   model.keras, model.json (the finetune artifact), metrics.json,
                                                  predictions.parquet (the evaluate artifact), lineage.json,
                                                  saved_model/ (TensorFlow SavedModel for serving), report.html,
                                                  reevaluations/

Also the folder names' rule (`model_root`, `version_dir`: a plain folder name, nothing reaching outside the
registry) and the registry's error, which every part of the registry (store, review, export) raises.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import PipelineError
from core.model.classifier import CARD_FILE, METRICS_FILE, MODEL_FILE, PREDICTIONS_FILE

LINEAGE_FILE = "lineage.json"
SAVED_MODEL = "saved_model"
REPORT_FILE = "report.html"
REEVALUATIONS = "reevaluations"


class RegistryError(PipelineError):
    """A registry request that cannot be carried out (unknown version, damaged pointer, nothing to roll back to)."""


def _plain_name(value: Any, what: str) -> str:
    """`value` if it is a usable folder name (a non-empty string, no path separator, not hidden, not `.`/`..`);
    raises `RegistryError` otherwise, so no name can reach outside the registry."""
    if (not isinstance(value, str) or not value.strip() or value != value.strip() or "/" in value or "\\" in value
            or "\0" in value or value.startswith(".")):
        raise RegistryError(f"{value!r} is not a {what} of this registry (a plain folder name is expected); see "
                            "`python -m flows.registry list`")
    return value


def model_root(workdir: Path, name: str) -> Path:
    """The registry folder of one model name; raises `RegistryError` for a name that is not a plain folder name."""
    return Path(workdir) / "models" / _plain_name(name, "model name")


def version_dir(workdir: Path, name: str, version: str) -> Path:
    """The folder of one registered version; raises `RegistryError` for a version that is not a plain folder name
    (`../elsewhere`, None)."""
    return model_root(workdir, name) / "versions" / _plain_name(version, "version")


@dataclass(frozen=True)
class Version:
    """One version folder of the registry (`path`) and its files, each spelt once here. Reading a file raises
    what reading it raises (OSError, ValueError for bad JSON)."""

    path: Path

    @classmethod
    def of(cls, workdir: Path, name: str, version: str) -> "Version":
        """The version `version` of model `name` under `workdir` (RegistryError for a name that is not plain)."""
        return cls(version_dir(workdir, name, version))

    @property
    def id(self) -> str:
        """The version string (the folder's name)."""
        return self.path.name

    @property
    def model(self) -> Path:
        """The Keras classifier (`model.keras`, written by finetune)."""
        return self.path / MODEL_FILE

    @property
    def card(self) -> Path:
        """The model card (`model.json`): labels, tokenizer settings, training parameters and curves."""
        return self.path / CARD_FILE

    @property
    def metrics(self) -> Path:
        """The test metrics (`metrics.json`, written by evaluate)."""
        return self.path / METRICS_FILE

    @property
    def predictions(self) -> Path:
        """The test-set predictions (`predictions.parquet`, written by evaluate)."""
        return self.path / PREDICTIONS_FILE

    @property
    def lineage(self) -> Path:
        """Where the model comes from and the hashes of every file (`lineage.json`, written at registration)."""
        return self.path / LINEAGE_FILE

    @property
    def saved_model(self) -> Path:
        """The raw-text TensorFlow SavedModel for serving (`saved_model/`)."""
        return self.path / SAVED_MODEL

    @property
    def report(self) -> Path:
        """The model report (`report.html`, core.reports.model_report)."""
        return self.path / REPORT_FILE

    @property
    def reevaluations(self) -> Path:
        """Later scores on new labelled data (`reevaluations/`, flows/reevaluation.py)."""
        return self.path / REEVALUATIONS

    def read_card(self) -> dict[str, Any]:
        return json.loads(self.card.read_text())

    def read_lineage(self) -> dict[str, Any]:
        return json.loads(self.lineage.read_text())

    def read_metrics(self) -> dict[str, Any]:
        return json.loads(self.metrics.read_text())
