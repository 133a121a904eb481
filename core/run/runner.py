"""The record of one retrain run: each stage's Prefect state, time and row counts, then summary.json.

`StepRunner.step` is how the flow calls a step: it binds the step's result storage to the workdir, runs it,
keeps its state name ("Completed", "Cached", ...) and seconds, and turns a failure into the typed error the
command line maps to an exit code (bad input stays `InvalidData`; anything else names the stage).
"""

from __future__ import annotations

import csv
import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import Task

from core.reports import dashboard as report
from core.storage.caching import records_dir
from schemas.config import RetrainConfig
from core.run.errors import InvalidData, PipelineError, StageFailed
from core.storage.artifacts import ArtifactRef, atomic_path, write_json_atomic

log = logging.getLogger(__name__)


def _parameter_names(task: Task) -> list[str]:
    import inspect

    return list(inspect.signature(task.fn).parameters)


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
    from core.storage.artifacts import artifact_dir
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


class StepRunner:
    """Collects what each stage did and writes the run's summary.json."""

    def __init__(self, cfg: RetrainConfig, run_id: str, runner: str = "threads"):
        self.cfg = cfg
        self.run_id = run_id
        self.runner = runner
        self.workdir = Path(cfg.workdir)
        self.stages: dict[str, dict[str, Any]] = {}
        self.refs: dict[str, Any] = {}
        self.started = time.perf_counter()
        self.reference_run_id: str | None = None
        self._dask = None

    def __enter__(self) -> "StepRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._dask is not None:
            self._dask.__exit__(*exc)
            self._dask = None

    def _bind(self, task: Task) -> Task:
        return task.with_options(result_storage=records_dir(self.workdir).resolve())

    def _check(self, name: str, state: Any, seconds: float) -> Any:
        if not state.is_completed():
            self.stages[name] = {"state": state.name, "seconds": seconds}
            error = state.result(raise_on_failure=False)
            if isinstance(error, InvalidData):
                self._save_failures(error)
                report.publish_failures(error.failures)
            if isinstance(error, PipelineError):
                error.stage = name
                raise error
            raise StageFailed(name, error) from error
        return state.result()

    def dask_runner(self):
        """The run's DaskTaskRunner (started on first use): a local cluster, or the scheduler at dask.address."""
        if self._dask is None:
            from prefect_dask import DaskTaskRunner

            dask = self.cfg.dask
            runner = (DaskTaskRunner(address=dask.address) if dask.address else DaskTaskRunner(
                cluster_kwargs={"n_workers": dask.workers, "threads_per_worker": 1, "processes": True,
                                "dashboard_address": None}))
            self._dask = runner.__enter__()
            self.runner = f"dask ({self._dask.client.scheduler.address})"
            log.info("runner: %s with %d workers", self.runner, len(self._dask.client.scheduler_info()["workers"]))
        return self._dask

    def sharded(self, name: str, shard_task: Task, merge_task: Task, *args: Any) -> Any:
        """Run a data-parallel step: one task per shard (on Dask with runner=dask), then the merge; returns the
        merge's result. The stage records the merge's state, the shards' states and the merge's own seconds."""
        from core.run.sharding import Shard

        started = time.perf_counter()
        if self.cfg.runner == "dask":
            runner = self.dask_runner()
            count = self.cfg.dask.shards or 2 * len(runner.client.scheduler_info()["workers"])
            futures = [runner.submit(self._bind(shard_task), parameters={
                **dict(zip(_parameter_names(shard_task)[: len(args)], args)), "shard": Shard(index=i, count=count),
                "workdir": self.workdir}) for i in range(count)]
            for future in futures:
                future.wait()
            states = [future.state for future in futures]
        else:
            states = [self._bind(shard_task)(*args, shard=Shard(index=0, count=1), workdir=self.workdir,
                                             return_state=True)]
        refs = [self._check(name, state, round(time.perf_counter() - started, 3)) for state in states]
        result = self.step(name, merge_task, refs, *args)
        # The merge is the step's serial part (it joins every shard): kept apart for scaling estimates.
        self.stages[name]["merge_seconds"] = self.stages[name]["seconds"]
        self.stages[name]["seconds"] = round(time.perf_counter() - started, 3)
        self.stages[name]["shards"] = [state.name for state in states]
        return result

    def step(self, name: str, task: Task, *args: Any, **kwargs: Any) -> Any:
        """Run one step as a Prefect task and record it; returns the step's result."""
        started = time.perf_counter()
        state = self._bind(task)(*args, workdir=self.workdir, return_state=True, **kwargs)
        result = self._check(name, state, round(time.perf_counter() - started, 3))
        seconds = round(time.perf_counter() - started, 3)
        entry: dict[str, Any] = {"state": state.name, "seconds": seconds}
        if isinstance(result, ArtifactRef) and "rows_in" in result.meta:
            entry["rows_in"] = result.meta["rows_in"]
            entry["rows_out"] = result.meta.get("rows_out", result.rows)
        self.stages[name] = entry
        self.refs[name] = result
        return result

    def _save_failures(self, error: InvalidData) -> None:
        path = run_dir(self.workdir, self.run_id) / "validation_failures.csv"
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["file", "location", "column", "rule", "value"])
            writer.writeheader()
            writer.writerows(f.as_row() for f in error.failures)
        error.table_path = str(path.resolve())

    def summary(self) -> dict[str, Any]:
        """The run's summary (CONTRACT.md): dataset, stages, test metrics, model, promotion, runner."""
        validated = self.refs.get("validate")
        evaluation = self.refs.get("evaluate")
        release = self.refs.get("promote")
        data_path = Path(self.cfg.data.path)
        out: dict[str, Any] = {
            "run_id": self.run_id,
            "dataset": {
                "path": str(data_path.resolve()),
                "sha256": validated.meta["source_sha256"],
                "rows": validated.meta["rows_read"],
                "rows_used": validated.meta["rows_used"],
                "duplicates_dropped": validated.meta["duplicates_dropped"],
                "conflicts_dropped": validated.meta["conflicts_dropped"],
                "labels": validated.meta["labels"],
            },
            "stages": self.stages,
            "seconds": round(time.perf_counter() - self.started, 3),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "runner": self.runner,
            "config": self.cfg.model_dump(mode="json", by_alias=True),
            "artifacts": {name: {"path": ref.path, "sha256": ref.sha256}
                          for name, ref in self.refs.items() if isinstance(ref, ArtifactRef)},
        }
        if drift := self.refs.get("drift"):
            out["drift"] = {**drift.meta["report"], "reference_run_id": self.reference_run_id}
        if split := self.refs.get("split"):
            out["split"] = split.meta
        if augmented := self.refs.get("augment"):
            out["augment"] = {k: augmented.meta[k] for k in ("rows_in", "rows_out", "augmented_rows", "n_aug", "strengths",
                                                             "skipped_not_english", "skipped_languages")
                              if k in augmented.meta}  # the skipped counts: artifacts from before they existed lack them
        if tokenized := self.refs.get("tokenize"):
            out["tokenize"] = {k: tokenized.meta[k] for k in ("sequence_length", "truncated_rows", "truncated_share")}
        if features := self.refs.get("embed"):
            out["embed"] = {**features.meta["backbone_runs"], "unfreeze_top": 6 - features.meta["cut"]}
        if model := self.refs.get("finetune"):
            out["training"] = {k: model.meta.get(k) for k in ("best_epoch", "epochs_run", "best_val_loss", "best_val_macro_f1",
                                                              "best_val_accuracy", "selection", "budget", "phases",
                                                              "history")}
        if evaluation:
            out["metrics"] = {"test": evaluation.meta["test"]}
        if decision := self.refs.get("gate"):
            out["gate"] = decision.model_dump()
        if release:
            out["model"] = {"name": release.name, "version": release.version, "path": release.path}
            out["promoted"] = release.promoted
        return out

    def lineage(self, validated: ArtifactRef) -> dict[str, Any]:
        """Where a model came from: run, data, configuration, code, and the champion it challenged."""
        from core.storage.caching import code_version
        from core.storage.registry import champion

        try:
            parent = (champion(self.workdir, self.cfg.model.name) or {}).get("version")
        except Exception:  # noqa: BLE001 (a damaged pointer: the gate reports it; lineage just lacks a parent)
            parent = None
        return {"run_id": self.run_id, "dataset_path": str(Path(self.cfg.data.path).resolve()),
                "dataset_sha256": validated.meta["source_sha256"], "validated_sha256": validated.sha256,
                "config": self.cfg.model_dump(mode="json", by_alias=True),
                "code_version": code_version("tasks.finetune"), "parent_champion": parent}

    def history(self) -> list[dict[str, Any]]:
        """Key figures of every run in the workdir that wrote a summary, newest first."""
        rows = []
        for path in (self.workdir / "runs").glob("*/summary.json"):
            try:
                rows.append(report.history_row(json.loads(path.read_text())))
            except (OSError, ValueError, KeyError):
                continue  # a summary being written or damaged: the history shows the others
        return sorted(rows, key=lambda r: r.get("finished") or "", reverse=True)

    def reference(self) -> ArtifactRef | None:
        """The validated data of the last successful run, which drift compares against."""
        self.reference_run_id, ref = latest_success(self.workdir)
        return ref

    def champion_data(self) -> ArtifactRef | None:
        """The validated data the current champion was trained on, drift's second baseline (slow drift)."""
        return champion_training_data(self.workdir, self.cfg.model.name)

    def write_summary(self) -> Path:
        """Write `<workdir>/runs/<run_id>/summary.json` and mark this run as the latest success; returns the path."""
        path = (run_dir(self.workdir, self.run_id) / "summary.json").resolve()
        summary = self.summary()
        write_json_atomic(path, summary)
        if "drift" in summary:
            report.publish_drift(summary["drift"])
        report.publish_run(summary, self.history())
        write_json_atomic(self.workdir / "runs" / LATEST_SUCCESS,
                          {"run_id": self.run_id, "validated": self.refs["validate"].model_dump(mode="json")})
        log.info("summary written to %s", path)
        return path
