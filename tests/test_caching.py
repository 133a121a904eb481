"""Content-keyed caching: keys follow contents and code, never paths; stale records are never served."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from prefect import flow

from core.storage import caching
from core.storage.caching import code_version, module_closure, step_task
from core.storage.artifacts import ArtifactRef, write_parquet


def test_module_closure_follows_project_imports_only():
    augment = module_closure("tasks.augment")
    assert {"tasks.augment", "core.text.eda", "core.text.wordnet", "core.storage.artifacts", "schemas.tables"} <= set(augment)
    assert "tasks.finetune" not in augment and "core.model.graph" not in augment
    assert "core.text.eda" not in module_closure("tasks.finetune")


def test_editing_a_helper_changes_only_the_steps_that_import_it(tmp_path: Path, monkeypatch):
    for package in caching.PROJECT_PACKAGES:
        shutil.copytree(caching.PROJECT_ROOT / package, tmp_path / package)
    monkeypatch.setattr(caching, "PROJECT_ROOT", tmp_path)
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
    before = {step: caching.runtime_version(step) for step in steps}
    assert before["tasks.embed"]["libraries"]["tensorflow"] == caching.distribution_version("tensorflow") != "absent"
    assert "tensorflow" not in before["tasks.validate"]["libraries"] and "accelerator" not in before["tasks.validate"]
    assert "nltk" in before["tasks.augment"]["libraries"] and "accelerator" in before["tasks.finetune"]

    real = caching.distribution_version
    monkeypatch.setattr(caching, "distribution_version", lambda name: "9.9.9" if name == "tensorflow" else real(name))
    caching.library_versions.cache_clear()
    try:
        after = {step: caching.runtime_version(step) for step in steps}
    finally:
        caching.library_versions.cache_clear()
    assert after["tasks.embed"] != before["tasks.embed"] and after["tasks.finetune"] != before["tasks.finetune"]
    assert after["tasks.validate"] == before["tasks.validate"] and after["tasks.augment"] == before["tasks.augment"]

    monkeypatch.setattr(caching, "accelerator", lambda: {"nvidia_gpus": ["0000:01:00.0"]})
    assert caching.runtime_version("tasks.finetune")["accelerator"] != before["tasks.finetune"]["accelerator"]


def test_artifacts_count_by_content_not_path():
    one = ArtifactRef(path="a/x.parquet", sha256="f" * 64, rows=3)
    two = ArtifactRef(path="b/y.parquet", sha256="f" * 64, rows=3)
    assert caching.fingerprint(one) == caching.fingerprint(two)
    with pytest.raises(TypeError, match="cannot build a cache key"):
        caching.fingerprint(Path("/some/where"))


CALLS: list[int] = []


def make_numbers(count: int, workdir: Path) -> ArtifactRef:
    """A tiny step: writes `count` numbers to Parquet and counts its own executions."""
    CALLS.append(count)
    return write_parquet(workdir, "numbers", pa.table({"n": list(range(count))}))


numbers_task = step_task(make_numbers)


@flow
def numbers_flow(count: int, workdir: str) -> str:
    task = numbers_task.with_options(result_storage=caching.records_dir(Path(workdir)).resolve())
    return task(count, Path(workdir), return_state=True).name


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
    (record,) = [p for p in caching.records_dir(tmp_path).iterdir() if p.name.startswith("make_numbers-")]
    record.write_text(record.read_text().replace(caching.RECORD_SERIALIZER, "pickle"))
    assert numbers_flow(7, str(tmp_path)) == "Completed"
    assert CALLS == [7, 7]
