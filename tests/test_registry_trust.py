"""The registry as an auditor would try it, without training: four-eyes that one account cannot satisfy, no way
round the review without a recorded override, every file of a version under its hashes, and a champion pointer
that names anything but a version of this registry refused by every command, with the documented repair working.
(Real trained versions, saved_model/ included, are tampered with in tests/test_reliability.py.)"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from flows import registry as registry_cli
from core.registry import identity
from core import registry
from core.storage.artifacts import sha256_file
from core.registry import resolve_version
from tests.conftest import ROOT


def _version(workdir: Path, version: str, name: str = "m", saved_model: bool = True) -> Path:
    """A registered version as `register` writes it now: every file hashed, saved_model/ included."""
    folder = registry.version_dir(workdir, name, version)
    (folder / "saved_model" / "variables").mkdir(parents=True)
    (folder / "model.keras").write_bytes(version.encode())
    (folder / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.5, "macro_f1": 0.5}}))
    (folder / "model.json").write_text(json.dumps({"labels": ["a", "b"]}))
    if saved_model:
        (folder / "saved_model" / "saved_model.pb").write_bytes(b"graph " + version.encode())
        (folder / "saved_model" / "variables" / "variables.data-00000-of-00001").write_bytes(b"weights")
    (folder / "lineage.json").write_text(json.dumps({"model_sha256": version, "files_sha256": registry.store._hash_files(folder),
                                                     "hash_coverage": registry.HASH_COVERAGE}))
    return folder


STARTER = {"os_account": "alice", "via": "command line", "host": "h"}


# ------------------------------------------------------------------------------------------------ four-eyes

def test_the_starter_cannot_approve_under_any_name_and_a_second_account_can(tmp_path):
    for v in ("v1", "v2"):
        _version(tmp_path, v)
    registry.promote(tmp_path, "m", "v1", "first")
    registry.propose(tmp_path, "m", "v2", "v1", "run-2", "better", started_by=STARTER)
    for account, name in (("alice", ""), ("ALICE", ""), ("bob", "alice")):  # the account, or the name, is the starter's
        with pytest.raises(registry.RegistryError, match="started by account alice .*needs a second person"):
            registry.approve(tmp_path, "m", "v2", account, reviewer_name=name)
    assert registry.champion(tmp_path, "m")["version"] == "v1" and registry.candidate(tmp_path, "m")
    pointer = registry.approve(tmp_path, "m", "v2", "bob", "checked", reviewer_name="Bob B.")
    assert (pointer["version"], pointer["reviewer"], pointer["reviewer_name"]) == ("v2", "bob", "Bob B.")
    assert pointer["reviewer_authenticated"] is True and pointer["started_by"] == STARTER


def test_a_deployment_run_cannot_be_approved_by_the_worker_account_nor_its_prefect_creator(tmp_path):
    _version(tmp_path, "v1")
    starter = {"worker_account": "svc-retrain", "via": "deployment adhoc",
               "prefect_created_by": {"type": "USER", "id": None, "display_value": "carol"}}
    registry.propose(tmp_path, "m", "v1", None, "run-1", "beats the majority class", started_by=starter)
    with pytest.raises(registry.RegistryError, match="worker account svc-retrain"):
        registry.approve(tmp_path, "m", "v1", "svc-retrain")
    with pytest.raises(registry.RegistryError, match="created by carol"):  # a UI form typed as the creator
        registry.approve(tmp_path, "m", "v1", "Carol", via="Prefect UI form", authenticated=False)
    entry = registry.approve(tmp_path, "m", "v1", "dave", via="Prefect UI form", authenticated=False)
    assert entry["reviewer_authenticated"] is False  # recorded as what it is: a typed name


def test_registry_promote_of_a_candidate_needs_a_recorded_override(tmp_path, capsys, monkeypatch):
    for v in ("v1", "v2"):
        _version(tmp_path, v)
    registry.promote(tmp_path, "m", "v1", "first")
    registry.propose(tmp_path, "m", "v2", "v1", "run-2", "better", started_by=STARTER)
    base = ["--workdir", str(tmp_path), "--name", "m"]
    assert registry_cli.main([*base, "promote", "v2"]) == 1
    err = capsys.readouterr().err
    assert "awaiting approval" in err and "--override-approval" in err
    assert registry.champion(tmp_path, "m")["version"] == "v1"
    assert registry_cli.main([*base, "show", "v2"]) == 0
    assert json.loads(capsys.readouterr().out)["approval"]["status"] == "awaiting approval"  # and it still is

    monkeypatch.setattr(identity, "os_account", lambda: "oncall")
    monkeypatch.setattr(registry.approval, "os_account", lambda: "oncall")
    assert registry_cli.main([*base, "promote", "v2", "--override-approval", "incident 42: v1 mislabels refunds"]) == 0
    pointer = registry.champion(tmp_path, "m")
    assert (pointer["version"], pointer["action"], pointer["by"]) == ("v2", "override", "oncall")
    assert "incident 42" in pointer["reason"] and registry.candidate(tmp_path, "m") is None
    last = registry.reviews(tmp_path, "m", "v2")[-1]
    assert (last["action"], last["reviewer"], last["was"]) == ("overridden", "oncall", "awaiting approval")
    assert registry.approval_record(tmp_path, "m", "v2")["status"] == "promoted overriding the review"
    assert registry.promotion_log(tmp_path, "m")[-1]["override"].startswith("incident 42")


def test_the_reviewer_is_the_os_account_of_the_real_uid():
    """`approve` run as a second real account (setpriv to uid 1000) is recorded as that account; run as the
    starter's account, it is refused. Needs root, to switch accounts."""
    if os.getuid() != 0:
        pytest.skip("switching OS accounts needs root")
    try:
        other = pwd.getpwuid(1000).pw_name
    except KeyError:
        pytest.skip("no second account (uid 1000) on this machine")
    import shutil
    import tempfile

    tmp_path = Path(tempfile.mkdtemp(prefix="four-eyes-"))  # pytest's own tmp folder is private to root
    try:
        _approve_as_two_accounts(tmp_path, other)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _open_to_all(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)


def _approve_as_two_accounts(tmp_path: Path, other: str) -> None:
    _version(tmp_path, "v1")
    registry.propose(tmp_path, "m", "v1", None, "run-1", "better",
                     started_by={"os_account": identity.os_account(), "via": "command line"})
    command = [sys.executable, "-m", "flows.registry", "--workdir", str(tmp_path), "--name", "m", "approve", "v1",
               "--reviewer", "Someone Else"]
    env = {**os.environ, "HOME": str(tmp_path), "USER": identity.os_account(), "PYTHONDONTWRITEBYTECODE": "1"}
    own = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert own.returncode == 1 and "needs a second person" in own.stderr, own.stderr[-2000:]
    _open_to_all(tmp_path)  # so the second account may write the registry
    second = subprocess.run(["setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups", *command], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)  # $USER still says root
    assert second.returncode == 0, second.stderr[-2000:]
    pointer = registry.champion(tmp_path, "m")
    assert (pointer["reviewer"], pointer["reviewer_name"]) == (other, "Someone Else")


# ----------------------------------------------------------------------------------------------- every file

def test_every_file_is_covered_saved_model_included_and_list_and_show_say_so(tmp_path, capsys):
    for v in ("v1", "v2", "v3", "v4"):
        _version(tmp_path, v)
    registry.promote(tmp_path, "m", "v1", "first")
    recorded = json.loads((registry.version_dir(tmp_path, "m", "v1") / "lineage.json").read_text())["files_sha256"]
    assert "saved_model/saved_model.pb" in recorded and "saved_model/variables/variables.data-00000-of-00001" in recorded
    (registry.version_dir(tmp_path, "m", "v1") / "saved_model" / "variables" /
     "variables.data-00000-of-00001").write_bytes(b"weightz")  # one byte of what serving loads
    (registry.version_dir(tmp_path, "m", "v2") / "model.keras").write_bytes(b"tampered")
    (registry.version_dir(tmp_path, "m", "v3") / "saved_model" / "extra.pb").write_bytes(b"added")
    (registry.version_dir(tmp_path, "m", "v4") / "report.html").write_text("<html>")  # a rendering: not hashed
    base = ["--workdir", str(tmp_path), "--name", "m"]
    assert registry_cli.main([*base, "list"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("DAMAGED") == 3 and "verified" in next(line for line in listing.splitlines() if "v4" in line)
    assert "variables.data-00000-of-00001 does not match" in listing and "was not there when it was registered" in listing
    assert registry_cli.main([*base, "show", "champion"]) == 0
    integrity = json.loads(capsys.readouterr().out)["integrity"]
    assert integrity["verified"] is False and "saved_model/variables" in integrity["problem"]
    with pytest.raises(registry.RegistryError, match="is damaged"):
        resolve_version(tmp_path, "m", "champion")  # what predict calls
    assert registry_cli.main([*base, "promote", "v2"]) == 1  # a damaged version is not made champion by hand
    assert "is damaged" in capsys.readouterr().err
    assert registry.integrity(tmp_path, "m", "v4") == {"verified": True, "files": 5, "coverage": "every file",
                                                       "problem": None}


def test_a_version_registered_before_every_file_was_hashed_is_checked_and_said_to_be_partly_covered(tmp_path, capsys):
    folder = _version(tmp_path, "v1")
    files = {p.name: sha256_file(p) for p in folder.iterdir() if p.is_file() and p.name != "lineage.json"}
    (folder / "lineage.json").write_text(json.dumps({"model_sha256": "v1", "files_sha256": files}))  # the old form
    found = registry.integrity(tmp_path, "m", "v1")
    assert found["verified"] and found["coverage"].startswith("recorded files only: 2 file(s) (saved_model/")
    assert registry_cli.main(["--workdir", str(tmp_path), "--name", "m", "list"]) == 0
    assert "verified (partly covered)" in capsys.readouterr().out


# ------------------------------------------------------------------------------------- the champion pointer

@pytest.mark.parametrize("pointer", [{"version": "../../../outside"}, {"version": None}, {"version": "v9"},
                                     {"version": ".hidden"}, {"version": ["v1"]}, {}, "not json"],
                         ids=["traversal", "null", "unknown", "hidden", "list", "no-version", "not-json"])
def test_a_champion_pointer_that_is_not_a_version_here_is_a_clear_error_everywhere(tmp_path, capsys, pointer):
    _version(tmp_path, "v1")
    outside = tmp_path / "outside"  # a model the traversal would load, were it followed
    outside.mkdir()
    (outside / "model.keras").write_bytes(b"not ours")
    path = registry.model_root(tmp_path, "m") / registry.CHAMPION
    path.write_text(pointer if isinstance(pointer, str) else json.dumps(pointer))
    with pytest.raises(registry.RegistryError, match="champion pointer .*(not a version of this registry|damaged|"
                                                     "missing).*repair it with"):
        resolve_version(tmp_path, "m", "champion")  # what predict calls
    base = ["--workdir", str(tmp_path), "--name", "m"]
    for command in (["show", "champion"], ["rollback"]):
        assert registry_cli.main([*base, *command]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "champion pointer" in err and "Traceback" not in err
    assert registry_cli.main([*base, "list"]) == 0  # the versions are still listed, with the warning
    out = capsys.readouterr().out
    assert "warning: the champion pointer" in out and "v1" in out
    assert registry_cli.main([*base, "promote", "v1", "--reason", "repair"]) == 0  # the documented repair
    assert registry.champion(tmp_path, "m")["version"] == "v1"


@pytest.mark.parametrize("version", ["../v1", "v1/../../x", "", " v1"])
def test_a_version_named_on_the_command_line_must_be_a_plain_name(tmp_path, capsys, version):
    _version(tmp_path, "v1")
    for command in (["show", version], ["promote", version], ["approve", version]):
        assert registry_cli.main(["--workdir", str(tmp_path), "--name", "m", *command]) == 1
        assert "is not a version of this registry" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ leftovers

def test_prune_removes_what_killed_registrations_left_and_counts_every_byte(tmp_path):
    from core.run.prune import prune

    for v in ("v1", "v2", "v3"):
        _version(tmp_path, v)
    registry.promote(tmp_path, "m", "v2", "first")
    registry.promote(tmp_path, "m", "v3", "champion")  # v2 stays as its predecessor, v1 goes
    versions = registry.model_root(tmp_path, "m") / "versions"
    staging = versions / ".staging.abc123"  # a registration killed while copying (what `register` names them)
    (staging / "saved_model").mkdir(parents=True)
    (staging / "saved_model" / "big.bin").write_bytes(b"x" * 100_000)
    (versions / ".deleting-v0").mkdir()  # a prune killed while deleting
    (versions / ".deleting-v0" / "model.keras").write_bytes(b"y" * 5_000)
    expected = sum(registry.tree_size(versions / v) for v in ("v1", ".staging.abc123", ".deleting-v0"))
    dry = prune(tmp_path, keep=1, dry_run=True, grace_seconds=0)
    assert dry["versions"]["m"] == ["v1"] and dry["bytes"] == expected and staging.exists()
    done = prune(tmp_path, keep=1, grace_seconds=0)
    assert done["versions"]["m"] == ["v1"] and done["bytes"] == expected
    assert sorted(p.name for p in versions.iterdir()) == ["v2", "v3"]


# ------------------------------------------------------------------------------------------------ candidates

def test_a_candidate_expires_after_the_approval_timeout(tmp_path, capsys):
    import time

    _version(tmp_path, "v1")
    entry = registry.propose(tmp_path, "m", "v1", None, "run-1", "better", started_by=STARTER, expires_in=1)
    assert entry["expires_at"] > entry["proposed_at"]
    time.sleep(1.2)
    assert registry.approval_record(tmp_path, "m", "v1")["status"] == "expired"  # read-only commands say so
    with pytest.raises(registry.RegistryError, match="not awaiting approval: it was expired .*gate.approval_timeout"):
        registry.approve(tmp_path, "m", "v1", "bob")
    assert registry.candidate(tmp_path, "m") is None and registry.champion(tmp_path, "m") is None
    assert registry_cli.main(["--workdir", str(tmp_path), "--name", "m", "promote", "v1"]) == 0  # no longer a candidate


def test_a_later_candidate_replaces_an_earlier_one_loudly(tmp_path, caplog):
    for v, f1 in (("v1", 0.9), ("v2", 0.6)):
        folder = _version(tmp_path, v)
        (folder / "metrics.json").write_text(json.dumps({"test": {"accuracy": f1, "macro_f1": f1}}))
    registry.propose(tmp_path, "m", "v1", None, "run-1", "better", started_by=STARTER)
    entry = registry.propose(tmp_path, "m", "v2", None, "run-2", "better", started_by=STARTER)
    assert entry["replaced"] == {"version": "v1", "run_id": "run-1", "proposed_at": entry["replaced"]["proposed_at"],
                                 "macro_f1": 0.9, "new_macro_f1": 0.6}
    assert "candidate v1 of m (run run-1, test macro-F1 0.9)" in caplog.text and "replaced by v2" in caplog.text
    assert registry.approval_record(tmp_path, "m", "v1")["status"] == "superseded"
