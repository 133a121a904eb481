"""Load a Hugging Face MPNet folder (config.json with `model_type: mpnet`, model.safetensors, vocab.txt,
tokenizer_config.json) into `MPNetBackbone` and `MPNetTokenizer`, offline.

The name mapping (`weight_map`) follows the parameter names of Hugging Face transformers' `MPNetModel`
(`models/mpnet/modeling_mpnet.py`); torch `Linear` weights are (out, in) and Keras `Dense` kernels (in, out),
so those are transposed. The checkpoint is read with `safetensors`' numpy reader (no torch). A name the folder
lacks or a shape that differs raises `ValueError` naming it: a folder loads wholly or not at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

WEIGHTS = "model.safetensors"


def backbone_config(folder: Path) -> dict:
    """`MPNetBackbone`'s arguments from the folder's Hugging Face config.json."""
    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    return {"vocabulary_size": config["vocab_size"], "num_layers": config["num_hidden_layers"],
            "num_heads": config["num_attention_heads"], "hidden_dim": config["hidden_size"],
            "intermediate_dim": config["intermediate_size"], "dropout": config.get("hidden_dropout_prob", 0.1),
            "max_sequence_length": config.get("max_position_embeddings", 514),
            "num_buckets": config.get("relative_attention_num_buckets", 32),
            "layer_norm_epsilon": config.get("layer_norm_eps", 1e-5), "padding_idx": config.get("pad_token_id", 1)}


def weight_map(num_layers: int) -> list[tuple[str, str, str, bool]]:
    """(Keras layer path, Keras variable name, Hugging Face parameter name, transpose?) for every weight."""
    rows = [("token_embedding", "embeddings", "embeddings.word_embeddings.weight", False),
            ("position_embedding/embeddings", "embeddings", "embeddings.position_embeddings.weight", False),
            ("embeddings_layer_norm", "gamma", "embeddings.LayerNorm.weight", False),
            ("embeddings_layer_norm", "beta", "embeddings.LayerNorm.bias", False),
            ("relative_position_bias/embeddings", "embeddings", "encoder.relative_attention_bias.weight", False)]
    parts = [("query", "attention.attn.q"), ("key", "attention.attn.k"), ("value", "attention.attn.v"),
             ("attention_output", "attention.attn.o"), ("intermediate", "intermediate.dense"),
             ("output", "output.dense")]
    norms = [("attention_layer_norm", "attention.LayerNorm"), ("output_layer_norm", "output.LayerNorm")]
    for i in range(num_layers):
        block, hf = f"transformer_layer_{i}", f"encoder.layer.{i}"
        for keras_name, hf_name in parts:
            rows += [(f"{block}/{keras_name}", "kernel", f"{hf}.{hf_name}.weight", True),
                     (f"{block}/{keras_name}", "bias", f"{hf}.{hf_name}.bias", False)]
        for keras_name, hf_name in norms:
            rows += [(f"{block}/{keras_name}", "gamma", f"{hf}.{hf_name}.weight", False),
                     (f"{block}/{keras_name}", "beta", f"{hf}.{hf_name}.bias", False)]
    return rows


def _variable(backbone, path: str, name: str):
    layer = backbone.get_layer(path.split("/")[0])
    for part in path.split("/")[1:]:
        layer = next(sub for sub in layer._flatten_layers(include_self=False) if sub.name == part)  # noqa: SLF001
    return next(v for v in layer.weights if v.path.split("/")[-1] == name)


def load_backbone(folder: Path, dtype=None):
    """A new `MPNetBackbone` holding the weights of the Hugging Face folder. Raises `ValueError` for a missing
    parameter or a shape mismatch."""
    from safetensors.numpy import load_file

    from core.model.mpnet.backbone import MPNetBackbone

    folder = Path(folder)
    config = backbone_config(folder)
    backbone = MPNetBackbone(**config, dtype=dtype)
    tensors = load_file(str(folder / WEIGHTS))
    # Some exports prefix the names with the model's attribute ("mpnet.")
    if not any(k.startswith("embeddings.") for k in tensors):
        tensors = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("mpnet.")}
    for path, name, hf_name, transpose in weight_map(config["num_layers"]):
        if hf_name not in tensors:
            raise ValueError(f"{folder / WEIGHTS}: no parameter {hf_name!r}; not an MPNetModel checkpoint")
        value = tensors[hf_name].T if transpose else tensors[hf_name]
        variable = _variable(backbone, path, name)
        if tuple(variable.shape) != value.shape:
            raise ValueError(f"{folder / WEIGHTS}: {hf_name} has shape {value.shape}, the config.json's model "
                             f"needs {tuple(variable.shape)}")
        variable.assign(np.asarray(value, dtype=np.float32))
    return backbone


def lowercase(folder: Path) -> bool:
    """The tokenizer's lower-casing, as tokenizer.json's normalizer (else tokenizer_config.json) says."""
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        normalizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")).get("normalizer") or {}
        if "lowercase" in normalizer:
            return bool(normalizer["lowercase"])
    if (folder / "tokenizer_config.json").is_file():
        return bool(json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("do_lower_case", True))
    return True


def load_tokenizer(folder: Path):
    """`MPNetTokenizer` over the folder's vocab.txt, lower-casing as its tokenizer says."""
    from core.model.mpnet.tokenizer import MPNetTokenizer

    return MPNetTokenizer(vocabulary=str(Path(folder) / "vocab.txt"), lowercase=lowercase(folder))
