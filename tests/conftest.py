"""Shared fixtures: small slices of the real bundled data, the real backbone, one Prefect test API per session."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import flows  # noqa: F401  (sets the quiet library defaults before prefect / tensorflow are imported)

ROOT = Path(__file__).resolve().parents[1]
PHRASEBANK = ROOT / "data" / "financial-phrasebank" / "phrasebank.csv"


def phrasebank_rows() -> list[dict[str, str]]:
    """Every row of the bundled Financial PhraseBank CSV, in file order."""
    with open(PHRASEBANK, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def first_per_label(n: int, skip: int = 0) -> list[dict[str, str]]:
    """The first `n` rows of each label (after skipping `skip` of each): a small, stratified, real slice."""
    taken: dict[str, int] = {}
    out = []
    for row in phrasebank_rows():
        seen = taken.get(row["label"], 0)
        taken[row["label"]] = seen + 1
        if skip <= seen < skip + n:
            out.append({"text": row["text"], "label": row["label"]})
    return out


def write_csv(path: Path, rows: list[dict[str, str]], fields=("text", "label")) -> Path:
    """Write rows as a UTF-8 CSV with a header; returns the path."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def slice_csv(tmp_path: Path) -> Path:
    """150 real PhraseBank sentences, 50 per label."""
    return write_csv(tmp_path / "slice.csv", first_per_label(50))


@pytest.fixture(scope="session")
def backbone():
    """The real all-MiniLM-L6-v2 backbone, loaded offline."""
    from tasks.backbone import Backbone

    return Backbone.resolve(None)


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect API for the whole session (starting one costs seconds)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # A generous start-up timeout: on a loaded 2-core machine the test API can take over 30 s to come up.
    with prefect_test_harness(server_startup_timeout=120), \
            temporary_settings(restore_defaults={PREFECT_FLOWS_HEARTBEAT_FREQUENCY}):
        yield


def run_cli(module: str, *args: str, home: Path, timeout: int = 600, env: dict | None = None):
    """Run `python -m module args...` from the project root as a user would, with its own PREFECT_HOME.

    The command runs in its own process group, with its output in files rather than pipes: a run killed with
    SIGKILL leaves its temporary Prefect API process behind (it holds the pipes open); the whole group is
    killed once the command has ended.
    """
    full_env = {**os.environ, "PREFECT_HOME": str(Path(home) / ".prefect-home"), **(env or {})}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=full_env, stdout=out,
                                   stderr=err, text=True, start_new_session=True)
        try:
            process.wait(timeout)
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(process.args, process.returncode, out.read(), err.read())
