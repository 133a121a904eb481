"""A registered version applied to sentences: the backbone it was trained on (`trained_backbone`), its classifier
as a function of texts (`Scorer`, `score`: batch prediction, re-evaluation), and the same through the workdir's
feature cache (`score_with_cache`: suggest, pseudo_label)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.model.backbone import Backbone, encode_for_model
from core.registry.store import RegistryError
from core.registry.version import Version

log = logging.getLogger(__name__)


BATCH = 64


def trained_backbone(folder: Path) -> Backbone:
    """The backbone the version in `folder` was trained on: its lineage's `model.backbone` setting (a preset
    folder), else the bundled one. Raises `ConfigError` when that folder is no longer a backbone preset."""
    try:
        setting = Version(folder).read_lineage()["config"]["model"]["backbone"]
    except (OSError, ValueError, KeyError, TypeError):
        setting = None  # versions registered before the setting existed used the bundled backbone
    return Backbone.resolve(setting)


class Scorer:
    """The model in `folder`, loaded once, as a function: texts -> class probabilities, float64 (n, k) in the
    order of the texts (columns: `labels`). One traced graph serves every call (`core.model.inference.forward`).
    Raises `RegistryError` if the model was trained on another backbone."""

    def __init__(self, folder: Path, backbone: Backbone, batch_size: int = BATCH):
        from core.model.inference import forward
        from core.model.classifier import load_classifier_file

        card = Version(folder).read_card()
        if card.get("backbone_sha256") != backbone.sha256:
            raise RegistryError(f"{folder.name} was trained on another backbone (sha256 "
                                         f"{card.get('backbone_sha256', '?')[:12]}); install that one, or retrain")
        self.labels = [str(label) for label in card["labels"]]
        self.sequence_length = int(card["tokenizer"]["sequence_length"])
        self.preset, self.batch_size = backbone.path, batch_size
        self.model = load_classifier_file(Version(folder).model)
        self.run = forward(self.model)

    def __call__(self, texts: list[str], progress: str | None = None) -> np.ndarray:
        from core.model.inference import predict_token_ids

        sequences = encode_for_model(self.preset, texts, self.sequence_length)
        return predict_token_ids(self.model, sequences, self.batch_size, progress=progress, run=self.run)


def score(folder: Path, texts: list[str], backbone: Backbone) -> tuple[np.ndarray, list[str]]:
    """Class probabilities, float64 (len(texts), k) in the order of `texts`, of the model in `folder`, and its
    labels (the column order). Raises `RegistryError` if the model was trained on another backbone."""
    scorer = Scorer(folder, backbone)
    return scorer(texts, progress="predict"), scorer.labels


@dataclass
class Scored:
    """A model's view of some sentences: class probabilities (n, k) float64 in its label order, and the frozen
    backbone's pooled embeddings (n, d) float32, L2-normalised."""

    proba: np.ndarray
    embeddings: np.ndarray
    labels: list[str]
    counts: dict[str, int]


def score_with_cache(folder: Path, texts: list[str], backbone: Backbone, workdir: Path) -> Scored:
    """The model in `folder` applied to `texts` through the workdir's feature cache: the frozen bottom of the
    backbone runs only on sentences the cache lacks (`core.model.features.cached_features`), then the model's trainable
    part runs on the stored features (`core.model.inference.predict_stored`), the path evaluation takes.
    Raises `RegistryError` if the model was trained on another backbone."""
    from core.model.graph import encoder_depth
    from core.model.inference import predict_stored
    from core.model.features import cached_features
    from core.model.classifier import load_classifier_file

    card = Version(folder).read_card()
    if card.get("backbone_sha256") != backbone.sha256:
        raise RegistryError(f"{folder.name} was trained on another backbone (sha256 "
                                     f"{card.get('backbone_sha256', '?')[:12]}); install that one, or retrain")
    model = load_classifier_file(Version(folder).model)
    frozen_blocks = encoder_depth(model) - int(card.get("unfreeze_top", 0))
    sequences = cached_token_ids(backbone, texts, int(card["tokenizer"]["sequence_length"]), workdir)
    embeddings, hidden, counts = cached_features(backbone, sequences, frozen_blocks, workdir)
    log.info("suggest: %d sentences, %d from the feature cache, %d computed", counts["sentences"], counts["reused"],
             counts["computed"])
    proba = predict_stored(model, embeddings, hidden, frozen_blocks) if texts else np.zeros((0, len(card["labels"])))
    return Scored(proba, embeddings, list(card["labels"]), counts)


def cached_token_ids(backbone: Backbone, texts: list[str], sequence_length: int, workdir: Path) -> list[list[int]]:
    """`[CLS] ... [SEP]` ids of `texts` truncated to `sequence_length`, as `encode_for_model` gives them, with each
    text's untruncated WordPiece ids kept in the feature cache (part "token-ids", keyed by the text's sha256):
    keras-hub's tokenizer runs in Python (25 of 40 s of a cached 10,000-row suggestion, profiled), so a pool
    read again costs no tokenizer run."""
    import hashlib

    from core.model.backbone import encode_texts, pack
    from core.storage.feature_cache import FeatureCache
    from core.model.features import feature_source

    keys = [hashlib.sha256(text.encode("utf-8")).hexdigest()[:32] for text in texts]
    cache = FeatureCache(workdir, feature_source(backbone), "token-ids")
    have = {k: v[:, 0].tolist() for k, v in cache.get(set(keys)).items()}
    missing = list(dict.fromkeys(k for k in keys if k not in have))
    if missing:
        text_of = dict(zip(keys, texts))
        new = encode_texts(backbone.path, [text_of[k] for k in missing])
        cache.put({k: np.asarray(ids, dtype=np.int32).reshape(-1, 1) for k, ids in zip(missing, new) if ids})
        have.update(zip(missing, new))
    return pack([have[k] for k in keys], sequence_length, backbone.path)
