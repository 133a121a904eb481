"""The exported SavedModel: raw sentences in, class probabilities and labels out, for TF-Serving and batch users.

A registered version's `saved_model/` (written by `export_saved_model`) has three endpoints:
- `serve` (also `serving_default`): `text`, a 1-D tf.string batch of sentences -> `probabilities` float32
  (batch, n_labels), columns in the order of model.json's `labels`, and `predicted_label` tf.string (batch,);
- `serve_token_ids`: the inputs `model.keras` takes (`{"token_ids", "padding_mask"}`, int32 (batch, length))
  -> probabilities float32 (batch, n_labels), for callers that already send ids (the old `serve`);
- `labels`: no input -> the label names, tf.string (n_labels,).

The text is tokenized inside the graph by keras-hub's own layers (the pipeline's BertTokenizer and a
StartEndPacker), which give exactly the ids `core.model.backbone.encode_for_model` gives: keras-hub runs its
pure-Python path eagerly (the pipeline) and its TensorFlow Text path in a graph (here), and a test holds the two
equal on the whole bundled dataset, accented, over-long and empty sentences and random Unicode.
Loading the SavedModel needs TensorFlow and the TensorFlow Text ops (`import tensorflow_text` in Python),
not this project, Keras or keras-hub. It scores any string: the row checks of `flows.predict` (empty text,
`data.max_chars`, control characters) are the caller's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SERVE = "serve"
SERVE_TOKEN_IDS = "serve_token_ids"
LABELS = "labels"


def text_packer(preset: Path, sequence_length: int):
    """A function for use inside a tf.function: sentences, tf.string (batch,) -> (token_ids, padding_mask), both
    int32 (batch, sequence_length), each row `[CLS] ids[:sequence_length - 2] [SEP]` right-padded with [PAD] and
    the mask 1 on the real tokens: what `encode_for_model` and `pad_batch` give, padded to `sequence_length`.
    Eager calls run keras-hub's Python path instead; trace it (the export does) to get the graph's ids.
    Raises ValueError if `sequence_length` < 2 (no room for [CLS] and [SEP])."""
    import keras_hub
    import tensorflow as tf

    from core.model.backbone import load_tokenizer, special_ids

    if sequence_length < 2:
        raise ValueError(f"sequence_length must be >= 2 ([CLS] and [SEP]), got {sequence_length}")
    tokenizer = load_tokenizer(preset)
    cls_id, sep_id, pad_id = special_ids(preset)  # the ids `pack` writes
    packer = keras_hub.layers.StartEndPacker(sequence_length=sequence_length, start_value=cls_id, end_value=sep_id,
                                             pad_value=pad_id, return_padding_mask=True, name="packer")

    def pack(text):
        token_ids, mask = packer(tokenizer(text))
        return tf.cast(token_ids, tf.int32), tf.cast(mask, tf.int32)

    return pack


def export_saved_model(keras_file: Path, card: dict[str, Any], preset: Path, dest: Path) -> None:
    """Write `dest`: the classifier in `keras_file` (token ids in, as saved by finetune) as a TensorFlow SavedModel
    that takes raw sentences (the endpoints are in the module docstring). `card` is the version's model.json (its
    `labels` and `tokenizer.sequence_length` are used), `preset` the backbone folder whose vocabulary the model
    was trained with (the caller checks it against the card's `backbone_sha256`).
    Raises ValueError if the card's labels do not match the model's outputs."""
    import keras
    import tensorflow as tf

    import core.model.layers  # noqa: F401  (registers the custom layers before loading)

    classifier = keras.saving.load_model(keras_file, safe_mode=True)
    labels = [str(label) for label in card["labels"]]
    if len(labels) != int(classifier.output_shape[-1]):
        raise ValueError(f"{keras_file} has {classifier.output_shape[-1]} outputs but its card names "
                         f"{len(labels)} labels ({', '.join(labels)})")
    pack = text_packer(preset, int(card["tokenizer"]["sequence_length"]))
    names = tf.constant(labels)

    token_spec = {"token_ids": tf.TensorSpec([None, None], tf.int32, name="token_ids"),
                  "padding_mask": tf.TensorSpec([None, None], tf.int32, name="padding_mask")}

    # One tf.function for both endpoints: the encoder's graph is traced once (a second trace cost ~1 s an export).
    @tf.function(input_signature=[token_spec])
    def probabilities(inputs):
        # float32 whatever the model's dtype policy (a mixed-precision model computes in float16)
        return tf.cast(classifier(inputs, training=False), tf.float32)

    def serve(text):
        token_ids, mask = pack(text)
        # Cut the batch to its longest row: masked padding does not change a row's output, and the encoder's cost
        # grows with the padded length. (The max of no rows is the smallest int32: an empty batch keeps 2 columns.)
        width = tf.maximum(tf.reduce_max(tf.reduce_sum(mask, axis=1)), 2)
        proba = probabilities({"token_ids": token_ids[:, :width], "padding_mask": mask[:, :width]})
        return {"probabilities": proba, "predicted_label": tf.gather(names, tf.argmax(proba, axis=-1))}

    archive = keras.export.ExportArchive()
    # No archive.track(classifier): the endpoints' variables are tracked by themselves, and tracking the model too
    # stores every weight twice (keras-team/keras#23553: twice the size on disk and in a server's memory).
    archive.add_endpoint(SERVE, serve, input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    archive.add_endpoint(SERVE_TOKEN_IDS, probabilities)
    archive.add_endpoint(LABELS, lambda: names, input_signature=[])
    archive.write_out(str(dest), verbose=False)
