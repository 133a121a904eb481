"""`make serve`: a local Prefect server (the ops dashboard), the work pool, the deployments and a worker, under
one supervisor.

    .venv/bin/python -m flows.serve [--host 127.0.0.1] [--port 4200] [--alert-webhook URL] [--insecure]

Supervision. SIGTERM, SIGINT (Ctrl-C) and SIGHUP stop everything within seconds, in any phase of start-up: the
worker first, then any flow run still in flight (a run never goes on to promote after the stop), then the
server (the reverse order hangs). If the server or the worker dies, the other is stopped too and this command
exits 1 saying which. A port already in use is refused, naming the process that holds it (often the server of
an earlier `make serve` that was killed). Runs left Running (or Paused, Pending) by a worker that is gone are
marked Crashed, at start-up and at the stop, so the failure alert fires; while serving, Prefect's heartbeat
automation ("Crash zombie flows", docs.prefect.io/v3/advanced/detect-zombie-flows) does the same for a run whose
process stopped reporting.

Authentication. Binds to 127.0.0.1 unless told otherwise. With `PREFECT_SERVER_API_AUTH_STRING=user:password`
in the environment the server requires HTTP basic auth on its API (401 without), and this command hands the
same string to its own clients and the worker (`PREFECT_API_AUTH_STRING`, what Prefect's clients read). Any
other `--host` is refused without it, unless `--insecure` (see docs/security.md).

With `--alert-webhook` (or `RETRAIN_ALERT_WEBHOOK`), a failed or crashed run of the `retrain` flow POSTs a JSON
alert to that URL (a Prefect automation, created here from `alert_automation`).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POOL = "retrain-pool"
FLOW = "retrain"
ALERT_BLOCK = "retrain-alerts"
ZOMBIE_AUTOMATION = "retrain-crash-zombie-runs"
HEARTBEAT_SECONDS = 30  # PREFECT_FLOWS_HEARTBEAT_FREQUENCY of the worker's runs; Prefect asks for >= 30
STOP_SECONDS = 10  # per process: a polite signal, then SIGKILL
LIVE_STATES = ("RUNNING", "PENDING", "PAUSED", "CANCELLING")  # states only a live process can leave
ALERT_PAYLOAD = json.dumps({
    "alert": "retrain run {{ event.resource.name }} ended {{ event.event }}",
    "flow_run_id": "{{ event.resource.id }}",
    "state": "{{ event.event }}",
    "occurred": "{{ event.occurred }}",
})


def auth_string(environ: dict[str, str] | None = None) -> str | None:
    """The basic-auth string `user:password` the server is to require: `PREFECT_SERVER_API_AUTH_STRING` (the
    server's setting), else `PREFECT_API_AUTH_STRING` (the clients'); None when neither is set."""
    environ = os.environ if environ is None else environ
    return environ.get("PREFECT_SERVER_API_AUTH_STRING") or environ.get("PREFECT_API_AUTH_STRING") or None


def prefect_env(api_url: str, home: Path | None = None, auth: str | None = None) -> dict[str, str]:
    """Environment for Prefect commands talking to `api_url` (and the project directory for the pull step).
    With `auth`, the server requires it (`PREFECT_SERVER_API_AUTH_STRING`) and clients send it
    (`PREFECT_API_AUTH_STRING`: Prefect 3's clients read only that one)."""
    env = {**os.environ, "PREFECT_API_URL": api_url, "RETRAIN_PROJECT_DIR": str(ROOT),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    if auth:
        env["PREFECT_SERVER_API_AUTH_STRING"] = env["PREFECT_API_AUTH_STRING"] = auth
    if home:
        env["PREFECT_HOME"] = str(home)
    return env


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def port_holder(host: str, port: int) -> str | None:
    """None if `port` on `host` can be bound now; otherwise who holds it: "pid N (command line, user U)" when
    this account may see it (psutil), or a hint to look with `ss -ltnp`."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free for a server
        try:
            sock.bind((host, port))
            return None
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return f"it cannot be bound ({exc.strerror})"
    import psutil

    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                proc = psutil.Process(conn.pid)
                with proc.oneshot():
                    command = " ".join(proc.cmdline())[:200] or proc.name()
                    return f"pid {conn.pid} ({command}; user {proc.username()})"
    return f"a process this account cannot see (`ss -ltnp` or `sudo lsof -i :{port}` names it)"


def prefect(args: list[str], env: dict[str, str], check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the `prefect` command line of this venv."""
    command = [sys.executable, "-m", "prefect", *args]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=check, timeout=timeout)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that no one listens on now (the OS picks it); a server started on it soon gets it."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def spawn_server(host: str, port: int, env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    """Start `prefect server start` in its own process group and return at once (see `wait_for_api`). Output goes
    to `log`, or to this process's stdout/stderr when there is none."""
    out = open(log, "ab") if log else None
    return subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
                            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT if log else None,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def start_server(host: str, port: int, env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    """Start `prefect server start` in the background and wait until its API answers."""
    server = spawn_server(host, port, env, log)
    wait_for_api(f"http://{host}:{port}/api", server)
    return server


def wait_for_api(api_url: str, process: subprocess.Popen | None = None, timeout: float = 120,
                 interval: float = 0.5) -> None:
    """Poll the API's health endpoint every `interval` s until it answers; raises RuntimeError if the server
    process died, TimeoutError if it did not answer within `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(interval)
    raise TimeoutError(f"no Prefect API at {api_url} after {timeout:.0f} s")


def deploy(env: dict[str, str]) -> None:
    """Create the process work pool (if missing) and register every deployment in prefect.yaml."""
    existing = prefect(["work-pool", "inspect", POOL], env, check=False)
    if existing.returncode != 0:
        prefect(["work-pool", "create", POOL, "--type", "process"], env)
    prefect(["--no-prompt", "deploy", "--all"], env)


def alert_automation(webhook_block_id) -> "Automation":  # noqa: F821 (imported lazily)
    """The automation: any `retrain` flow run that fails or crashes calls the alert webhook."""
    from prefect.automations import Automation
    from prefect.events.actions import CallWebhook
    from prefect.events.schemas.automations import EventTrigger, Posture

    return Automation(
        name="retrain-failed-or-crashed",
        description="Alert the operators when a run of the retrain flow fails or crashes.",
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": FLOW},
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            posture=Posture.Reactive, threshold=1, within=0,
        ),
        actions=[CallWebhook(block_document_id=webhook_block_id, payload=ALERT_PAYLOAD)],
    )


def install_alerts(api_url: str, webhook_url: str, auth: str | None = None) -> str:
    """Save the webhook block and (re)create the alert automation on the server at `api_url`; returns its id."""
    from prefect.automations import Automation
    from prefect.blocks.webhook import Webhook

    with _client_settings(api_url, auth):
        block_id = Webhook(url=webhook_url, headers={"Content-Type": "application/json"}).save(
            ALERT_BLOCK, overwrite=True)
        automation = alert_automation(block_id)
        try:
            Automation.read(name=automation.name).delete()
        except ValueError:
            pass  # not there yet
        return str(automation.create().id)


def start_worker(env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    """Start a process worker on the retrain pool in its own process group, in the background. Its runs emit
    Prefect heartbeat events (for the zombie automation) unless `env` sets PREFECT_FLOWS_HEARTBEAT_FREQUENCY."""
    out = open(log, "ab") if log else None
    env = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS), **env}
    return subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL], env=env, cwd=ROOT,
                            stdout=out, stderr=subprocess.STDOUT if log else None, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def stop(process: subprocess.Popen, timeout: float = STOP_SECONDS) -> None:
    """Stop a background process group politely (SIGINT), then firmly (SIGKILL after `timeout` s)."""
    if process.poll() is not None:
        _kill_group(process.pid)  # the leader is gone; what it left in its group goes too
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    _kill_group(process.pid)
    process.wait()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def stop_descendants(timeout: float = STOP_SECONDS, spare_group: int | None = None) -> list[int]:
    """SIGTERM, then SIGKILL after `timeout` s, every live process descended from this one (but those of process
    group `spare_group`): the worker starts each flow run in a session of its own, so stopping the worker's group
    does not reach them. Returns their pids."""
    import psutil

    try:
        left = [proc for proc in psutil.Process().children(recursive=True)
                if spare_group is None or _pgid(proc.pid) != spare_group]
    except psutil.Error:
        return []
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(left, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    return [proc.pid for proc in left]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux `PR_SET_CHILD_SUBREAPER`), so a flow run
    whose worker died is still ours to stop; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def zombie_automation() -> "Automation":  # noqa: F821 (imported lazily)
    """Prefect's documented zombie detection: a flow run that sent a heartbeat and then nothing (no heartbeat, no
    final state) for 3 heartbeats is set Crashed (docs.prefect.io/v3/advanced/detect-zombie-flows)."""
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return Automation(
        name=ZOMBIE_AUTOMATION,
        description="Mark a retrain run Crashed when its process stops sending heartbeats (killed worker or host).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
            within=timedelta(seconds=3 * HEARTBEAT_SECONDS),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {3 * HEARTBEAT_SECONDS} s: the run's process is gone "
                                            "(killed worker or host)")],
    )


@contextlib.contextmanager
def _client_settings(api_url: str, auth: str | None):
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url, PREFECT_API_AUTH_STRING: auth}):
        yield


def install_zombie_detection(api_url: str, auth: str | None = None) -> str:
    """(Re)create the zombie automation on the server at `api_url`; returns its id."""
    from prefect.automations import Automation

    with _client_settings(api_url, auth):
        automation = zombie_automation()
        with contextlib.suppress(ValueError):
            Automation.read(name=automation.name).delete()
        return str(automation.create().id)


def crash_orphaned_runs(api_url: str, why: str, auth: str | None = None) -> list[str]:
    """Set Crashed (with `why`) every flow run of the retrain pool still in a state only a live process can leave
    (Running, Pending, Paused, Cancelling): called when no worker of ours is alive, so none can. The Crashed
    event fires the failure alert. Returns the runs' names."""
    from prefect import get_client
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType,
                                                WorkPoolFilter, WorkPoolFilterName)
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    crashed = []
    with _client_settings(api_url, auth), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType[name] for name in LIVE_STATES]))),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[POOL])))
        for run in runs:
            client.set_flow_run_state(run.id, Crashed(message=why), force=True)
            crashed.append(run.name)
    return crashed


class Stop(BaseException):
    """Raised in the main thread by the first SIGTERM, SIGINT or SIGHUP (a BaseException, like KeyboardInterrupt,
    so no `except Exception` on the way swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Supervisor:
    """Signal handling for `main`: installed before the first child starts; the first signal raises `Stop` where
    the main thread is (a wait for the API, `prefect deploy`, the watch loop); once stopping, signals are noted
    and ignored so the stop itself is never cut short."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self):
        self.stopping = False
        self.received: int | None = None
        for signum in self.SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame) -> None:
        if self.received is None:
            self.received = signum
        if not self.stopping:
            self.stopping = True
            raise Stop(signum)


def say(message: str) -> None:
    print(f"serve: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    supervisor = Supervisor()  # before anything can start a child
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--alert-webhook", default=os.environ.get("RETRAIN_ALERT_WEBHOOK", ""),
                        help="URL to POST an alert to when a retrain run fails or crashes")
    parser.add_argument("--insecure", action="store_true",
                        help="allow a --host other than loopback without PREFECT_SERVER_API_AUTH_STRING: anyone who "
                             "reaches the port can then start runs as this account")
    args = parser.parse_args(argv)
    auth = auth_string()
    if not is_loopback(args.host) and not auth and not args.insecure:
        print(f"error: --host {args.host} would expose the API, which starts runs as this account, without "
              "authentication: set PREFECT_SERVER_API_AUTH_STRING=user:password (and put TLS in front), or pass "
              "--insecure to do it anyway", file=sys.stderr)
        return 2
    if holder := port_holder(args.host, args.port):
        print(f"error: port {args.port} on {args.host} is already in use by {holder}; stop that process (an earlier "
              "`make serve` left running?) or choose another port with --port", file=sys.stderr)
        return 1
    api_url = f"http://{args.host}:{args.port}/api"
    env = prefect_env(api_url, auth=auth)
    become_subreaper()
    server = worker = None
    code, why = 0, "asked to stop"
    try:
        say(f"starting the Prefect server on {api_url}{' (API auth on)' if auth else ''} ...")
        server = spawn_server(args.host, args.port, env)
        wait_for_api(api_url, server)
        deploy(env)
        if orphans := crash_orphaned_runs(api_url, "marked Crashed by `make serve` at start-up: its worker was gone "
                                                   "(an earlier serve stopped or died while it ran)", auth):
            say(f"marked {len(orphans)} run(s) left running by a worker that is gone as Crashed: {', '.join(orphans)}")
        install_zombie_detection(api_url, auth)
        if args.alert_webhook:
            install_alerts(api_url, args.alert_webhook, auth)
            say(f"alerts: failed or crashed retrain runs POST to {args.alert_webhook}")
        worker = start_worker(env)
        say(f"dashboard: http://{args.host}:{args.port}  (deployments retrain/weekly, retrain/adhoc, suggest/weekly; "
            f"run one with: PREFECT_API_URL={api_url} .venv/bin/prefect deployment run retrain/adhoc --watch)\n"
            "Ctrl-C (or SIGTERM, SIGHUP) stops the worker and the server.")
        while True:
            if server.poll() is not None:
                code, why = 1, f"the Prefect server (pid {server.pid}) exited with code {server.returncode}"
                break
            if worker.poll() is not None:
                code, why = 1, f"the Prefect worker (pid {worker.pid}) exited with code {worker.returncode}"
                break
            time.sleep(0.5)
    except Stop as stop_signal:
        why = f"{signal.Signals(stop_signal.signum).name} received"
    except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as exc:
        code, why = 1, f"start-up failed: {exc}"
        if isinstance(exc, subprocess.CalledProcessError):
            why += f"\n{(exc.stderr or '')[-2000:]}"
    supervisor.stopping = True  # from here on a signal is noted, never raised: the stop must finish
    say(f"{'error: ' if code else ''}{why}; stopping the worker, then the server")
    _shutdown(server, worker, api_url, auth, why)
    say("stopped")
    return code


def _shutdown(server: subprocess.Popen | None, worker: subprocess.Popen | None, api_url: str, auth: str | None,
              why: str) -> None:
    """Stop the worker, every flow run it started, then the server; runs left in flight are marked Crashed while
    the server still answers."""
    if worker is not None:
        stop(worker)
    if server is not None and server.poll() is None:
        if live := stop_descendants(spare_group=server.pid):
            say(f"stopped {len(live)} flow-run process(es) the worker left")
        try:
            if runs := crash_orphaned_runs(api_url, f"marked Crashed by `make serve`: {why} while the run was in "
                                                    "flight, and its worker was stopped", auth):
                say(f"marked {len(runs)} run(s) in flight as Crashed: {', '.join(runs)}")
        except Exception as exc:  # noqa: BLE001 (the server may be going down itself: stopping matters more)
            say(f"could not mark the runs in flight as Crashed ({exc}); the next `make serve` will")
        stop(server)
    elif server is not None:
        stop(server)
    stop_descendants()  # anything left, whoever started it


if __name__ == "__main__":
    sys.exit(main())
