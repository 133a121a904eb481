"""After promote: write the version's model report and, with `gate.approval=manual`, get a second person's
decision on a challenger that passed the gate.

- Under a deployment (a server and a worker), the run pauses for input: the Prefect UI shows a form
  (`ApprovalForm`: approve / reject, reviewer, comment) whose description says where the report is. On
  approval the candidate is promoted atomically (`core.registry.approve`, which refuses a version that is no
  longer the latest candidate, whose files changed, or whose champion changed); on rejection or when
  `gate.approval_timeout` passes, the run ends without promoting and says why.
- From the command line (no deployment), nobody can answer a form: the run ends normally with
  `gate.decision = "awaiting approval"` and logs the commands that approve or reject the candidate later.

Pause, not suspend. `suspend_flow_run` would release the worker's process and re-run the whole flow when
resumed; our content-keyed caching would make the re-run cheap (every cached step is `Cached`), but the gate
re-scores the champion, and a *suspended* run that times out is failed by the server's pause-expiration
service without any of our code running, so the candidate would never be withdrawn in the registry nor the
reason written to summary.json. `pause_flow_run` keeps the process (a sleeping Python process on the process
pool: cheap), returns the reviewer's answer in place, and raises `FlowPauseTimeout` in our code at the
deadline, so every outcome is recorded the same way. (At that deadline the server's pause-expiration service
may mark the run Failed, "paused and never resumed", a few seconds before the process notices, which fires the
failure alert; the process then withdraws the candidate, writes summary.json with the reason, and the run ends
Completed.)
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import Field

from core.reports import model_report
from core import registry
from schemas.decisions import GateDecision
from schemas.decisions import Release

log = logging.getLogger(__name__)

try:  # the form is a Prefect RunInput; the module stays importable (and testable) without a flow run
    from prefect.input import RunInput
except ImportError:  # pragma: no cover
    RunInput = object  # type: ignore[assignment,misc]


class ApprovalForm(RunInput):
    """The form a reviewer fills in on the paused run in the Prefect UI."""

    decision: Literal["approve", "reject"] = Field(description="approve: make the candidate the champion; "
                                                               "reject: keep the current champion")
    reviewer: str = Field(min_length=1, description="your name: recorded in the registry's promotion log as typed "
                                                    "(the form cannot verify it; see README, four-eyes)")
    comment: str = Field("", description="why (recorded with the decision)")


class ReviewedDecision(GateDecision):
    """The gate's decision with the reviewer's part: `decision` is "awaiting approval", "promote" (approved),
    "rejected", "approval timed out" or "keep champion" (approval refused by the registry)."""

    decision: str  # type: ignore[assignment]  (wider than the gate's own two values)
    approval: dict[str, Any] | None = None


def commands(name: str, version: str, workdir: Any) -> dict[str, str]:
    """The commands that approve or reject a candidate from the command line: run by an OS account other than
    the one that started the run (the reviewer's identity is the account; `--reviewer NAME` may add a name)."""
    common = f"{version} --workdir {workdir} --name {name} --comment TEXT"
    return {"approve": f"python -m flows.registry approve {common}",
            "reject": f"python -m flows.registry reject {common}"}


def in_deployment() -> bool:
    """Whether this flow run belongs to a deployment (a worker runs it, the UI can resume it)."""
    from prefect.runtime import deployment

    return deployment.id is not None


def review(run: Any, release: Release, decision: GateDecision, gate_cfg: Any) -> Release:
    """Write the report of the version `release` registered; with a candidate, obtain (or defer) its review.

    `run` is the flow's `StepRunner`: its `promote` and `gate` records are replaced by what the review decided,
    so summary.json, the run report and the history say it. Returns the (possibly updated) release.
    """
    workdir, name, version = run.workdir, release.name, release.version
    report = _write_report(run, release) or "(not written: see the warning above)"
    if not release.awaiting_approval:
        return release
    how = commands(name, version, workdir.resolve())
    if not in_deployment():
        log.warning("version %s of %s passed the gate and awaits a second person's approval (gate.approval=manual).\n"
                    "  report:  %s\n  approve: %s\n  reject:  %s", version, name, report, how["approve"], how["reject"])
        return _record(run, release, decision, "awaiting approval", release.reason, promoted=False,
                       approval={"status": "awaiting approval", "report": str(report), **how})
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    form = ApprovalForm.with_initial_data(description=(
        f"**Approve or reject version `{version}` of model `{name}`.**\n\n"
        f"Gate: {decision.reason}\n\n"
        f"Model report (open in a browser): `{report}`\n\n"
        f"Approve makes it the champion (replacing `{decision.champion_version or 'none'}`); reject keeps the "
        f"champion. Without an answer within {gate_cfg.approval_timeout} s the run ends without promoting."))
    log.warning("version %s of %s awaits approval: the run pauses for the form in the Prefect UI (up to %d s); "
                "report: %s", version, name, gate_cfg.approval_timeout, report)
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=gate_cfg.approval_timeout,
                                key=f"approval-{version.lower()}")  # input keys: lower-case letters, digits, dashes
    except FlowPauseTimeout:
        why = f"no reviewer answered within gate.approval_timeout={gate_cfg.approval_timeout} s; not promoted"
        registry.expire(workdir, name, version, why)
        log.warning("approval of %s: %s", version, why)
        outcome = _record(run, release, decision, "approval timed out", why, promoted=False,
                          approval={"status": "expired", "report": str(report)})
    else:
        # Nothing authenticates the form's answer on a plain Prefect server: the typed name is recorded as typed
        # and marked unauthenticated; four-eyes can only refuse a typed name equal to the starter's.
        via = f"Prefect UI form (flow run {run.run_id}; typed name, not authenticated)"
        details = {"reviewer": answer.reviewer, "comment": answer.comment, "via": via, "report": str(report)}
        if answer.decision == "approve":
            try:
                pointer = registry.approve(workdir, name, version, answer.reviewer, answer.comment, via=via,
                                           authenticated=False)
            except registry.RegistryError as exc:
                why = f"approved by {answer.reviewer}, but the registry refused: {exc}"
                log.error("approval of %s: %s", version, why)
                outcome = _record(run, release, decision, "keep champion", why, promoted=False,
                                  approval={"status": "refused", **details})
            else:
                why = f"{decision.reason}; approved by {answer.reviewer}" + (f": {answer.comment}" if answer.comment else "")
                log.info("version %s of %s approved by %s: it is the champion", version, name, answer.reviewer)
                outcome = _record(run, release, decision, "promote", why, promoted=True,
                                  approval={"status": "approved", "at": pointer.get("approved_at"), **details})
        else:
            registry.reject(workdir, name, version, answer.reviewer, answer.comment, via=via, authenticated=False)
            why = f"rejected by {answer.reviewer}" + (f": {answer.comment}" if answer.comment else "") + "; not promoted"
            log.warning("version %s of %s %s", version, name, why)
            outcome = _record(run, release, decision, "rejected", why, promoted=False,
                              approval={"status": "rejected", **details})
    _write_report(run, release)  # now with the review
    return outcome


def _write_report(run: Any, release: Release):
    """The version's report, with the data section of the run that registered it (a re-run of the same model
    returns the existing version: its report keeps describing the run that trained it). Returns its path, or None
    if it could not be drawn: a report is a view of the registry and never fails the run, which may already have
    moved the champion (the failure is logged and kept in summary.json's `report_error`)."""
    try:
        lineage = registry.Version.of(run.workdir, release.name, release.version).read_lineage()
        own = str(lineage.get("run_id")) == str(run.run_id)
        path = model_report.write_report(run.workdir, release.name, release.version, run.summary() if own else None)
    except Exception as exc:  # noqa: BLE001 (see above)
        run.report_error = f"{type(exc).__name__}: {exc}"
        log.warning("the model report of %s version %s was not written (%s); the run, its summary and the registry "
                    "are complete", release.name, release.version, run.report_error)
        return None
    run.report_error = None
    return path


def _record(run: Any, release: Release, decision: GateDecision, verdict: str, reason: str, promoted: bool,
            approval: dict[str, Any]) -> Release:
    reviewed = ReviewedDecision(**{**decision.model_dump(), "decision": verdict, "reason": reason,
                                   "approval": approval})
    outcome = release.model_copy(update={"promoted": promoted, "reason": reason,
                                         "awaiting_approval": verdict == "awaiting approval"})
    run.refs["gate"], run.refs["promote"] = reviewed, outcome
    return outcome
