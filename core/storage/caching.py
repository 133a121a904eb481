"""The thin Prefect wrapper of a step (`step_task`): content-keyed cache, JSON result records, retries.

A step's task is cached under `core.storage.cache_keys.step_key` (the content of its inputs, its settings, its
code and runtime versions) with its result recorded as JSON (`core.storage.records`). A record is trusted only
after `evict_stale` has checked it: whoever submits a step calls it first (the step runner does, before every
submission), so a record whose artifact is gone or altered, or which is not ours, is deleted with a warning
and the step runs again. Keeping that check out of the key keeps the key a pure function of the call.

Retries: I/O and resource errors are retried with exponential backoff and jitter; bad data, bugs and I/O
errors that cannot go away by themselves never are.
"""

from __future__ import annotations

import errno
import functools
from pathlib import Path
from typing import Any, Callable

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from core import faults
from core.errors import PipelineError
from core.storage.cache_keys import StepCache, step_key
from core.storage.records import ArtifactRefSerializer, evict_if_stale, records_dir

TRANSIENT = (OSError, MemoryError, TimeoutError, ConnectionError)
# I/O errors that the same attempt would meet again: a missing or read-only place, a full disk.
PERMANENT_ERRNO = {errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                   errno.ENAMETOOLONG}


def is_transient(task: Task, task_run: Any, state: Any) -> bool:
    """Retry I/O and resource errors; never bad input, a bug, or an I/O error that cannot go away by itself."""
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, PipelineError):
        return False
    if isinstance(exc, OSError) and exc.errno in PERMANENT_ERRNO:
        return False
    if isinstance(exc, TRANSIENT):
        return True
    return type(exc).__name__ in ("ResourceExhaustedError", "UnavailableError", "InternalError")


def step_task(fn: Callable, *, name: str | None = None, retries: int = 2, cached: bool = True) -> Task:
    """The thin Prefect wrapper of a step: content-keyed cache, JSON results, retries with backoff + jitter.

    Each attempt passes the test-only failpoint `<name>:start` (`core.faults`), inert unless armed.
    """
    name = name or fn.__name__

    @functools.wraps(fn)
    def attempt(*args: Any, **kwargs: Any) -> Any:
        faults.point(f"{name}:start")
        return fn(*args, **kwargs)

    options: dict[str, Any] = dict(
        name=name,
        retries=retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=1),
        retry_jitter_factor=0.5,
        retry_condition_fn=is_transient,
    )
    if cached:
        options.update(cache_policy=StepCache(), persist_result=True, result_serializer=ArtifactRefSerializer(),
                       cache_result_in_memory=False)
    else:
        options.update(cache_policy=NO_CACHE, persist_result=False)
    return task(**options)(attempt)


def evict_stale(task: Task, parameters: dict[str, Any], workdir: Path) -> bool:
    """Before `task` is submitted with `parameters` (its arguments by name, exactly as it will receive them):
    delete the result record at its cache key if that record is not ours or its artifact is missing or altered
    under `workdir` (a warning says so). True if a record was evicted; a task without our cache does nothing.

    Prefect looks a record up by its key alone and reads it with the serializer the record names, so this check
    must come first, in a process that keys the step as the one that will run it (a Keras step's key holds the
    accelerator: on Dask, every worker runs this check, `core.run.dask`).
    """
    if not isinstance(task.cache_policy, StepCache):
        return False
    return evict_if_stale(records_dir(workdir) / step_key(task, parameters), Path(workdir))
