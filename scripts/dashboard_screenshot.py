"""Render the Prefect UI pages of a retrain run to PNG with headless Chromium, so a person can look at them.

    .venv/bin/python scripts/dashboard_screenshot.py [--api http://127.0.0.1:4200/api] [--run-id ID] [--out docs]

Without `--api`, it starts a temporary local server, runs a small retrain flow against it (150 bundled
sentences, fully frozen backbone) and photographs that run. Needs Debian's `chromium` package.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAGES = {"flow-run": "runs/flow-run/{run_id}", "artifacts": "runs/flow-run/{run_id}?tab=Artifacts",
         "report": "artifacts/key/default-run-report"}


def chromium_screenshot(url: str, out: Path, size: str = "1400,1000") -> None:
    """Photograph `url` with headless Chromium (no sandbox, no background networking: this machine is offline)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        sys.exit("chromium not found: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--virtual-time-budget=15000", f"--window-size={size}",
                        f"--screenshot={out}", url], check=True, capture_output=True, timeout=120)


def small_run(api_url: str, workdir: Path) -> str:
    """Run the retrain flow on 150 bundled sentences against `api_url`; returns the flow run id."""
    os.environ["PREFECT_API_URL"] = api_url
    import json

    from flows.retrain import retrain
    from tests.conftest import first_per_label, write_csv

    data = write_csv(workdir / "slice.csv", first_per_label(50))
    summary = retrain(data=str(data), workdir=str(workdir / "work"),
                      overrides={"train.unfreeze_top": 0, "train.max_epochs": 10})
    return json.loads(Path(summary).read_text())["run_id"]


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
            for name, path in PAGES.items():
                target = args.out / f"dashboard-{name}.png"
                chromium_screenshot(f"{ui}/{path.format(run_id=run_id)}", target)
                print(target)
        finally:
            if server is not None:
                serve.stop(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
