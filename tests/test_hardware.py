"""Strategy and precision by hardware: the default strategy and float32 without a GPU, float16 with one; the
mixed-precision path itself runs on this CPU when asked for explicitly, so its code is exercised where no GPU is
lent. The assertions hold on a CPU machine and on the supported GPU path alike."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

from core.model import hardware
from schemas.config import TrainConfig
from tasks.embed import embed
from core.model.classifier import CARD_FILE, MODEL_FILE, load_classifier
from tasks.finetune import finetune
from tests.test_embed import _tokenized
from tests.conftest import first_per_label


def test_no_gpu_means_default_strategy_and_float32():
    import tensorflow as tf

    gpus = hardware.visible_gpus()
    assert gpus == len(tf.config.list_physical_devices("GPU"))  # 0 on the CI machines, the lent GPUs elsewhere
    assert hardware.resolve_mixed_precision("auto", gpus) is (gpus > 0)
    assert hardware.resolve_mixed_precision("auto", 0) is False
    assert hardware.resolve_mixed_precision("auto", 1) is True
    assert hardware.resolve_mixed_precision(False, 4) is False
    assert isinstance(hardware.strategy(0), contextlib.nullcontext)
    assert isinstance(hardware.strategy(1), contextlib.nullcontext)  # one GPU needs no mirroring


def test_dtype_policy_is_restored_after_building():
    import keras

    before = keras.config.dtype_policy().name
    with hardware.dtype_policy(True) as name:
        assert name == "mixed_float16" and keras.config.dtype_policy().name == "mixed_float16"
    assert keras.config.dtype_policy().name == before


def test_mixed_precision_trains_the_top_block_in_float16(tmp_path: Path, backbone):
    features = embed(_tokenized(tmp_path, first_per_label(30), backbone, "mp"), backbone, 1, tmp_path)
    cfg = TrainConfig(unfreeze_top=1, max_epochs=2, mixed_precision=True)
    model = finetune(features, cfg, 3, backbone, tmp_path)
    card = json.loads((model.resolve(tmp_path) / CARD_FILE).read_text())
    assert card["hardware"] == {"gpus": hardware.visible_gpus(), "mixed_precision": True}
    assert np.isfinite(card["best_val_loss"])
    classifier = load_classifier(model, tmp_path)
    policies = {layer.dtype_policy.name for layer in classifier.layers if hasattr(layer, "dtype_policy")}
    assert "mixed_float16" in policies  # the backbone's layers
    assert (model.resolve(tmp_path) / MODEL_FILE).is_file()
    import keras

    assert keras.config.dtype_policy().name == "float32"  # nothing leaked into later models
