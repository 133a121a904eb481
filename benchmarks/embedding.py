"""The backbone's cost inside the pipeline: throughput, a warm re-train, and an epoch of the top blocks.

1. Sentences per second of the pipeline's embed path (length-grouped batches, cold feature cache) versus a bare
   keras-hub `predict` of the same backbone on the same sentences, padded to the pipeline's chosen length.
2. The weekly re-train: a run on 90 % of the bundled data, then one on all of it in the same workdir (warm
   feature cache), against the same full run in a fresh workdir (cold).
3. One epoch of `train.unfreeze_top = 2` training: the top blocks from the cached frozen-bottom output
   (what the pipeline does) versus the same model fed token ids, recomputing the frozen bottom every epoch.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flows  # noqa: E402,F401
from benchmarks.results import run_retrain, table, write_section  # noqa: E402
from tests.conftest import phrasebank_rows, write_csv  # noqa: E402


def bundled_sequences(backbone):
    from core.model.backbone import encode_texts, special_ids
    from tasks.tokenization import choose_length
    from schemas.config import TokenizeConfig
    import numpy as np

    texts = [r["text"] for r in phrasebank_rows()]
    cls_id, sep_id, _ = special_ids(backbone.path)
    ids = encode_texts(backbone.path, texts)
    length = choose_length(np.array([len(x) + 2 for x in ids]), TokenizeConfig())
    return [[cls_id, *x[: length - 2], sep_id] for x in ids], length


def throughput(backbone) -> list[list[str]]:
    import numpy as np
    from core.model.backbone import load_backbone
    from core.model.features import run_bottom
    from core.model.inference import pad_batch

    sequences, length = bundled_sequences(backbone)
    run_bottom(backbone.path, sequences[:64], 6)  # build and trace once, as both paths get a warm-up
    started = time.perf_counter()
    run_bottom(backbone.path, sequences, 6)
    ours = len(sequences) / (time.perf_counter() - started)

    bare = load_backbone(backbone.path)
    padded = pad_batch(sequences, multiple=length)
    inputs = {"token_ids": padded["token_ids"][:, :length], "padding_mask": padded["padding_mask"][:, :length],
              "segment_ids": np.zeros_like(padded["token_ids"][:, :length])}
    bare.predict({k: v[:64] for k, v in inputs.items()}, batch_size=64, verbose=0)
    started = time.perf_counter()
    bare.predict(inputs, batch_size=64, verbose=0)
    bare_rate = len(sequences) / (time.perf_counter() - started)
    return [[f"bare keras-hub `BertBackbone.predict`, all padded to {length}", f"{bare_rate:.0f}", "1.00"],
            ["pipeline embed path (length-grouped batches, pooled output)", f"{ours:.0f}", f"{ours / bare_rate:.2f}"]]


def timed_run(data: Path, workdir: Path) -> tuple[float, dict]:
    return run_retrain("--data", str(data), "--workdir", str(workdir), "--set", "data.conflicts=drop",
                       "--set", "train.max_epochs=2")


def warm_retrain(tmp: Path) -> list[list[str]]:
    rows = phrasebank_rows()
    ninety = write_csv(tmp / "ninety.csv", rows[: int(len(rows) * 0.9)])
    full = write_csv(tmp / "full.csv", rows)
    timed_run(ninety, tmp / "weekly")
    warm_s, warm = timed_run(full, tmp / "weekly")
    cold_s, cold = timed_run(full, tmp / "fresh")
    out = []
    for name, seconds, summary in (("all rows, fresh workdir (cold cache)", cold_s, cold),
                                   ("all rows after a run on 90 % (warm cache)", warm_s, warm)):
        runs = summary["embed"]
        out.append([name, f"{seconds:.0f}", f"{summary['stages']['embed']['seconds']:.1f}",
                    f"{runs['computed']:,} / {runs['distinct']:,}"])
    return out


def epoch_times(backbone) -> list[list[str]]:
    import keras
    import numpy as np
    from core.model.backbone import fresh_backbone
    from schemas.config import TrainConfig
    from core.model.features import run_bottom
    from core.model.graph import build_classifier, build_head, build_top
    from core.model.inference import length_batches, pad_batch
    from core.model.training import TrainingBatches

    sequences, _ = bundled_sequences(backbone)
    sequences = sequences[:1000]
    labels = np.random.default_rng(0).integers(0, 3, len(sequences)).astype(np.int32)
    weights = np.ones(len(sequences), np.float32)
    _, hidden = run_bottom(backbone.path, sequences, 4)

    head = build_head(3, TrainConfig(), backbone.architecture.hidden_dim)
    top = build_top(fresh_backbone(backbone.path), head, 4)
    top.compile(optimizer=keras.optimizers.Adam(5e-5), loss=keras.losses.SparseCategoricalCrossentropy())
    cached_data = TrainingBatches(hidden, labels, weights, 32, 0)
    top.fit(cached_data, epochs=1, verbose=0)  # warm-up: tracing
    started = time.perf_counter()
    top.fit(cached_data, epochs=1, verbose=0)
    cached = time.perf_counter() - started

    class TokenBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.batches = length_batches(np.array([len(s) for s in sequences]), 32)
            order = sorted(range(len(self.batches)), key=lambda i: -len(sequences[self.batches[i][-1]]))
            self.batches = [self.batches[order[0]]] + [b for i, b in enumerate(self.batches) if i != order[0]]

        def __len__(self):
            return len(self.batches)

        def __getitem__(self, i):
            rows = self.batches[i]
            return pad_batch([sequences[j] for j in rows]), labels[rows], weights[rows]

    model_backbone = fresh_backbone(backbone.path)
    whole = build_classifier(model_backbone, build_head(3, TrainConfig(), backbone.architecture.hidden_dim))
    model_backbone.trainable = True
    for layer in model_backbone.layers:
        layer.trainable = layer.name in ("transformer_layer_4", "transformer_layer_5")
    whole.get_layer("head").trainable = True
    whole.compile(optimizer=keras.optimizers.Adam(5e-5), loss=keras.losses.SparseCategoricalCrossentropy())
    whole.fit(TokenBatches(), epochs=1, verbose=0)
    started = time.perf_counter()
    whole.fit(TokenBatches(), epochs=1, verbose=0)
    uncached = time.perf_counter() - started
    return [["bottom recomputed every epoch (token ids in, blocks 0-3 frozen)", f"{uncached:.1f}", "1.00"],
            ["bottom cached (pipeline: stored block-4 input, float16)", f"{cached:.1f}", f"{uncached / cached:.2f}"]]


def main() -> None:
    from core.model.backbone import Backbone
    from core.storage.feature_cache import cache_root

    backbone = Backbone.resolve(None)
    rates = throughput(backbone)
    epochs = epoch_times(backbone)
    with tempfile.TemporaryDirectory() as tmp:
        retrain = warm_retrain(Path(tmp))
        weekly = Path(tmp) / "weekly"
        sizes = [[p.name, f"{sum(f.stat().st_size for f in p.glob('*.parquet')) / 2**20:.1f}",
                  len(list(p.glob("*.parquet")))] for p in sorted(cache_root(weekly).glob("*/*"))]
    body = ("### Backbone throughput (4,846 bundled sentences)\n\n"
            + table(["path", "sentences / s", "ratio to bare"], rates)
            + "\n\n### Weekly re-train with 10 % more rows (defaults, `train.unfreeze_top=2`; training capped at "
            "2 epochs, as training is not what is measured)\n\n"
            + table(["run", "wall s", "embed stage s", "backbone computed / distinct sentences"], retrain)
            + "\n\nFeature cache on disk after both runs:\n\n" + table(["part", "MiB", "segments"], sizes)
            + "\n\n### One training epoch, `train.unfreeze_top = 2`, 1,000 sentences, batch 32\n\n"
            + table(["path", "seconds per epoch", "speed-up"], epochs))
    write_section("embedding", body)


if __name__ == "__main__":
    main()
