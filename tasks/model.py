"""The classifier's Keras graph, in the pieces that let the frozen part be computed once.

With the top `n` of the backbone's 6 blocks trainable, the network splits at block `cut = 6 - n`:
- the *bottom* (embeddings and blocks 0..cut-1) is frozen: its token-level output for a sentence never
  changes, so `tasks.embed` computes it once and training reads it from disk;
- the *top* (blocks cut..5, masked mean pooling, L2 normalisation, head) is what trains.
With `n = 0` the bottom is the whole encoder and its stored output is the pooled sentence embedding.
The saved model joins the pieces again (`build_classifier`): token ids in, probabilities out.
The piecewise graph calls the backbone's own layers in the backbone's order, so it computes exactly what
`backbone(...)` computes (a test checks it).
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from pathlib import Path

import keras
import numpy as np

from tasks import faults
from tasks.config import TrainConfig
from tasks.layers import L2Normalize, MaskedMeanPooling, ZerosLike

HIDDEN = 384
N_BLOCKS = 6
log = logging.getLogger(__name__)


def token_inputs() -> dict[str, keras.KerasTensor]:
    """The model's inputs: padded `token_ids` and the `padding_mask` (1 for real tokens)."""
    return {
        "token_ids": keras.Input(shape=(None,), dtype="int32", name="token_ids"),
        "padding_mask": keras.Input(shape=(None,), dtype="int32", name="padding_mask"),
    }


def pooled(backbone, inputs: dict[str, keras.KerasTensor]) -> keras.KerasTensor:
    """Unit-length masked mean of the backbone's last hidden states, as sentence-transformers pools."""
    sequence = backbone({
        "token_ids": inputs["token_ids"],
        "segment_ids": ZerosLike(name="segment_ids")(inputs["token_ids"]),
        "padding_mask": inputs["padding_mask"],
    })["sequence_output"]
    return L2Normalize(name="normalize")(MaskedMeanPooling(name="mean_pool")(sequence, inputs["padding_mask"]))


def transformer_blocks(backbone) -> list:
    """The backbone's transformer blocks, bottom first."""
    return [layer for layer in backbone.layers if layer.name.startswith("transformer_layer_")]


def build_bottom(backbone, cut: int) -> keras.Model:
    """token ids -> {"hidden": output of block cut-1 (token level), "embedding": final pooled embedding}.

    One pass through the frozen backbone yields both what the head trains on first and what the top
    blocks train on next.
    """
    backbone.trainable = False
    inputs = token_inputs()
    token_ids, mask = inputs["token_ids"], inputs["padding_mask"]
    x = backbone.get_layer("token_embedding")(token_ids)
    positions = backbone.get_layer("position_embedding")(x)
    segments = backbone.get_layer("segment_embedding")(ZerosLike(name="segment_ids")(token_ids))
    x = backbone.get_layer("embeddings_add")((x, positions, segments))
    x = backbone.get_layer("embeddings_dropout")(backbone.get_layer("embeddings_layer_norm")(x))
    hidden = x
    for index, block in enumerate(transformer_blocks(backbone)):
        if index == cut:
            hidden = x
        x = block(x, padding_mask=mask)
    outputs = {"embedding": L2Normalize(name="normalize")(MaskedMeanPooling(name="mean_pool")(x, mask))}
    if cut < N_BLOCKS:
        outputs["hidden"] = hidden
    return keras.Model(inputs, outputs, name="bottom")


def build_top(backbone, head: keras.Model, cut: int) -> keras.Model:
    """{"hidden", "padding_mask"} -> probabilities: blocks cut..5 of `backbone`, pooling, `head`."""
    hidden = keras.Input(shape=(None, HIDDEN), name="hidden")
    mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
    x = hidden
    for block in transformer_blocks(backbone)[cut:]:
        x = block(x, padding_mask=mask)
    x = L2Normalize(name="top_normalize")(MaskedMeanPooling(name="top_mean_pool")(x, mask))
    return keras.Model({"hidden": hidden, "padding_mask": mask}, head(x), name="top")


def build_head(n_labels: int, cfg: TrainConfig, input_dim: int = HIDDEN) -> keras.Model:
    """embedding -> class probabilities: dropout, an optional hidden layer, softmax with L1/L2 on its kernel."""
    inputs = keras.Input(shape=(input_dim,), name="embedding")
    x = keras.layers.Dropout(cfg.dropout, name="head_dropout")(inputs)
    if cfg.hidden_units:
        x = keras.layers.Dense(cfg.hidden_units, activation="gelu", name="head_hidden",
                               kernel_regularizer=keras.regularizers.L1L2(cfg.l1, cfg.l2))(x)
        x = keras.layers.Dropout(cfg.dropout, name="head_hidden_dropout")(x)
    outputs = keras.layers.Dense(n_labels, activation="softmax", name="head_output",
                                 kernel_regularizer=keras.regularizers.L1L2(cfg.l1, cfg.l2))(x)
    return keras.Model(inputs, outputs, name="head")


def build_classifier(backbone, head: keras.Model) -> keras.Model:
    """The servable model: token ids and padding mask in, class probabilities out (nothing trainable)."""
    backbone.trainable = False
    head.trainable = False
    inputs = token_inputs()
    return keras.Model(inputs, head(pooled(backbone, inputs)), name="classifier")


def _renumber_shared_objects(config: object, ids: dict[int, int]) -> object:
    """Replace Keras's `shared_object_id`s (Python object ids, different in every process) by 1, 2, 3...
    in order of first appearance: the sharing is kept, the process-specific numbers are not."""
    if isinstance(config, dict):
        return {key: (ids.setdefault(value, len(ids) + 1) if key == "shared_object_id" else
                      _renumber_shared_objects(value, ids)) for key, value in config.items()}
    if isinstance(config, list):
        return [_renumber_shared_objects(value, ids) for value in config]
    return config


def save_reproducibly(model: keras.Model, path: Path) -> None:
    """Save `model` as a `.keras` file whose bytes depend only on the model. Keras stamps the save time into
    metadata.json and the zip entries, and Python object ids into config.json, which would give identical
    weights a new content hash on every save (and a new registry version for the same model)."""
    path = Path(path)
    raw = path.with_name(f".{path.name}.raw.keras")
    model.save(raw)
    try:
        with zipfile.ZipFile(raw) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
            for item in sorted(source.infolist(), key=lambda i: i.filename):
                data = source.read(item.filename)
                if item.filename == "metadata.json":
                    metadata = json.loads(data)
                    metadata.pop("date_saved", None)
                    data = json.dumps(metadata, sort_keys=True).encode()
                elif item.filename == "config.json":
                    data = json.dumps(_renumber_shared_objects(json.loads(data), {})).encode()
                target.writestr(zipfile.ZipInfo(item.filename, date_time=(1980, 1, 1, 0, 0, 0)), data,
                                compress_type=zipfile.ZIP_DEFLATED)
    finally:
        raw.unlink(missing_ok=True)


def pad_batch(sequences: list[list[int]], multiple: int = 8, pad_id: int = 0) -> dict[str, np.ndarray]:
    """Right-pad id lists to the longest one (rounded up to `multiple`), with the matching padding mask."""
    length = max(len(s) for s in sequences)
    length = -(-length // multiple) * multiple
    ids = np.full((len(sequences), length), pad_id, dtype=np.int32)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = seq
    return {"token_ids": ids, "padding_mask": (np.arange(length)[None, :] < np.array([len(s) for s in sequences])[:, None]).astype(np.int32)}


def length_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row indices grouped into batches of similar length (shortest first), so padding stays small."""
    order = np.argsort(lengths, kind="stable")
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


class EpochLog(keras.callbacks.Callback):
    """Logs each epoch's losses and validation accuracy, so training progress shows in the run's logs."""

    def __init__(self, max_epochs: int, prefix: str = "finetune"):
        super().__init__()
        self.max_epochs, self.prefix = max_epochs, prefix

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        faults.point("finetune:epoch")
        log.info("%s: epoch %d/%d loss %.4f val_loss %.4f val_accuracy %.3f (%.1fs)", self.prefix, epoch + 1,
                 self.max_epochs, logs.get("loss", float("nan")), logs.get("val_loss", float("nan")),
                 logs.get("val_accuracy", float("nan")), time.perf_counter() - self.started)


class HiddenStateBatches(keras.utils.PyDataset):
    """Length-grouped, padded batches of stored hidden states (the frozen bottom's output) for the top.

    Each item is ({"hidden", "padding_mask"}, labels, sample weights). The batch order is reshuffled every
    epoch from `seed`, so training is repeatable; sentences of similar length share a batch, so the top
    blocks never compute on padding they do not need.
    """

    def __init__(self, hidden: list[np.ndarray], labels: np.ndarray, weights: np.ndarray, batch_size: int,
                 seed: int, shuffle: bool):
        super().__init__()
        self.hidden, self.labels, self.weights = hidden, labels, weights
        self.batches = length_batches(np.array([len(h) for h in hidden]), batch_size)
        self.rng = np.random.default_rng(seed)
        self.shuffle = shuffle
        self.order = np.arange(len(self.batches))
        self.on_epoch_end()

    def __len__(self) -> int:
        return len(self.batches)

    def padded_length(self, batch: int) -> int:
        """The length batch number `batch` is padded to (its longest sentence, rounded up to 8)."""
        return -(-max(len(self.hidden[i]) for i in self.batches[batch]) // 8) * 8

    def __getitem__(self, index: int):
        rows = self.batches[self.order[index]]
        length = self.padded_length(self.order[index])
        x = np.zeros((len(rows), length, self.hidden[rows[0]].shape[1]), dtype=np.float32)
        mask = np.zeros((len(rows), length), dtype=np.int32)
        for j, i in enumerate(rows):
            x[j, : len(self.hidden[i])] = self.hidden[i]
            mask[j, : len(self.hidden[i])] = 1
        return {"hidden": x, "padding_mask": mask}, self.labels[rows], self.weights[rows]

    def on_epoch_end(self):
        if self.shuffle:
            self.rng.shuffle(self.order)
        # Keras (TensorFlow backend) infers the batch shapes from the first two batches and keeps any
        # dimension they agree on fixed; make them differ in length so the sequence axis stays variable.
        if len(self.order) > 2 and self.padded_length(self.order[0]) == self.padded_length(self.order[1]):
            for j in range(2, len(self.order)):
                if self.padded_length(self.order[j]) != self.padded_length(self.order[0]):
                    self.order[[1, j]] = self.order[[j, 1]]
                    break
