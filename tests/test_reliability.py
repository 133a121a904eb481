"""Kills, concurrency, corruption, resource faults and hostile input: nothing is lost, nothing half-used.

Faults are injected with the test-only failpoints of `core.run.faults` (armed from RETRAIN_TEST_FAULTS at the
command line); `kill` sends SIGKILL to the whole run, as an operator or the OOM killer would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.retrain import main
from core.run import faults
from core.storage import registry
from core.storage.artifacts import ArtifactRef
from tests.conftest import ROOT, first_per_label, run_cli, write_csv

FAST = ["--set", "train.unfreeze_top=0", "--set", "train.max_epochs=10", "--set", "augment.n_aug=1",
        "--set", "data.min_per_class=3", "--set", "evaluate.min_test_per_class=0"]


def _summary(result) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(Path(result.stdout.strip().splitlines()[-1]).read_text())


def _assert_consistent(workdir: Path) -> str | None:
    """The registry is whole: the champion (if any) verifies, every visible version verifies."""
    current = registry.champion(workdir, "default")
    for entry in registry.versions(workdir, "default"):
        registry.verify(workdir, "default", entry["version"])
    if current:
        registry.verify(workdir, "default", current["version"])
    return current["version"] if current else None


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> dict[str, str]:
    """One real Prefect server for this module's command-line runs, as under `make serve` (`PREFECT_API_URL`
    set): each run then starts no temporary server of its own (~10 s each), and killed runs share it."""
    from flows import serve

    home = tmp_path_factory.mktemp("api")
    port = serve.free_port()
    url = f"http://127.0.0.1:{port}/api"
    server = serve.start_server("127.0.0.1", port, serve.prefect_env(url, home), log=home / "server.log")
    try:
        yield {"PREFECT_API_URL": url}
    finally:
        serve.stop(server)


def test_sigkill_at_any_point_loses_nothing(trained, api, tmp_path: Path):
    args = _copy(trained, tmp_path)  # a workdir with one successful run and its champion
    champion = _assert_consistent(tmp_path / "w")
    assert champion is not None
    # New sentences (so the backbone has work to be killed in) with new labels: the next model is not
    # comparable with the champion, so the gate promotes it, and promotion itself gets killed too.
    renamed = write_csv(tmp_path / "renamed.csv",
                        [{**r, "label": r["label"].upper()} for r in first_per_label(30, skip=30)])
    changed = ["--data", str(renamed), *args[2:]]
    # A data step (embed), training, and the registry's critical moment. augment:mid is left out to keep the
    # suite's time: it exercises the same mechanism as embed:batch (a shard killed before its rename).
    for point in ("embed:batch", "finetune:epoch", "register:before-rename", "promote:before-pointer"):
        killed = run_cli("flows.retrain", *changed, home=tmp_path, env={**api, faults.ENV: f"{point}=kill"})
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-2000:])
        assert _assert_consistent(tmp_path / "w") == champion, point  # the old champion, whole
    final = _summary(run_cli("flows.retrain", *changed, home=tmp_path, env=api))
    assert final["stages"]["validate"]["state"] == final["stages"]["embed"]["state"] == "Cached"
    assert final["promoted"] is True and "label set changed" in final["gate"]["reason"]
    for name, ref in final["artifacts"].items():
        path = tmp_path / "w" / ref["path"]
        assert ArtifactRef(path=ref["path"], sha256=ref["sha256"]).is_intact(tmp_path / "w"), name
    assert _assert_consistent(tmp_path / "w") == final["model"]["version"] != champion
    # The registration killed before its rename left a staging folder (~80 MB with saved_model/): the next
    # registration, under the lock, removed it.
    assert not list((registry.model_root(tmp_path / "w", "default") / "versions").glob(".*"))
    from core.storage.artifacts import sha256_file, sha256_tree

    for stored in (tmp_path / "w" / "artifacts").glob("*/[!.]*"):  # no partial file under a final name
        digest = sha256_tree(stored) if stored.is_dir() else sha256_file(stored)
        assert digest.startswith(stored.name.split(".")[0]), stored


def test_two_runs_at_once_both_finish_and_agree(api, tmp_path: Path):
    data = write_csv(tmp_path / "d.csv", first_per_label(30))
    args = ["--data", str(data), "--workdir", str(tmp_path / "w"), *FAST]
    env = {**os.environ, **api, "PREFECT_HOME": str(tmp_path / "home")}  # two runs of one server, as deployments
    procs = [subprocess.Popen([sys.executable, "-m", "flows.retrain", *args], cwd=ROOT, env={**env, "PREFECT_HOME":
                              str(tmp_path / f"home{i}")}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    summaries = [json.loads(Path(out.strip().splitlines()[-1]).read_text()) for out, _ in outputs]
    assert summaries[0]["model"]["version"] == summaries[1]["model"]["version"]  # registered once
    assert len(registry.versions(tmp_path / "w", "default")) == 1
    assert _assert_consistent(tmp_path / "w") == summaries[0]["model"]["version"]
    # One champion change, and one summary that claims it; the other says why it did not promote.
    assert sorted(summary["promoted"] for summary in summaries) == [False, True]
    assert len(registry.promotion_log(tmp_path / "w", "default")) == 1
    other = next(summary for summary in summaries if not summary["promoted"])
    assert other["promotion_reason"], other


@pytest.fixture(scope="module")
def trained(prefect_api, tmp_path_factory) -> Path:
    """A workdir with one successful run and a champion (copied by each test that damages it)."""
    root = tmp_path_factory.mktemp("trained")
    data = write_csv(root / "d.csv", first_per_label(30))
    assert main(["--data", str(data), "--workdir", str(root / "w"), *FAST]) == 0
    return root


def _copy(trained: Path, tmp_path: Path) -> list[str]:
    import shutil

    shutil.copytree(trained / "w", tmp_path / "w")
    return ["--data", str(trained / "d.csv"), "--workdir", str(tmp_path / "w"), *FAST]


def test_damaged_champion_pointer_is_reported_with_the_fix(trained, tmp_path: Path, capsys):
    args = _copy(trained, tmp_path)
    pointer = registry.model_root(tmp_path / "w", "default") / registry.CHAMPION
    pointer.write_text(pointer.read_text()[:20])
    capsys.readouterr()
    assert main([*args, "--set", "seed=5"]) == 1
    err = capsys.readouterr().err
    assert "champion pointer" in err and "is damaged" in err and "flows.registry promote" in err
    assert "Traceback" not in err


def test_a_damaged_champion_model_is_detected(trained, tmp_path: Path, capsys):
    args = _copy(trained, tmp_path)
    version = registry.champion(tmp_path / "w", "default")["version"]
    model = registry.version_dir(tmp_path / "w", "default", version) / "model.keras"
    model.write_bytes(model.read_bytes()[:1000])
    capsys.readouterr()
    assert main([*args, "--set", "seed=6"]) == 1
    assert "is damaged" in capsys.readouterr().err


def test_a_changed_byte_of_the_saved_model_is_damage_for_predict_list_and_show(trained, tmp_path: Path, capsys):
    from flows import predict as predict_cli
    from flows import registry as registry_cli

    _copy(trained, tmp_path)
    workdir = tmp_path / "w"
    version = registry.champion(workdir, "default")["version"]
    folder = registry.version_dir(workdir, "default", version)
    recorded = json.loads((folder / "lineage.json").read_text())["files_sha256"]
    served = sorted(name for name in recorded if name.startswith("saved_model/"))
    assert "saved_model/saved_model.pb" in served and any("variables/" in name for name in served)
    assert registry.integrity(workdir, "default", version)["verified"]
    weights = folder / next(name for name in served if "variables.data" in name)
    content = bytearray(weights.read_bytes())
    content[len(content) // 2] ^= 1  # one bit of what TF Serving loads
    weights.write_bytes(bytes(content))
    capsys.readouterr()
    assert registry_cli.main(["--workdir", str(workdir), "list"]) == 0
    listing = capsys.readouterr().out
    assert "DAMAGED" in listing and "does not match the hash" in listing
    assert registry_cli.main(["--workdir", str(workdir), "show", "champion"]) == 0
    assert json.loads(capsys.readouterr().out)["integrity"]["verified"] is False
    assert predict_cli.main(["--data", str(trained / "d.csv"), "--out", str(tmp_path / "p.parquet"), "--workdir",
                             str(workdir)]) == 1
    err = capsys.readouterr().err
    assert "is damaged" in err and "saved_model/variables" in err and not (tmp_path / "p.parquet").exists()


@pytest.mark.parametrize("pointer", [{"version": "../../../elsewhere"}, {"version": None}])
def test_a_champion_pointer_outside_the_registry_is_refused_by_predict_and_repaired(trained, tmp_path: Path, capsys,
                                                                                     pointer):
    from flows import predict as predict_cli
    from flows import registry as registry_cli

    _copy(trained, tmp_path)
    workdir = tmp_path / "w"
    version = registry.champion(workdir, "default")["version"]
    (registry.model_root(workdir, "default") / registry.CHAMPION).write_text(json.dumps(pointer))
    capsys.readouterr()
    assert predict_cli.main(["--data", str(trained / "d.csv"), "--out", str(tmp_path / "p.parquet"), "--workdir",
                             str(workdir)]) == 1
    err = capsys.readouterr().err
    assert "champion pointer" in err and "flows.registry promote VERSION" in err and "Traceback" not in err
    assert registry_cli.main(["--workdir", str(workdir), "promote", version, "--reason", "repair"]) == 0
    assert registry.champion(workdir, "default")["version"] == version


def test_labels_that_are_mathtext_and_markup_train_promote_and_report(prefect_api, tmp_path: Path, capsys):
    """Labels matplotlib would parse as mathtext and markdown as a table break: the run ends 0 with its summary,
    and report.html draws them as typed."""
    hostile = {"negative": "$\\invalid{$", "neutral": "<b>neutral</b>", "positive": "a|b"}
    data = write_csv(tmp_path / "d.csv", [{**r, "label": hostile[r["label"]]} for r in first_per_label(30)])
    assert main(["--data", str(data), "--workdir", str(tmp_path / "w"), *FAST]) == 0
    summary = json.loads(Path(capsys.readouterr().out.strip().splitlines()[-1]).read_text())
    assert summary["promoted"] is True and "report_error" not in summary
    page = (Path(summary["model"]["path"]) / "report.html").read_text()
    assert "&lt;b&gt;neutral&lt;/b&gt;" in page and "<b>neutral</b>" not in page


@pytest.mark.parametrize("fault", ["report:render=bug", "report:publish=bug"])
def test_a_report_that_fails_after_promotion_does_not_fail_the_run(prefect_api, tmp_path: Path, capsys, monkeypatch,
                                                                   caplog, fault):
    data = write_csv(tmp_path / "d.csv", first_per_label(30))
    monkeypatch.setenv(faults.ENV, fault)
    try:
        assert main(["--data", str(data), "--workdir", str(tmp_path / "w"), *FAST]) == 0
    finally:
        faults.arm(None)
    captured = capsys.readouterr()
    summary = json.loads(Path(captured.out.strip().splitlines()[-1]).read_text())
    assert summary["promoted"] is True
    assert registry.champion(tmp_path / "w", "default")["version"] == summary["model"]["version"]
    if fault.startswith("report:render"):
        assert "injected failure at report:render" in summary["report_error"]
        assert "was not written" in caplog.text
    else:
        assert "dashboard artifacts were not published" in caplog.text


def test_a_failed_run_leaves_no_pickle_of_its_data_in_prefects_storage(api, tmp_path: Path):
    """Prefect always writes a failed flow run's exception to its default result storage; the flows' serializer
    keeps only the exception's type there (the rows it quotes stay in our own run folder)."""
    data = write_csv(tmp_path / "d.csv", [{"text": "a line holding hunter2-secret", "label": "only"}] * 3)
    failed = run_cli("flows.retrain", "--data", str(data), "--workdir", str(tmp_path / "w"), home=tmp_path, env=api)
    assert failed.returncode == 65, failed.stderr[-2000:]
    stored = [path for path in (tmp_path / ".prefect-home").rglob("*") if path.is_file() and path.suffix != ".db"
              and "storage" in path.parts]
    assert stored, "Prefect wrote no failure record: the test no longer sees what it checks"
    for path in stored:
        assert json.loads(path.read_text()) == {"error": "InvalidData"}, path


def test_a_full_disk_while_exporting_the_saved_model_is_our_disk_full_error(trained, tmp_path: Path):
    """A real full file system (a small tmpfs): TensorFlow's own error becomes OSError(ENOSPC) naming the folder,
    which the command line reports as `the disk is full`. Needs root, to mount it."""
    import errno
    import shutil

    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    version = registry.champion(trained / "w", "default")["version"]
    source = registry.version_dir(trained / "w", "default", version)
    small = tmp_path / "small"
    small.mkdir()
    needed = sum((source / f).stat().st_size for f in ("model.keras", "model.json", "lineage.json"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={needed + 2_000_000}", "tmpfs", str(small)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        for name in ("model.keras", "model.json"):
            shutil.copy2(source / name, small / name)
        lineage = json.loads((source / "lineage.json").read_text())
        with pytest.raises(OSError) as raised:
            registry._export(small, lineage)
        assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(small / "saved_model")
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_unwritable_workdir_names_the_path(tmp_path: Path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["--workdir", str(blocker / "workdir")]) == 1
    err = capsys.readouterr().err
    assert str(blocker / "workdir") in err and "cannot be written" in err


def test_full_disk_names_the_file_and_keeps_what_was_done(prefect_api, tmp_path: Path, capsys, monkeypatch):
    data = write_csv(tmp_path / "d.csv", first_per_label(30))
    monkeypatch.setenv(faults.ENV, "io:write=enospc")
    try:
        assert main(["--data", str(data), "--workdir", str(tmp_path / "w"), *FAST]) == 1
    finally:
        faults.arm(None)
    err = capsys.readouterr().err
    assert "the disk is full" in err and str(tmp_path / "w") in err
    assert not list((tmp_path / "w" / "artifacts").rglob(".staging.*"))


def test_a_one_gigabyte_file_is_refused_before_it_is_read(tmp_path: Path, capsys):
    huge = tmp_path / "huge.csv"
    with open(huge, "wb") as handle:
        handle.truncate(1 << 30)  # sparse: 1 GiB on paper, nothing on disk
    assert main(["--data", str(huge), "--workdir", str(tmp_path / "w"), "--validate-only"]) == 65
    assert "over the limit of data.max_file_mb=512" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ fuzzing

@pytest.fixture(scope="module")
def text_tools():
    from tasks.augment import Plan
    from core.model.backbone import Backbone
    from schemas.config import AugmentConfig
    from core.text.wordnet import Synonyms

    return {"synonyms": Synonyms(AugmentConfig().wordnet_dir).lookup, "backbone": Backbone.resolve(None),
            "plan": Plan(2, {"sr": 0.2, "ri": 0.2, "rs": 0.2, "rd": 0.2})}


rows = st.lists(st.tuples(st.text(max_size=60), st.sampled_from(["pos", "neg", "", " x ", "1", "Pos"])),
                min_size=0, max_size=6)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(rows=rows, fmt=st.sampled_from(["csv", "tsv", "jsonl"]), noise=st.binary(max_size=8))
def test_fuzz_read_validate_augment_tokenize(tmp_path_factory, text_tools, rows, fmt, noise):
    """Arbitrary text and broken files: the only failures are InvalidData / InputNotFound, with a message."""
    import csv
    import io

    from tasks.augment import copies_of
    from core.model.backbone import encode_texts
    from core.run.errors import InputNotFound, InvalidData
    from core.text.readers import read_raw
    from tasks.validate import schema_failures
    from schemas.raw import raw_schema

    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / f"in.{fmt}"
    if fmt == "jsonl":
        body = "\n".join(json.dumps({"text": t, "label": l}) for t, l in rows).encode() + noise
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="\t" if fmt == "tsv" else ",")
        writer.writerow(["text", "label"])
        writer.writerows(rows)
        body = buffer.getvalue().encode("utf-8", "surrogatepass") + noise
    path.write_bytes(body)
    try:
        raw = read_raw(path)
        if "text" not in raw.frame.columns or "label" not in raw.frame.columns:
            return
        import pandas as pd

        frame = pd.DataFrame({"text": raw.frame["text"].to_numpy(), "label": raw.frame["label"].to_numpy()},
                             dtype=object)
        failures = schema_failures(raw_schema(None, 2000), frame, raw.locations, {}, str(path))
        if failures:
            assert all(f.rule for f in failures)
            return
    except (InvalidData, InputNotFound) as exc:
        assert str(exc)
        return
    texts = [t for t in frame["text"] if t.strip()]
    for i, text in enumerate(texts):
        for _, op, augmented in copies_of(text, f"{i:016x}", text_tools["plan"], 1, text_tools["synonyms"], set()):
            assert augmented.strip() and op in ("sr", "ri", "rs", "rd")
    encoded = encode_texts(text_tools["backbone"].path, texts)
    assert len(encoded) == len(texts)
