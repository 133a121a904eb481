"""Shared fixtures: small slices of the real bundled data, the real backbone, one Prefect test API per session."""

from __future__ import annotations

import csv
import os
import shutil
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


def write_table(path: Path, frame) -> Path:
    """Write a pandas frame as the file type its suffix names (.parquet, .jsonl, else CSV), as a user would."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in frame.to_dict("records")),
                        encoding="utf-8")
    else:
        frame.to_csv(path, index=False)
    return path


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


# `make test-fast` runs what is left after these (unit and small-slice tests): a test is slow when it loads the
# backbone, starts a Prefect API, or lives in a module whose tests run the pipeline end to end from the command
# line, a deployment or a browser.
SLOW_FIXTURES = {"backbone", "prefect_api"}
SLOW_MODULES = {"test_approval", "test_deployments", "test_ensemble", "test_orchestration", "test_reliability",
                "test_retrain_cli", "test_scale_out"}


# The modules that take longest (seconds of test time, `--durations=0` of a whole run), longest first. `make test`
# hands whole modules to its two workers in collection order (`--dist loadfile --no-loadscope-reorder`): starting
# the long ones first and ending on the many short ones keeps both workers busy to the end (longest processing
# time first, Graham 1969), where the alphabetical order left one worker idle for minutes behind test_scale_out.
LONGEST_FIRST = ("test_scale_out", "test_estimate", "test_ensemble", "test_reliability", "test_deployments",
                 "test_retrain_cli", "test_hardware", "test_trust", "test_serve", "test_mpnet", "test_fewshot",
                 "test_registry_gate", "test_scoring", "test_suggest", "test_registry_trust", "test_orchestration",
                 "test_real_files", "test_bad_inputs", "test_approval", "test_recipe", "test_report_safety")


def _module(item) -> str:
    return item.module.__name__.split(".")[-1]


def pytest_collection_modifyitems(items):
    """Mark the slow tests `slow` (see above; `-m "not slow"` deselects them), and put the longest modules first
    (a stable sort: each module's own order is kept)."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or _module(item) in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_module(item), len(rank)))


@pytest.fixture(scope="module", autouse=True)
def _free_the_module_folders(tmp_path_factory, request):
    """Delete what this module's fixtures and tests wrote under the session's temporary folder once the module is
    done, unless one of its tests failed (its folders are then kept to look at).

    A whole `make test` writes about 12 GB there (each real run saves backbone-sized models); pytest keeps a passed
    test's own `tmp_path` only until the test ends (`tmp_path_retention_policy = "failed"` in pyproject.toml) but
    a module fixture's `tmp_path_factory.mktemp` folders until the session ends, which filled a CI disk. Being
    autouse and module-scoped, this fixture is set up before the module's other fixtures and torn down after them.
    With `--dist loadfile` a module runs whole on one worker, and each worker has its own temporary folder.
    """
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed == failed_before:
        for path in set(base.iterdir()) - before:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def backbone():
    """The real all-MiniLM-L6-v2 backbone, loaded offline."""
    from core.model.backbone import Backbone

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


def assert_four_paths_agree(workdir: Path, version_folder: Path, tmp: Path) -> dict[str, float]:
    """One answer, four paths (CONTRACT.md's invariant), on a registered version's test rows:
    (a) evaluate's stored-feature probabilities (its predictions.parquet), (b) the gate's re-scoring of the
    version as champion (on the stored test features, and as the whole saved model on the texts),
    (c) `python -m flows.predict` on the same texts, (d) the exported SavedModel's `serve` on the raw texts (and
    its `serve_token_ids` on the ids).
    Each agrees with (a) to 2e-3 row by row, and gives the same label wherever (a)'s top two probabilities
    are more than 5e-3 apart. Returns the largest absolute difference of each path."""
    import json

    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq
    import tensorflow as tf

    from flows import predict as predict_cli
    from core.model.backbone import Backbone, encode_for_model
    from core.model.classifier import load_classifier_file
    from tasks.gate import champion_probabilities
    from core.model.inference import pad_batch, predict_in_order, predict_token_ids
    from core.storage.artifacts import ArtifactRef

    card = json.loads((version_folder / "model.json").read_text())
    labels = card["labels"]
    evaluated = pq.read_table(version_folder / "predictions.parquet").to_pandas()
    texts = evaluated["text"].tolist()
    a = evaluated[[f"prob_{label}" for label in labels]].to_numpy()
    backbone = Backbone.resolve(None)
    name, version = version_folder.parent.parent.name, version_folder.name
    features = ArtifactRef(path=f"artifacts/embed/{card['features_sha256'][:16]}.parquet",
                           sha256=card["features_sha256"],
                           meta={"frozen_blocks": 6 - card["unfreeze_top"], "labels": labels,
                                 "sequence_length": card["tokenizer"]["sequence_length"]})
    assert features.is_intact(workdir), "the run's features artifact is gone"
    b_stored, how = champion_probabilities(workdir, name, version, labels, backbone, features,
                                           evaluated["row_id"].to_numpy(), texts)
    assert how == "stored test features"
    sequences = encode_for_model(backbone.path, texts, card["tokenizer"]["sequence_length"])
    b_whole = predict_token_ids(load_classifier_file(version_folder / "model.keras"), sequences)

    pd.DataFrame({"sentence": texts}).to_csv(tmp / "to_score.csv", index=False)
    assert predict_cli.main(["--data", str(tmp / "to_score.csv"), "--out", str(tmp / "scored.parquet"),
                             "--workdir", str(workdir), "--name", name, "--model", version,
                             "--text-col", "sentence"]) == 0
    scored = pq.read_table(tmp / "scored.parquet").to_pandas()
    assert scored["sentence"].tolist() == texts  # rows in = rows out, in order
    c = scored[[f"prob_{label}" for label in labels]].to_numpy()

    import tensorflow_text  # noqa: F401  (the SavedModel's tokenizer ops)

    exported = tf.saved_model.load(str(version_folder / "saved_model"))  # kept alive: `serve` uses its variables
    d = predict_in_order(lambda rows: exported.serve(text=tf.constant([texts[i] for i in rows]))["probabilities"].numpy(),
                         [len(s) for s in sequences])
    e = predict_in_order(lambda rows: exported.serve_token_ids(pad_batch([sequences[i] for i in rows])).numpy(),
                         [len(s) for s in sequences])

    top2 = np.sort(a, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 5e-3
    gaps = {}
    for path, proba in {"gate (stored features)": b_stored, "gate (whole model)": b_whole, "flows.predict": c,
                        "SavedModel serve (text)": d, "SavedModel serve_token_ids": e}.items():
        gaps[path] = float(np.abs(proba - a).max())
        assert gaps[path] <= 2e-3, f"{path} differs from evaluate's probabilities by {gaps[path]:.2e}"
        assert (proba.argmax(axis=1) == a.argmax(axis=1))[clear].all(), f"{path} predicts another label"
    assert (evaluated["predicted_label"].to_numpy() == np.array(labels)[a.argmax(axis=1)]).all()
    return gaps
