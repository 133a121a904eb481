"""End to end on a real Prefect server and process worker: deploy prefect.yaml, run retrain/adhoc, read the
dashboard's artifacts back through the API and see them in the UI in headless Chromium, receive the alert of a
failed run on a local webhook, and review a gate.approval=manual run through its pause-for-input form."""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path

import pytest

from flows import serve
from core.registry.identity import os_account
from core import registry
from tests import browser
from tests.conftest import first_per_label, write_csv

OVERRIDES = json.dumps({"train.unfreeze_top": 0, "train.max_epochs": 10, "augment.n_aug": 1, "data.min_per_class": 3,
                        "evaluate.min_test_per_class": 0})
# The head alone on stored embeddings: its default epochs (early-stopped) cost seconds and clear the gate.
MANUAL = {"train.unfreeze_top": 0, "augment.n_aug": 0, "data.min_per_class": 3, "gate.approval": "manual",
          "evaluate.min_test_per_class": 0}


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
    port = serve.free_port()
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


def test_deployment_run_completes_and_writes_its_summary(stack, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("adhoc")  # lives as long as the module: later tests use its champion
    data = write_csv(tmp_path / "slice.csv", first_per_label(30))
    result = _run_adhoc(stack, data, tmp_path / "work")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    (summary_path,) = (tmp_path / "work" / "runs").glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["promoted"] is True and summary["stages"]["finetune"]["state"] == "Completed"
    stack["run_id"] = summary["run_id"]
    stack["work"] = tmp_path / "work"

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


def test_the_prefect_ui_lists_the_runs_artifacts(stack):
    """The UI is a JavaScript app: Chromium runs it for a while, then the rendered DOM must list our artifacts."""
    try:
        browser.chromium_path()
    except browser.ChromiumMissing as exc:
        pytest.fail(str(exc))
    run_id = stack.get("run_id") or pytest.fail("needs the run of test_deployment_run_completes_and_writes_its_summary")
    ui = stack["api"].removesuffix("/api")
    dom = ""
    for budget in (15000, 30000, 60000):  # a loaded machine renders slower: wait longer rather than fail
        dom = browser.dump_dom(f"{ui}/v2/runs/flow-run/{run_id}?tab=Artifacts", budget_ms=budget)
        if "default-run-report" in dom:
            break
    for key in ("default-metrics", "default-run-report", "default-history", "data-drift"):
        assert key in dom, f"artifact {key} is not listed on the run's Artifacts tab"


def _client(stack):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: stack["api"]}), get_client


def _start_manual_run(stack, data: Path, workdir: Path, **overrides):
    from prefect.deployments import run_deployment

    settings, _ = _client(stack)
    with settings:
        return run_deployment("retrain/adhoc", parameters={"data": str(data), "workdir": str(workdir),
                                                           "overrides": {**MANUAL, **overrides}}, timeout=0).id


def _wait(stack, flow_run_id, until, timeout: float = 600):
    """Poll the run until `until(state)`; fails with the run's state if it ends first."""
    settings, get_client = _client(stack)
    deadline = time.monotonic() + timeout
    with settings, get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state and until(flow_run.state):
                return flow_run
            if flow_run.state and flow_run.state.is_final():
                pytest.fail(f"the run ended {flow_run.state.name}: {flow_run.state.message}")
            time.sleep(1)
    pytest.fail(f"the run did not reach the expected state within {timeout:.0f} s (last: {flow_run.state})")


def _review_through_the_form(stack, flow_run_id, answer: dict) -> str:
    """What a reviewer does in the UI: read the form's description, submit the form (resume with input)."""
    from prefect.flow_runs import resume_flow_run
    from prefect.input.run_input import keyset_from_paused_state

    paused = _wait(stack, flow_run_id, lambda state: state.is_paused())
    settings, get_client = _client(stack)
    with settings:
        with get_client(sync_client=True) as client:
            keyset = keyset_from_paused_state(paused.state)
            description = json.loads(client.read_flow_run_input(flow_run_id, keyset["description"]))
            schema = json.loads(client.read_flow_run_input(flow_run_id, keyset["schema"]))
        assert {"decision", "reviewer", "comment"} <= set(schema["properties"])
        resume_flow_run(flow_run_id, run_input=answer)
    _wait(stack, flow_run_id, lambda state: state.is_completed())
    return description


def test_a_manual_run_pauses_for_review_and_a_rejection_keeps_the_champion(stack, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("manual")  # lives as long as the module: the next two tests re-run it
    data = write_csv(tmp_path / "slice.csv", first_per_label(30))
    work = tmp_path / "work"
    run_id = _start_manual_run(stack, data, work)
    description = _review_through_the_form(stack, run_id, {"decision": "reject", "reviewer": "carol",
                                                            "comment": "test split too small"})
    pending = registry.reviews(work, "default")
    version = pending[0]["version"]
    assert "report.html" in description and version in description
    summary = json.loads((work / "runs" / str(run_id) / "summary.json").read_text())
    assert summary["gate"]["decision"] == "rejected" and summary["promoted"] is False
    assert "rejected by carol: test split too small" in summary["gate"]["reason"]
    assert registry.champion(work, "default") is None and registry.candidate(work, "default") is None
    assert registry.approval_record(work, "default", version)["reviewer"] == "carol"
    # Who started it: the worker's OS account and what Prefect knows; the form's typed name is marked unproven.
    started = registry.reviews(work, "default", version)[0]["started_by"]
    assert started["via"] == "deployment adhoc" and started["worker_account"] == os_account()
    assert "prefect_created_by" in started
    assert registry.approval_record(work, "default", version)["reviewer_authenticated"] is False
    stack["manual"] = {"data": data, "work": work, "version": version}


def test_an_unanswered_review_times_out_without_promoting(stack):
    manual = stack.get("manual") or pytest.fail("needs the rejected run of the previous test")
    run_id = _start_manual_run(stack, manual["data"], manual["work"], **{"gate.approval_timeout": 3})
    _wait(stack, run_id, lambda state: state.is_paused())
    # At the deadline the server's pause-expiration service may mark the run Failed ("paused and never resumed")
    # before the paused process notices; the process then withdraws the candidate, writes its summary and ends
    # the run Completed with the reason.
    path = manual["work"] / "runs" / str(run_id) / "summary.json"
    deadline = time.monotonic() + 120
    while not path.is_file() and time.monotonic() < deadline:
        time.sleep(1)
    summary = json.loads(path.read_text())
    settings, get_client = _client(stack)
    with settings, get_client(sync_client=True) as client:
        while (state := client.read_flow_run(run_id).state) and not state.is_completed() and time.monotonic() < deadline:
            time.sleep(1)
    assert state.is_completed(), state
    assert summary["gate"]["decision"] == "approval timed out" and summary["promoted"] is False
    assert "gate.approval_timeout=3" in summary["gate"]["reason"]
    assert registry.approval_record(manual["work"], "default", manual["version"])["status"] == "expired"
    assert registry.champion(manual["work"], "default") is None and registry.candidate(manual["work"], "default") is None


def test_an_approval_through_the_prefect_client_resumes_the_run_and_promotes(stack):
    manual = stack.get("manual") or pytest.fail("needs the rejected run of the previous test")
    # The same data again (every step Cached): the same model passes the gate and waits for review once more.
    run_id = _start_manual_run(stack, manual["data"], manual["work"])
    _review_through_the_form(stack, run_id, {"decision": "approve", "reviewer": "dave", "comment": "re-checked"})
    work, version = manual["work"], manual["version"]
    summary = json.loads((work / "runs" / str(run_id) / "summary.json").read_text())
    assert summary["promoted"] is True and summary["gate"]["approval"]["reviewer"] == "dave"
    assert summary["stages"]["finetune"]["state"] == "Cached"
    assert registry.champion(work, "default")["version"] == version
    last = registry.promotion_log(work, "default")[-1]
    assert (last["version"], last["reviewer"], last["comment"], last["action"]) == (version, "dave", "re-checked",
                                                                                    "approve")
    assert "approved" in (registry.version_dir(work, "default", version) / "report.html").read_text()


def test_the_weekly_suggestion_deployment_writes_the_list_and_publishes_it(stack, tmp_path):
    """suggest/weekly (issue 28) on the champion the adhoc run promoted: the list is written and published."""
    import pandas as pd
    from prefect.deployments import run_deployment

    work = stack.get("work") or pytest.fail("needs the champion of test_deployment_run_completes_and_writes_its_summary")
    pool = write_csv(tmp_path / "pool.csv", first_per_label(8, skip=30) + first_per_label(2))  # 6 already labelled
    out = tmp_path / "next.csv"
    settings, get_client = _client(stack)
    with settings:
        flow_run = run_deployment("suggest/weekly", parameters={"pool": str(pool), "out": str(out), "n": 10,
                                                                "workdir": str(work)}, timeout=600)
    assert flow_run.state.is_completed(), flow_run.state
    listed = pd.read_csv(out)
    assert len(listed) == 10 and listed["rank"].tolist() == list(range(1, 11))
    assert not set(listed["text"]) & {r["text"] for r in first_per_label(2)}
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    settings, get_client = _client(stack)
    with settings, get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])))
    (table,) = [a for a in artifacts if a.key == "default-suggestions"]
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [row["text"] for row in rows] == listed["text"].tolist()
    assert "10 of 30 pool rows" in table.description and "6 already labelled" in table.description


def test_the_daily_scoring_deployment_scores_the_file_and_publishes_its_drift(stack, tmp_path):
    """predict/score-daily (issue 29) on the champion the adhoc run promoted: every row scored into the dated file,
    and the `default-scoring` artifact with the rows, the time and the predicted labels' PSI."""
    from datetime import datetime, timezone

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.deployments import run_deployment

    work = stack.get("work") or pytest.fail("needs the champion of test_deployment_run_completes_and_writes_its_summary")
    data = write_csv(tmp_path / "today.csv", first_per_label(5, skip=40))
    settings, get_client = _client(stack)
    with settings:
        flow_run = run_deployment("predict/score-daily", parameters={
            "data": str(data), "out": str(tmp_path / "scores" / "{date}.parquet"), "workdir": str(work),
            "overrides": {"predict.chunk_rows": 4}}, timeout=600)
    assert flow_run.state.is_completed(), flow_run.state
    import pyarrow.parquet as pq

    scored = pq.read_table(tmp_path / "scores" / f"{datetime.now(timezone.utc):%Y-%m-%d}.parquet")
    assert scored.num_rows == 15 and scored["predicted_label"].null_count == 0
    settings, get_client = _client(stack)
    with settings, get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])))
        deployment = client.read_deployment(flow_run.deployment_id)
    (report,) = [a for a in artifacts if a.key == "default-scoring"]
    assert "**15 rows** scored" in report.data and "PSI **" in report.data and "| negative |" in report.data
    assert deployment.schedules and deployment.schedules[0].schedule.cron == "0 6 * * *"
