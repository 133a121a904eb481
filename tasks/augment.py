"""Step 3, augment: add EDA copies of the training sentences; validation and test pass through untouched.

Each copy applies one EDA operation, rotating through the four so that every sentence gets a mix. A copy's
randomness is seeded from (seed, source row id, copy index) alone, so the output is byte-identical whatever
the row order, the number of workers or the process. A copy that comes out unchanged, repeats an earlier
copy, or equals a validation or test sentence is dropped, so no held-out sentence ever reaches training.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from schemas.tables import AUGMENTED_SCHEMA, AugmentedTable, to_arrow
from tasks import eda, faults
from tasks.caching import step_task
from tasks.config import AugmentConfig
from tasks.identity import normalize_text, sha256_hex
from tasks.io import ArtifactRef, read_parquet, write_parquet
from tasks.wordnet import Synonyms

log = logging.getLogger(__name__)

# Wei & Zou's recommendation by training-set size: (rows below, alpha, copies per sentence).
PAPER_DEFAULTS = ((1000, 0.05, 16), (5000, 0.05, 8), (None, 0.1, 4))


@dataclass(frozen=True)
class Plan:
    """What augmentation will do: copies per sentence and the strength of each operation."""

    n_aug: int
    strengths: dict[str, float]


def plan(cfg: AugmentConfig, n_train: int) -> Plan:
    """Resolve `n_aug = auto` and the per-operation strengths for a training split of `n_train` rows."""
    alpha = cfg.alpha
    if cfg.n_aug == "auto":
        for below, auto_alpha, copies in PAPER_DEFAULTS:
            if below is None or n_train < below:
                n_aug, alpha = copies, auto_alpha
                break
    else:
        n_aug = cfg.n_aug
    strengths = {
        "sr": cfg.alpha_sr if cfg.alpha_sr is not None else alpha,
        "ri": cfg.alpha_ri if cfg.alpha_ri is not None else alpha,
        "rs": cfg.alpha_rs if cfg.alpha_rs is not None else alpha,
        "rd": cfg.p_rd if cfg.p_rd is not None else alpha,
    }
    return Plan(n_aug, strengths)


def augment(splits: ArtifactRef, cfg: AugmentConfig, seed: int, workdir: Path) -> ArtifactRef:
    """Write every split row plus `n_aug` EDA copies of each training row, tagged with source and operation.

    Returns the reference of the augmented Parquet; `meta` has rows in and out and the plan used.
    """
    frame = read_parquet(splits, workdir).to_pandas()
    is_train = frame["split"] == "train"
    chosen = plan(cfg, int(is_train.sum()))
    heldout = set(frame.loc[~is_train, "text"].map(normalize_text))
    synonyms = Synonyms(cfg.wordnet_dir).lookup if chosen.n_aug else None

    started, rows = time.perf_counter(), []
    for done, row in enumerate(frame.itertuples(index=False), start=1):
        rows.append({**row._asdict(), "source_id": row.row_id, "is_augmented": False, "ops": "", "copy": 0})
        if row.split == "train" and chosen.n_aug:
            for copy, op, text in copies_of(row.text, row.row_id, chosen, seed, synonyms, heldout,
                                             cfg.protected_words):
                rows.append({"row_id": sha256_hex(f"aug|{row.row_id}|{copy}")[:16], "text": text,
                             "label": row.label, "split": "train", "source_id": row.row_id,
                             "is_augmented": True, "ops": op, "copy": copy})
        if done == len(frame) // 2:
            faults.point("augment:mid")
        if done % 2000 == 0:
            log.info("augment: %d/%d sentences, %.0f sentences/s", done, len(frame),
                     done / (time.perf_counter() - started))
    out = AugmentedTable.validate(pd.DataFrame(rows, columns=AUGMENTED_SCHEMA.names))
    added = int(out["is_augmented"].sum())
    meta = {"rows_in": len(frame), "rows_out": len(out), "augmented_rows": added, "n_aug": chosen.n_aug,
            "strengths": chosen.strengths, "labels": splits.meta.get("labels")}
    log.info("augment: %d training sentences gave %d copies (n_aug=%d)", int(is_train.sum()), added, chosen.n_aug)
    return write_parquet(workdir, "augment", to_arrow(out, AUGMENTED_SCHEMA), meta)


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
