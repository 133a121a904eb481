"""Four-eyes promotion (gate.approval=manual) from the command line, and the model report in a real browser.

The deployment path (a paused run resumed through the Prefect client) is in tests/test_deployments.py, on
the server and worker that module already starts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flows import registry as registry_cli
from core.reports import model_report
from core.run import identity
from core.run.identity import os_account
from core.storage import registry
from core.storage.artifacts import sha256_file
from core.reports.dashboard import history_row, run_markdown
from tests import browser
from tests.conftest import first_per_label, run_cli, write_csv

MANUAL = ["--set", "train.unfreeze_top=0", "--set", "augment.n_aug=0",
          "--set", "data.min_per_class=3", "--set", "gate.approval=manual",
          "--set", "evaluate.min_test_per_class=0"]


# ------------------------------------------------------------------------------ registry, no training

def _version(workdir: Path, version: str, name: str = "m") -> None:
    """A registered version with real file hashes (so `verify` can tell a changed file)."""
    folder = registry.version_dir(workdir, name, version)
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(version.encode())
    (folder / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.5, "macro_f1": 0.5}}))
    files = {p.name: sha256_file(p) for p in folder.iterdir()}
    (folder / "lineage.json").write_text(json.dumps({"model_sha256": version, "files_sha256": files}))


def test_approval_promotes_only_the_latest_intact_candidate_and_logs_the_reviewer(tmp_path: Path):
    for v in ("v1", "v2", "v3"):
        _version(tmp_path, v)
    registry.promote(tmp_path, "m", "v1", "first")
    registry.propose(tmp_path, "m", "v2", "v1", "run-2", "better")
    registry.propose(tmp_path, "m", "v3", "v1", "run-3", "better still")
    with pytest.raises(registry.RegistryError, match="no longer the latest candidate: v3"):
        registry.approve(tmp_path, "m", "v2", "alice", "ok")
    (registry.version_dir(tmp_path, "m", "v3") / "model.keras").write_bytes(b"tampered")
    with pytest.raises(registry.RegistryError, match="damaged"):
        registry.approve(tmp_path, "m", "v3", "alice", "ok")
    (registry.version_dir(tmp_path, "m", "v3") / "model.keras").write_bytes(b"v3")
    with pytest.raises(registry.RegistryError, match="reviewer"):
        registry.approve(tmp_path, "m", "v3", "  ", "ok")
    assert registry.champion(tmp_path, "m")["version"] == "v1"

    pointer = registry.approve(tmp_path, "m", "v3", "alice", "macro-F1 up 3 points")
    assert pointer["version"] == "v3" and pointer["reviewer"] == "alice" and pointer["action"] == "approve"
    last = registry.promotion_log(tmp_path, "m")[-1]
    assert (last["version"], last["reviewer"], last["comment"]) == ("v3", "alice", "macro-F1 up 3 points")
    assert last["approved_at"] and registry.candidate(tmp_path, "m") is None
    assert registry.approval_record(tmp_path, "m", "v3")["status"] == "approved"
    assert registry.approval_record(tmp_path, "m", "v2")["status"] == "superseded"
    with pytest.raises(registry.RegistryError, match="not awaiting approval: it was approved by alice"):
        registry.approve(tmp_path, "m", "v3", "bob")
    assert registry.rollback(tmp_path, "m")["version"] == "v1"  # an approval is an ordinary champion change


def test_a_candidate_is_refused_once_the_champion_changed_under_it(tmp_path: Path):
    for v in ("v1", "v2", "v3"):
        _version(tmp_path, v)
    registry.promote(tmp_path, "m", "v1", "first")
    registry.propose(tmp_path, "m", "v3", "v1", "run-3", "better than v1")
    registry.promote(tmp_path, "m", "v2", "by hand")
    with pytest.raises(registry.RegistryError, match="champion changed to v2"):
        registry.approve(tmp_path, "m", "v3", "alice")
    assert registry.champion(tmp_path, "m")["version"] == "v2"


def test_reject_and_expire_keep_the_champion_and_say_why(tmp_path: Path, capsys):
    for v in ("v1", "v2"):
        _version(tmp_path, v)
    registry.propose(tmp_path, "m", "v1", None, "run-1", "beats the majority class")
    code = registry_cli.main(["--workdir", str(tmp_path), "--name", "m", "reject", "v1", "--reviewer", "bob",
                              "--comment", "trained on last year's labels"])
    assert code == 0 and json.loads(capsys.readouterr().out)["rejected"] == "v1"
    assert registry.champion(tmp_path, "m") is None and registry.candidate(tmp_path, "m") is None
    code = registry_cli.main(["--workdir", str(tmp_path), "--name", "m", "approve", "v1", "--reviewer", "alice"])
    err = capsys.readouterr().err
    assert code == 1 and f"it was rejected by {os_account()} (bob)" in err and "last year's labels" in err
    registry.propose(tmp_path, "m", "v2", None, "run-2", "beats the majority class")
    assert registry.expire(tmp_path, "m", "v2", "no reviewer within 60 s")["action"] == "expired"
    assert registry.champion(tmp_path, "m") is None
    assert registry.approval_record(tmp_path, "m", "v2")["status"] == "expired"


# ------------------------------------------------------------------------------ the command line, end to end

@pytest.fixture(scope="module")
def manual_run(tmp_path_factory):
    """One real `flows.retrain` run with gate.approval=manual on 90 bundled sentences."""
    tmp = tmp_path_factory.mktemp("manual")
    data = write_csv(tmp / "slice.csv", first_per_label(30))
    result = run_cli("flows.retrain", "--data", str(data), "--workdir", str(tmp / "work"), *MANUAL, home=tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(Path(result.stdout.strip().splitlines()[-1]).read_text())
    return {"workdir": tmp / "work", "summary": summary, "stderr": result.stderr, "version": summary["model"]["version"]}


def test_a_manual_run_registers_a_candidate_and_prints_the_approve_command(manual_run):
    summary, workdir, version = manual_run["summary"], manual_run["workdir"], manual_run["version"]
    assert summary["gate"]["decision"] == "awaiting approval" and summary["promoted"] is False
    assert registry.champion(workdir, "default") is None
    assert registry.candidate(workdir, "default")["version"] == version
    command = f"python -m flows.registry approve {version} --workdir {workdir.resolve()} --name default --comment TEXT"
    assert command in manual_run["stderr"] and summary["gate"]["approval"]["approve"].startswith(command)
    report = registry.version_dir(workdir, "default", version) / "report.html"
    assert report.is_file()
    assert str(report.resolve()) in run_markdown(summary)  # the run's markdown artifact links it


def test_approve_from_the_command_line_promotes_and_records_the_reviewer(manual_run, capsys, monkeypatch):
    workdir, version = manual_run["workdir"], manual_run["version"]
    base = ["--workdir", str(workdir)]
    starter = registry.candidate(workdir, "default")["started_by"]
    assert starter["os_account"] == os_account() and starter["via"] == "command line"
    # Four-eyes: the account that started the run cannot approve it, whatever name it gives.
    assert registry_cli.main([*base, "approve", version, "--reviewer", "alice"]) == 1
    assert f"started by account {os_account()} (command line)" in capsys.readouterr().err
    assert registry.champion(workdir, "default") is None
    # `registry promote` cannot go round the review either, without a recorded override.
    assert registry_cli.main([*base, "promote", version]) == 1
    assert "awaiting approval" in capsys.readouterr().err and registry.champion(workdir, "default") is None
    monkeypatch.setattr(identity, "os_account", lambda: "alice")  # as another OS account would run it
    assert registry_cli.main([*base, "approve", "20990101T000000000000Z-00000000", "--reviewer", "alice"]) == 1
    assert "has no version" in capsys.readouterr().err
    assert registry_cli.main([*base, "approve", version, "--comment", "numbers checked"]) == 0
    assert json.loads(capsys.readouterr().out)["champion"]["version"] == version
    assert registry.champion(workdir, "default")["version"] == version
    assert registry_cli.main([*base, "show", version]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["report"] == str((registry.version_dir(workdir, "default", version) / "report.html").resolve())
    assert shown["approval"]["status"] == "approved" and shown["approval"]["reviewer"] == "alice"
    assert shown["approval"]["comment"] == "numbers checked"
    assert history_row(manual_run["summary"])["approval"].startswith("approved by alice")
    assert "approved" in Path(shown["report"]).read_text()  # the report was re-drawn with the decision


def test_the_report_is_drawn_again_only_when_what_it_shows_changes(manual_run, monkeypatch):
    """An unchanged re-run leaves the page as it is (no plots, no bootstraps); new inputs redraw it."""
    workdir, version = manual_run["workdir"], manual_run["version"]
    report = model_report.write_report(workdir, "default", version)
    page, drawn = report.read_text(), []
    render = model_report.render
    monkeypatch.setattr(model_report, "render", lambda *args: drawn.append(args) or render(*args))
    assert model_report.write_report(workdir, "default", version).read_text() == page and drawn == []
    changed = {**manual_run["summary"], "dataset": {**manual_run["summary"]["dataset"], "rows": 123456}}
    assert "123456" in model_report.write_report(workdir, "default", version, changed).read_text()
    assert len(drawn) == 1
    model_report.write_report(workdir, "default", version)
    assert len(drawn) == 2 and report.read_text() == page  # back to the recorded summary: the same page


# ------------------------------------------------------------------------------ the report in Chromium

@pytest.fixture
def chromium():
    try:
        return browser.chromium_path()
    except browser.ChromiumMissing as exc:
        pytest.fail(str(exc))


def test_without_chromium_the_browser_checks_say_make_chromium(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(browser.ChromiumMissing, match="make chromium"):
        browser.dump_dom("file:///dev/null")


def test_the_report_renders_in_chromium_with_every_section(manual_run, chromium, tmp_path):
    report = model_report.write_report(manual_run["workdir"], "default", manual_run["version"])
    page = report.read_text()
    assert not re.search(r"""(src|href)=["']https?:""", page), "the report must not fetch anything"
    dom = browser.dump_dom(report.as_uri())
    headings = re.findall(r"<h2>(.*?)</h2>", dom)
    assert headings == list(model_report.SECTIONS)
    images = re.findall(r'<img class="plot" alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]{2000,})"', dom)
    assert {alt for alt, _ in images} >= {"learning curves", "confusion matrix", "per-class scores",
                                          "reliability diagram", "gate bootstrap distribution"}
    assert manual_run["version"] in dom and "Smallest detectable difference" in dom and "ECE" in dom
    assert manual_run["summary"]["dataset"]["sha256"][:16] in dom
    picture = browser.screenshot(report.as_uri(), tmp_path / "report.png", size="1200,2400")
    assert browser.ink(picture) > 0.05, "the rendered report is (nearly) blank"
