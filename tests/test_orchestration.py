"""The flow under Prefect: what re-runs after which change, retries that reuse finished work, never retrying bad data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flows.retrain import retrain
from core.storage import versions as caching  # PROJECT_ROOT, PROJECT_PACKAGES: the code version's source tree
from core.run import faults
from tests.conftest import first_per_label, write_csv

FAST = {"train.unfreeze_top": 0, "train.max_epochs": 3, "augment.n_aug": 1, "data.min_per_class": 3,
        "evaluate.min_test_per_class": 0}
CACHEABLE = ("validate", "split", "augment", "tokenize", "embed", "finetune", "estimate", "evaluate")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "slice.csv", first_per_label(30))


def _states(summary_path: str) -> dict[str, str]:
    summary = json.loads(Path(summary_path).read_text())
    return {name: stage["state"] for name, stage in summary["stages"].items()}


def _run(data: Path, workdir: Path, **overrides) -> dict[str, str]:
    return _states(retrain(data=str(data), workdir=str(workdir), overrides={**FAST, **overrides}))


@pytest.fixture(scope="module")
def warm(prefect_api, data, tmp_path_factory) -> Path:
    """A workdir that has seen one complete run."""
    workdir = tmp_path_factory.mktemp("work")
    states = _run(data, workdir)
    assert set(states.values()) == {"Completed"}
    return workdir


def test_unchanged_rerun_is_cached_except_what_looks_at_the_workdir(data, warm):
    states = _run(data, warm)
    assert all(states[step] == "Cached" for step in CACHEABLE), states
    assert states["drift"] == states["promote"] == "Completed"  # never cached: they read the workdir's state


def test_changing_augmentation_reruns_augment_and_what_follows(data, warm):
    states = _run(data, warm, **{"augment.n_aug": 2})
    assert states["validate"] == states["split"] == "Cached"
    assert all(states[step] == "Completed" for step in ("augment", "tokenize", "embed", "finetune", "evaluate"))


def test_changing_epochs_reruns_only_training_and_evaluation(data, warm):
    states = _run(data, warm, **{"train.max_epochs": 2})
    assert all(states[step] == "Cached" for step in ("validate", "split", "augment", "tokenize", "embed"))
    assert states["finetune"] == states["evaluate"] == "Completed"


def test_editing_a_helper_reruns_its_step_only(data, warm, tmp_path, monkeypatch):
    """An edit to augmentation's helper (core/text/eda.py) re-runs augment; as its output is unchanged, the
    content-keyed steps after it stay cached."""
    for package in caching.PROJECT_PACKAGES:
        shutil.copytree(caching.PROJECT_ROOT / package, tmp_path / package)
    helper = tmp_path / "core" / "text" / "eda.py"
    helper.write_text(helper.read_text() + "\n# a harmless edit to a helper of augment\n")
    monkeypatch.setattr(caching, "PROJECT_ROOT", tmp_path)
    states = _run(data, warm)
    assert states["augment"] == "Completed"
    assert all(states[step] == "Cached" for step in ("validate", "split", "tokenize", "embed", "finetune", "evaluate"))


def _task_runs(flow_run_id: str) -> dict[str, int]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name.rsplit("-", 1)[0]: run.run_count for run in runs}


def test_transient_error_is_retried_in_place(prefect_api, data, tmp_path):
    faults.arm("tokenize:start=oserror*1")
    try:
        summary = json.loads(Path(retrain(data=str(data), workdir=str(tmp_path), overrides=FAST)).read_text())
    finally:
        faults.arm(None)
    assert summary["stages"]["tokenize"]["state"] == "Completed"
    counts = _task_runs(summary["run_id"])
    assert counts["tokenize"] == 2
    assert counts["validate"] == counts["augment"] == counts["embed"] == 1
    assert not any(name.endswith(("_shard", "_merge")) for name in counts)  # threads: no shards, no merges


def test_failed_run_resumes_from_the_failed_step(prefect_api, data, tmp_path):
    faults.arm("finetune:start=bug")
    try:
        with pytest.raises(Exception, match="injected failure at finetune:start"):
            retrain(data=str(data), workdir=str(tmp_path), overrides=FAST)
    finally:
        faults.arm(None)
    assert not (tmp_path / "models").exists()
    states = _run(data, tmp_path)
    assert all(states[step] == "Cached" for step in ("validate", "split", "augment", "tokenize", "embed"))
    assert states["finetune"] == states["evaluate"] == states["promote"] == "Completed"


def test_invalid_data_is_never_retried(prefect_api, tmp_path):
    bad = write_csv(tmp_path / "bad.csv", [{"text": "", "label": "x"}] * 3 + first_per_label(3))
    with pytest.raises(Exception):
        retrain(data=str(bad), workdir=str(tmp_path / "w"), overrides=FAST)
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="validate")))
    failed = [r for r in runs if r.state and r.state.is_failed()]
    assert failed and all(r.run_count == 1 for r in failed)
