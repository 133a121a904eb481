"""`make serve`: a local Prefect server (the ops dashboard), the work pool, the deployments and a worker.

    .venv/bin/python -m flows.serve [--host 127.0.0.1] [--port 4200] [--alert-webhook URL]

Binds to 127.0.0.1 unless told otherwise; before exposing the dashboard on another interface, set
`PREFECT_SERVER_API_AUTH_STRING` (see README). With `--alert-webhook` (or `RETRAIN_ALERT_WEBHOOK`), a
failed or crashed run of the `retrain` flow POSTs a JSON alert to that URL (a Prefect automation, created
here from `alert_automation`). Ctrl-C stops the worker, then the server (the reverse order hangs).
"""

from __future__ import annotations

import argparse
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
ALERT_PAYLOAD = json.dumps({
    "alert": "retrain run {{ event.resource.name }} ended {{ event.event }}",
    "flow_run_id": "{{ event.resource.id }}",
    "state": "{{ event.event }}",
    "occurred": "{{ event.occurred }}",
})


def prefect_env(api_url: str, home: Path | None = None) -> dict[str, str]:
    """Environment for Prefect commands talking to `api_url` (and the project directory for the pull step)."""
    env = {**os.environ, "PREFECT_API_URL": api_url, "RETRAIN_PROJECT_DIR": str(ROOT),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    if home:
        env["PREFECT_HOME"] = str(home)
    return env


def prefect(args: list[str], env: dict[str, str], check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the `prefect` command line of this venv."""
    command = [sys.executable, "-m", "prefect", *args]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=check, timeout=timeout)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that no one listens on now (the OS picks it); a server started on it soon gets it."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start_server(host: str, port: int, env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    """Start `prefect server start` in the background and wait until its API answers."""
    out = open(log, "ab") if log else subprocess.DEVNULL
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
                              env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
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


def install_alerts(api_url: str, webhook_url: str) -> str:
    """Save the webhook block and (re)create the alert automation on the server at `api_url`; returns its id."""
    from prefect.automations import Automation
    from prefect.blocks.webhook import Webhook
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        block_id = Webhook(url=webhook_url, headers={"Content-Type": "application/json"}).save(
            ALERT_BLOCK, overwrite=True)
        automation = alert_automation(block_id)
        try:
            Automation.read(name=automation.name).delete()
        except ValueError:
            pass  # not there yet
        return str(automation.create().id)


def start_worker(env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    """Start a process worker on the retrain pool in the background."""
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL], env=env, cwd=ROOT,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a background process group politely, then firmly."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--alert-webhook", default=os.environ.get("RETRAIN_ALERT_WEBHOOK", ""),
                        help="URL to POST an alert to when a retrain run fails or crashes")
    args = parser.parse_args(argv)
    api_url = f"http://{args.host}:{args.port}/api"
    env = prefect_env(api_url)
    print(f"starting the Prefect server on {api_url} ...", file=sys.stderr)
    server = start_server(args.host, args.port, env)
    worker = None
    try:
        deploy(env)
        if args.alert_webhook:
            install_alerts(api_url, args.alert_webhook)
            print(f"alerts: failed or crashed retrain runs POST to {args.alert_webhook}", file=sys.stderr)
        worker = start_worker(env)
        print(f"dashboard: http://{args.host}:{args.port}  (deployments retrain/weekly, retrain/adhoc, suggest/weekly; "
              f"run one with: PREFECT_API_URL={api_url} .venv/bin/prefect deployment run retrain/adhoc --watch)\n"
              "Ctrl-C stops the worker and the server.", file=sys.stderr)
        while server.poll() is None and worker.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        if worker is not None:
            stop(worker)
        stop(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
