"""End to end on a real Prefect server and process worker: deploy prefect.yaml, run retrain/adhoc, read the
dashboard's artifacts back through the API, and receive the alert of a failed run on a local webhook."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from flows import serve
from tests.conftest import first_per_label, write_csv

OVERRIDES = json.dumps({"train.unfreeze_top": 0, "train.max_epochs": 3, "augment.n_aug": 1, "data.min_per_class": 3})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Receiver(http.server.ThreadingHTTPServer):
    """A tiny local webhook endpoint that keeps what it is sent."""

    def __init__(self):
        self.received: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.received.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/alerts"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**serve.prefect_env(api, home), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    server = serve.start_server("127.0.0.1", port, env, log=home / "server.log")
    worker = None
    receiver = Receiver()
    try:
        serve.deploy(env)
        serve.install_alerts(api, receiver.url)
        worker = serve.start_worker(env, log=home / "worker.log")
        yield {"env": env, "api": api, "home": home, "receiver": receiver}
    finally:
        if worker is not None:
            serve.stop(worker)
        serve.stop(server)
        receiver.shutdown()


def _run_adhoc(stack, data: Path, workdir: Path):
    return serve.prefect(["deployment", "run", "retrain/adhoc", "--param", f"data={data}", "--param",
                          f"workdir={workdir}", "--param", f"overrides={OVERRIDES}", "--watch", "--watch-timeout",
                          "600"], stack["env"], check=False, timeout=700)


def test_deployment_run_completes_and_writes_its_summary(stack, tmp_path):
    data = write_csv(tmp_path / "slice.csv", first_per_label(30))
    result = _run_adhoc(stack, data, tmp_path / "work")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    (summary_path,) = (tmp_path / "work" / "runs").glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["promoted"] is True and summary["stages"]["finetune"]["state"] == "Completed"
    stack["run_id"] = summary["run_id"]

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: stack["api"]}), get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(summary["run_id"])
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[summary["run_id"]])))
        deployment = client.read_deployment(flow_run.deployment_id)
    assert flow_run.state.is_completed() and deployment.name == "adhoc"
    by_key = {a.key: a for a in artifacts}
    assert {"default-metrics", "default-run-report", "default-history", "data-drift"} <= set(by_key)
    metrics = by_key["default-metrics"].data
    metrics = json.loads(metrics) if isinstance(metrics, str) else metrics
    assert metrics[0]["scope"] == "overall" and metrics[0]["accuracy"] == round(summary["metrics"]["test"]["accuracy"], 4)
    assert {row["scope"] for row in metrics[1:]} == {"negative", "neutral", "positive"}
    report = by_key["default-run-report"].data
    assert "## Evaluation on the test split" in report and summary["model"]["version"] in report
    assert summary["run_id"] in str(by_key["default-history"].data)


def test_a_failed_run_alerts_the_webhook(stack, tmp_path):
    bad = write_csv(tmp_path / "bad.csv", [{"text": "", "label": "positive"}] + first_per_label(5))
    result = _run_adhoc(stack, bad, tmp_path / "work")
    assert result.returncode != 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not stack["receiver"].received:
        time.sleep(1)
    assert stack["receiver"].received, "no alert reached the webhook within 90 s"
    alert = stack["receiver"].received[-1]
    assert alert["state"] == "prefect.flow-run.Failed" and alert["flow_run_id"].startswith("prefect.flow-run.")
