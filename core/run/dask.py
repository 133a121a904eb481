"""The Dask side of a `runner=dask` run: prefect-dask's DaskTaskRunner, started on first use, closed with the run.

On a local cluster of `dask.workers` processes, or on the scheduler at `dask.address`. Only the shards of the
data-parallel steps go there (`StepRunner.sharded`); the rest of the run stays in the flow's process.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import Task

from core.storage.caching import evict_stale
from schemas.config import DaskConfig

log = logging.getLogger(__name__)


def _evict_each(task: Task, parameter_sets: list[dict[str, Any]], workdir: Path) -> int:
    """On one worker: `evict_stale` for each call of `task`; returns how many records were evicted."""
    return sum(evict_stale(task, parameters, workdir) for parameters in parameter_sets)


class DaskCluster:
    """The run's DaskTaskRunner, started by the first call that needs it and closed by `close` (or leaving a
    `with`)."""

    def __init__(self, cfg: DaskConfig):
        self.cfg = cfg
        self._runner = None

    def __enter__(self) -> "DaskCluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close(*exc)

    def _start(self):
        if self._runner is None:
            from prefect_dask import DaskTaskRunner

            runner = (DaskTaskRunner(address=self.cfg.address) if self.cfg.address else DaskTaskRunner(
                cluster_kwargs={"n_workers": self.cfg.workers, "threads_per_worker": 1, "processes": True,
                                "dashboard_address": None}))
            self._runner = runner.__enter__()
            log.info("runner: %s with %d workers", self.description(), self.workers())
        return self._runner

    def description(self) -> str:
        """What summary.json's `runner` says: `dask (<scheduler address>)`; starts the cluster if needed."""
        return f"dask ({self._start().client.scheduler.address})"

    def workers(self) -> int:
        """The number of workers the scheduler has now; starts the cluster if needed."""
        return len(self._start().client.scheduler_info()["workers"])

    def shard_count(self) -> int:
        """Shards per data-parallel step: `dask.shards`, or two per worker."""
        return self.cfg.shards or 2 * self.workers()

    def run_all(self, task: Task, parameter_sets: list[dict[str, Any]], workdir: Path) -> list[Any]:
        """Run `task` once per parameter set on the cluster and wait for all; returns their final Prefect states
        in the same order. Every worker first evicts the stale records of these calls: each keys them as it
        would run them (a Keras shard's key holds the worker's accelerator)."""
        runner = self._start()
        runner.client.run(_evict_each, task, parameter_sets, workdir)
        futures = [runner.submit(task, parameters=parameters) for parameters in parameter_sets]
        for future in futures:
            future.wait()
        return [future.state for future in futures]

    def close(self, *exc: Any) -> None:
        """Shut the cluster down (a local one) or disconnect (a scheduler at `dask.address`); idempotent."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            runner.__exit__(*(exc or (None, None, None)))


@contextlib.contextmanager
def dask_client(cfg: DaskConfig) -> Iterator[Any]:
    """A plain `distributed.Client` for work outside Prefect's task runner (batch prediction's shards): on the
    scheduler at `cfg.address`, or on a local cluster of `cfg.workers` single-threaded processes, closed (the
    local cluster shut down) on leaving."""
    from distributed import Client, LocalCluster

    if cfg.address:
        with Client(cfg.address) as client:
            yield client
        return
    with LocalCluster(n_workers=cfg.workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client
