"""Render the Prefect UI pages of a retrain run, and its model report, to PNG with headless Chromium.

    .venv/bin/python scripts/dashboard_screenshot.py [--api http://127.0.0.1:4200/api] [--run-id ID] [--out docs]

Without `--api`, it starts a temporary local server, runs a small retrain flow against it (150 bundled
sentences, fully frozen backbone) and photographs that run. Needs Debian's `chromium` (`make chromium`).

Writes `dashboard-flow-run.png` (the run page), `dashboard-artifacts.png` (the run's Artifacts tab),
`dashboard-report.png` (the `<model>-run-report` markdown artifact) and `model-report.png` (the version's
report.html). The Prefect UI is a JavaScript app: a picture is taken only once Chromium's rendered DOM holds the
page's content (each page is rendered with longer and longer virtual-time budgets until it does), and a page
that never shows it is an error, not a blank picture. The pages are those of the UI's v2 (`/v2/...`): its flow
run page honours `?tab=Artifacts`, where v1 resets the tab to Logs while the run loads.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUDGETS_MS = (10000, 20000, 40000, 80000)


def photograph(url: str, out: Path, expect: str, size: str = "1400,1000") -> Path:
    """Screenshot `url` once its rendered DOM contains `expect`; raises if it never does."""
    from tests import browser

    for budget in BUDGETS_MS:
        if expect in browser.dump_dom(url, budget_ms=budget, size=size):
            browser.screenshot(url, out, budget_ms=budget, size=size)
            if browser.ink(out) < 0.02:
                raise RuntimeError(f"{url} rendered {expect!r} but the picture {out} is blank")
            return out
    raise RuntimeError(f"{url} did not show {expect!r} within {BUDGETS_MS[-1] / 1000:.0f} s of virtual time")


def small_run(api_url: str, workdir: Path) -> str:
    """Run the retrain flow on 150 bundled sentences against `api_url`; returns the flow run id."""
    os.environ["PREFECT_API_URL"] = api_url
    from flows.retrain import retrain
    from tests.conftest import first_per_label, write_csv

    data = write_csv(workdir / "slice.csv", first_per_label(50))
    summary = retrain(data=str(data), workdir=str(workdir / "work"),
                      overrides={"train.unfreeze_top": 0, "train.max_epochs": 10})
    return json.loads(Path(summary).read_text())["run_id"]


def run_report_artifact(api_url: str, run_id: str) -> tuple[str, str]:
    """The id and markdown of the run's `*-run-report` artifact."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    (report,) = [a for a in artifacts if (a.key or "").endswith("-run-report")]
    return str(report.id), str(report.data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api", help="API of a running server; default: start a temporary one")
    parser.add_argument("--run-id", help="flow run to photograph (with --api)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import flows  # noqa: F401
    from flows import serve

    server = None
    with tempfile.TemporaryDirectory() as tmp:
        api = args.api
        if not api:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            api = f"http://127.0.0.1:{port}/api"
            server = serve.start_server("127.0.0.1", port, serve.prefect_env(api, Path(tmp)))
        try:
            run_id = args.run_id or small_run(api, Path(tmp))
            ui = api.removesuffix("/api")
            artifact_id, markdown = run_report_artifact(api, run_id)
            pages = [("flow-run", f"{ui}/v2/runs/flow-run/{run_id}", "Task Runs"),
                     ("artifacts", f"{ui}/v2/runs/flow-run/{run_id}?tab=Artifacts", "-run-report"),
                     ("report", f"{ui}/v2/artifacts/artifact/{artifact_id}", "Evaluation on the test split")]
            for name, url, expect in pages:
                print(photograph(url, args.out / f"dashboard-{name}.png", expect))
            if found := re.search(r"\((file://[^)]+/report\.html)\)", markdown):
                print(photograph(found.group(1), args.out / "model-report.png", "Confusion matrix", size="1200,2200"))
            else:
                print("the run report links no report.html; model-report.png not written", file=sys.stderr)
        finally:
            if server is not None:
                serve.stop(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
