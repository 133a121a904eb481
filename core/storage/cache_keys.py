"""A step's cache key: everything that changes its output and nothing else, computed without side effects.

- the content of its inputs: an `ArtifactRef` counts by its sha256, a data file by its bytes, the backbone
  by its weights hash (anything with `cache_fingerprint()`), never by a path string;
- its own parameters (config sections, seed) as JSON;
- the version of the code it runs and of the libraries (and accelerator) that code uses (`core.storage.versions`).
The `workdir` argument is left out: it says where, not what.

Whether the record found at a key can be trusted is not decided here: `core.storage.records` checks records,
and the step runner evicts a stale one before it submits the step (`core.storage.caching.evict_stale`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from prefect import Task
from prefect.cache_policies import CachePolicy
from pydantic import BaseModel

from core.storage.versions import code_version, runtime_version
from core.text.identity import sha256_hex

IGNORED_INPUTS = frozenset({"workdir"})


def fingerprint(value: Any) -> Any:
    """What a cache key sees of one input: content hashes for artifacts and files, JSON for parameters.

    Raises TypeError for a value it cannot see the content of (a `Path`, an arbitrary object): a key built
    from a path would serve a result for whatever the path holds now.
    """
    if hasattr(value, "cache_fingerprint"):
        return value.cache_fingerprint()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [fingerprint(v) for v in value]
    if isinstance(value, dict):
        return {str(k): fingerprint(v) for k, v in sorted(value.items())}
    raise TypeError(f"cannot build a cache key from a {type(value).__name__}: pass an ArtifactRef, a config "
                    "section, a plain value, or an object with cache_fingerprint()")


def step_key(task: Task, parameters: dict[str, Any]) -> str:
    """The cache key of running `task` on `parameters` (its bound arguments by name, as Prefect passes them):
    `<task name>-<40 hex digits>`. Pure: it reads source files and hashes inputs, and writes nothing."""
    module = task.fn.__module__
    payload = {
        "step": task.name,
        "code": code_version(module),
        "runtime": runtime_version(module),
        "inputs": {name: fingerprint(v) for name, v in sorted(parameters.items()) if name not in IGNORED_INPUTS},
    }
    return f"{task.name}-{sha256_hex(json.dumps(payload, sort_keys=True))[:40]}"


@dataclass
class StepCache(CachePolicy):
    """Prefect's cache policy for the steps: the key is `step_key` of the task run's inputs."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str:
        return step_key(task_ctx.task, inputs)
