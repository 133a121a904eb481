"""The accelerator the training step runs on: which tf.distribute strategy, and whether mixed precision pays.

Only the training step cares. Several GPUs get a MirroredStrategy (one replica per GPU, gradients summed);
one GPU or a CPU gets TensorFlow's default strategy, which is no strategy at all. Mixed precision (float16
compute, float32 weights) roughly doubles a modern GPU's throughput, but on a CPU it is slower than float32,
so `train.mixed_precision = auto` turns it on only where a GPU is visible.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Literal

log = logging.getLogger(__name__)


def visible_gpus() -> int:
    """How many GPUs the Keras backend can use (0 on a CPU-only machine)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if keras.backend.backend() == "jax":
        import jax

        return sum(1 for device in jax.devices() if device.platform == "gpu")
    return 0


def resolve_mixed_precision(setting: bool | Literal["auto"], gpus: int) -> bool:
    """`train.mixed_precision` as a decision: `auto` means on exactly when a GPU is there."""
    return gpus > 0 if setting == "auto" else bool(setting)


def strategy(gpus: int):
    """MirroredStrategy over every GPU when there are several (TensorFlow backend), else the default strategy.

    Returned as a context manager: `with strategy(n): build, compile and fit`.
    """
    import keras

    if gpus > 1 and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        chosen = tf.distribute.MirroredStrategy()
        log.info("finetune: MirroredStrategy over %d GPUs", chosen.num_replicas_in_sync)
        return chosen.scope()
    return contextlib.nullcontext()


@contextlib.contextmanager
def dtype_policy(mixed: bool) -> Iterator[str]:
    """Build layers under `mixed_float16` (when `mixed`) and restore the previous global policy afterwards."""
    import keras

    previous = keras.config.dtype_policy()
    name = "mixed_float16" if mixed else previous.name
    keras.config.set_dtype_policy(name)
    try:
        yield name
    finally:
        keras.config.set_dtype_policy(previous)
