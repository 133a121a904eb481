"""Each benchmark owns one section of benchmarks/RESULTS.md, between its own markers, and rewrites only that."""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
ROOT = RESULTS.parents[1]
HEADER = "# Benchmark results\n\nWritten by `make bench` (all) or `make bench B=name` (one); each section by its script.\n"


def machine() -> str:
    """A one-line description of where the figures were measured."""
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section of benchmark `name` in RESULTS.md with `body`."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = (f"<!-- bench:{name}:start -->\n## {name}\n\n_Measured {stamp} on {machine()}._\n\n{body.strip()}\n"
             f"<!-- bench:{name}:end -->")
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(name)}:start -->.*?<!-- bench:{re.escape(name)}:end -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(RESULTS)
    print(block)


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def run_retrain(*args: str) -> tuple[float, dict]:
    """Run `python -m flows.retrain ARGS` from the project root as a user would; returns its wall seconds and its
    summary.json. A failed run ends the benchmark with the run's last stderr."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "flows.retrain", *args], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"python -m flows.retrain {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return seconds, json.loads(Path(result.stdout.strip().splitlines()[-1]).read_text())
