"""Any keras-hub BERT preset folder works as `model.backbone`, not only the bundled all-MiniLM-L6-v2.

The test writes a tiny, randomly initialised keras-hub BERT preset (2 blocks, hidden size 32) with a word-level
vocabulary built from a slice of the real data, then: the whole retrain flow runs on it; its stored-features
path equals the whole saved model (and the gate's and flows.predict's paths); an `unfreeze_top` above its
2 blocks is refused before any step runs; and the cache keys follow its weights, not its folder.
"""

from __future__ import annotations

import json
import re
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.conftest import first_per_label, write_csv

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # [PAD] first: the padding id is 0
BLOCKS, HIDDEN = 2, 32


def _vocabulary(texts: list[str]) -> list[str]:
    """Special tokens, then every lower-cased, accent-stripped word and punctuation mark of `texts`."""
    words = set()
    for text in texts:
        plain = "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")
        words.update(re.findall(r"\w+|[^\w\s]", plain))
    return SPECIAL + sorted(words)


def _random_backbone(vocabulary: list[str], seed: int):
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    return keras_hub.models.BertBackbone(vocabulary_size=len(vocabulary), num_layers=BLOCKS, num_heads=2,
                                         hidden_dim=HIDDEN, intermediate_dim=64, max_sequence_length=128)


def _tokenizer(vocabulary: list[str]):
    import keras_hub

    return keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True)


def _save(backbone, tokenizer, folder: Path) -> Path:
    """`backbone` and `tokenizer`, written as one keras-hub preset folder."""
    backbone.save_to_preset(str(folder))
    tokenizer.save_to_preset(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(preset folder, the backbone and tokenizer objects it was saved from, the 120 rows it was built on)."""
    root = tmp_path_factory.mktemp("tiny")
    rows = first_per_label(40)
    vocabulary = _vocabulary([r["text"] for r in rows])
    backbone, tokenizer = _random_backbone(vocabulary, seed=1), _tokenizer(vocabulary)
    return _save(backbone, tokenizer, root / "preset"), backbone, tokenizer, rows


@pytest.fixture(scope="module")
def run(tiny, prefect_api, tmp_path_factory):
    """The whole retrain flow (in process, as the CLI runs it) on the tiny preset: its summary and workdir."""
    import contextlib
    import io

    from flows.retrain import main

    preset, _, _, rows = tiny
    root = tmp_path_factory.mktemp("run")
    data = write_csv(root / "slice.csv", rows)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--data", str(data), "--workdir", str(root / "work"), "--set", f"model.backbone={preset}",
                     "--set", "train.unfreeze_top=1", "--set", "train.regime=finetune", "--set", "train.max_epochs=3", "--set", "train.min_epochs=2",
                     "--set", "augment.n_aug=0", "--set", "data.min_per_class=3", "--set", "evaluate.min_test_per_class=0"])
    assert code == 0
    summary = json.loads(Path(out.getvalue().strip().splitlines()[-1]).read_text())
    return summary, root / "work"


def test_the_preset_is_read_as_what_it_is(tiny):
    from core.model.backbone import (Backbone, encode_texts, identity_files, load_tokenizer, vocab_hash,
                                     vocabulary_file)

    preset, _, saved_tokenizer, _ = tiny
    backbone = Backbone.resolve(preset)
    shape = backbone.architecture
    assert (shape.layout, shape.blocks, shape.hidden_dim, shape.max_positions) == ("keras-hub", BLOCKS, HIDDEN, 128)
    assert backbone.frozen_blocks(1) == 1 and backbone.frozen_blocks(0) == BLOCKS
    assert vocabulary_file(preset).read_text().split() == saved_tokenizer.get_vocabulary()
    assert len(vocab_hash(preset)) == 64
    assert "model.weights.h5" in identity_files(preset) and "metadata.json" not in identity_files(preset)
    tokenizer = load_tokenizer(preset)
    assert tokenizer.strip_accents and tokenizer.lowercase
    # Accents are stripped as for MiniLM: "Cómpany" is the vocabulary's "company", not [UNK].
    assert encode_texts(preset, ["Cómpany", "company"]) == [[tokenizer.token_to_id("company")]] * 2


def test_the_whole_flow_runs_on_the_tiny_backbone(run, tiny):
    from core.model.backbone import Backbone

    summary, workdir = run
    card = json.loads((Path(summary["model"]["path"]) / "model.json").read_text())
    assert card["backbone_sha256"] == Backbone.resolve(tiny[0]).sha256
    assert card["unfreeze_top"] == 1 and summary["embed"]["unfreeze_top"] == 1
    assert summary["dataset"]["rows_used"] == 120 and summary["metrics"]["test"]["n"] > 0
    assert {s: summary["stages"][s]["state"] for s in ("embed", "finetune", "evaluate")} == dict.fromkeys(
        ("embed", "finetune", "evaluate"), "Completed")
    # The features are the tiny backbone's: 32-wide embeddings, hidden states after its one frozen block.
    assert list((workdir / "cache" / "features").glob("*/hidden-frozen1"))
    features = pq.read_table(workdir / summary["artifacts"]["embed"]["path"]).to_pandas()
    assert {len(e) for e in features["embedding"]} == {HIDDEN}
    assert all(len(h) == n * HIDDEN * 2 for h, n in zip(features["hidden"], features["n_tokens"]))  # float16


def test_stored_features_gate_and_predict_equal_the_whole_saved_model(run, tiny, tmp_path):
    """Evaluate's probabilities (the stored-features path) equal the whole saved model on the test texts, and so
    do the gate's re-scoring of the version and flows.predict (which finds the version's own backbone)."""
    from core.model.backbone import Backbone, encode_for_model
    from core.model.graph import encoder_depth
    from core.model.inference import predict_stored, predict_token_ids
    from core.storage.artifacts import ArtifactRef
    from flows import predict as predict_cli
    from core.model.classifier import SplitFeatures, load_classifier_file
    from tasks.gate import champion_probabilities

    summary, workdir = run
    folder = Path(summary["model"]["path"])
    card = json.loads((folder / "model.json").read_text())
    labels, length = card["labels"], card["tokenizer"]["sequence_length"]
    backbone = Backbone.resolve(tiny[0])
    model = load_classifier_file(folder / "model.keras")
    assert encoder_depth(model) == BLOCKS
    evaluated = pq.read_table(folder / "predictions.parquet").to_pandas()
    texts, recorded = evaluated["text"].tolist(), evaluated[[f"prob_{label}" for label in labels]].to_numpy()

    whole = predict_token_ids(model, encode_for_model(backbone.path, texts, length))
    frozen = backbone.frozen_blocks(card["unfreeze_top"])
    features = ArtifactRef(path=summary["artifacts"]["embed"]["path"], sha256=summary["artifacts"]["embed"]["sha256"],
                           meta={"frozen_blocks": frozen, "labels": labels, "sequence_length": length})
    test = SplitFeatures(features, workdir, "test")
    assert list(test.row_ids) == evaluated["row_id"].tolist()
    stored = predict_stored(model, test.embeddings, test.hidden, frozen)
    np.testing.assert_allclose(stored, whole, atol=1e-4)
    np.testing.assert_allclose(recorded, whole, atol=1e-4)
    assert np.abs(whole - whole.mean(axis=0)).max() > 1e-3  # the rows differ, so a mix-up could not pass

    gate, how = champion_probabilities(workdir, "default", folder.name, labels, backbone, features,
                                       evaluated["row_id"].to_numpy(), texts)
    assert how == "stored test features"
    np.testing.assert_allclose(gate, recorded, atol=1e-6)

    pd.DataFrame({"text": texts}).to_csv(tmp_path / "score.csv", index=False)
    assert predict_cli.main(["--data", str(tmp_path / "score.csv"), "--out", str(tmp_path / "scored.parquet"),
                             "--workdir", str(workdir), "--model", folder.name]) == 0
    scored = pq.read_table(tmp_path / "scored.parquet").to_pandas()
    np.testing.assert_allclose(scored[[f"prob_{label}" for label in labels]].to_numpy(), whole, atol=1e-4)


def test_unfreeze_top_above_the_blocks_is_refused_before_any_step(tiny, run, tmp_path, capsys):
    # After `run`: the process has set up its logging outside capsys, whose stream closes with this test.
    from core.model.backbone import Backbone
    from flows.retrain import main
    from schemas.config import ConfigError

    preset, _, _, rows = tiny
    with pytest.raises(ConfigError, match=r"3 blocks to train \(train.unfreeze_top, or train.fewshot_unfreeze_top .*\), but the backbone .* has 2 transformer blocks"):
        Backbone.resolve(preset, unfreeze_top=3)
    data = write_csv(tmp_path / "d.csv", rows[:30])
    capsys.readouterr()
    with pytest.raises(SystemExit) as caught:  # a setting the backbone bounds: argparse's exit 2, before start-up
        main(["--data", str(data), "--workdir", str(tmp_path / "w"), "--set", f"model.backbone={preset}",
              "--set", "train.unfreeze_top=3"])
    err = capsys.readouterr().err
    assert caught.value.code == 2, err[-2000:]
    assert "train.unfreeze_top=3" in err and "2 transformer blocks" in err and "Traceback" not in err
    assert not (tmp_path / "w" / "artifacts").exists()  # nothing ran


def test_cache_keys_follow_the_weights_not_the_folder(tiny, tmp_path):
    """The same weights written again (elsewhere) give the same keys and reuse the features; other weights
    saved over the same folder give new keys, and the features are computed again."""
    from core.model.backbone import Backbone
    from core.storage.cache_keys import step_key
    from tasks.embed import embed, embed_shard_task
    from core.model.features import feature_source
    from core.run.sharding import WHOLE

    preset, original, tokenizer, rows = tiny
    first = shutil.copytree(preset, tmp_path / "first")
    again = _save(original, tokenizer, tmp_path / "again")
    tokenized = _tokenized(tmp_path, rows, Backbone.resolve(first))

    def keys(folder: Path) -> tuple[str, str, str]:
        backbone = Backbone.resolve(folder)
        parameters = {"tokenized": tokenized, "backbone": backbone, "unfreeze_top": 1, "shard": WHOLE,
                      "workdir": tmp_path}
        return backbone.sha256, feature_source(backbone), step_key(embed_shard_task, parameters)

    before = keys(first)
    assert keys(again) == before
    computed = embed(tokenized, Backbone.resolve(first), 1, tmp_path).meta["backbone_runs"]["computed"]
    assert computed > 0
    assert embed(tokenized, Backbone.resolve(again), 1, tmp_path).meta["backbone_runs"]["computed"] == 0

    _save(_random_backbone(tokenizer.get_vocabulary(), seed=2), tokenizer, first)  # new weights, same folder
    after = keys(first)
    assert all(a != b for a, b in zip(after, before))
    changed = embed(tokenized, Backbone.resolve(first), 1, tmp_path)
    assert changed.meta["backbone_runs"]["computed"] == computed  # nothing served from the old weights
    old = embed(tokenized, Backbone.resolve(again), 1, tmp_path)
    assert not np.array_equal(_embeddings(changed, tmp_path), _embeddings(old, tmp_path))


def _tokenized(workdir: Path, rows, backbone):
    from schemas.config import AugmentConfig, DataConfig, SplitConfig, TokenizeConfig
    from tasks.augment import augment
    from tasks.split import split
    from tasks.tokenization import tokenize
    from tasks.validate import validate

    validated = validate(DataConfig(path=write_csv(workdir / "d.csv", rows), min_per_class=1), workdir)
    augmented = augment(split(validated, SplitConfig(), 0, 1, workdir), AugmentConfig(n_aug=0), 1, workdir)
    return tokenize(augmented, TokenizeConfig(), backbone, workdir)


def _embeddings(features, workdir: Path) -> np.ndarray:
    from core.model.classifier import SplitFeatures

    return SplitFeatures(features, workdir, "train").embeddings


@pytest.mark.parametrize("config, message", [
    (None, "config.json missing"),
    ({"model_type": "roberta", "num_hidden_layers": 6, "hidden_size": 384}, "model_type 'roberta', not a BERT"),
    ({"registered_name": "keras_hub>GPT2Backbone", "config": {}}, "GPT2Backbone, not a BERT"),
    ({"model_type": "bert"}, "unreadable config.json"),
])
def test_a_folder_that_is_no_bert_preset_is_named_with_the_setting(tmp_path, config, message):
    from core.model.backbone import Backbone
    from schemas.config import ConfigError

    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=rf"model.backbone={re.escape(str(tmp_path))}.*{re.escape(message)}"):
        Backbone.resolve(tmp_path)
