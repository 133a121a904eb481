"""The model registry under the workdir: immutable versions, an atomically replaced champion pointer, a log.

Layout, per model name (several classifiers can share a workdir):
    <workdir>/models/<name>/versions/<version>/   model.keras, model.json, metrics.json, predictions.parquet,
                                                  lineage.json, saved_model/ (TensorFlow SavedModel for serving:
                                                  raw sentences in, core.model.serving)
    <workdir>/models/<name>/champion.json         {"version", "previous", "promoted_at", "reason"}
    <workdir>/models/<name>/promotions.jsonl      every change of champion, oldest first (for rollback); an
                                                  approved one names its reviewer, comment and time
    <workdir>/models/<name>/candidate.json        the version awaiting a second person's approval (gate.approval=
                                                  manual), with the champion its gate compared it against
    <workdir>/models/<name>/reviews.jsonl         every review event: candidate, approved, rejected, expired,
                                                  superseded (who, when, why)
A version folder is assembled under a temporary name and renamed into place, then never changed. A model
is registered once: registering the same trained model again (same content hash) returns its version. The
champion pointer is one small JSON file replaced by an atomic rename, so a reader always sees a whole one;
promoting the current champion again changes nothing.

Every file of a version, `saved_model/` included, is hashed at registration (`lineage.json`'s `files_sha256`, by
path relative to the version folder) and checked when the version is used (`resolve_version`) or shown
(`integrity`): a changed, missing or added file is damage. Not hashed: `lineage.json` (it holds the hashes),
`report.html` (core.reports.model_report: a rendering of the recorded files, re-written when its review changes)
and `reevaluations/` (tasks.reevaluation: later scores, appended). Versions registered before `saved_model/` was
hashed (no `hash_coverage` in their lineage) are checked on the files they recorded and shown as partly covered.
A version name is a single folder name of `versions/`; anything else (`../x`, null) is refused wherever it comes
from, the champion pointer included.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from core import faults
from core.run.identity import describe, os_account, starter_identities
from core.errors import PipelineError
from core.storage import serving_export
from core.storage.artifacts import ArtifactRef, atomic_path, sha256_file, staging, write_json_atomic

log = logging.getLogger(__name__)

CHAMPION = "champion.json"
LOG = "promotions.jsonl"
CANDIDATE = "candidate.json"
REVIEWS = "reviews.jsonl"
SAVED_MODEL = "saved_model"
UNHASHED = ("lineage.json", "report.html", "reevaluations")  # top-level entries the hashes do not cover (see above)
HASH_COVERAGE = "every file"


class RegistryError(PipelineError):
    """A registry request that cannot be carried out (unknown version, damaged pointer, nothing to roll back to)."""


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


def new_version(model: ArtifactRef) -> str:
    """A unique, sortable version string: UTC time and the start of the model's content hash."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}-{model.sha256[:8]}"


def versions(workdir: Path, name: str) -> list[dict[str, Any]]:
    """Every registered version of `name`, oldest first, with its lineage and test metrics."""
    folder = model_root(workdir, name) / "versions"
    out = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.name.startswith(".") or not (path / "lineage.json").is_file():
            continue  # a half-assembled folder from an interrupted registration
        lineage = json.loads((path / "lineage.json").read_text())
        metrics = json.loads((path / "metrics.json").read_text()).get("test", {})
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
            _export(folder, lineage)
            write_json_atomic(folder / "lineage.json", {**lineage, "version": version, "model_sha256": model.sha256,
                                                        "files_sha256": _hash_files(folder),
                                                        "hash_coverage": HASH_COVERAGE, "registered_at": _now()})
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
    if not (folder / "model.keras").is_file():
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
        lineage = json.loads((folder / "lineage.json").read_text())
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


def _export(folder: Path, lineage: dict[str, Any]) -> None:
    """Write the version's `saved_model/` (raw sentences in: core.model.serving) with the tokenizer of the backbone
    the run was configured with (its lineage's `model.backbone`; the bundled one if unset). Raises
    `RegistryError` if that backbone is not the one the model was trained on."""
    from core.model.backbone import Backbone
    from core.model.serving import export_saved_model

    card = json.loads((folder / "model.json").read_text())
    backbone = Backbone.resolve(((lineage.get("config") or {}).get("model") or {}).get("backbone"))
    if card.get("backbone_sha256") != backbone.sha256:
        raise RegistryError(f"cannot export the model: it was trained on the backbone with sha256 "
                            f"{str(card.get('backbone_sha256'))[:12]}, but its run names {backbone.path} "
                            f"({backbone.sha256[:12]})")
    try:
        export_saved_model(folder / "model.keras", card, backbone.path, folder / SAVED_MODEL)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 (TensorFlow reports a full disk as its own error types)
        if "no space left on device" not in str(exc).lower():
            raise
        raise OSError(errno.ENOSPC, "No space left on device (writing the SavedModel)",
                      str(folder / SAVED_MODEL)) from None


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
    if not (version_dir(workdir, name, version) / "model.keras").is_file():
        raise RegistryError(f"the champion pointer {pointer} names version {version!r}, which is missing; "
                            f"repair it with `python -m flows.registry promote VERSION --name {name}`")
    return current


def promote(workdir: Path, name: str, version: str, reason: str, action: str = "promote",
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Make `version` the champion (atomic pointer swap, logged); promoting the champion again changes nothing.
    `extra` (e.g. the reviewer of an approval) is recorded in the pointer and the promotion log."""
    if not (version_dir(workdir, name, version) / "model.keras").is_file():
        raise RegistryError(f"model {name!r} has no version {version!r}; see `python -m flows.registry list`")
    with locked(workdir, name):
        try:
            current = champion(workdir, name)
        except RegistryError:
            current = None  # a damaged pointer is replaced, not trusted
        if current and current["version"] == version:
            return current
        pointer = {"version": version, "previous": current["version"] if current else None,
                   "promoted_at": _now(), "reason": reason, "action": action, **(extra or {})}
        # The pointer is the truth and is written first; the log is history, repaired from the pointer if a
        # crash comes between the two (see champion_stack).
        write_json_atomic(model_root(workdir, name) / CHAMPION, pointer)
        faults.point("promote:before-log")
        _append_log(workdir, name, pointer)
        # TF Serving's base path, if configured (serving.dir): every change of champion lands there as the next N
        serving_export.on_champion_change(model_root(workdir, name), name, version,
                                          version_dir(workdir, name, version) / SAVED_MODEL)
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


def candidate(workdir: Path, name: str) -> dict[str, Any] | None:
    """The version awaiting approval (`candidate.json`), or None."""
    try:
        return json.loads((model_root(workdir, name) / CANDIDATE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RegistryError(f"the candidate pointer of {name!r} is damaged ({exc}); re-run the flow to gate "
                            "a challenger again") from None


def propose(workdir: Path, name: str, version: str, champion_version: str | None, run_id: str,
            reason: str, started_by: dict[str, Any] | None = None, expires_in: int | None = None) -> dict[str, Any]:
    """Make `version` the candidate awaiting approval for `expires_in` seconds (gate.approval_timeout; None: no
    limit), superseding any earlier one; idempotent. `started_by` (core.run.identity.run_starter) is who
    started the run: no reviewer may be them. A candidate it replaces is named in the returned entry's
    `replaced` (version, run, test macro-F1 of both) and logged as a warning: never replaced silently."""
    with locked(workdir, name):
        withdraw_expired(workdir, name)
        pending = candidate(workdir, name)
        if pending and pending["version"] == version and pending.get("champion_version") == champion_version:
            return pending
        replaced = None
        if pending and pending["version"] != version:
            replaced = {"version": pending["version"], "run_id": pending.get("run_id"),
                        "proposed_at": pending.get("proposed_at"), "macro_f1": _macro_f1(workdir, name, pending["version"]),
                        "new_macro_f1": _macro_f1(workdir, name, version)}
            _append_log(workdir, name, {"action": "superseded", "version": pending["version"], "by": version,
                                        "at": _now(), "run_id": pending.get("run_id")}, REVIEWS)
            log.warning("registry: candidate %s of %s (run %s, test macro-F1 %s) awaiting approval since %s is replaced "
                        "by %s (test macro-F1 %s); only the latest candidate can be approved", pending["version"], name,
                        pending.get("run_id"), replaced["macro_f1"], pending.get("proposed_at"), version,
                        replaced["new_macro_f1"])
        now = datetime.now(timezone.utc)
        entry = {"version": version, "champion_version": champion_version, "run_id": run_id,
                 "proposed_at": now.isoformat(timespec="seconds"), "gate_reason": reason, "started_by": started_by,
                 "expires_at": (now + timedelta(seconds=expires_in)).isoformat(timespec="seconds") if expires_in else None,
                 **({"replaced": replaced} if replaced else {})}
        write_json_atomic(model_root(workdir, name) / CANDIDATE, entry)
        _append_log(workdir, name, {"action": "candidate", "at": entry["proposed_at"], **entry}, REVIEWS)
        return entry


def _macro_f1(workdir: Path, name: str, version: str) -> float | None:
    try:
        return json.loads((version_dir(workdir, name, version) / "metrics.json").read_text())["test"]["macro_f1"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def expired(entry: dict[str, Any] | None, now: datetime | None = None) -> bool:
    """Whether the candidate `entry` is past its `expires_at` (a candidate without one never expires)."""
    at = (entry or {}).get("expires_at")
    return bool(at) and datetime.fromisoformat(at) <= (now or datetime.now(timezone.utc))


def withdraw_expired(workdir: Path, name: str) -> dict[str, Any] | None:
    """Withdraw the candidate if it is past its `expires_at` (recorded as `expired` in the review log); returns
    the review entry, or None if there was nothing to withdraw."""
    with locked(workdir, name):
        pending = candidate(workdir, name)
        if not expired(pending):
            return None
        return expire(workdir, name, pending["version"], f"no reviewer approved it before {pending['expires_at']} "
                                                         "(gate.approval_timeout); not promoted")


def _pending(workdir: Path, name: str, version: str) -> dict[str, Any]:
    """The candidate entry of `version`; raises `RegistryError` saying why it cannot be reviewed."""
    withdraw_expired(workdir, name)
    if not version_dir(workdir, name, version).is_dir():
        raise RegistryError(f"model {name!r} has no version {version!r}; see `python -m flows.registry list`")
    pending = candidate(workdir, name)
    if pending is None or pending["version"] != version:
        last = review(workdir, name, version)
        if last and last["action"] in ("approved", "rejected", "expired", "overridden"):
            who = f" by {_who(last['reviewer'], last.get('reviewer_name') or '')}" if last.get("reviewer") else ""
            why = f" ({last['comment']})" if last.get("comment") else ""
            raise RegistryError(f"version {version!r} of {name!r} is not awaiting approval: it was "
                                f"{last['action']}{who} at {last['at']}{why}")
        if pending is None:
            raise RegistryError(f"version {version!r} of {name!r} is not awaiting approval (no candidate is)")
        raise RegistryError(f"version {version!r} of {name!r} is no longer the latest candidate: "
                            f"{pending['version']} (run {pending.get('run_id')}) replaced it; review that one")
    return pending


def _reviewer(reviewer: str) -> str:
    if not reviewer or not reviewer.strip():
        raise RegistryError("a review needs the reviewer's identity (from the command line: the OS account running "
                            "it; in the Prefect UI: the name typed in the form)")
    return reviewer.strip()


def _four_eyes(pending: dict[str, Any], reviewer: str, reviewer_name: str, version: str) -> None:
    """Refuse a review by whoever started the run that produced the candidate (its OS account, the worker's
    account of a deployment run, or the Prefect user who created it)."""
    starters = starter_identities(pending.get("started_by"))
    claimed = {reviewer.casefold(), reviewer_name.strip().casefold()} - {""}
    if starters & claimed:
        raise RegistryError(f"version {version!r} was produced by a run started by {describe(pending.get('started_by'))}; "
                            f"four-eyes approval needs a second person: {reviewer!r} cannot review it")


def _who(reviewer: str, reviewer_name: str) -> str:
    return reviewer + (f" ({reviewer_name})" if reviewer_name and reviewer_name != reviewer else "")


def approve(workdir: Path, name: str, version: str, reviewer: str, comment: str = "",
            via: str = "command line", reviewer_name: str = "", authenticated: bool = True) -> dict[str, Any]:
    """Promote the candidate `version` on a second person's approval; returns the new champion pointer.

    `reviewer` is the identity the caller vouches for: the command line passes its OS account
    (core.run.identity.os_account) with `authenticated=True`; the Prefect UI's form passes the typed name with
    `authenticated=False` (nothing proves it). `reviewer_name` is an optional name recorded beside the account.
    Refused (`RegistryError`, with the reason) if the reviewer started the run that produced `version`, if
    `version` is not the latest candidate, if any of its files changed since registration, or if the champion
    changed since its gate compared the two.
    """
    reviewer = _reviewer(reviewer)
    with locked(workdir, name):
        pending = _pending(workdir, name, version)
        _four_eyes(pending, reviewer, reviewer_name, version)
        verify(workdir, name, version)
        try:
            current = (champion(workdir, name) or {}).get("version")
        except RegistryError:
            current = None
        if current not in (pending.get("champion_version"), version):
            raise RegistryError(f"the champion changed to {current} after the gate compared {version} with "
                                f"{pending.get('champion_version') or 'no champion'}; not promoted: re-run the flow to "
                                "challenge the new champion")
        at = _now()
        details = {"reviewer": reviewer, "reviewer_name": reviewer_name, "reviewer_authenticated": authenticated,
                   "comment": comment, "approved_at": at, "via": via, "started_by": pending.get("started_by")}
        pointer = promote(workdir, name, version, f"approved by {_who(reviewer, reviewer_name)}"
                          + (f": {comment}" if comment else ""), action="approve", extra=details)
        _append_log(workdir, name, {"action": "approved", "version": version, "reviewer": reviewer,
                                    "reviewer_name": reviewer_name, "reviewer_authenticated": authenticated,
                                    "comment": comment, "at": at, "via": via, "run_id": pending.get("run_id"),
                                    "started_by": pending.get("started_by")}, REVIEWS)
        _clear_candidate(workdir, name)
        log.info("registry: %s version %s approved by %s and promoted", name, version, _who(reviewer, reviewer_name))
        return pointer


def reject(workdir: Path, name: str, version: str, reviewer: str, comment: str = "",
           via: str = "command line", reviewer_name: str = "", authenticated: bool = True) -> dict[str, Any]:
    """Reject the candidate `version`: it stays registered, the champion stays; returns the review entry.
    `reviewer`, `reviewer_name`, `authenticated` as for `approve` (a starter may withdraw their own candidate)."""
    reviewer = _reviewer(reviewer)
    with locked(workdir, name):
        pending = _pending(workdir, name, version)
        entry = {"action": "rejected", "version": version, "reviewer": reviewer, "reviewer_name": reviewer_name,
                 "reviewer_authenticated": authenticated, "comment": comment, "at": _now(), "via": via,
                 "run_id": pending.get("run_id")}
        _append_log(workdir, name, entry, REVIEWS)
        _clear_candidate(workdir, name)
        log.info("registry: %s version %s rejected by %s", name, version, _who(reviewer, reviewer_name))
        return entry


def promote_by_hand(workdir: Path, name: str, version: str, reason: str, override: str = "") -> dict[str, Any]:
    """`registry promote`: make `version` the champion on this OS account's say. A version awaiting approval, or
    rejected by a reviewer, is refused unless `override` gives the reason to bypass the review; the override is
    recorded (account, reason, time) in the review log and the promotion log, and the candidate withdrawn. Any
    version must pass `verify`."""
    account = os_account()
    with locked(workdir, name):
        version_dir(workdir, name, version)  # a plain name, or RegistryError
        verify(workdir, name, version)
        withdraw_expired(workdir, name)
        pending = candidate(workdir, name)
        last = review(workdir, name, version)
        awaiting = pending is not None and pending.get("version") == version
        status = "awaiting approval" if awaiting else (last or {}).get("action")
        if status not in ("awaiting approval", "rejected"):
            return promote(workdir, name, version, reason, extra={"by": account})
        if not override.strip():
            raise RegistryError(f"version {version!r} of {name!r} is {status} (gate.approval=manual): promoting it "
                                "by hand would bypass the second person's review. Approve it with `python -m "
                                f"flows.registry approve {version}` (as another account), or, to bypass the review "
                                "on purpose, add --override-approval 'REASON' (recorded with your account)")
        at = _now()
        _append_log(workdir, name, {"action": "overridden", "version": version, "reviewer": account, "comment": override,
                                    "at": at, "via": "registry promote --override-approval", "was": status,
                                    "run_id": (pending or last or {}).get("run_id")}, REVIEWS)
        if awaiting:
            _clear_candidate(workdir, name)
        log.warning("registry: %s version %s promoted by %s OVERRIDING the review (%s): %s", name, version, account,
                    status, override)
        return promote(workdir, name, version, f"{reason}; review overridden by {account}: {override}",
                       action="override", extra={"by": account, "override": override, "overridden": status})


def expire(workdir: Path, name: str, version: str, reason: str) -> dict[str, Any] | None:
    """Withdraw the candidate `version` that nobody reviewed in time; None if it is no longer the candidate."""
    with locked(workdir, name):
        pending = candidate(workdir, name)
        if not pending or pending["version"] != version:
            return None
        entry = {"action": "expired", "version": version, "reviewer": None, "comment": reason, "at": _now(),
                 "run_id": pending.get("run_id")}
        _append_log(workdir, name, entry, REVIEWS)
        _clear_candidate(workdir, name)
        return entry


def reviews(workdir: Path, name: str, version: str | None = None) -> list[dict[str, Any]]:
    """Review events (candidate, approved, rejected, expired, superseded), oldest first; of one version if given."""
    path = model_root(workdir, name) / REVIEWS
    entries = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a torn last line from a killed writer
        if version is None or entry.get("version") == version:
            entries.append(entry)
    return entries


def review(workdir: Path, name: str, version: str) -> dict[str, Any] | None:
    """The latest review event of `version`, or None if it never needed one."""
    entries = reviews(workdir, name, version)
    return entries[-1] if entries else None


def approval_record(workdir: Path, name: str, version: str) -> dict[str, Any]:
    """How `version` came (or did not come) to be champion: its review status, or its automatic promotion."""
    last = review(workdir, name, version)
    if last is not None:
        status = {"candidate": "awaiting approval", "overridden": "promoted overriding the review"}.get(
            last["action"], last["action"])
        if status == "awaiting approval" and expired(candidate(workdir, name)):
            status = "expired"  # withdrawn in the log by the next registry command that changes something
        return {"status": status, **{k: last.get(k) for k in ("reviewer", "reviewer_name", "reviewer_authenticated",
                                                              "comment", "at", "via", "run_id", "by", "started_by")}}
    promoted = [e for e in promotion_log(workdir, name) if e.get("version") == version]
    if promoted:
        first = promoted[0]
        return {"status": "promoted without review" if first.get("action") == "promote" else first.get("action"),
                "reviewer": first.get("reviewer"), "comment": first.get("reason"), "at": first.get("promoted_at")}
    return {"status": "registered, not promoted"}


def _clear_candidate(workdir: Path, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(model_root(workdir, name) / CANDIDATE)


def model_names(workdir: Path) -> list[str]:
    """The model names registered in a workdir."""
    folder = Path(workdir) / "models"
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _remove_tree(path: Path) -> None:
    """Rename first, then delete: an interrupted prune leaves a hidden folder, never a half-deleted version."""
    trash = path.with_name(f".deleting-{path.name}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _append_log(workdir: Path, name: str, entry: dict[str, Any], log_name: str = LOG) -> None:
    path = model_root(workdir, name) / log_name
    lines = path.read_text() if path.is_file() else ""
    if lines and not lines.endswith("\n"):
        lines = lines.rsplit("\n", 1)[0] + "\n" if "\n" in lines else ""
    with atomic_path(path) as tmp:
        tmp.write_text(lines + json.dumps(entry, sort_keys=True) + "\n")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
