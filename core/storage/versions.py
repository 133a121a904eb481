"""What a step's output depends on besides its inputs: the version of the code it runs and of the runtime.

- The code version is a hash of the step's module and of every project module it imports, followed
  transitively, so editing one step's helper changes that step's version and the versions of the steps that
  import the helper, and no other.
- The runtime version is the versions of the third-party libraries those modules import (and, for steps that
  compute with Keras, the accelerator): upgrading TensorFlow changes what TensorFlow computed, not validation.

Both are read from the project's source files and the installed distributions, never by importing a step.
`tests/test_layout.py` reads the project's import graph through `imports` and `module_file` too.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import os
import platform
import sys
import threading
from pathlib import Path
from typing import Any

from core.text.identity import sha256_hex

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = ("tasks", "core", "schemas")


def module_file(name: str) -> Path | None:
    """The source file of the project module `name` (a module or a package's `__init__.py`), None if it has none."""
    base = PROJECT_ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports(path: Path, module: str) -> frozenset[str]:
    """Every module name the source file `path` of `module` imports (at top level or inside functions), relative
    imports resolved; `from a import b` yields both `a` and `a.b` (b may be a module or a name)."""
    stat = path.stat()
    return _parsed_imports(str(path), stat.st_mtime_ns, stat.st_size, module)


_PARSE_LOCK = threading.Lock()


def _parse(source: str) -> ast.Module:
    """`ast.parse(source)`, safe beside other threads. CPython 3.11 keeps the AST constructor's recursion depth in
    per-interpreter state, so two threads parsing at once can fail with a spurious "SystemError: AST constructor
    recursion depth mismatch" (python/cpython#106905; seen here in a deployment run): our parses share one lock,
    and a parse that another library's thread raced is done again."""
    with _PARSE_LOCK:
        try:
            return ast.parse(source)
        except SystemError:
            return ast.parse(source)


@functools.lru_cache(maxsize=512)  # keyed by the file's mtime and size: an edited file is parsed again
def _parsed_imports(path: str, _mtime_ns: int, _size: int, module: str) -> frozenset[str]:
    found = set()
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    for node in ast.walk(_parse(Path(path).read_text(encoding="utf-8"))):
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
    return {name for name in imports(path, module) if name.split(".")[0] in PROJECT_PACKAGES and module_file(name)}


def module_closure(module: str) -> list[str]:
    """The project modules `module` imports, directly or through others, itself included, sorted."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen or (path := module_file(name)) is None:
            continue
        seen.add(name)
        todo.extend(_imported_modules(path, name) - seen)
    return sorted(seen)


def code_version(module: str) -> str:
    """Hex sha256 of the source of `module` and of every project module it imports, transitively."""
    parts = [f"{name}:{sha256_hex(module_file(name).read_text(encoding='utf-8'))}" for name in module_closure(module)]
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
        names |= {imported.split(".")[0] for imported in imports(module_file(name), name)}
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
    """What a step's output depends on besides its code and inputs: `{"libraries": {distribution: version}}`,
    plus `"accelerator"` for steps that compute with Keras."""
    libraries = library_versions(module)
    return {"libraries": libraries, **({"accelerator": accelerator()} if "keras" in libraries else {})}
