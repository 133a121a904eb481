"""runner=dask: the data-parallel steps run as shards on a local Dask cluster (through prefect-dask) and give
the default run's data, row for row, and its metrics within 0.01."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flows.retrain import retrain
from tasks.sharding import Shard
from tests.conftest import first_per_label, run_cli, write_csv

FAST = {"train.unfreeze_top": 0, "train.max_epochs": 5, "augment.n_aug": 2, "data.min_per_class": 3}


def test_shards_cover_every_row_once():
    for rows in (0, 1, 7, 100):
        for count in (1, 2, 3, 8):
            spans = [Shard(index=i, count=count).bounds(rows) for i in range(count)]
            assert spans[0][0] == 0 and spans[-1][1] == rows
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


@pytest.fixture(scope="module")
def both(prefect_api, tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    data = write_csv(root / "d.csv", first_per_label(40))
    threads = json.loads(Path(retrain(data=str(data), workdir=str(root / "threads"), overrides=FAST)).read_text())
    dask = json.loads(Path(retrain(data=str(data), workdir=str(root / "dask"), overrides={
        **FAST, "runner": "dask", "dask.workers": 2, "dask.shards": 3})).read_text())
    return root, threads, dask


def test_dask_run_used_a_cluster_and_shards(both):
    _, threads, dask = both
    assert threads["runner"] == "threads" and dask["runner"].startswith("dask (tcp://")
    assert len(dask["stages"]["augment"]["shards"]) == 3 and len(threads["stages"]["augment"]["shards"]) == 1


def test_augmented_and_tokenized_data_are_identical(both):
    root, threads, dask = both
    for step in ("augment", "tokenize"):
        assert threads["artifacts"][step]["sha256"] == dask["artifacts"][step]["sha256"], step
    one = pq.read_table(root / "threads" / threads["artifacts"]["tokenize"]["path"]).to_pandas()
    two = pq.read_table(root / "dask" / dask["artifacts"]["tokenize"]["path"]).to_pandas()
    assert one["row_id"].tolist() == two["row_id"].tolist()


def test_metrics_agree_within_one_point(both):
    _, threads, dask = both
    for metric in ("accuracy", "macro_f1"):
        assert abs(threads["metrics"]["test"][metric] - dask["metrics"]["test"][metric]) <= 0.01


def test_command_line_dask_run_brings_up_a_real_local_api(tmp_path: Path):
    """Without a configured API, `--set runner=dask` starts a real local Prefect API (the temporary in-process
    one cannot serve Dask worker processes) and stops it afterwards."""
    data = write_csv(tmp_path / "d.csv", first_per_label(30))
    sets = [arg for key, value in {**FAST, "runner": "dask", "dask.workers": 2}.items() for arg in ("--set", f"{key}={value}")]
    result = run_cli("flows.retrain", "--data", str(data), "--workdir", str(tmp_path / "w"), *sets, home=tmp_path,
                     env={"PREFECT_API_URL": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "starting a local Prefect API" in result.stderr
    summary = json.loads(Path(result.stdout.strip().splitlines()[-1]).read_text())
    assert summary["runner"].startswith("dask (tcp://") and summary["stages"]["embed"]["state"] == "Completed"
