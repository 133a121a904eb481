"""How the flow runs a step: `StepRunner.run` (one task) and `StepRunner.sharded` (a data-parallel step); the
retrain DAG (`flows/dag.py: pipeline`) takes the runner as its `steps`.

Each call binds the step's result storage to the workdir, evicts a stale cache record at the step's key (a
record whose artifact is gone or altered, or which is not ours: the step then runs again), runs the task, keeps
its state name ("Completed", "Cached", ...), seconds and row counts, and turns a failure into the typed error the
command line maps to an exit code (bad input stays `InvalidData`; anything else names the stage). What the
stages recorded becomes the run's summary.json (`core.run.summary`); with `runner=dask` the shards run on the
run's Dask cluster (`core.run.dask`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import Task
from prefect.utilities.callables import get_call_parameters

from core.reports import dashboard as report
from core.run import summary as run_records
from core.run.dask import DaskCluster
from core.errors import InvalidData, PipelineError, StageFailed
from core.run.sharding import Shard, ShardedStep
from core.storage.artifacts import ArtifactRef
from core.storage.caching import evict_stale
from core.storage.records import records_dir
from schemas.config import RetrainConfig


class StepRunner:
    """Runs the steps of one retrain run and records what each stage did (`stages`, `refs`)."""

    def __init__(self, cfg: RetrainConfig, run_id: str):
        self.cfg = cfg
        self.run_id = run_id
        # Where the steps ran (summary.json's `runner`): in this process's threads, or, once a sharded step has run
        # with the setting runner=dask, the Dask cluster's description.
        self.executed_on = "threads"
        self.workdir = Path(cfg.workdir)
        self.stages: dict[str, dict[str, Any]] = {}
        self.refs: dict[str, Any] = {}
        self.started = time.perf_counter()
        self.reference_run_id: str | None = None
        self.report_error: str | None = None  # the model report could not be drawn (flows.approval): kept, not raised
        self.dask = DaskCluster(cfg.dask)

    def __enter__(self) -> "StepRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.dask.close(*exc)

    def _bound(self, task: Task) -> Task:
        return task.with_options(result_storage=records_dir(self.workdir).resolve())

    def _parameters(self, task: Task, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by name, as Prefect passes them to the task (and keys its cache on them)."""
        return get_call_parameters(task.fn, args, {**kwargs, "workdir": self.workdir})

    def _run(self, task: Task, parameters: dict[str, Any]) -> Any:
        evict_stale(task, parameters, self.workdir)
        return self._bound(task)(**parameters, return_state=True)

    def _check(self, name: str, state: Any, seconds: float) -> Any:
        if not state.is_completed():
            self.stages[name] = {"state": state.name, "seconds": seconds}
            error = state.result(raise_on_failure=False)
            if isinstance(error, InvalidData):
                run_records.save_failures(self.workdir, self.run_id, error)
                report.publish_failures(error.failures)
            if isinstance(error, PipelineError):
                error.stage = name
                raise error
            raise StageFailed(name, error) from error
        return state.result()

    @property
    def results(self) -> dict[str, Any]:
        """Stage name -> the result of each step run so far."""
        return self.refs

    def run(self, task: Task, *args: Any, **kwargs: Any) -> Any:
        """Run the step `task` under its own name as the stage name; returns its result (see `step`)."""
        return self.step(task.name, task, *args, **kwargs)

    def sharded(self, step: ShardedStep, *args: Any) -> Any:
        """Run a data-parallel step; returns its result. With runner=dask: one task per shard on the run's Dask
        cluster, then the merge; the stage records the merge's state, the shards' states and the merge's own
        seconds. Otherwise its whole-table task in one pass (no shard files to join)."""
        if self.cfg.runner != "dask":
            return self.step(step.name, step.whole, *args)
        name, started = step.name, time.perf_counter()
        count = self.dask.shard_count()
        self.executed_on = self.dask.description()
        calls = [self._parameters(step.shard, args, {"shard": Shard(index=i, count=count)}) for i in range(count)]
        states = self.dask.run_all(self._bound(step.shard), calls, self.workdir)
        refs = [self._check(name, state, round(time.perf_counter() - started, 3)) for state in states]
        result = self.step(name, step.merge, refs, *args)
        # The merge is the step's serial part (it joins every shard): kept apart for scaling estimates.
        self.stages[name]["merge_seconds"] = self.stages[name]["seconds"]
        self.stages[name]["seconds"] = round(time.perf_counter() - started, 3)
        self.stages[name]["shards"] = [state.name for state in states]
        return result

    def step(self, name: str, task: Task, *args: Any, **kwargs: Any) -> Any:
        """Run one step as a Prefect task and record it; returns the step's result."""
        started = time.perf_counter()
        state = self._run(task, self._parameters(task, args, kwargs))
        result = self._check(name, state, round(time.perf_counter() - started, 3))
        seconds = round(time.perf_counter() - started, 3)
        entry: dict[str, Any] = {"state": state.name, "seconds": seconds}
        if isinstance(result, ArtifactRef) and "rows_in" in result.meta:
            entry["rows_in"] = result.meta["rows_in"]
            entry["rows_out"] = result.meta.get("rows_out", result.rows)
        self.stages[name] = entry
        self.refs[name] = result
        return result

    def baselines(self) -> run_records.Baselines:
        """What drift compares this run's data with (`core.run.summary.drift_baselines`); the last run's id is
        kept for the summary."""
        found = run_records.drift_baselines(self.workdir, self.cfg.model.name)
        self.reference_run_id = found.last_run_id
        return found

    def summary(self) -> dict[str, Any]:
        """The run's summary (CONTRACT.md) from what the stages recorded so far; `validate` must have run."""
        out = run_records.summary(self.cfg, self.run_id, self.stages, self.refs, self.executed_on,
                                  round(time.perf_counter() - self.started, 3), self.reference_run_id)
        if self.report_error:
            out["report_error"] = self.report_error
        return out

    def write_summary(self) -> Path:
        """Write `<workdir>/runs/<run_id>/summary.json` and mark this run as the latest success; returns the path."""
        return run_records.write_summary(self.workdir, self.run_id, self.summary(), self.refs["validate"])
