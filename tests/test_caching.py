"""Content-keyed caching: keys follow contents and code, never paths; computing one writes nothing; stale records
are evicted before a step is submitted and never served."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest
from prefect import flow

from core.run.runner import StepRunner
from core.storage import cache_keys, records, versions
from core.storage.artifacts import ArtifactRef, write_parquet
from core.storage.caching import evict_stale, step_task
from core.storage.versions import code_version, module_closure
from schemas.config import RetrainConfig


def test_module_closure_follows_project_imports_only():
    augment = module_closure("tasks.augment")
    assert {"tasks.augment", "core.text.eda", "core.text.wordnet", "core.storage.artifacts", "schemas.tables"} <= set(augment)
    assert "tasks.finetune" not in augment and "core.model.graph" not in augment
    assert "core.text.eda" not in module_closure("tasks.finetune")


def test_editing_a_helper_changes_only_the_steps_that_import_it(tmp_path: Path, monkeypatch):
    for package in versions.PROJECT_PACKAGES:
        shutil.copytree(versions.PROJECT_ROOT / package, tmp_path / package)
    monkeypatch.setattr(versions, "PROJECT_ROOT", tmp_path)
    before = {step: code_version(f"tasks.{step}") for step in ("augment", "tokenize", "finetune")}
    helper = tmp_path / "core" / "text" / "eda.py"
    helper.write_text(helper.read_text() + "\n# an edit to augmentation's helper\n")
    after = {step: code_version(f"tasks.{step}") for step in ("augment", "tokenize", "finetune")}
    assert after["augment"] != before["augment"]
    assert after["tokenize"] == before["tokenize"] and after["finetune"] == before["finetune"]


def test_a_library_upgrade_re_runs_the_steps_that_compute_with_it_and_only_those(monkeypatch):
    """The runtime part of a step's key: TensorFlow's version moves embed's and finetune's keys, not
    validate's; the accelerator is part of a Keras step's key (`mixed_precision: auto` depends on it)."""
    steps = ("tasks.validate", "tasks.augment", "tasks.embed", "tasks.finetune")
    before = {step: versions.runtime_version(step) for step in steps}
    assert before["tasks.embed"]["libraries"]["tensorflow"] == versions.distribution_version("tensorflow") != "absent"
    assert "tensorflow" not in before["tasks.validate"]["libraries"] and "accelerator" not in before["tasks.validate"]
    assert "nltk" in before["tasks.augment"]["libraries"] and "accelerator" in before["tasks.finetune"]

    real = versions.distribution_version
    monkeypatch.setattr(versions, "distribution_version", lambda name: "9.9.9" if name == "tensorflow" else real(name))
    versions.library_versions.cache_clear()
    try:
        after = {step: versions.runtime_version(step) for step in steps}
    finally:
        versions.library_versions.cache_clear()
    assert after["tasks.embed"] != before["tasks.embed"] and after["tasks.finetune"] != before["tasks.finetune"]
    assert after["tasks.validate"] == before["tasks.validate"] and after["tasks.augment"] == before["tasks.augment"]

    monkeypatch.setattr(versions, "accelerator", lambda: {"nvidia_gpus": ["0000:01:00.0"]})
    assert versions.runtime_version("tasks.finetune")["accelerator"] != before["tasks.finetune"]["accelerator"]


def test_artifacts_count_by_content_not_path():
    one = ArtifactRef(path="a/x.parquet", sha256="f" * 64, rows=3)
    two = ArtifactRef(path="b/y.parquet", sha256="f" * 64, rows=3)
    assert cache_keys.fingerprint(one) == cache_keys.fingerprint(two)
    with pytest.raises(TypeError, match="cannot build a cache key"):
        cache_keys.fingerprint(Path("/some/where"))


CALLS: list[int] = []


def make_numbers(count: int, workdir: Path) -> ArtifactRef:
    """A tiny step: writes `count` numbers to Parquet and counts its own executions."""
    CALLS.append(count)
    return write_parquet(workdir, "numbers", pa.table({"n": list(range(count))}))


numbers_task = step_task(make_numbers)


@flow
def numbers_flow(count: int, workdir: str) -> str:
    """The step run as the retrain flow runs its steps (StepRunner.step); returns its state name."""
    run = StepRunner(RetrainConfig(workdir=workdir), run_id="test")
    run.step("numbers", numbers_task, count)
    return run.stages["numbers"]["state"]


def _record(workdir: Path) -> Path:
    (record,) = [p for p in records.records_dir(workdir).iterdir() if p.name.startswith("make_numbers-")]
    return record


def _folder_state(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_cached_result_is_served_until_its_artifact_disappears(prefect_api, tmp_path: Path):
    CALLS.clear()
    assert numbers_flow(5, str(tmp_path)) == "Completed"
    assert numbers_flow(5, str(tmp_path)) == "Cached"
    assert numbers_flow(6, str(tmp_path)) == "Completed"
    assert CALLS == [5, 6]
    for file in (tmp_path / "artifacts" / "numbers").glob("*.parquet"):
        file.write_bytes(file.read_bytes()[:-10])  # truncated in place
    assert numbers_flow(5, str(tmp_path)) == "Completed"
    assert numbers_flow(5, str(tmp_path)) == "Cached"
    assert CALLS == [5, 6, 5]


def test_a_foreign_record_is_never_deserialized(prefect_api, tmp_path: Path):
    CALLS.clear()
    assert numbers_flow(7, str(tmp_path)) == "Completed"
    record = _record(tmp_path)
    record.write_text(record.read_text().replace(records.RECORD_SERIALIZER, "pickle"))
    assert numbers_flow(7, str(tmp_path)) == "Completed"
    assert CALLS == [7, 7]


def test_computing_a_key_has_no_side_effect_on_the_records(prefect_api, tmp_path: Path, caplog):
    """The key Prefect computes is the name of the record it wrote, and computing it (even for a record whose
    artifact is gone, or which is not ours) leaves the records folder as it was; eviction is its own step."""
    CALLS.clear()
    assert numbers_flow(3, str(tmp_path)) == "Completed"
    record = _record(tmp_path)
    inputs = {"count": 3, "workdir": tmp_path}
    policy, task_ctx = cache_keys.StepCache(), SimpleNamespace(task=numbers_task)
    assert policy.compute_key(task_ctx, inputs, {}) == cache_keys.step_key(numbers_task, inputs) == record.name

    for file in (tmp_path / "artifacts" / "numbers").glob("*.parquet"):
        file.unlink()  # the record is now stale...
    (records.records_dir(tmp_path) / "make_numbers-foreign").write_text('{"metadata": {"serializer": {"type": "pickle"}}}')
    before = _folder_state(records.records_dir(tmp_path))
    for _ in range(2):
        assert policy.compute_key(task_ctx, inputs, {}) == record.name
    assert _folder_state(records.records_dir(tmp_path)) == before  # ...and computing its key did not touch it

    stored = ArtifactRef.model_validate_json(json.loads(record.read_text())["result"])
    assert records.record_problem(record, tmp_path) == f"artifact {stored.path} is missing or altered"
    assert evict_stale(numbers_task, inputs, tmp_path) is True  # the runner's step before submitting
    assert not record.exists() and "the step will run again" in caplog.text
    assert evict_stale(numbers_task, inputs, tmp_path) is False  # nothing left to evict
    assert numbers_flow(3, str(tmp_path)) == "Completed" and CALLS == [3, 3]
