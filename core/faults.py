"""Test-only fault injection ("failpoints"): named points in the code where a test can make a run fail.

Nothing here does anything unless the command line armed it from `RETRAIN_TEST_FAULTS` (read only in
`flows/retrain.py`, the process boundary) or a test called `arm` itself. The format is

    RETRAIN_TEST_FAULTS="<point>=<action>[*<times>],..."     e.g. "finetune:start=oserror*2,promote:before-pointer=kill"

Points: `<step>:start` (the start of every attempt of every step) and the named points the code declares
(`faults.point("...")`). Actions: `oserror` (a transient I/O error, which retries handle), `enospc` (disk
full), `bug` (a RuntimeError, which is not retried), `kill` (SIGKILL of the whole process, as an operator or
the OOM killer would). `*<times>` fires the first n passes only (default: every pass).
This is deliberate global state: a failpoint must be reachable from anywhere without threading a test
setting through every signature, and it is inert in production because nothing arms it.
"""

from __future__ import annotations

import errno
import os
import signal
import threading

ENV = "RETRAIN_TEST_FAULTS"
ACTIONS = ("oserror", "enospc", "bug", "kill")
_armed: dict[str, list] = {}
_lock = threading.Lock()


class InjectedBug(RuntimeError):
    """A deliberate, non-transient failure from a failpoint."""


def arm(spec: str | None) -> None:
    """Arm the failpoints described by `spec` (see module docstring); None or "" disarms everything."""
    with _lock:
        _armed.clear()
        for item in filter(None, (part.strip() for part in (spec or "").split(","))):
            name, _, action = item.partition("=")
            action, _, times = action.partition("*")
            if action not in ACTIONS or not name:
                raise ValueError(f"bad fault {item!r}: expected POINT=ACTION[*TIMES], ACTION one of {ACTIONS}")
            _armed[name] = [action, int(times) if times else -1]


def point(name: str, path: object = None) -> None:
    """A failpoint: does nothing unless `name` was armed. `path` names the file an I/O fault is about."""
    with _lock:
        entry = _armed.get(name)
        if entry is None or entry[1] == 0:
            return
        entry[1] -= 1
        action = entry[0]
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "oserror":
        raise OSError(errno.EIO, f"Input/output error (injected at {name})", *([str(path)] if path else []))
    if action == "enospc":
        raise OSError(errno.ENOSPC, f"No space left on device (injected at {name})", *([str(path)] if path else []))
    raise InjectedBug(f"injected failure at {name}")
