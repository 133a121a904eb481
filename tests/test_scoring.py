"""Streaming batch prediction: the chunked reader reads every file as the whole-file reader does (same cells,
locations and messages), and `flows.predict` scored in tiny chunks writes the rows the whole-file path would, in
order, with the same predictions, for every file type; a failed run leaves nothing under the output's name;
`runner=dask` on a real local cluster gives the threads runner's predictions exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.run.errors import InvalidData
from core.text.readers import read_raw
from core.text.stream import ChunkReader
from tests.conftest import first_per_label, write_csv

REAL = Path(__file__).parent / "data" / "real"
SENTENCES = [row["text"] for row in first_per_label(4)]


def _files(root: Path) -> dict[str, Path]:
    """Files of every type with what makes chunking hard: blank lines between rows (rows too), a trailing line
    of spaces, rows that do not parse, quoted newlines, extra and unnamed columns, missing JSON keys."""
    s = SENTENCES
    files = {}
    csv_text = ("id,text,extra,\n" + f'1,"{s[0]}",a,\n' + "\n" + f'2,"{s[1]}\nsecond line",b,\n' + "3,too,many,fields,x\n"
                + f'4,"{s[2]}",,\n' + ",,,\n" + f'5,"{s[3]}",c,\n' + "6,,d,\n" + f'7,"{s[4]}",e,\n' + "   \n\n\n")
    (files.setdefault("csv", root / "f.csv")).write_text(csv_text, encoding="utf-8")
    (files.setdefault("tsv", root / "f.tsv")).write_text(
        "text\tn\n" + "".join(f"{t}\t{i}\n" + ("\n" if i % 3 == 0 else "") for i, t in enumerate(s[:9])), encoding="utf-8")
    lines = [json.dumps({"text": s[0], "n": 1}), "", json.dumps({"n": 2.5}), "{not json", json.dumps([1, 2]),
             json.dumps({"text": s[1], "other": "x"}), json.dumps({"text": s[2], "n": "three"}), "", "",
             json.dumps({"text": s[3]})]
    (files.setdefault("jsonl", root / "f.jsonl")).write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    pq.write_table(pa.table({"text": s[:7] + [None, "", s[7]], "n": list(range(10)),
                             "score": [0.5, None, 1.0, 2.0, None, 3.0, 4.0, 5.0, 6.0, 7.0]}), root / "f.parquet")
    files["parquet"] = root / "f.parquet"
    return files


def _whole(path: Path, **kw):
    try:
        raw = read_raw(path, blank_lines="rows", **kw)
    except InvalidData as exc:
        return "refused", [f.describe() for f in exc.failures]
    return raw.frame.reset_index(drop=True).astype(str), raw.locations, [f.describe() for f in raw.failures]


def _chunked(path: Path, chunk_rows: int, **kw):
    try:
        reader = ChunkReader(path, chunk_rows=chunk_rows, **kw)
        reader.scan()
        chunks = list(reader.chunks())
    except InvalidData as exc:
        return "refused", [f.describe() for f in exc.failures]
    assert all(chunk.rows_read <= chunk_rows for chunk in chunks), "a chunk over the bound"
    frame = pd.concat([c.frame for c in chunks], ignore_index=True).astype(str)
    return frame, [loc for c in chunks for loc in c.locations], [f.describe() for c in chunks for f in c.failures]


def _same(a, b) -> bool:
    if isinstance(a[0], str) or isinstance(b[0], str):
        return a == b
    return list(a[0].columns) == list(b[0].columns) and a[0].equals(b[0]) and a[1:] == b[1:]


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 1000])
def test_the_chunked_reader_reads_every_file_as_the_whole_file_reader(tmp_path, chunk_rows):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "cp1252.csv").write_bytes("text\nna\xefve caf\xe9\nok\n\xe9t\xe9\n".encode("latin-1"))
    (extra / "bom.csv").write_bytes(b"\xef\xbb\xbftext;label\nx;1\n\ny;2\n")
    (extra / "header_only.csv").write_text("text,label\n\n")
    (extra / "repeat.csv").write_text("text,text\na,b\n")
    (extra / "quote.csv").write_text('text\n"unterminated\nrow\n')
    cases = [*(_files(tmp_path).values()), *sorted(REAL.iterdir()), *sorted(extra.iterdir())]
    cases = [path for path in cases if path.suffix != ".md"]
    for path in cases:
        assert _same(_whole(path), _chunked(path, chunk_rows)), path.name
    for encoding in ("cp1252", "latin-1"):  # decodable as either; mojibake refused for UTF-8 files
        for path in (extra / "cp1252.csv", REAL / "semicolon.csv", tmp_path / "f.csv"):
            assert _same(_whole(path, encoding=encoding), _chunked(path, chunk_rows, encoding=encoding)), path.name


# ------------------------------------------------------------------------------------------ with a real model

@pytest.fixture(scope="module")
def model(prefect_api, tmp_path_factory):
    """One small real model (frozen backbone, 2 epochs, 90 sentences), its version folder."""
    from core.storage import registry
    from flows.retrain import retrain

    root = tmp_path_factory.mktemp("stream-model")
    data = write_csv(root / "train.csv", first_per_label(30))
    summary = json.loads(Path(retrain(data=str(data), workdir=str(root / "work"), overrides={
        "train.unfreeze_top": 0, "train.max_epochs": 2, "augment.n_aug": 0, "data.min_per_class": 3,
        "evaluate.min_test_per_class": 0})).read_text())
    return registry.version_dir(root / "work", "default", summary["model"]["version"])


def _reference(path: Path, folder: Path, on_invalid: str) -> pa.Table:
    """The whole-file path: read everything, score every valid row in one call, build the table."""
    from tasks.predict import _to_arrow, read_texts, result_frame, score, trained_backbone

    inputs = read_texts(path, "text", on_invalid=on_invalid)
    texts = inputs.frame["text"].iloc[inputs.valid].astype(str).tolist()
    proba, labels = score(folder, texts, trained_backbone(folder))
    return _to_arrow(result_frame(inputs, proba, labels, on_invalid))


def _assert_same_rows(streamed: pa.Table, reference: pa.Table, labels: list[str]) -> None:
    assert streamed.column_names == reference.column_names and streamed.num_rows == reference.num_rows
    probs = [f"prob_{label}" for label in labels]
    for name in streamed.column_names:
        if name in probs:
            np.testing.assert_allclose(streamed[name].to_numpy(zero_copy_only=False),
                                       reference[name].to_numpy(zero_copy_only=False), atol=1e-6, equal_nan=True)
        else:  # the input's cells (types settled over the whole file), labels, reasons: equal
            assert streamed[name].to_pylist() == reference[name].to_pylist() or \
                pd.Series(streamed[name].to_pylist()).equals(pd.Series(reference[name].to_pylist())), name


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl", "parquet"])
def test_streamed_prediction_equals_the_whole_file_path_for_every_file_type(model, tmp_path, kind):
    from tasks.predict import predict_file

    path = _files(tmp_path)[kind]
    labels = json.loads((model / "model.json").read_text())["labels"]
    for on_invalid in ("keep", "refuse"):
        out = tmp_path / f"{kind}-{on_invalid}.parquet"
        try:
            reference = _reference(path, model, on_invalid)
        except InvalidData as exc:  # refused: the same failures, in the same order, and no output
            with pytest.raises(InvalidData) as streamed:
                predict_file(path, out, model, "text", on_invalid=on_invalid, chunk_rows=2)
            assert [f.describe() for f in streamed.value.failures] == [f.describe() for f in exc.failures]
            assert not out.exists()
            continue
        figures = predict_file(path, out, model, "text", on_invalid=on_invalid, chunk_rows=2, batch_size=2)
        streamed = pq.read_table(out)
        assert figures["rows"] == streamed.num_rows and figures["chunks"] > 2
        _assert_same_rows(streamed, reference, labels)
        assert streamed["predicted_label"].null_count == figures["invalid_kept"] > 0


def test_a_failed_run_leaves_the_previous_output_and_no_temporary_file(model, tmp_path, monkeypatch):
    from tasks import predict as predict_step

    path = write_csv(tmp_path / "in.csv", first_per_label(10))
    out = tmp_path / "out.parquet"
    out.write_bytes(b"yesterday's output")
    calls = []
    real = predict_step.score_chunk

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("killed in the middle of the file")
        return real(*args, **kwargs)

    monkeypatch.setattr(predict_step, "score_chunk", failing)
    with pytest.raises(MemoryError):
        predict_step.predict_file(path, out, model, "text", chunk_rows=4)
    assert out.read_bytes() == b"yesterday's output" and sorted(p.name for p in tmp_path.iterdir()) == ["in.csv",
                                                                                                       "out.parquet"]


def test_dask_runner_gives_the_threads_runners_predictions_on_a_real_local_cluster(model, tmp_path):
    from schemas.config import DaskConfig
    from tasks.predict import predict_file

    rows = first_per_label(15)
    path = write_csv(tmp_path / "in.csv", rows[::-1] + [{"text": "", "label": "x"}] + rows)
    threads = predict_file(path, tmp_path / "threads.parquet", model, "text", on_invalid="keep", chunk_rows=7)
    dask = predict_file(path, tmp_path / "dask.parquet", model, "text", on_invalid="keep", chunk_rows=7,
                        dask=DaskConfig(workers=2, shards=3))
    assert threads["runner"] == "threads" and dask["runner"].startswith("dask (tcp://") and "3 shards" in dask["runner"]
    one, two = pq.read_table(tmp_path / "threads.parquet"), pq.read_table(tmp_path / "dask.parquet")
    assert one.num_rows == len(rows) * 2 + 1 and one.schema == two.schema
    assert one.to_pandas().equals(two.to_pandas())  # the same rows, in order, the same floats (NaN where unscored)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dask.parquet", "in.csv", "threads.parquet"]


# ------------------------------------------------------------------------------------------ serving export

def test_every_champion_change_lands_in_the_serving_dir_as_tf_serving_loads_it(model, tmp_path):
    """promote, a second promote, rollback: 1, 2, 3 under <serving.dir>/<name>/, the oldest pruned (keep=2), no
    hidden or half-written folder left; the newest loads with tf.saved_model.load, and its `serving_default`
    signature on raw text equals flows.predict's probabilities to 2e-3."""
    import shutil

    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the tokenizer's ops, as a TF Serving build with TF Text has them)

    from core.storage import registry, serving_export
    from flows.registry import main as registry_cli
    from tasks.predict import predict_file

    workdir = tmp_path / "work"
    first = registry.version_dir(workdir, "default", model.name)
    shutil.copytree(model, first)
    second = registry.version_dir(workdir, "default", model.name + "-b")  # a second version (the same model)
    shutil.copytree(model, second)
    serving = tmp_path / "serving"
    serving_export.configure(registry.model_root(workdir, "default"), serving, keep=2)
    base = serving / "default"
    registry.promote(workdir, "default", first.name, "first")
    assert serving_export.numbers(base) == [1]
    registry.promote(workdir, "default", first.name, "again")  # not a change: nothing written
    registry.promote(workdir, "default", second.name, "second")
    registry.rollback(workdir, "default")
    assert serving_export.numbers(base) == [2, 3] and sorted(p.name for p in base.iterdir()) == ["2", "3"]
    assert serving_export.published(base)["version"] == first.name  # the rolled-back-to champion is the highest
    assert json.loads((base / "2" / serving_export.MARKER).read_text())["version"] == second.name

    assert registry_cli(["export-serving", "--to", str(tmp_path / "other"), "--workdir", str(workdir)]) == 0
    assert serving_export.numbers(tmp_path / "other" / "default") == [1]

    texts = SENTENCES[:20] + ["Profit fell.", "x" * 3000]
    path = write_csv(tmp_path / "in.csv", [{"text": t} for t in texts], fields=("text",))
    predict_file(path, tmp_path / "scored.parquet", first, "text", max_chars=5000, chunk_rows=8)
    labels = json.loads((first / "model.json").read_text())["labels"]
    expected = pq.read_table(tmp_path / "scored.parquet").to_pandas()[[f"prob_{label}" for label in labels]]
    loaded = tf.saved_model.load(str(base / "3"))
    served = loaded.signatures["serving_default"](text=tf.constant(texts))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected.to_numpy(), atol=2e-3)
    assert [v.decode() for v in served["predicted_label"].numpy()] == [labels[i] for i in expected.to_numpy().argmax(1)]
