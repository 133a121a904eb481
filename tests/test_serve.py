"""`make serve` as a supervisor, with real processes and signals: `python -m flows.serve` starts a real Prefect
server and worker; the tests stop it with SIGTERM, SIGHUP and SIGINT in different phases, kill its children and
itself with SIGKILL, and check that nothing is left running, that runs left in flight end Crashed (in the
server's database), that a taken port is refused naming its holder, and that with PREFECT_SERVER_API_AUTH_STRING
the API answers 401 without credentials while serve's own clients and worker work."""

from __future__ import annotations

import base64
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from flows import serve

ROOT = Path(__file__).resolve().parents[1]
AUTH = "ops:correct-horse-battery"


class Serve:
    """One `python -m flows.serve` process with its own PREFECT_HOME; stderr and stdout in a file."""

    def __init__(self, home: Path, port: int, *args: str, env: dict[str, str] | None = None):
        self.home, self.port = home, port
        self.log = home / f"serve-{time.monotonic_ns()}.log"
        full = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_WORKER_QUERY_SECONDS": "1", **(env or {})}
        for name in ("PREFECT_API_URL", "PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_AUTH_STRING"):
            if name not in (env or {}):
                full.pop(name, None)
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "flows.serve", "--port", str(port), *args],
                                            cwd=ROOT, env=full, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.descendants: list[psutil.Process] = []

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            return []

    def wait_until(self, condition, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            assert self.process.poll() is None, f"serve exited early ({self.process.returncode}):\n{self.output[-3000:]}"
            time.sleep(0.2)
        raise AssertionError(f"timed out; serve said:\n{self.output[-3000:]}")

    def wait_ready(self) -> None:
        """Until the worker has started; remembers every process serve started."""
        self.wait_until(lambda: "dashboard:" in self.output and "Worker '" in self.output)
        self.descendants = self.children()

    def signal_and_wait(self, signum: int, within: float) -> float:
        """Send `signum`; return the seconds serve took to exit (fails after `within`)."""
        started = time.monotonic()
        self.descendants = self.descendants or self.children()
        self.process.send_signal(signum)
        try:
            self.process.wait(within)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"serve still running {within} s after {signal.Signals(signum).name}:\n"
                                 f"{self.output[-3000:]}") from None
        return time.monotonic() - started

    def cleanup(self) -> None:
        for proc in [*self.children(), *self.descendants]:
            with_suppressed(proc.kill)
        with_suppressed(lambda: os.killpg(self.process.pid, signal.SIGKILL))
        self.process.wait()


def command_line(proc: psutil.Process) -> str:
    """`proc`'s command line, or "" once it has exited: a child read while it exits is a zombie, or gone, for a
    moment, and psutil raises for either (seen once: ZombieProcess between `is_running()` and `cmdline()`)."""
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def with_suppressed(call) -> None:
    try:
        call()
    except (psutil.Error, ProcessLookupError, PermissionError):
        pass


def assert_all_gone(processes: list[psutil.Process], port: int, within: float = 10) -> None:
    """Every process in `processes` has exited and nobody listens on `port`."""
    gone, alive = psutil.wait_procs(processes, timeout=within)
    assert not alive, f"left running: {[(p.pid, command_line(p)[:120]) for p in alive]}"
    assert serve.port_holder("127.0.0.1", port) is None


def run_state(home: Path, run_id: str) -> tuple[str, str]:
    """A flow run's state type and message, read from the server's database (the server may be stopped)."""
    with sqlite3.connect(home / "prefect.db") as db:
        row = db.execute("SELECT flow_run.state_type, flow_run_state.message FROM flow_run JOIN flow_run_state "
                         "ON flow_run.state_id = flow_run_state.id WHERE flow_run.id = ?", (run_id,)).fetchone()
    return row


def start_running_run(port: int, auth: str | None = None) -> str:
    """A run of retrain/adhoc created straight into Running, as if a worker had started it; returns its id.
    (A Scheduled run would be picked up by the worker and really run.)"""
    from prefect import get_client
    from prefect.states import Running

    with serve._client_settings(f"http://127.0.0.1:{port}/api", auth), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("retrain/adhoc")
        run = client.create_flow_run_from_deployment(deployment.id, state=Running(), parameters={"data": "x.csv"})
        return str(run.id)


def http_status(url: str, auth: str | None = None, method: str = "GET") -> int:
    request = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None,
                                     headers={"Content-Type": "application/json"})
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


# ------------------------------------------------------------------------------------------- no server needed

def test_a_host_other_than_loopback_is_refused_without_auth(tmp_path):
    refused = Serve(tmp_path, serve.free_port(), "--host", "0.0.0.0")
    assert refused.process.wait(60) == 2
    assert "without authentication" in refused.output and "PREFECT_SERVER_API_AUTH_STRING" in refused.output
    assert "--insecure" in refused.output
    assert serve.is_loopback("127.0.0.1") and serve.is_loopback("::1") and serve.is_loopback("localhost")
    assert not serve.is_loopback("0.0.0.0") and not serve.is_loopback("10.1.2.3")


def test_a_taken_port_is_refused_naming_the_process_that_holds_it(tmp_path):
    port = serve.free_port()
    holder = subprocess.Popen([sys.executable, "-c", f"import socket,time; s=socket.socket(); "
                               f"s.bind(('127.0.0.1',{port})); s.listen(); print('ok', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        refused = Serve(tmp_path, port)
        assert refused.process.wait(60) == 1
        assert f"port {port} on 127.0.0.1 is already in use by pid {holder.pid}" in refused.output
        assert "time.sleep(120)" in refused.output  # its command line, to recognise it
        assert not refused.children()
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------------------------- a real server and worker

@pytest.mark.slow
def test_with_auth_the_api_answers_401_and_sigterm_stops_everything_crashing_the_run_in_flight(tmp_path):
    port = serve.free_port()
    up = Serve(tmp_path, port, env={"PREFECT_SERVER_API_AUTH_STRING": AUTH})
    try:
        up.wait_ready()  # serve's own `prefect deploy` and worker authenticated, or it would not get here
        api = f"http://127.0.0.1:{port}/api"
        assert http_status(f"{api}/flow_runs/filter", method="POST") == 401
        assert http_status(f"{api}/flow_runs/filter", auth="ops:wrong", method="POST") == 401
        assert http_status(f"{api}/deployments/filter", method="POST") == 401
        assert http_status(f"{api}/flow_runs/filter", auth=AUTH, method="POST") == 200
        assert http_status(f"http://127.0.0.1:{port}/ui-settings") == 200  # the UI page asks for the credentials
        run_id = start_running_run(port, AUTH)
        processes = up.descendants
        assert len(processes) >= 2
        took = up.signal_and_wait(signal.SIGTERM, within=60)
        assert up.process.returncode == 0, up.output[-3000:]
        assert_all_gone(processes, port)
        state, message = run_state(tmp_path, run_id)
        assert state == "CRASHED" and "SIGTERM received" in message
        assert "SIGTERM received; stopping the worker, then the server" in up.output
        print(f"SIGTERM to everything stopped: {took:.1f} s")
    finally:
        up.cleanup()


@pytest.mark.slow
@pytest.mark.parametrize("signum, phase", [(signal.SIGHUP, "server"), (signal.SIGINT, "deploy")])
def test_a_signal_during_start_up_stops_what_was_started(tmp_path, signum, phase):
    port = serve.free_port()
    up = Serve(tmp_path, port)
    try:
        if phase == "server":  # the server's process exists, its API is not up yet
            up.wait_until(lambda: up.children())
        else:  # `prefect deploy` is running
            up.wait_until(lambda: any("deploy" in command_line(p) for p in up.children()), timeout=240)
        processes = up.children()
        up.signal_and_wait(signum, within=60)
        assert up.process.returncode == 0, up.output[-3000:]
        assert f"{signal.Signals(signum).name} received" in up.output
        assert_all_gone(processes, port)
        assert "Worker '" not in up.output  # no worker was started after the signal
    finally:
        up.cleanup()


@pytest.mark.slow
def test_orphans_are_refused_then_their_run_marked_crashed_and_a_dead_worker_stops_serve(tmp_path):
    port = serve.free_port()
    first = Serve(tmp_path, port)
    second = third = None
    try:
        # 1. serve itself is SIGKILLed (what no handler can catch): its server and worker live on as orphans.
        first.wait_ready()
        orphaned_run = start_running_run(port)
        orphans = first.descendants
        first.process.kill()
        first.process.wait()
        server_pid = next(p.pid for p in orphans if "server" in command_line(p) and p.pid == os.getpgid(p.pid))
        # 2. a new serve does not attach to them: it names the holder of the port and exits 1.
        second = Serve(tmp_path, port)
        assert second.process.wait(60) == 1
        assert f"already in use by pid {server_pid}" in second.output, second.output
        # 3. once they are gone, serve starts and marks the run they left Running as Crashed (the alert fires).
        for proc in orphans:
            with_suppressed(proc.kill)
        psutil.wait_procs(orphans, timeout=10)
        third = Serve(tmp_path, port)
        third.wait_ready()
        assert "marked 1 run(s) left running by a worker that is gone as Crashed" in third.output
        assert run_state(tmp_path, orphaned_run)[0] == "CRASHED"
        # 4. the worker dies: serve stops the server, marks the run in flight Crashed, and exits 1 saying so.
        in_flight = start_running_run(port)
        worker = next(p for p in third.descendants if "worker" in command_line(p) and p.pid == os.getpgid(p.pid))
        worker.kill()
        third.process.wait(60)
        assert third.process.returncode == 1
        assert f"error: the Prefect worker (pid {worker.pid}) exited with code -9" in third.output
        assert_all_gone(third.descendants, port)
        assert run_state(tmp_path, in_flight)[0] == "CRASHED"
    finally:
        for up in (first, second, third):
            if up is not None:
                up.cleanup()
