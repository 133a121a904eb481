"""Who did something, as far as this process can tell: for four-eyes approval (core.registry).

The only identity a process can vouch for is the operating-system account it runs as (its real uid, looked up
in the password database: not $USER, which anyone can set). A run started from the command line is started by
that account. A deployment run is executed by the worker's account; who asked for it is what Prefect recorded
on the flow run (`created_by`: a user or an automation on Prefect Cloud or behind an authenticating front; on a
plain self-hosted server usually nothing), which is recorded beside it.
"""

from __future__ import annotations

import logging
import os
import pwd
import socket
from typing import Any

log = logging.getLogger(__name__)


def os_account() -> str:
    """The name of the OS account of this process's real uid (`uid N` if it has no entry in the password
    database: a container's arbitrary uid)."""
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def run_starter(run_id: str | None) -> dict[str, Any]:
    """Who started the flow run `run_id` (called inside it). From the command line: `{"os_account", "host",
    "via": "command line"}`. Under a deployment: `{"worker_account", "host", "via": "deployment NAME",
    "prefect_created_by": {"type", "id", "display_value"} or None}`: the OS account is the worker's, not the
    requester's, so it is recorded as such."""
    starter: dict[str, Any] = {"host": socket.gethostname()}
    deployment_name = None
    try:
        from prefect.runtime import deployment

        deployment_name = deployment.name if deployment.id else None
    except Exception:  # noqa: BLE001 (outside a flow run, or no API: a command-line run)
        deployment_name = None
    if deployment_name is None:
        return {**starter, "os_account": os_account(), "via": "command line"}
    created_by = None
    try:
        from prefect import get_client

        with get_client(sync_client=True) as client:
            recorded = client.read_flow_run(run_id).created_by
        if recorded is not None:
            created_by = {"type": recorded.type, "id": str(recorded.id) if recorded.id else None,
                          "display_value": recorded.display_value}
    except Exception as exc:  # noqa: BLE001 (the starter is recorded without it, and says so)
        log.warning("could not read who created flow run %s from the Prefect API (%s)", run_id, exc)
    return {**starter, "worker_account": os_account(), "via": f"deployment {deployment_name}",
            "prefect_created_by": created_by}


def starter_identities(starter: dict[str, Any] | None) -> set[str]:
    """The identities (case-folded) a reviewer must not be: the starter's OS account, the worker's account of a
    deployment run, and the Prefect user who created it, where recorded."""
    if not starter:
        return set()
    created = starter.get("prefect_created_by") or {}
    names = {starter.get("os_account"), starter.get("worker_account"), created.get("display_value")}
    return {str(name).strip().casefold() for name in names if name}


def describe(starter: dict[str, Any] | None) -> str:
    """One phrase for messages: `account root (command line)`, `worker account svc (deployment adhoc; created by
    ...)`, or `an unrecorded starter`."""
    if not starter:
        return "an unrecorded starter (registered before starters were recorded)"
    if starter.get("os_account"):
        return f"account {starter['os_account']} ({starter.get('via', 'command line')})"
    created = (starter.get("prefect_created_by") or {}).get("display_value")
    return (f"worker account {starter.get('worker_account')} ({starter.get('via')}"
            f"{f'; created by {created}' if created else '; Prefect recorded no creator'})")
