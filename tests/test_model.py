"""The classifier graph: the cached piecewise path equals the whole model; saved models load in safe mode."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from core.model.backbone import encode_texts, fresh_backbone, load_backbone, special_ids
from schemas.config import TrainConfig
from core.model.graph import build_bottom, build_classifier, build_head, build_top
from core.model.inference import pad_batch
from tests.conftest import first_per_label

TEXTS = [r["text"] for r in first_per_label(4)]


@pytest.fixture(scope="module")
def sequences(backbone):
    cls_id, sep_id, _ = special_ids(backbone.path)
    return [[cls_id, *ids[:62], sep_id] for ids in encode_texts(backbone.path, TEXTS)]


def test_embedding_ignores_padding(backbone, sequences):
    bottom = build_bottom(load_backbone(backbone.path), 6)
    alone = np.concatenate([bottom.predict_on_batch(pad_batch([s], multiple=1))["embedding"] for s in sequences])
    together = bottom.predict_on_batch(pad_batch(sequences, multiple=64))["embedding"]
    np.testing.assert_allclose(alone, together, atol=2e-5)


@pytest.mark.parametrize("unfreeze_top", [0, 2])
def test_cached_path_equals_the_whole_model(backbone, sequences, unfreeze_top):
    """bottom (stored as float16) -> top == classifier(token ids), to 2e-3 in probability."""
    frozen_blocks = backbone.frozen_blocks(unfreeze_top)
    keras.utils.set_random_seed(0)
    head = build_head(3, TrainConfig(dropout=0.0), backbone.architecture.hidden_dim)
    model_backbone = fresh_backbone(backbone.path)
    classifier = build_classifier(model_backbone, head)
    batch = pad_batch(sequences)
    whole = classifier.predict_on_batch(batch)
    out = build_bottom(load_backbone(backbone.path), frozen_blocks).predict_on_batch(batch)
    if not unfreeze_top:
        piecewise = head.predict_on_batch(out["embedding"])
    else:
        hidden = out["hidden"].astype(np.float16).astype(np.float32)  # as stored on disk
        piecewise = build_top(model_backbone, head, frozen_blocks).predict_on_batch(
            {"hidden": hidden, "padding_mask": batch["padding_mask"]})
    np.testing.assert_allclose(piecewise, whole, atol=2e-3)
    assert np.abs(piecewise - whole).max() > 0 or not unfreeze_top


def test_saved_classifier_loads_in_safe_mode(tmp_path: Path, backbone, sequences):
    head = build_head(3, TrainConfig(), backbone.architecture.hidden_dim)
    classifier = build_classifier(load_backbone(backbone.path), head)
    classifier.save(tmp_path / "m.keras")
    import core.model.layers  # noqa: F401

    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    batch = pad_batch(sequences)
    np.testing.assert_allclose(loaded.predict_on_batch(batch), classifier.predict_on_batch(batch), atol=1e-6)
