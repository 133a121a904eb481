"""Step 3, augment: add EDA copies of the training sentences; validation and test pass through untouched.

Each copy applies one EDA operation, rotating through the four so that every sentence gets a mix. A copy's
randomness is seeded from (seed, source row id, copy index) alone, so the output is byte-identical whatever
the row order, the number of workers or the process. A copy that comes out unchanged, repeats an earlier
copy, or equals a validation or test sentence is dropped, so no held-out sentence ever reaches training.
WordNet is English: a training sentence in another language (py3langid, or `augment.language`) is left
untouched and counted (`skipped_languages` in the artifact's meta, and the log).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from schemas.tables import AUGMENTED_SCHEMA, AugmentedTable, to_arrow
from core.text import eda
from core import faults
from core.storage.caching import step_task
from schemas.config import AugmentConfig
from core.text.identity import normalize_text, sha256_hex
from core.storage.artifacts import ArtifactRef, read_parquet, write_parquet
from core.run.sharding import WHOLE, Shard, ShardedStep
from core.text.wordnet import Synonyms

log = logging.getLogger(__name__)

# Wei & Zou's recommendation by training-set size: (rows below, alpha, copies per sentence).
PAPER_DEFAULTS = ((1000, 0.05, 16), (5000, 0.05, 8), (None, 0.1, 4))
# What `n_aug = auto` does, from our own ablation (benchmarks/RESULTS.md, "augmentation_ablation_*"): with this
# pre-trained backbone, EDA copies raised test macro-F1 by more than noise nowhere (+0.7 point at best, frozen
# at 250 rows), lowered it by 4 points at 250 rows with two trainable blocks, and cost 2-5x the run time.
# So by default: no copies.
MEASURED_DEFAULTS = ((None, 0.05, 0),)


@dataclass(frozen=True)
class Plan:
    """What augmentation will do: copies per sentence and the strength of each operation."""

    n_aug: int
    strengths: dict[str, float]


def plan(cfg: AugmentConfig, n_train: int) -> Plan:
    """Resolve `n_aug = auto` and the per-operation strengths for a training split of `n_train` rows."""
    alpha, n_aug = cfg.alpha, cfg.n_aug
    if isinstance(n_aug, str):
        for below, auto_alpha, copies in PAPER_DEFAULTS if n_aug == "paper" else MEASURED_DEFAULTS:
            if below is None or n_train < below:
                n_aug, alpha = copies, auto_alpha
                break
    strengths = {
        "sr": cfg.alpha_sr if cfg.alpha_sr is not None else alpha,
        "ri": cfg.alpha_ri if cfg.alpha_ri is not None else alpha,
        "rs": cfg.alpha_rs if cfg.alpha_rs is not None else alpha,
        "rd": cfg.p_rd if cfg.p_rd is not None else alpha,
    }
    return Plan(n_aug, strengths)


def augmented_rows(splits: ArtifactRef, cfg: AugmentConfig, seed: int, shard: Shard,
                   workdir: Path) -> tuple[pa.Table, dict]:
    """The rows of one shard of the split table, each followed by its EDA copies if it is a training row, as an
    Arrow table of `AUGMENTED_SCHEMA`, and the shard's meta (plan, rows in, languages left untouched).

    The plan (copies per sentence) and the held-out sentences come from the whole table, so a shard's output
    is exactly its slice of the unsharded output.
    """
    frame = read_parquet(splits, workdir).to_pandas()
    is_train = frame["split"] == "train"
    chosen = plan(cfg, int(is_train.sum()))
    heldout = set(frame.loc[~is_train, "text"].map(normalize_text))
    synonyms = Synonyms(cfg.wordnet_dir).lookup if chosen.n_aug else None
    start, stop = shard.bounds(len(frame))
    part = frame.iloc[start:stop]

    started, rows, skipped = time.perf_counter(), [], {}
    for done, row in enumerate(part.itertuples(index=False), start=1):
        rows.append({**row._asdict(), "source_id": row.row_id, "is_augmented": False, "ops": "", "copy": 0})
        if row.split == "train" and chosen.n_aug and (language := eda.skip_reason(row.text, cfg.language)):
            skipped[language] = skipped.get(language, 0) + 1  # WordNet is English: left untouched, counted
        elif row.split == "train" and chosen.n_aug:
            for copy, op, text in copies_of(row.text, row.row_id, chosen, seed, synonyms, heldout,
                                             cfg.protected_words):
                rows.append({"row_id": sha256_hex(f"aug|{row.row_id}|{copy}")[:16], "text": text,
                             "label": row.label, "split": "train", "source_id": row.row_id,
                             "is_augmented": True, "ops": op, "copy": copy})
        if done == len(part) // 2:
            faults.point("augment:mid")
        if done % 2000 == 0:
            log.info("augment: %d/%d sentences of shard %d/%d, %.0f sentences/s", done, len(part), shard.index + 1,
                     shard.count, done / (time.perf_counter() - started))
    out = pd.DataFrame(rows, columns=AUGMENTED_SCHEMA.names)
    meta = {"n_aug": chosen.n_aug, "strengths": chosen.strengths, "rows_in": len(part),
            "skipped_languages": dict(sorted(skipped.items()))}
    return to_arrow(out, AUGMENTED_SCHEMA), meta


def augment_shard(splits: ArtifactRef, cfg: AugmentConfig, seed: int, shard: Shard, workdir: Path) -> ArtifactRef:
    """One shard of augment on the Dask runner (`augmented_rows`), written for the merge to join."""
    table, meta = augmented_rows(splits, cfg, seed, shard, workdir)
    return write_parquet(workdir, "augment-shards", table, meta)


def augment_merge(shards: list[ArtifactRef], splits: ArtifactRef, cfg: AugmentConfig, seed: int,
                  workdir: Path) -> ArtifactRef:
    """Join the augmented shards (Dask runner) in row order and write the step's output (`write_augmented`)."""
    return write_augmented([(read_parquet(ref, workdir), ref.meta) for ref in shards], splits, cfg, workdir)


def write_augmented(parts: list[tuple[pa.Table, dict]], splits: ArtifactRef, cfg: AugmentConfig,
                    workdir: Path) -> ArtifactRef:
    """Join the parts `augmented_rows` made, in row order, check the whole table, and write it.

    Returns the reference of the augmented Parquet; `meta` has rows in and out and the plan used.
    """
    out = AugmentedTable.validate(pa.concat_tables([table for table, _ in parts]).to_pandas())
    added = int(out["is_augmented"].sum())
    chosen = parts[0][1]
    skipped: dict[str, int] = {}
    for _, part_meta in parts:
        for language, count in part_meta.get("skipped_languages", {}).items():
            skipped[language] = skipped.get(language, 0) + count
    meta = {"rows_in": splits.rows, "rows_out": len(out), "augmented_rows": added, "n_aug": chosen["n_aug"],
            "strengths": chosen["strengths"], "labels": splits.meta.get("labels"), "shards": len(parts),
            "skipped_not_english": sum(skipped.values()), "skipped_languages": dict(sorted(skipped.items()))}
    log.info("augment: %d rows in, %d augmented rows added (n_aug=%d)", splits.rows, added, chosen["n_aug"])
    if skipped:
        log.info("augment: %d training sentences left untouched, not English (WordNet is English; "
                 "augment.language=%s): %s", sum(skipped.values()), cfg.language,
                 ", ".join(f"{lang} {n}" for lang, n in sorted(skipped.items())))
    return write_parquet(workdir, "augment", to_arrow(out, AUGMENTED_SCHEMA), meta)


def augment(splits: ArtifactRef, cfg: AugmentConfig, seed: int, workdir: Path) -> ArtifactRef:
    """Every split row plus `n_aug` EDA copies of each training row, tagged with source and operation: the
    whole table in one pass (the threads runner), byte-identical to the shards joined by `augment_merge`."""
    return write_augmented([augmented_rows(splits, cfg, seed, WHOLE, workdir)], splits, cfg, workdir)


def copies_of(text: str, source_id: str, chosen: Plan, seed: int, synonyms, heldout: set[str],
              protected_words=()) -> list[tuple[int, str, str]]:
    """Up to `chosen.n_aug` distinct augmented versions of `text`, as (copy index, operation, text)."""
    words = text.split()
    seen = {normalize_text(text)}
    first = int(sha256_hex(f"{seed}|{source_id}|ops"), 16) % len(eda.OPERATIONS)
    out = []
    for copy in range(1, chosen.n_aug + 1):
        rng = random.Random(sha256_hex(f"{seed}|{source_id}|{copy}"))
        for attempt in range(len(eda.OPERATIONS)):
            op = eda.OPERATIONS[(first + copy - 1 + attempt) % len(eda.OPERATIONS)]
            candidate = " ".join(eda.apply(op, words, chosen.strengths[op], rng, synonyms, protected_words))
            norm = normalize_text(candidate)
            if norm and norm not in seen and norm not in heldout:
                seen.add(norm)
                out.append((copy, op, candidate))
                break
    return out


augment_task = step_task(augment)
augment_shard_task = step_task(augment_shard)
augment_merge_task = step_task(augment_merge)
augment_sharded = ShardedStep(augment_task, augment_shard_task, augment_merge_task)
