"""The training recipe's pieces (the recipe itself reads in one place: `tasks/finetune.py`): the optimizer
with a learning rate per part, the warm-up + cosine schedule, the batches re-drawn every epoch, the
validation scores that select the epoch, the progress log, and seeding that depends on the run's seed only.
"""

from __future__ import annotations

import logging
import time

import keras
import numpy as np

from core.model.inference import pad_hidden, padded_length
from core.run import faults

log = logging.getLogger(__name__)


def seed_dropout(model: keras.Model, seed: int) -> None:
    """Give every random layer of `model` (the backbone blocks' dropout) a state drawn from `seed` alone.

    Why: a Keras layer built without a seed draws one from Python's global `random` when it is made
    (`keras.random.SeedGenerator`), and the Prefect engine, the Dask client and any other thread in the
    process draw from that same generator; a model trained after a different history of draws, in a
    different process, is a different model. Re-seeding after construction makes training depend on `seed`
    and the data only.
    """
    layers = model._flatten_layers(include_self=True, recursive=True)  # noqa: SLF001 (Keras' own layer walk)
    generators = [g for layer in layers for g in getattr(layer, "_seed_generators", [])]
    for index, generator in enumerate(generators):
        generator.state.assign(np.array([(seed * 100_003 + index + 1) % (2**31 - 1), 0], dtype=generator.state.dtype))


class EpochLog(keras.callbacks.Callback):
    """Logs each epoch's training loss and validation figures, so training progress shows in the run's logs."""

    def __init__(self, max_epochs: int, prefix: str = "finetune"):
        super().__init__()
        self.max_epochs, self.prefix = max_epochs, prefix

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        faults.point("finetune:epoch")
        log.info("%s: epoch %d/%d loss %.4f val_loss %.4f val_accuracy %.3f val_macro_f1 %.3f (%.1fs)", self.prefix,
                 epoch + 1, self.max_epochs, logs.get("loss", float("nan")), logs.get("val_loss", float("nan")),
                 logs.get("val_accuracy", float("nan")), logs.get("val_macro_f1", float("nan")),
                 time.perf_counter() - self.started)


class ValidationScores(keras.callbacks.Callback):
    """Scores the validation split after each epoch, through `core.model.inference` (rows in order), and adds
    `val_loss`, `val_accuracy` and `val_macro_f1` to the epoch's logs, for early stopping and the curves.

    `predict_val()` returns the current model's probabilities (n, k) for the validation rows, in the order
    of `y_val`. Placed before EarlyStopping in the callback list, so that it sees this epoch's figures.
    """

    def __init__(self, predict_val, y_val: np.ndarray):
        super().__init__()
        self.predict_val, self.y_val = predict_val, np.asarray(y_val)

    def on_epoch_end(self, epoch, logs=None):
        from sklearn.metrics import f1_score, log_loss

        if not len(self.y_val):  # no validation rows (estimate mode: every labelled row trains): nothing to score
            if logs is not None:
                logs.update(val_loss=float("nan"), val_accuracy=float("nan"), val_macro_f1=float("nan"))
            return
        proba = np.asarray(self.predict_val(), dtype=np.float64)
        proba = proba / proba.sum(axis=1, keepdims=True)  # float32 softmax sums drift by ~1e-7
        k = proba.shape[1]
        predicted = proba.argmax(axis=1)
        if logs is not None:
            logs["val_loss"] = float(log_loss(self.y_val, np.clip(proba, 1e-7, 1), labels=list(range(k))))
            logs["val_accuracy"] = float((predicted == self.y_val).mean())
            logs["val_macro_f1"] = float(f1_score(self.y_val, predicted, labels=list(range(k)), average="macro",
                                                  zero_division=0))


class PartwiseAdamW(keras.optimizers.Adam):
    """AdamW (decoupled weight decay, Loshchilov & Hutter 2019) with a learning-rate multiplier per part.

    Keras optimizers take one learning rate; fine-tuning wants the randomly initialised head to move faster
    than pre-trained blocks, and lower blocks slower than upper ones. `multipliers` maps a layer name (a
    segment of the variable's path, e.g. `transformer_layer_5`) to a factor on the schedule's rate;
    variables of no listed layer (the head) get 1. Weight decay is applied at each variable's own rate and
    not to 1-D variables (biases, LayerNorm), as in BERT's recipe. Adam is scale-invariant in the gradient,
    so scaling gradients could not do this: the rate itself is scaled, in `update_step`.
    """

    def __init__(self, learning_rate, multipliers: dict[str, float] | None = None, weight_decay: float = 0.01,
                 **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.multipliers = dict(multipliers or {})
        self.decoupled_weight_decay = float(weight_decay)
        self._factor_by_key: dict[int, float] = {}

    def build(self, variables):
        super().build(variables)
        for variable in variables:
            parts = variable.path.split("/")
            factor = next((m for name, m in self.multipliers.items() if name in parts), 1.0)
            self._factor_by_key[self._var_key(variable)] = factor

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factor_by_key.get(self._var_key(variable), 1.0)
        rate = keras.ops.cast(learning_rate, variable.dtype) * factor
        if self.decoupled_weight_decay and len(variable.shape) > 1:
            variable.assign_sub(variable * (rate * self.decoupled_weight_decay))
        super().update_step(gradient, variable, rate)

    def get_config(self):
        return {**super().get_config(), "multipliers": self.multipliers, "weight_decay": self.decoupled_weight_decay}


def learning_rate_schedule(peak: float, steps: int, warmup: float):
    """Linear warm-up from 0 to `peak` over `warmup` of the `steps`, then cosine decay to 0 (keras
    CosineDecay, Loshchilov & Hutter 2017 "SGDR", with the warm-up of Goyal et al. 2017)."""
    warmup_steps = int(round(warmup * steps))
    return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=max(steps - warmup_steps, 1), alpha=0.0,
                                                  warmup_target=peak, warmup_steps=warmup_steps)


class TrainingBatches(keras.utils.PyDataset):
    """Training batches, re-drawn every epoch, grouped by length only inside random chunks.

    `inputs` is either a float array (n, d) of pooled embeddings (the head alone) or a list of per-row token
    states (n_tokens, d) (the top blocks). Each epoch the rows are shuffled (from `seed`), cut into chunks
    of `chunk_batches * batch_size` rows and sorted by length inside each chunk, then cut into batches in a
    shuffled order: a batch's company changes every epoch, while padding stays small. Each item is
    (inputs, labels, sample weights). Training only: inference goes through `core.model.inference`.
    """

    def __init__(self, inputs, labels: np.ndarray, weights: np.ndarray, batch_size: int, seed: int,
                 chunk_batches: int = 4):
        super().__init__()
        self.inputs, self.labels, self.weights = inputs, labels, weights
        self.ragged = not isinstance(inputs, np.ndarray)
        self.lengths = np.array([len(h) for h in inputs]) if self.ragged else np.ones(len(labels), int)
        self.batch_size, self.chunk = batch_size, max(1, chunk_batches) * batch_size
        self.rng = np.random.default_rng(seed)
        self.on_epoch_end()

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __getitem__(self, index: int):
        rows = self.batches[index]
        if self.ragged:
            x = pad_hidden([self.inputs[i] for i in rows])
        else:
            x = self.inputs[rows]
        return x, self.labels[rows], self.weights[rows]

    def on_epoch_end(self):
        order = self.rng.permutation(len(self.labels))
        chunks = [order[i: i + self.chunk] for i in range(0, len(order), self.chunk)]
        rows = np.concatenate([c[np.argsort(self.lengths[c], kind="stable")] for c in chunks]) if chunks else order
        batches = [rows[i: i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        self.batches = [batches[i] for i in self.rng.permutation(len(batches))]
        # Keras (TensorFlow backend) infers the batch shapes from the first two batches and keeps any
        # dimension they agree on fixed; make them differ in length so the sequence axis stays variable.
        if self.ragged and len(self.batches) > 2:
            width = [padded_length(self.lengths[b].max()) for b in self.batches]
            if width[0] == width[1]:
                other = next((j for j in range(2, len(width)) if width[j] != width[0]), None)
                if other is not None:
                    self.batches[1], self.batches[other] = self.batches[other], self.batches[1]
