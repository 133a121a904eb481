"""Step 1b, drift: compare this run's validated data with that of the last successful run in the workdir.

Three checks, each a statistical test (so the threshold follows the sample sizes) plus a minimum effect
size (so that, with thousands of rows, a trivial difference is not called drift):
- label proportions: chi-square test of homogeneity, effect = Cramér's V;
- text length in words: two-sample Kolmogorov-Smirnov test, effect = the KS statistic D;
- share of word occurrences unseen in the reference vocabulary, against the share a held-out half of the
  reference shows against its other half (the unseen rate to expect from sampling alone): a one-sided
  two-proportion z-test, effect = the increase in the unseen share.
The three tests share `validate.drift_alpha` (Bonferroni: each runs at alpha / 3), so a run on fresh data
from the same source raises a false alarm at most `drift_alpha` of the time, whatever its size.
A new or vanished label is always reported. `validate.drift = fail` turns detected drift into invalid data.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from tasks.caching import step_task
from tasks.config import ValidateConfig
from tasks.errors import Failure, InvalidData
from tasks.identity import unit_hash
from tasks.io import ArtifactRef, read_parquet, store_json

log = logging.getLogger(__name__)
WORD = re.compile(r"\w+", re.UNICODE)
N_CHECKS = 3


def label_check(reference: list[str], current: list[str], cfg: ValidateConfig) -> dict[str, Any]:
    """Chi-square test of the label proportions; drift if p < alpha / 3 and Cramér's V >= the minimum effect."""
    from scipy.stats import chi2_contingency

    labels = sorted(set(reference) | set(current))
    ref_counts, cur_counts = Counter(reference), Counter(current)
    table = np.array([[ref_counts[l] for l in labels], [cur_counts[l] for l in labels]])
    kept = table[:, table.sum(axis=0) > 0]
    chi2, p, _, _ = chi2_contingency(kept) if kept.shape[1] > 1 else (0.0, 1.0, 0, None)
    cramers_v = math.sqrt(chi2 / (table.sum() * max(1, kept.shape[1] - 1)))
    added = sorted(set(current) - set(reference))
    removed = sorted(set(reference) - set(current))
    return {
        "test": "chi-square", "p_value": float(p), "cramers_v": round(cramers_v, 4),
        "reference_share": {l: round(ref_counts[l] / len(reference), 4) for l in labels},
        "current_share": {l: round(cur_counts[l] / len(current), 4) for l in labels},
        "new_labels": added, "vanished_labels": removed,
        "drift": bool(added or removed or (p < cfg.drift_alpha / N_CHECKS and cramers_v >= cfg.drift_min_effect)),
    }


def length_check(reference: list[str], current: list[str], cfg: ValidateConfig) -> dict[str, Any]:
    """KS test of the text lengths in words; drift if p < alpha / 3 and D >= the minimum effect."""
    from scipy.stats import ks_2samp

    ref_len = np.array([len(t.split()) for t in reference])
    cur_len = np.array([len(t.split()) for t in current])
    result = ks_2samp(ref_len, cur_len)
    return {
        "test": "kolmogorov-smirnov", "p_value": float(result.pvalue), "statistic": round(float(result.statistic), 4),
        "reference_median_words": float(np.median(ref_len)), "current_median_words": float(np.median(cur_len)),
        "drift": bool(result.pvalue < cfg.drift_alpha / N_CHECKS and result.statistic >= cfg.drift_min_effect),
    }


def unseen_check(reference: list[str], current: list[str], cfg: ValidateConfig) -> dict[str, Any]:
    """Share of current word occurrences unseen in the reference, against the reference's own held-out rate."""
    from scipy.stats import norm

    def words(texts):
        return [w for t in texts for w in WORD.findall(t.casefold())]

    vocabulary = set(words(reference))
    current_words = words(current)
    unseen = sum(w not in vocabulary for w in current_words)
    half_a = [t for t in reference if unit_hash("drift-half", t) < 0.5]
    half_b = [t for t in reference if unit_hash("drift-half", t) >= 0.5]
    vocab_a = set(words(half_a))
    held_out = words(half_b)
    expected_unseen = sum(w not in vocab_a for w in held_out)
    n1, n2 = max(1, len(current_words)), max(1, len(held_out))
    p1, p2 = unseen / n1, expected_unseen / n2
    pooled = (unseen + expected_unseen) / (n1 + n2)
    se = math.sqrt(max(pooled * (1 - pooled) * (1 / n1 + 1 / n2), 1e-12))
    p_value = float(norm.sf((p1 - p2) / se))
    return {
        "test": "two-proportion z (one-sided)", "p_value": p_value, "current_unseen_share": round(p1, 4),
        "expected_unseen_share": round(p2, 4), "increase": round(p1 - p2, 4),
        "drift": bool(p_value < cfg.drift_alpha / N_CHECKS and p1 - p2 >= cfg.drift_min_unseen_increase),
    }


def drift(validated: ArtifactRef, reference: ArtifactRef | None, cfg: ValidateConfig, workdir: Path) -> ArtifactRef:
    """Compare `validated` with `reference` (None on a first run); write and return the drift report.

    Raises `InvalidData` when drift is found and `cfg.drift == "fail"`.
    """
    if reference is None or not reference.is_intact(workdir):
        report = {"status": "no reference", "reason": "no earlier successful run in this workdir"
                  if reference is None else "the reference run's validated data is no longer in the workdir",
                  "checks": {}, "drifted": []}
    else:
        ref = read_parquet(reference, workdir, columns=["text", "label"]).to_pydict()
        cur = read_parquet(validated, workdir, columns=["text", "label"]).to_pydict()
        checks = {
            "labels": label_check(ref["label"], cur["label"], cfg),
            "length": length_check(ref["text"], cur["text"], cfg),
            "unseen_tokens": unseen_check(ref["text"], cur["text"], cfg),
        }
        drifted = [name for name, check in checks.items() if check["drift"]]
        report = {"status": "drift" if drifted else "ok", "checks": checks, "drifted": drifted,
                  "reference": {"sha256": reference.sha256, "rows": reference.rows},
                  "policy": cfg.drift}
    for name in report["drifted"]:
        log.warning("drift: %s changed since the last successful run: %s", name, report["checks"][name])
    if report["drifted"] and cfg.drift == "fail":
        source = validated.meta.get("source", "input")
        raise InvalidData([Failure(source, "file", "", f"data drift in {name} since the last successful run "
                                   f"({_describe(report['checks'][name])}); set validate.drift=warn to train anyway")
                           for name in report["drifted"]])
    return store_json(workdir, "drift", report, rows=validated.rows, meta={"report": report})


def _describe(check: dict[str, Any]) -> str:
    keys = ("p_value", "cramers_v", "statistic", "increase", "new_labels", "vanished_labels")
    return ", ".join(f"{k}={check[k]}" for k in keys if k in check and check[k] not in ([], None))


# Never cached: like the gate, it depends on the workdir's state (its last successful run), not on inputs alone.
drift_task = step_task(drift, cached=False)
