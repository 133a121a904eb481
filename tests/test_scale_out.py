"""runner=dask: the data-parallel steps run as shards on a local Dask cluster (through prefect-dask) and give
the default run's data, row for row, and the same trained model, byte for byte (a trainable block included)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core.run.sharding import Shard
from tests.conftest import first_per_label, run_cli, write_csv

FAST = {"train.unfreeze_top": 1, "train.regime": "finetune", "train.max_epochs": 6, "augment.n_aug": 2,
        "data.min_per_class": 3, "evaluate.min_test_per_class": 0}


def test_shards_cover_every_row_once():
    for rows in (0, 1, 7, 100):
        for count in (1, 2, 3, 8):
            spans = [Shard(index=i, count=count).bounds(rows) for i in range(count)]
            assert spans[0][0] == 0 and spans[-1][1] == rows
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


@pytest.fixture(scope="module")
def both(prefect_api, tmp_path_factory):
    """The same data run twice: with threads, in this (test) process, and from the command line with
    `--set runner=dask` and no configured API, so that run must bring up its own real local API for the Dask
    worker processes. Two processes, two runners: the model may depend on the seed and the data only (not on
    which threads drew from Python's global `random` meanwhile, nor on what this process ran before;
    core/model/training.py)."""
    from flows.retrain import retrain

    root = tmp_path_factory.mktemp("scale")
    data = write_csv(root / "d.csv", first_per_label(40))
    threads = json.loads(Path(retrain(data=str(data), workdir=str(root / "threads"), overrides=FAST)).read_text())
    sets = {**FAST, "runner": "dask", "dask.workers": 2, "dask.shards": 3}
    result = run_cli("flows.retrain", "--data", str(data), "--workdir", str(root / "dask"),
                     *[arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")],
                     home=root / "dask", env={"PREFECT_API_URL": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    dask = json.loads(Path(result.stdout.strip().splitlines()[-1]).read_text())
    return root, threads, dask, result.stderr


def test_dask_run_brought_up_a_real_local_api_and_used_a_cluster_and_shards(both):
    _, threads, dask, stderr = both
    assert "Prefect API: a temporary one at http://127.0.0.1:" in stderr and ", for the Dask workers too" in stderr
    assert threads["runner"] == "threads" and dask["runner"].startswith("dask (tcp://")
    assert len(dask["stages"]["augment"]["shards"]) == 3 and "shards" not in threads["stages"]["augment"]  # threads: one pass
    assert all(state == "Completed" for state in dask["stages"]["embed"]["shards"])


def test_augmented_tokenized_and_embedded_data_are_identical(both):
    """Byte for byte, the frozen features too: embed plans its batches over the whole table, so each sentence
    is computed in the same batch however the rows are sharded."""
    root, threads, dask, _ = both
    for step in ("augment", "tokenize", "embed"):
        assert threads["artifacts"][step]["sha256"] == dask["artifacts"][step]["sha256"], step
    one = pq.read_table(root / "threads" / threads["artifacts"]["tokenize"]["path"]).to_pandas()
    two = pq.read_table(root / "dask" / dask["artifacts"]["tokenize"]["path"]).to_pandas()
    assert one["row_id"].tolist() == two["row_id"].tolist()


def test_the_same_model_whichever_runner_trained_it(both):
    """Same data, settings and seed: the same model file and the same figures, not merely close ones."""
    _, threads, dask, _ = both
    assert threads["artifacts"]["finetune"]["sha256"] == dask["artifacts"]["finetune"]["sha256"]
    assert threads["metrics"]["test"] == dask["metrics"]["test"]
    # ... and a model that learned something, or "identical" would prove little (a constant predictor is).
    test = threads["metrics"]["test"]
    assert test["macro_f1"] > test["majority_baseline"]["macro_f1"] + 0.1
