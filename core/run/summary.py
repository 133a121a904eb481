"""A run's records in the workdir: summary.json, the latest-success pointer, lineage, history, failure tables.

- `<workdir>/runs/<run_id>/summary.json`: what CONTRACT.md promises (dataset, stages, metrics, model, promotion,
  runner) and more; published with the history as the run's Prefect artifacts.
- `<workdir>/runs/latest-success.json`: the run id and validated data of the last successful run, drift's first
  baseline; the data the current champion was trained on (its lineage) is the second.
- `<workdir>/runs/<run_id>/validation_failures.csv`: every failing row of a rejected file.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.reports import dashboard as report
from core.run import faults
from core.run.errors import InvalidData
from core.storage.artifacts import ArtifactRef, artifact_dir, atomic_path, write_json_atomic
from schemas.config import RetrainConfig

log = logging.getLogger(__name__)

LATEST_SUCCESS = "latest-success.json"


def run_dir(workdir: Path, run_id: str) -> Path:
    """The folder of one run's records (summary.json, failure tables)."""
    return Path(workdir) / "runs" / run_id


def latest_success(workdir: Path) -> tuple[str | None, ArtifactRef | None]:
    """The run id and validated data of the last successful run in `workdir` (None, None if there is none)."""
    try:
        pointer = json.loads((Path(workdir) / "runs" / LATEST_SUCCESS).read_text())
        return pointer["run_id"], ArtifactRef.model_validate(pointer["validated"])
    except (OSError, ValueError, KeyError):
        return None, None


def champion_training_data(workdir: Path, name: str) -> ArtifactRef | None:
    """The validated data the current champion of `name` was trained on (its lineage's `validated_sha256`, in
    the content-addressed store of the validate step), or None if there is no champion or no such record.
    The reference says which version and run it belongs to (`meta.version`, `meta.run_id`); whether its bytes
    are still there is for the caller to check (`is_intact`)."""
    from core.storage.registry import RegistryError, champion, version_dir

    try:
        current = champion(workdir, name)
        if current is None:
            return None
        lineage = json.loads((version_dir(workdir, name, current["version"]) / "lineage.json").read_text())
        digest = lineage["validated_sha256"]
    except (RegistryError, OSError, ValueError, KeyError, TypeError):
        return None  # a damaged registry is the gate's to report; drift then compares with the last run only
    path = artifact_dir(Path(workdir), "validate") / f"{digest[:16]}.parquet"
    return ArtifactRef(path=path.relative_to(workdir).as_posix(), sha256=digest,
                       meta={"version": current["version"], "run_id": lineage.get("run_id")})


@dataclass(frozen=True)
class Baselines:
    """What drift compares a run's data with, as the workdir holds them when the run reads them."""

    last_run_id: str | None = None
    last_run: ArtifactRef | None = None
    champion_data: ArtifactRef | None = None


def drift_baselines(workdir: Path, model_name: str) -> Baselines:
    """The last successful run's validated data (and its run id) and the data the champion of `model_name` was
    trained on; each None where the workdir has none."""
    run_id, last_run = latest_success(workdir)
    return Baselines(run_id, last_run, champion_training_data(workdir, model_name))


def lineage(cfg: RetrainConfig, run_id: str | None, validated: ArtifactRef) -> dict[str, Any]:
    """Where a model came from: run, who started it (core.run.identity.run_starter), data, configuration, code,
    and the champion it challenged (read now)."""
    from core.run.identity import run_starter
    from core.storage.registry import champion
    from core.storage.versions import code_version

    try:
        parent = (champion(cfg.workdir, cfg.model.name) or {}).get("version")
    except Exception:  # noqa: BLE001 (a damaged pointer: the gate reports it; lineage just lacks a parent)
        parent = None
    return {"run_id": run_id, "dataset_path": str(Path(cfg.data.path).resolve()),
            "dataset_sha256": validated.meta["source_sha256"], "validated_sha256": validated.sha256,
            "config": cfg.model_dump(mode="json", by_alias=True),
            "code_version": code_version("tasks.finetune"), "parent_champion": parent,
            "started_by": run_starter(run_id)}


def history(workdir: Path) -> list[dict[str, Any]]:
    """Key figures of every run in `workdir` that wrote a summary, newest first."""
    rows = []
    for path in (Path(workdir) / "runs").glob("*/summary.json"):
        try:
            rows.append(report.history_row(json.loads(path.read_text())))
        except (OSError, ValueError, KeyError):
            continue  # a summary being written or damaged: the history shows the others
    return sorted(rows, key=lambda r: r.get("finished") or "", reverse=True)


def save_failures(workdir: Path, run_id: str, error: InvalidData) -> Path:
    """Write every failure of `error` to `runs/<run_id>/validation_failures.csv` (file, location, column, rule,
    value) and note its absolute path in `error.table_path`; returns the path."""
    path = run_dir(workdir, run_id) / "validation_failures.csv"
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "location", "column", "rule", "value"])
        writer.writeheader()
        writer.writerows(f.as_row() for f in error.failures)
    error.table_path = str(path.resolve())
    return path


def summary(cfg: RetrainConfig, run_id: str, stages: dict[str, dict[str, Any]], refs: dict[str, Any],
            runner: str, seconds: float, reference_run_id: str | None = None) -> dict[str, Any]:
    """The run's summary (CONTRACT.md) from what its stages recorded: `stages` (stage -> state, seconds, rows)
    and `refs` (stage -> result: an `ArtifactRef`, or the gate's decision and promote's release). `refs` must
    hold `validate`; each later stage adds its section when present."""
    validated = refs["validate"]
    out: dict[str, Any] = {
        "run_id": run_id,
        "dataset": {
            "path": str(Path(cfg.data.path).resolve()),
            "sha256": validated.meta["source_sha256"],
            "rows": validated.meta["rows_read"],
            "rows_used": validated.meta["rows_used"],
            "duplicates_dropped": validated.meta["duplicates_dropped"],
            "conflicts_dropped": validated.meta["conflicts_dropped"],
            "labels": validated.meta["labels"],
        },
        "stages": stages,
        "seconds": seconds,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "runner": runner,
        "config": cfg.model_dump(mode="json", by_alias=True),
        "artifacts": {name: {"path": ref.path, "sha256": ref.sha256}
                      for name, ref in refs.items() if isinstance(ref, ArtifactRef)},
    }
    if drift := refs.get("drift"):
        out["drift"] = {**drift.meta["report"], "reference_run_id": reference_run_id}
    if split := refs.get("split"):
        out["split"] = split.meta
    if augmented := refs.get("augment"):
        out["augment"] = {k: augmented.meta[k] for k in ("rows_in", "rows_out", "augmented_rows", "n_aug", "strengths",
                                                         "skipped_not_english", "skipped_languages")
                          if k in augmented.meta}  # the skipped counts: artifacts from before they existed lack them
    if tokenized := refs.get("tokenize"):
        out["tokenize"] = {k: tokenized.meta[k] for k in ("sequence_length", "truncated_rows", "truncated_share")}
    if features := refs.get("embed"):
        out["embed"] = {**features.meta["backbone_runs"], "unfreeze_top": features.meta["unfreeze_top"]}
    if (pseudo := refs.get("pseudo_label")) and "self_training" in pseudo.meta:
        out["self_training"] = pseudo.meta["self_training"]
    if model := refs.get("finetune"):
        out["training"] = {k: model.meta.get(k) for k in ("best_epoch", "epochs_run", "best_val_loss", "best_val_macro_f1",
                                                          "best_val_accuracy", "selection", "budget", "phases",
                                                          "history", "regime", "regime_reason")}
    if evaluation := refs.get("evaluate"):
        out["metrics"] = {"test": evaluation.meta["test"]}
        if "estimate" in evaluation.meta:  # estimate mode: the cross-validated figures, not test figures
            out["metrics"]["estimate"] = evaluation.meta["estimate"]
    if decision := refs.get("gate"):
        out["gate"] = decision.model_dump()
    if release := refs.get("promote"):
        out["model"] = {"name": release.name, "version": release.version, "path": release.path}
        out["promoted"] = release.promoted
        out["promotion_reason"] = release.reason  # why (not): the gate's reason, or what promote found after it
    if suggestions := refs.get("suggest"):  # suggest.pool: what to label next (tasks.suggest's accounting)
        out["suggestions"] = suggestions
    return out


def write_summary(workdir: Path, run_id: str, content: dict[str, Any], validated: ArtifactRef) -> Path:
    """Write `content` as `<workdir>/runs/<run_id>/summary.json`, publish it (and the drift report, the history) as
    the run's Prefect artifacts, and mark this run, with its `validated` data, as the latest success; returns
    the summary's absolute path."""
    path = (run_dir(workdir, run_id) / "summary.json").resolve()
    write_json_atomic(path, content)
    write_json_atomic(Path(workdir) / "runs" / LATEST_SUCCESS,
                      {"run_id": run_id, "validated": validated.model_dump(mode="json")})
    try:  # the dashboard is a view of what is recorded: it never fails a run (the champion may have moved)
        faults.point("report:publish")
        if "drift" in content:
            report.publish_drift(content["drift"])
        report.publish_run(content, history(workdir))
    except Exception as exc:  # noqa: BLE001
        log.warning("the run's dashboard artifacts were not published (%s: %s); summary.json and the registry are "
                    "complete", type(exc).__name__, exc)
    log.info("summary written to %s", path)
    return path
