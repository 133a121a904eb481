"""Augmented sentences per second on the bundled training split, ours versus a reference-style EDA.

The reference (Wei & Zou's eda.py, not packaged on PyPI) is plain Python that looks every word up in WordNet
afresh on each call and builds n_aug/4 + 1 candidates per operation before keeping n_aug. The baseline below
re-implements that cost structure (same WordNet reader, uncached look-ups, candidates per operation) so the two
can be timed on the same machine; it is a yardstick, not the reference's code.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flows  # noqa: E402,F401
from benchmarks.results import table, write_section  # noqa: E402

N_AUG = 8


class ReferenceStyleEDA:
    """Uncached WordNet look-ups, n/4+1 candidates per operation, shuffle, keep n (the reference's shape)."""

    def __init__(self, wordnet, seed: int = 1):
        self.wordnet = wordnet
        self.rng = random.Random(seed)

    def synonyms(self, word: str) -> list[str]:
        found = {lemma.name().replace("_", " ").lower() for syn in self.wordnet.synsets(word) for lemma in syn.lemmas()}
        found.discard(word)
        return sorted(found)

    def replace(self, words, n):
        out, replaced = list(words), 0
        pool = sorted(set(words))
        self.rng.shuffle(pool)
        for word in pool:
            options = self.synonyms(word)
            if options:
                choice = self.rng.choice(options)
                out = [choice if w == word else w for w in out]
                replaced += 1
            if replaced >= n:
                break
        return out

    def insert(self, words, n):
        out = list(words)
        for _ in range(n):
            for _attempt in range(10):
                options = self.synonyms(out[self.rng.randrange(len(out))])
                if options:
                    out.insert(self.rng.randrange(len(out)), options[0])
                    break
        return out

    def swap(self, words, n):
        out = list(words)
        for _ in range(n):
            i, j = self.rng.randrange(len(out)), self.rng.randrange(len(out))
            out[i], out[j] = out[j], out[i]
        return out

    def delete(self, words, p):
        out = [w for w in words if self.rng.random() > p]
        return out or [self.rng.choice(words)]

    def augment(self, sentence: str, n: int, alpha: float = 0.05) -> list[str]:
        words = "".join(c if c.isalpha() or c == " " else " " for c in sentence.lower()).split()
        if not words:
            return []
        k = max(1, int(alpha * len(words)))
        per_op = n // 4 + 1
        candidates = [self.replace(words, k) for _ in range(per_op)] + [self.insert(words, k) for _ in range(per_op)]
        candidates += [self.swap(words, k) for _ in range(per_op)] + [self.delete(words, alpha) for _ in range(per_op)]
        self.rng.shuffle(candidates)
        return [" ".join(c) for c in candidates[:n]]


def main() -> None:
    from tasks.augment import Plan, augment, copies_of
    from schemas.config import AugmentConfig, DataConfig, SplitConfig
    from tasks.split import split
    from tasks.validate import validate
    from core.text.wordnet import Synonyms, load_wordnet

    cfg = AugmentConfig(n_aug=N_AUG, alpha=0.05)
    wordnet = load_wordnet(cfg.wordnet_dir)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        splits = split(validate(DataConfig(conflicts="drop"), workdir), SplitConfig(), 0, 5, workdir)
        import pyarrow.parquet as pq

        frame = pq.read_table(splits.resolve(workdir)).to_pandas()
        train = frame[frame["split"] == "train"]

        baseline = ReferenceStyleEDA(wordnet)
        started = time.perf_counter()
        made = sum(len(baseline.augment(t, N_AUG)) for t in train["text"])
        baseline_rate = made / (time.perf_counter() - started)

        plan_ = Plan(N_AUG, {op: 0.05 for op in ("sr", "ri", "rs", "rd")})
        rates = []
        synonyms = Synonyms(cfg.wordnet_dir).lookup  # the first pass fills its cache, the second reuses it
        for label in ("cold WordNet cache", "warm WordNet cache"):
            started = time.perf_counter()
            made_ours = sum(len(copies_of(t, r, plan_, 1, synonyms, set())) for t, r in zip(train["text"], train["row_id"]))
            rates.append((label, made_ours / (time.perf_counter() - started)))

        started = time.perf_counter()
        ref = augment(splits, cfg, 1, workdir)
        step_rate = ref.meta["augmented_rows"] / (time.perf_counter() - started)

    rows = [["reference-style EDA (uncached WordNet, n/4+1 candidates per operation)", f"{baseline_rate:,.0f}", "1.00"]]
    rows += [[f"ours, EDA core, {label}", f"{rate:,.0f}", f"{rate / baseline_rate:.2f}"] for label, rate in rates]
    rows.append(["ours, whole augment step (read, EDA, pandera check, zstd Parquet write), fresh process cache",
                 f"{step_rate:,.0f}", f"{step_rate / baseline_rate:.2f}"])
    write_section("augment_speed", f"{len(train):,} training sentences of the bundled data, {N_AUG} copies each, "
                  "alpha 0.05.\n\n" + table(["what", "augmented sentences / s", "ratio to reference-style"], rows))


if __name__ == "__main__":
    main()
