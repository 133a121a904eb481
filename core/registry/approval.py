"""The review workflow (`gate.approval=manual`): four-eyes approval of a gated candidate.

    <workdir>/models/<name>/candidate.json   the version awaiting a second person's approval, with the champion
                                             its gate compared it against
    <workdir>/models/<name>/reviews.jsonl    every review event: candidate, approved, rejected, expired,
                                             superseded (who, when, why)

`propose` records the candidate; `approve` promotes it through the store (`core.registry.store.promote`) once
a reviewer other than the run's starter (`core.registry.identity`) accepts it; `reject`, `expire` and
`promote_by_hand` close it otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from core.registry.identity import describe, os_account, starter_identities
from core.registry.store import append_log, champion, locked, promote, promotion_log, timestamp, verify
from core.registry.version import RegistryError, Version, model_root, version_dir
from core.storage.artifacts import write_json_atomic

log = logging.getLogger(__name__)

CANDIDATE = "candidate.json"
REVIEWS = "reviews.jsonl"


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
    limit), superseding any earlier one; idempotent. `started_by` (core.registry.identity.run_starter) is who
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
            append_log(workdir, name, {"action": "superseded", "version": pending["version"], "by": version,
                                        "at": timestamp(), "run_id": pending.get("run_id")}, REVIEWS)
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
        append_log(workdir, name, {"action": "candidate", "at": entry["proposed_at"], **entry}, REVIEWS)
        return entry


def _macro_f1(workdir: Path, name: str, version: str) -> float | None:
    try:
        return Version.of(workdir, name, version).read_metrics()["test"]["macro_f1"]
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
    (core.registry.identity.os_account) with `authenticated=True`; the Prefect UI's form passes the typed name with
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
        at = timestamp()
        details = {"reviewer": reviewer, "reviewer_name": reviewer_name, "reviewer_authenticated": authenticated,
                   "comment": comment, "approved_at": at, "via": via, "started_by": pending.get("started_by")}
        pointer = promote(workdir, name, version, f"approved by {_who(reviewer, reviewer_name)}"
                          + (f": {comment}" if comment else ""), action="approve", extra=details)
        append_log(workdir, name, {"action": "approved", "version": version, "reviewer": reviewer,
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
                 "reviewer_authenticated": authenticated, "comment": comment, "at": timestamp(), "via": via,
                 "run_id": pending.get("run_id")}
        append_log(workdir, name, entry, REVIEWS)
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
        at = timestamp()
        append_log(workdir, name, {"action": "overridden", "version": version, "reviewer": account, "comment": override,
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
        entry = {"action": "expired", "version": version, "reviewer": None, "comment": reason, "at": timestamp(),
                 "run_id": pending.get("run_id")}
        append_log(workdir, name, entry, REVIEWS)
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
