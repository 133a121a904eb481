"""The MPNet body (core/model/mpnet): held against its reference, and run through the whole pipeline.

Against the reference (tests/data/mpnet_reference.npz, written by benchmarks/mpnet_reference.py from the
Hugging Face tokenizer and sentence-transformers; skipped only when `make mpnet` was not run): token ids equal on
every bundled sentence and on 300 random-Unicode strings, pooled embeddings at cosine >= 0.9999.
Without the real weights: a tiny MPNet with random weights, written by the test as a Hugging Face folder
(config.json, model.safetensors with HF's parameter names, vocab.txt), checks the loader's name map, the
relative-position buckets, the padding invariants, the split network at every cut, and runs the retrain flow,
the stored-features path, flows.predict, the SavedModel that takes raw text and flows.embed through it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.conftest import PHRASEBANK, first_per_label, write_csv

FIXTURE = Path(__file__).parent / "data" / "mpnet_reference.npz"
SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "[UNK]"]  # MPNet's order: <s>=0, <pad>=1, </s>=2; <mask> last
BLOCKS, HIDDEN, HEADS = 2, 32, 4


def _real():
    from core.model.backbone import MPNET_FOLDER

    if not (MPNET_FOLDER / ".install-complete").is_file():
        pytest.skip("all-mpnet-base-v2 is not installed: run `make mpnet` to hold the port against its reference")
    return MPNET_FOLDER


# ---------------------------------------------------------------- the tiny random MPNet, as a Hugging Face folder

def _vocabulary(texts: list[str]) -> list[str]:
    words = set()
    for text in texts:
        plain = "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")
        words.update(re.findall(r"\w+|[^\w\s]", plain))
    return SPECIAL + sorted(words) + ["<mask>"]


def write_tiny_mpnet(folder: Path, vocabulary: list[str], seed: int = 1) -> Path:
    """A Hugging Face MPNet folder with random weights under HF's parameter names (torch layout: Linear weights
    (out, in)), as `transformers.MPNetModel.save_pretrained` writes them."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.normal(0, 0.2, shape).astype(np.float32)  # noqa: E731
    tensors = {"embeddings.word_embeddings.weight": normal(len(vocabulary), HIDDEN),
               "embeddings.position_embeddings.weight": normal(130, HIDDEN),
               "embeddings.LayerNorm.weight": 1 + normal(HIDDEN), "embeddings.LayerNorm.bias": normal(HIDDEN),
               "encoder.relative_attention_bias.weight": normal(32, HEADS)}
    for i in range(BLOCKS):
        p = f"encoder.layer.{i}."
        for name, (out, inp) in {"attention.attn.q": (HIDDEN, HIDDEN), "attention.attn.k": (HIDDEN, HIDDEN),
                                 "attention.attn.v": (HIDDEN, HIDDEN), "attention.attn.o": (HIDDEN, HIDDEN),
                                 "intermediate.dense": (64, HIDDEN), "output.dense": (HIDDEN, 64)}.items():
            tensors[p + name + ".weight"], tensors[p + name + ".bias"] = normal(out, inp), normal(out)
        for name in ("attention.LayerNorm", "output.LayerNorm"):
            tensors[p + name + ".weight"], tensors[p + name + ".bias"] = 1 + normal(HIDDEN), normal(HIDDEN)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "vocab.txt").write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "mpnet", "vocab_size": len(vocabulary), "hidden_size": HIDDEN, "num_hidden_layers": BLOCKS,
        "num_attention_heads": HEADS, "intermediate_size": 64, "max_position_embeddings": 130,
        "relative_attention_num_buckets": 32, "layer_norm_eps": 1e-5, "pad_token_id": 1,
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}))
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(the tiny MPNet's folder, the 120 rows its vocabulary was built from)."""
    rows = first_per_label(40)
    folder = write_tiny_mpnet(tmp_path_factory.mktemp("tiny") / "mpnet", _vocabulary([r["text"] for r in rows]))
    return folder, rows


def test_relative_position_buckets_are_t5s():
    """Hand-computed buckets of HF's `relative_position_bucket` (32 buckets, max distance 128): exact below 8,
    logarithmic to 128, the other direction offset by 16."""
    from core.model.mpnet.layers import relative_position_bucket

    relative = np.array([0, -1, -7, -8, -12, -16, -127, -128, -1000, 1, 7, 8, 16, 128, 1000], np.int32)
    expected = [0, 1, 7, 8, 9, 10, 15, 15, 15, 17, 23, 24, 26, 31, 31]
    assert np.asarray(relative_position_bucket(relative)).tolist() == expected


def test_the_loader_maps_every_parameter(tiny):
    from safetensors.numpy import load_file

    from core.model.backbone import Backbone
    from core.model.mpnet.loader import _variable, load_backbone, weight_map

    folder, _ = tiny
    shape = Backbone.resolve(folder).architecture
    assert (shape.family, shape.blocks, shape.hidden_dim, shape.max_positions) == ("mpnet", BLOCKS, HIDDEN, 128)
    tensors, backbone = load_file(str(folder / "model.safetensors")), load_backbone(folder)
    mapped = weight_map(BLOCKS)
    assert {hf for _, _, hf, _ in mapped} == set(tensors)  # every parameter, once
    assert len({(path, name) for path, name, _, _ in mapped}) == len(backbone.weights)  # every variable, once
    for path, name, hf, transpose in mapped:
        np.testing.assert_array_equal(np.asarray(_variable(backbone, path, name)), tensors[hf].T if transpose else tensors[hf])


def test_padding_and_the_split_network_change_nothing(tiny):
    """A row alone equals the row in a padded batch (positions and bias are read from the mask and the length);
    the bottom/top split at every cut equals the whole backbone; a saved classifier loads in safe mode."""
    import keras

    from core.model.backbone import encode_for_model, fresh_backbone, load_backbone
    from core.model.graph import build_bottom, build_classifier, build_head, build_top
    from core.model.inference import pad_batch
    from schemas.config import TrainConfig
    from tasks.finetune import load_classifier_file

    folder, rows = tiny
    backbone = load_backbone(folder)
    sequences = encode_for_model(folder, [r["text"] for r in rows[:6]], 64)
    batch = pad_batch(sequences)
    whole = build_bottom(backbone, BLOCKS)(batch)["embedding"].numpy()
    for i, seq in enumerate(sequences):
        alone = build_bottom(backbone, BLOCKS)(pad_batch([seq], multiple=1))["embedding"].numpy()[0]
        np.testing.assert_allclose(alone, whole[i], atol=1e-5)
    assert np.abs(whole - whole.mean(axis=0)).max() > 1e-2
    identity = keras.Sequential([keras.Input((HIDDEN,))], name="head")
    mask = keras.ops.convert_to_tensor(batch["padding_mask"])
    for cut in range(BLOCKS + 1):
        out = build_bottom(backbone, cut)(batch)
        np.testing.assert_allclose(out["embedding"].numpy(), whole, atol=1e-6)
        if cut < BLOCKS:
            top = build_top(fresh_backbone(folder), identity, cut)
            np.testing.assert_allclose(top({"hidden": out["hidden"], "padding_mask": mask}).numpy(), whole, atol=1e-5)
            assert not top.get_layer("relative_position_bias").trainable  # shared with the frozen bottom
    classifier = build_classifier(backbone, build_head(3, TrainConfig(), HIDDEN))
    path = Path(folder).parent / "classifier.keras"
    classifier.save(path)
    np.testing.assert_allclose(load_classifier_file(path)(batch).numpy(), classifier(batch).numpy(), atol=1e-6)


@pytest.fixture(scope="module")
def run(tiny, prefect_api, tmp_path_factory):
    """The whole retrain flow (in process) on the tiny MPNet, one block trained: its summary and workdir."""
    import contextlib
    import io

    from flows.retrain import main

    folder, rows = tiny
    root = tmp_path_factory.mktemp("run")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--data", str(write_csv(root / "slice.csv", rows)), "--workdir", str(root / "work"),
                     "--set", f"model.backbone={folder}", "--set", "train.unfreeze_top=1", "--set",
                     "train.max_epochs=3", "--set", "train.min_epochs=2", "--set", "augment.n_aug=0",
                     "--set", "data.min_per_class=3", "--set", "evaluate.min_test_per_class=0"])
    assert code == 0
    return json.loads(Path(out.getvalue().strip().splitlines()[-1]).read_text()), root / "work"


def test_the_pipeline_runs_on_mpnet_and_every_path_agrees(run, tiny, tmp_path):
    """Retrain on the tiny MPNet: the features are its own (hidden states after its one frozen block, keyed by its
    weights hash), and evaluate's stored-features path, the whole saved model, flows.predict and the SavedModel
    taking raw text give the same probabilities."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the SavedModel's tokenizer ops)

    from core.model.backbone import Backbone, encode_for_model
    from core.model.inference import predict_stored, predict_token_ids
    from core.storage.artifacts import ArtifactRef
    from flows import predict as predict_cli
    from tasks.embed import feature_source
    from tasks.finetune import SplitFeatures, load_classifier_file

    summary, workdir = run
    backbone = Backbone.resolve(tiny[0])
    folder = Path(summary["model"]["path"])
    card = json.loads((folder / "model.json").read_text())
    assert card["backbone_sha256"] == backbone.sha256 and card["unfreeze_top"] == 1
    assert (workdir / "cache" / "features" / feature_source(backbone) / "hidden-frozen1").is_dir()
    labels, length = card["labels"], card["tokenizer"]["sequence_length"]
    evaluated = pq.read_table(folder / "predictions.parquet").to_pandas()
    texts, recorded = evaluated["text"].tolist(), evaluated[[f"prob_{label}" for label in labels]].to_numpy()
    model = load_classifier_file(folder / "model.keras")
    whole = predict_token_ids(model, encode_for_model(backbone.path, texts, length))
    features = ArtifactRef(path=summary["artifacts"]["embed"]["path"], sha256=summary["artifacts"]["embed"]["sha256"],
                           meta={"frozen_blocks": 1, "labels": labels, "sequence_length": length})
    test = SplitFeatures(features, workdir, "test")
    np.testing.assert_allclose(predict_stored(model, test.embeddings, test.hidden, 1), whole, atol=1e-4)
    np.testing.assert_allclose(recorded, whole, atol=1e-4)
    assert np.abs(whole - whole.mean(axis=0)).max() > 1e-3

    pd.DataFrame({"text": texts}).to_csv(tmp_path / "score.csv", index=False)
    assert predict_cli.main(["--data", str(tmp_path / "score.csv"), "--out", str(tmp_path / "scored.parquet"),
                             "--workdir", str(workdir), "--model", folder.name]) == 0
    scored = pq.read_table(tmp_path / "scored.parquet").to_pandas()
    np.testing.assert_allclose(scored[[f"prob_{label}" for label in labels]].to_numpy(), whole, atol=1e-4)

    served = tf.saved_model.load(str(folder / "saved_model")).signatures["serve"](text=tf.constant(texts))
    np.testing.assert_allclose(served["probabilities"].numpy(), whole, atol=2e-3)


def test_flows_embed_writes_one_row_per_input_row(tiny, tmp_path):
    from core.model.backbone import encode_for_model
    from core.model.graph import build_bottom
    from core.model.backbone import load_backbone
    from core.model.inference import pad_batch
    from flows.embed import main

    folder, rows = tiny
    data = tmp_path / "in.csv"
    frame = pd.DataFrame({"id": range(8), "sentence": [r["text"] for r in rows[:7]] + [rows[0]["text"]]})
    frame.to_csv(data, index=False)
    out = tmp_path / "out.parquet"
    assert main(["--data", str(data), "--out", str(out), "--backbone", str(folder), "--text-col", "sentence",
                 "--workdir", str(tmp_path / "w")]) == 0
    table = pq.read_table(out)
    assert table.schema.field("embedding").type.value_type == "float" and table.column_names == ["id", "sentence", "embedding"]
    result = table.to_pandas()
    # CSV cells are read as text, as retrain and predict read them
    assert result["id"].tolist() == [str(i) for i in range(8)] and result["sentence"].tolist() == frame["sentence"].tolist()
    got = np.stack(result["embedding"].to_numpy())
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(got[7], got[0])  # a repeated sentence, one cache entry
    ids = encode_for_model(folder, frame["sentence"].tolist()[:2], 512)
    expected = build_bottom(load_backbone(folder), BLOCKS)(pad_batch(ids))["embedding"].numpy()
    np.testing.assert_allclose(got[:2], expected, atol=1e-5)
    # a second run reads the feature cache: same bytes
    assert main(["--data", str(data), "--out", str(tmp_path / "again.parquet"), "--backbone", str(folder),
                 "--text-col", "sentence", "--workdir", str(tmp_path / "w")]) == 0
    assert pq.read_table(tmp_path / "again.parquet").equals(table)


def test_naming_mpnet_without_the_weights_exits_2_with_the_command(tmp_path, monkeypatch, capsys):
    from core.model import backbone
    from flows.embed import main as embed_main
    from flows.retrain import main

    monkeypatch.setattr(backbone, "MPNET_FOLDER", tmp_path / "absent")
    data = write_csv(tmp_path / "d.csv", first_per_label(10))
    with pytest.raises(SystemExit) as caught:  # the command line's setting error: argparse's exit 2
        main(["--data", str(data), "--workdir", str(tmp_path / "w"), "--set", "model.backbone=all-mpnet-base-v2"])
    err = capsys.readouterr().err
    assert caught.value.code == 2 and "run `make mpnet`" in err and "Traceback" not in err, err[-2000:]
    assert not (tmp_path / "w" / "artifacts").exists()
    with pytest.raises(SystemExit) as caught:
        embed_main(["--data", str(data), "--out", str(tmp_path / "e.parquet"), "--backbone", "all-mpnet-base-v2"])
    assert caught.value.code == 2 and "run `make mpnet`" in capsys.readouterr().err
    assert not (tmp_path / "e.parquet").exists()


# ---------------------------------------------------------------- the real weights against the reference

def _id_hash(ids) -> bytes:
    return hashlib.sha256(np.asarray(ids, dtype="<i4").tobytes()).digest()[:8]


@pytest.mark.slow
def test_token_ids_equal_the_hugging_face_tokenizers():
    """Every bundled sentence (4,846) and 300 random-Unicode strings: the pipeline's `<s> ... </s>` ids (untruncated),
    and the SavedModel's in-graph ids, equal the Hugging Face tokenizer's."""
    import tensorflow as tf

    from core.model.backbone import encode_texts, special_ids
    from core.model.serving import text_packer

    folder = _real()
    reference = np.load(FIXTURE)
    start, end, pad = special_ids(folder)
    assert (start, end, pad) == (0, 2, 1)
    with open(PHRASEBANK, newline="", encoding="utf-8") as handle:
        sentences = [row["text"] for row in csv.DictReader(handle)]
    ours = [_id_hash([start, *ids, end]) for ids in encode_texts(folder, sentences)]
    theirs = [bytes(row) for row in reference["phrasebank_id_hashes"]]
    differ = [sentences[i] for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    assert len(ours) == len(theirs) == 4846 and not differ, differ[:5]
    texts, flat, offsets = reference["random_texts"].tolist(), reference["random_ids"], reference["random_offsets"]
    expected = [flat[offsets[i]:offsets[i + 1]].tolist() for i in range(len(texts))]
    ours = [[start, *ids, end] for ids in encode_texts(folder, texts)]
    assert [t for t, a, b in zip(texts, ours, expected) if a != b] == []
    # The SavedModel's in-graph tokenizer (TensorFlow Text) gives the same ids on all of them.
    pack = tf.function(text_packer(folder, 256))
    graph = [row[: list(row).index(end) + 1].tolist() for row in pack(tf.constant(sentences + texts))[0].numpy()]
    assert [_id_hash(ids) for ids in graph[: len(sentences)]] == theirs
    assert graph[len(sentences):] == expected


@pytest.mark.slow
def test_pooled_embeddings_equal_sentence_transformers():
    """72 sentences (64 bundled, 8 random Unicode) through the pipeline's own path (encode_for_model, the frozen
    bottom in length-grouped batches): cosine >= 0.9999 with sentence-transformers' embeddings."""
    from core.model.backbone import encode_for_model
    from tasks.embed import run_bottom

    folder = _real()
    reference = np.load(FIXTURE)
    embeddings, _ = run_bottom(folder, encode_for_model(folder, reference["embedded_texts"].tolist(), 384), 12)
    expected = reference["embeddings"]
    cosine = (embeddings * expected).sum(1) / np.linalg.norm(embeddings, axis=1) / np.linalg.norm(expected, axis=1)
    assert len(cosine) == 72 and cosine.min() >= 0.9999, cosine.min()
