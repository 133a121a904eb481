"""The registry's store: immutable versions, an atomically replaced champion pointer, a log.

Layout, per model name (several classifiers can share a workdir):
    <workdir>/models/<name>/versions/<version>/   a version folder (its files: core.registry.version.Version)
    <workdir>/models/<name>/champion.json         {"version", "previous", "promoted_at", "reason"}
    <workdir>/models/<name>/promotions.jsonl      every change of champion, oldest first (for rollback); an
                                                  approved one names its reviewer, comment and time
    (candidate.json and reviews.jsonl: the review workflow, core.registry.approval)
A version folder is assembled under a temporary name and renamed into place, then never changed. A model
is registered once: registering the same trained model again (same content hash) returns its version. The
champion pointer is one small JSON file replaced by an atomic rename, so a reader always sees a whole one;
promoting the current champion again changes nothing.

Every file of a version, `saved_model/` included, is hashed at registration (`lineage.json`'s `files_sha256`, by
path relative to the version folder) and checked when the version is used (`resolve_version`) or shown
(`integrity`): a changed, missing or added file is damage. Not hashed: `lineage.json` (it holds the hashes),
`report.html` (core.reports.model_report: a rendering of the recorded files, re-written when its review changes)
and `reevaluations/` (flows.reevaluation: later scores, appended). Versions registered before `saved_model/` was
hashed (no `hash_coverage` in their lineage) are checked on the files they recorded and shown as partly covered.
A version name is a single folder name of `versions/`; anything else (`../x`, null) is refused wherever it comes
from, the champion pointer included.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core import faults
from core.registry import export
from core.registry.version import (LINEAGE_FILE, REEVALUATIONS, REPORT_FILE, SAVED_MODEL, RegistryError, Version,
                                   model_root, version_dir)
from core.storage.artifacts import ArtifactRef, atomic_path, sha256_file, staging, write_json_atomic

log = logging.getLogger(__name__)

CHAMPION = "champion.json"
LOG = "promotions.jsonl"
UNHASHED = (LINEAGE_FILE, REPORT_FILE, REEVALUATIONS)  # top-level entries the hashes do not cover (see above)
HASH_COVERAGE = "every file"


@contextlib.contextmanager
def locked(workdir: Path, name: str, timeout: float = 600) -> Iterator[None]:
    """Hold the registry lock of `name` (`filelock` on models/<name>/.lock): one registration or promotion
    at a time, across processes and threads; re-entrant within a thread. Waits, saying so, while another
    run holds it; raises RegistryError after `timeout` seconds."""
    from filelock import FileLock, Timeout

    model_root(workdir, name).mkdir(parents=True, exist_ok=True)
    path = (model_root(workdir, name) / ".lock").resolve()
    lock = FileLock(path, is_singleton=True, preserve_lock_file=True)  # one object per path: re-entrant
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("waiting for the registry lock of %r (%s), held by another run", name, path)
        try:
            lock.acquire(timeout=timeout, poll_interval=0.2)
        except Timeout:
            raise RegistryError(f"the registry lock {path} was held for over {timeout:.0f} s") from None
    try:
        yield
    finally:
        lock.release()


def champion_scores_dir(workdir: Path) -> Path:
    """Where the gate keeps each champion's test-set probabilities (`<version>-<key>.npz`); prune clears those
    of removed versions."""
    return Path(workdir) / "cache" / "champion-scores"


def new_version(model: ArtifactRef) -> str:
    """A unique, sortable version string: UTC time and the start of the model's content hash."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}-{model.sha256[:8]}"


def versions(workdir: Path, name: str) -> list[dict[str, Any]]:
    """Every registered version of `name`, oldest first, with its lineage and test metrics."""
    folder = model_root(workdir, name) / "versions"
    out = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.name.startswith(".") or not Version(path).lineage.is_file():
            continue  # a half-assembled folder from an interrupted registration
        lineage = Version(path).read_lineage()
        metrics = Version(path).read_metrics().get("test", {})
        out.append({"version": path.name, "lineage": lineage, "test": metrics, "path": str(path)})
    return out


def find_registered(workdir: Path, name: str, model_sha256: str) -> str | None:
    """The version that holds exactly this trained model, if it was registered before."""
    for entry in versions(workdir, name):
        if entry["lineage"].get("model_sha256") == model_sha256:
            return entry["version"]
    return None


def register(model: ArtifactRef, evaluation: ArtifactRef, name: str, lineage: dict[str, Any],
             workdir: Path) -> str:
    """Register a trained model with its evaluation as an immutable version (once per model); returns it."""
    with locked(workdir, name):
        remove_leftovers(workdir, name)
        if existing := find_registered(workdir, name, model.sha256):
            return existing
        version = new_version(model)
        dest = version_dir(workdir, name, version)
        with staging(dest.parent, is_dir=True) as folder:
            for source in (model.resolve(workdir), evaluation.resolve(workdir)):
                for path in source.iterdir():
                    shutil.copy2(path, folder / path.name)
            export.write_saved_model(folder, lineage)
            write_json_atomic(Version(folder).lineage, {**lineage, "version": version, "model_sha256": model.sha256,
                                                        "files_sha256": _hash_files(folder),
                                                        "hash_coverage": HASH_COVERAGE, "registered_at": timestamp()})
            faults.point("register:before-rename", dest)
            os.replace(folder, dest)
        return version


def resolve_version(workdir: Path, name: str, model: str, check: bool = True) -> Path:
    """The folder of `model` (`champion` or a version) of `name`, after checking every file against the hashes
    recorded at registration (unless `check` is False: to show a damaged version); raises `RegistryError` if
    there is none or it was altered."""
    if model == "champion":
        current = champion(workdir, name)
        if current is None:
            raise RegistryError(f"model {name!r} has no champion in {workdir}: run the retrain flow first, "
                                "or name a version")
        model = current["version"]
    folder = version_dir(workdir, name, model)
    if not Version(folder).model.is_file():
        raise RegistryError(f"model {name!r} has no version {model!r} in {workdir}; see "
                            "`python -m flows.registry list`")
    if check:
        verify(workdir, name, model)  # every file still has the hash recorded at registration
    return folder


def _hash_files(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` but the UNHASHED entries, by POSIX path relative to it, sorted."""
    return {path: sha256_file(folder / path) for path in _files(folder)}


def _files(folder: Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*")
                  if path.is_file() and path.relative_to(folder).parts[0] not in UNHASHED)


def integrity(workdir: Path, name: str, version: str) -> dict[str, Any]:
    """What checking `version` against its registration hashes finds: `{"verified": bool, "files": N,
    "coverage": "every file" | "recorded files only (...)", "problem": str | None}`. Never raises for damage."""
    folder = version_dir(workdir, name, version)
    try:
        lineage = Version(folder).read_lineage()
        recorded = lineage["files_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return {"verified": False, "files": 0, "coverage": None,
                "problem": f"version {version!r} of {name!r} has no readable lineage ({exc})"}
    complete = lineage.get("hash_coverage") == HASH_COVERAGE
    present = set(_files(folder))
    coverage = HASH_COVERAGE if complete else (
        f"recorded files only: {len(present - set(recorded))} file(s) ({SAVED_MODEL}/ among them) registered "
        "before every file was hashed are not covered")
    problem = None
    for file, digest in recorded.items():
        try:
            intact = sha256_file(folder / file) == digest
        except OSError:
            intact = False
        if not intact:
            problem = f"{folder / file} does not match the hash recorded when it was registered" if (
                folder / file).exists() else f"{folder / file}, recorded when it was registered, is missing"
            break
    if problem is None and complete and (added := sorted(present - set(recorded))):
        problem = f"{folder / added[0]} was not there when it was registered" + (
            f" (and {len(added) - 1} more)" if len(added) > 1 else "")
    if problem:
        problem = (f"version {version!r} of {name!r} is damaged: {problem}; roll back "
                   f"(`python -m flows.registry rollback --name {name}`) or promote another version")
    return {"verified": problem is None, "files": len(recorded), "coverage": coverage, "problem": problem}


def verify(workdir: Path, name: str, version: str) -> None:
    """Raise `RegistryError` unless every file recorded at registration still has its recorded hash and (for
    versions registered with every file hashed) no file was added."""
    found = integrity(workdir, name, version)
    if not found["verified"]:
        raise RegistryError(found["problem"])


def champion(workdir: Path, name: str) -> dict[str, Any] | None:
    """The champion pointer of `name`, or None if no version was promoted yet.

    Raises `RegistryError` if the pointer is unreadable or names a version that is not there.
    """
    pointer = model_root(workdir, name) / CHAMPION
    repair = f"repair it with `python -m flows.registry promote VERSION --name {name}` (see `registry list`)"
    try:
        current = json.loads(pointer.read_text())
        version = current["version"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"the champion pointer {pointer} is damaged ({type(exc).__name__}: {exc}); {repair}") from None
    try:
        version_dir(workdir, name, version)
    except RegistryError:
        raise RegistryError(f"the champion pointer {pointer} names {version!r}, which is not a version of this "
                            f"registry; {repair}") from None
    if not Version.of(workdir, name, version).model.is_file():
        raise RegistryError(f"the champion pointer {pointer} names version {version!r}, which is missing; "
                            f"repair it with `python -m flows.registry promote VERSION --name {name}`")
    return current


def promote(workdir: Path, name: str, version: str, reason: str, action: str = "promote",
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Make `version` the champion (atomic pointer swap, logged); promoting the champion again changes nothing.
    `extra` (e.g. the reviewer of an approval) is recorded in the pointer and the promotion log."""
    if not Version.of(workdir, name, version).model.is_file():
        raise RegistryError(f"model {name!r} has no version {version!r}; see `python -m flows.registry list`")
    with locked(workdir, name):
        try:
            current = champion(workdir, name)
        except RegistryError:
            current = None  # a damaged pointer is replaced, not trusted
        if current and current["version"] == version:
            return current
        pointer = {"version": version, "previous": current["version"] if current else None,
                   "promoted_at": timestamp(), "reason": reason, "action": action, **(extra or {})}
        # The pointer is the truth and is written first; the log is history, repaired from the pointer if a
        # crash comes between the two (see champion_stack).
        write_json_atomic(model_root(workdir, name) / CHAMPION, pointer)
        faults.point("promote:before-log")
        append_log(workdir, name, pointer)
        # TF Serving's base path, if configured (serving.dir): every change of champion lands there as the next N
        export.on_champion_change(model_root(workdir, name), name, version,
                                          Version.of(workdir, name, version).saved_model)
        return pointer


def rollback(workdir: Path, name: str) -> dict[str, Any]:
    """Make the champion before the current one champion again; returns the new pointer."""
    current = champion(workdir, name)
    if current is None:
        raise RegistryError(f"model {name!r} has no champion to roll back from")
    stack = champion_stack(workdir, name)
    if len(stack) < 2:
        raise RegistryError(f"model {name!r} has had only one champion ({current['version']}); nothing to roll back to")
    return promote(workdir, name, stack[-2], f"rollback from {current['version']}", action="rollback")


def champion_stack(workdir: Path, name: str) -> list[str]:
    """Champions in the order they took over, with rolled-back ones removed: the last is the current one."""
    stack: list[str] = []
    for entry in promotion_log(workdir, name):
        if entry.get("action") == "rollback" and stack:
            stack.pop()
        elif entry.get("action") != "rollback":
            stack.append(entry["version"])
    try:
        current = champion(workdir, name)
    except RegistryError:
        current = None
    if current and (not stack or stack[-1] != current["version"]):
        # The last change reached the pointer but not the log (a crash between the two): the pointer wins.
        if current.get("action") == "rollback" and len(stack) > 1 and stack[-2] == current["version"]:
            stack.pop()
        else:
            stack.append(current["version"])
    return stack


def promotion_log(workdir: Path, name: str) -> list[dict[str, Any]]:
    """Every change of champion, oldest first."""
    path = model_root(workdir, name) / LOG
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue  # a torn last line from a killed writer: the pointer, not the log, is the truth
    return entries


def protected_versions(workdir: Path, name: str) -> set[str]:
    """Versions pruning must keep: the champion and the one before it."""
    try:
        current = champion(workdir, name)
    except RegistryError:
        current = None
    keep = set(champion_stack(workdir, name)[-2:])
    if current:
        keep |= {current["version"], *([current["previous"]] if current.get("previous") else [])}
    return keep


def prune_versions(workdir: Path, name: str, keep_latest: int, dry_run: bool = False) -> tuple[list[str], int]:
    """Delete versions other than the champion, its predecessor and the `keep_latest` newest, and what killed
    registrations left (`remove_leftovers`); returns the versions and the bytes freed (with `dry_run`: that would
    be)."""
    with locked(workdir, name):
        all_versions = [entry["version"] for entry in versions(workdir, name)]
        keep = protected_versions(workdir, name) | set(all_versions[-keep_latest:] if keep_latest else [])
        removed, freed = [], 0
        for version in all_versions:
            if version not in keep:
                freed += tree_size(version_dir(workdir, name, version))
                if not dry_run:
                    _remove_tree(version_dir(workdir, name, version))
                removed.append(version)
        return removed, freed + remove_leftovers(workdir, name, dry_run)


def remove_leftovers(workdir: Path, name: str, dry_run: bool = False) -> int:
    """Remove the half-assembled `.staging.*` and half-deleted `.deleting-*` folders a killed registration or
    prune left in `versions/`; call with the registry lock held (then no registration is under way). Returns the
    bytes freed (with `dry_run`: that would be)."""
    folder = model_root(workdir, name) / "versions"
    freed = 0
    for path in sorted(folder.glob(".*")) if folder.is_dir() else []:
        if path.name.startswith((".staging.", ".deleting-")):
            freed += tree_size(path)
            if not dry_run:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
                log.info("registry: removed %s, left by a killed registration or prune", path)
    return freed


def tree_size(path: Path) -> int:
    """Bytes of the files under `path` (or of the file `path`); 0 if it is gone."""
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        return path.stat().st_size
    except OSError:
        return 0


# ------------------------------------------------------------------------------ four-eyes approval
# With gate.approval=manual a challenger that passes the gate is registered as the *candidate*: the one version
# waiting for a second person. A new candidate supersedes the previous one; an approval promotes it (under the
# registry lock, with the reviewer in the promotion log) only while it is still the latest candidate, its files
# still match their registration hashes, and the champion is still the one its gate compared it against.


def model_names(workdir: Path) -> list[str]:
    """The model names registered in a workdir."""
    folder = Path(workdir) / "models"
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _remove_tree(path: Path) -> None:
    """Rename first, then delete: an interrupted prune leaves a hidden folder, never a half-deleted version."""
    trash = path.with_name(f".deleting-{path.name}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def append_log(workdir: Path, name: str, entry: dict[str, Any], log_name: str = LOG) -> None:
    path = model_root(workdir, name) / log_name
    lines = path.read_text() if path.is_file() else ""
    if lines and not lines.endswith("\n"):
        lines = lines.rsplit("\n", 1)[0] + "\n" if "\n" in lines else ""
    with atomic_path(path) as tmp:
        tmp.write_text(lines + json.dumps(entry, sort_keys=True) + "\n")


def timestamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
