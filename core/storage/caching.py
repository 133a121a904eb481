"""Content-keyed caching and retries for the steps: what makes Prefect's cache trustworthy here.

A step's cache key covers everything that changes its output and nothing else:
- the content of its inputs: an `ArtifactRef` counts by its sha256, a data file by its bytes, the
  backbone by its weights hash (anything with `cache_fingerprint()`), never by a path string;
- its own parameters (config sections, seed) as JSON;
- the version of the code it runs: a hash of the step's module and every project module it imports,
  followed transitively, so editing one step's helper re-runs that step and what depends on it only;
- the versions of the third-party libraries those modules import (and, for Keras steps, the accelerator):
  upgrading TensorFlow re-runs what TensorFlow computed, not validation.
The `workdir` argument is left out: it says where, not what.

Before a cached result is used, its record is checked: it must be our JSON (never a pickle) and the artifact
it points to must still hash to what was recorded. A record that fails either check is evicted, so the step
runs again instead of returning a path to a deleted or altered file.
"""

from __future__ import annotations

import ast
import errno
import functools
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from prefect import Task, task
from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.serializers import Serializer
from prefect.tasks import exponential_backoff
from pydantic import BaseModel

from core.run import faults
from core.run.errors import PipelineError
from core.text.identity import sha256_hex
from core.storage.artifacts import ArtifactRef

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = ("tasks", "core", "schemas")
RECORD_SERIALIZER = "retrain-artifact-ref"
IGNORED_INPUTS = frozenset({"workdir"})


def records_dir(workdir: Path) -> Path:
    """Where Prefect's result records for this workdir live."""
    return Path(workdir) / "results"


class RecordedFailure(RuntimeError):
    """A step's failure as read back from its result record: the error's type name and message only."""


class ArtifactRefSerializer(Serializer):
    """Stores a step's result (an `ArtifactRef`, or the error it failed with) as plain JSON; reads back
    nothing else, so no pickle is ever loaded from the workdir."""

    type: str = RECORD_SERIALIZER

    def dumps(self, obj: Any) -> bytes:
        if isinstance(obj, BaseException):
            return json.dumps({"error": type(obj).__name__, "message": str(obj)}).encode()
        if not isinstance(obj, ArtifactRef):
            raise TypeError(f"steps must return an ArtifactRef, got {type(obj).__name__}")
        return obj.model_dump_json().encode()

    def loads(self, blob: bytes) -> ArtifactRef | RecordedFailure:
        content = json.loads(blob)
        if isinstance(content, dict) and "error" in content:
            return RecordedFailure(f"{content['error']}: {content.get('message', '')}")
        return ArtifactRef.model_validate(content)


# ----------------------------------------------------------------------------------------------- code version

def _module_file(name: str) -> Path | None:
    base = PROJECT_ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, module: str) -> frozenset[str]:
    """Every module name `path` imports (at top level or inside functions), relative imports resolved."""
    stat = path.stat()
    return _parsed_imports(str(path), stat.st_mtime_ns, stat.st_size, module)


@functools.lru_cache(maxsize=512)  # keyed by the file's mtime and size: an edited file is parsed again
def _parsed_imports(path: str, _mtime_ns: int, _size: int, module: str) -> frozenset[str]:
    found = set()
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(Path(path).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(found)


def _imported_modules(path: Path, module: str) -> set[str]:
    return {name for name in _imports(path, module) if name.split(".")[0] in PROJECT_PACKAGES and _module_file(name)}


def module_closure(module: str) -> list[str]:
    """The project modules `module` imports, directly or through others, itself included, sorted."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen or (path := _module_file(name)) is None:
            continue
        seen.add(name)
        todo.extend(_imported_modules(path, name) - seen)
    return sorted(seen)


def code_version(module: str) -> str:
    """Hash of the source of `module` and of every project module it imports, transitively."""
    parts = [f"{name}:{sha256_hex(_module_file(name).read_text(encoding='utf-8'))}" for name in module_closure(module)]
    return sha256_hex(*parts)


# Import names whose distribution has another name; anything else not found by its own name is looked up
# in `importlib.metadata.packages_distributions()` (complete, but ~1 s: it reads every installed RECORD).
DISTRIBUTION_OF = {"sklearn": "scikit-learn", "yaml": "PyYAML", "keras_hub": "keras-hub",
                   "tensorflow_text": "tensorflow-text", "dateutil": "python-dateutil"}


@functools.lru_cache(maxsize=None)
def distributions_of(import_name: str) -> tuple[str, ...]:
    """The installed distributions that provide the top-level module `import_name` (empty if none)."""
    name = DISTRIBUTION_OF.get(import_name, import_name)
    if distribution_version(name) != "absent":
        return (name,)
    if importlib.util.find_spec(import_name) is None:  # not installed (an optional backend such as jax)
        return ()
    return tuple(importlib.metadata.packages_distributions().get(import_name, ()))


@functools.lru_cache(maxsize=None)
def distribution_version(name: str) -> str:
    """The installed version of a distribution (PyPI name), or "absent"."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


# Keras runs on a backend that its modules import only at run time: a Keras step computes with TensorFlow.
IMPLIED = {"keras": ("tensorflow",), "keras_hub": ("tensorflow", "tensorflow-text")}


@functools.lru_cache(maxsize=None)  # installed libraries do not change under a running process
def library_versions(module: str) -> dict[str, str]:
    """{distribution: version} of every third-party library that `module` and its project imports use.

    Part of the cache key, so that upgrading, say, TensorFlow re-runs the steps that compute with it and
    only those; the standard library is left out (it changes with the interpreter, keyed separately).
    """
    names = set()
    for name in module_closure(module):
        names |= {imported.split(".")[0] for imported in _imports(_module_file(name), name)}
    names -= {*PROJECT_PACKAGES, *sys.stdlib_module_names, "__future__"}
    dists = {dist for name in names for dist in distributions_of(name)}
    dists |= {implied for name in names for implied in IMPLIED.get(name, ())}
    return {dist: distribution_version(dist) for dist in sorted(dists)}  # a fresh dict: callers may keep it


def accelerator() -> dict[str, Any]:
    """The hardware a TensorFlow step computes on, as far as it changes results: the NVIDIA GPUs the process
    may use (`CUDA_VISIBLE_DEVICES`, the driver's device list). Read without importing TensorFlow, so a
    warm re-run that finds everything cached stays fast. Keys on this rather than on `mixed_precision:
    auto`, whose meaning (float16 on a GPU, float32 on a CPU) depends on it."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return {"nvidia_gpus": sorted(p.name for p in gpus.iterdir()) if gpus.is_dir() else [],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "python": platform.python_version(), "machine": platform.machine()}


def runtime_version(module: str) -> dict[str, Any]:
    """What a step's output depends on besides its code and inputs: library versions, and for steps that
    compute with Keras the accelerator."""
    libraries = library_versions(module)
    return {"libraries": libraries, **({"accelerator": accelerator()} if "keras" in libraries else {})}


# ----------------------------------------------------------------------------------------------- cache keys

def fingerprint(value: Any) -> Any:
    """What a cache key sees of one input: content hashes for artifacts and files, JSON for parameters."""
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


@dataclass
class StepCache(CachePolicy):
    """Key = step name + code version + library versions (+ accelerator) + fingerprints of the inputs; stale or
    foreign records are evicted."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str:
        fn = task_ctx.task.fn
        payload = {
            "step": task_ctx.task.name,
            "code": code_version(fn.__module__),
            "runtime": runtime_version(fn.__module__),
            "inputs": {name: fingerprint(v) for name, v in sorted(inputs.items()) if name not in IGNORED_INPUTS},
        }
        key = f"{task_ctx.task.name}-{sha256_hex(json.dumps(payload, sort_keys=True))[:40]}"
        if "workdir" in inputs:
            evict_if_stale(records_dir(inputs["workdir"]) / key, Path(inputs["workdir"]))
        return key


def evict_if_stale(record: Path, workdir: Path) -> bool:
    """Delete a result record that is not ours or whose artifact is gone or altered; True if evicted."""
    try:
        content = json.loads(record.read_bytes())
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        content = None
    reason = _record_problem(content, workdir)
    if reason:
        log.warning("cache record %s is unusable (%s); the step will run again", record.name, reason)
        record.unlink(missing_ok=True)
        return True
    return False


def _record_problem(content: Any, workdir: Path) -> str | None:
    if not isinstance(content, dict):
        return "not a JSON record"
    serializer = (content.get("metadata") or {}).get("serializer") or {}
    if serializer.get("type") != RECORD_SERIALIZER:
        return f"written by serializer {serializer.get('type')!r}, not {RECORD_SERIALIZER!r}"
    try:
        ref = ArtifactRef.model_validate_json(content["result"])
    except (KeyError, ValueError, TypeError):
        return "result is not an artifact reference"
    if not ref.is_intact(workdir):
        return f"artifact {ref.path} is missing or altered"
    return None


# ----------------------------------------------------------------------------------------------- retries

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

    Each attempt passes the test-only failpoint `<name>:start` (`core.run.faults`), inert unless armed.
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

