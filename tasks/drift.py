"""Step 1b, drift: compare the rows that are new in this run's data with the data they are meant to resemble.

Two baselines, each compared with the rows of this run's validated data whose row id it does not hold (the
*new* rows), so that the two samples are disjoint and independent, as the tests assume:
- `last_run`: the validated data of the last successful run in the workdir (what changed this week);
- `champion_data`: the validated data the current champion was trained on (its lineage's `validated_sha256`),
  so that slow drift, a little every week, is still seen when it adds up.
A baseline identical to the other one is compared once.

Three checks per comparison, each a permutation test (the p-value is exact under the null hypothesis that the
new sentences and the baseline's sentences are exchangeable, i.e. drawn from the same source; Monte Carlo
with `validate.drift_permutations` resamples, seeded from the two data hashes so a re-run reports the same
figures) plus a minimum effect size, so that with thousands of rows a trivial difference is not called drift:
- labels: chi-square statistic of the 2 x k table (label counts permuted with their margins fixed, i.e. drawn
  from the multivariate hypergeometric); effect = Cramér's V (`scipy.stats.contingency.association`);
- length: Kolmogorov-Smirnov statistic D of the text lengths in words (permuted the same way, which keeps
  the test exact despite the many tied lengths); effect = D;
- unseen_tokens: the share of the new rows' word occurrences absent from the baseline's vocabulary, one-sided;
  the null distribution re-draws a baseline of the baseline's size and a new sample of the new rows' size from
  the pooled sentences (whole sentences, so words repeated within a sentence do not fake precision);
  effect = the observed share minus the share expected from the baseline's own vocabulary growth curve at its
  size (leave one sentence out: occurrences of words found in one baseline sentence only / all its occurrences,
  Good-Turing's missing mass counted by sentence).
Every test of a run shares `validate.drift_alpha` (Bonferroni: each runs at alpha / (3 x comparisons)), so a
run on fresh data from the same source raises a false alarm at most `drift_alpha` of the time.
A new or vanished label is always reported. `validate.drift = fail` turns detected drift into invalid data.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from core.storage.caching import step_task
from schemas.config import ValidateConfig
from core.errors import Failure, InvalidData
from core.text.identity import unit_hash
from core.storage.artifacts import ArtifactRef, read_parquet, store_json

log = logging.getLogger(__name__)
WORD = re.compile(r"\w+", re.UNICODE)
N_CHECKS = 3
MAX_SENTENCES = 10_000  # per sample, for the unseen-word permutations (a hash-ordered subsample beyond)
CHUNK = 250  # permutations computed at once
BASELINES = {"last_run": "the last successful run", "champion_data": "the current champion's training data"}


def rng_for(*parts: str) -> np.random.Generator:
    """A generator seeded from `parts` (e.g. the two data hashes): the same data give the same p-values."""
    return np.random.default_rng(int.from_bytes(hashlib.sha256("\0".join(parts).encode()).digest()[:8], "big"))


def _monte_carlo_p(null: np.ndarray, observed: float) -> float:
    """(1 + resamples at least as extreme) / (1 + resamples): exact level for a Monte Carlo test."""
    return float((1 + np.count_nonzero(null >= observed - 1e-12)) / (1 + len(null)))


def label_check(reference: list[str], current: list[str], cfg: ValidateConfig, rng: np.random.Generator | None = None,
                alpha: float | None = None) -> dict[str, Any]:
    """Chi-square permutation test of the label proportions; drift if p < alpha and Cramér's V >= the minimum
    effect, or if a label is new or vanished."""
    rng = rng or rng_for("labels")
    alpha = cfg.drift_alpha / N_CHECKS if alpha is None else alpha
    labels = sorted(set(reference) | set(current))
    ref_counts, cur_counts = Counter(reference), Counter(current)
    table = np.array([[ref_counts[l] for l in labels], [cur_counts[l] for l in labels]], dtype=np.int64)
    kept = table[:, table.sum(axis=0) > 0]
    chi2, p, cramers_v = 0.0, 1.0, 0.0
    if kept.shape[1] > 1 and kept.sum(axis=1).min() > 0:
        totals, n_cur = kept.sum(axis=0), int(kept[1].sum())
        expected_cur = n_cur * totals / totals.sum()
        expected_ref = totals - expected_cur
        weight = 1 / expected_cur + 1 / expected_ref  # (O - E)^2 is the same in both rows of a 2 x k table
        chi2 = float(((kept[1] - expected_cur) ** 2 * weight).sum())
        draws = rng.multivariate_hypergeometric(totals, n_cur, size=cfg.drift_permutations)
        p = _monte_carlo_p(((draws - expected_cur) ** 2 * weight).sum(axis=1), chi2)
        # Imported here: scipy.stats takes ~1 s to import, and an unchanged re-run has no new rows to test.
        from scipy.stats.contingency import association

        cramers_v = float(association(kept, method="cramer"))
    added = sorted(set(current) - set(reference))
    removed = sorted(set(reference) - set(current))
    return {
        "test": "chi-square (permutation)", "p_value": p, "alpha": alpha, "chi2": round(chi2, 4),
        "cramers_v": round(cramers_v, 4), "n_reference": len(reference), "n_current": len(current),
        "reference_share": {l: round(ref_counts[l] / max(1, len(reference)), 4) for l in labels},
        "current_share": {l: round(cur_counts[l] / max(1, len(current)), 4) for l in labels},
        "new_labels": added, "vanished_labels": removed,
        "drift": bool(added or removed or (p < alpha and cramers_v >= cfg.drift_min_effect)),
    }


def _ks_from_counts(ref_counts: np.ndarray, cur_counts: np.ndarray) -> np.ndarray:
    """KS statistic from histograms over the same sorted values (last axis), for one or many samples."""
    ref_cdf = np.cumsum(ref_counts, axis=-1) / ref_counts.sum(axis=-1, keepdims=True)
    cur_cdf = np.cumsum(cur_counts, axis=-1) / cur_counts.sum(axis=-1, keepdims=True)
    return np.abs(ref_cdf - cur_cdf).max(axis=-1)


def length_check(reference: list[str], current: list[str], cfg: ValidateConfig, rng: np.random.Generator | None = None,
                 alpha: float | None = None) -> dict[str, Any]:
    """Kolmogorov-Smirnov permutation test of the text lengths in words; drift if p < alpha and D >= the
    minimum effect."""
    rng = rng or rng_for("length")
    alpha = cfg.drift_alpha / N_CHECKS if alpha is None else alpha
    ref_len = np.array([len(t.split()) for t in reference])
    cur_len = np.array([len(t.split()) for t in current])
    statistic, p = 0.0, 1.0
    if len(ref_len) and len(cur_len):
        values = np.union1d(ref_len, cur_len)
        ref_h = np.searchsorted(values, ref_len)
        ref_counts = np.bincount(ref_h, minlength=len(values))
        cur_counts = np.bincount(np.searchsorted(values, cur_len), minlength=len(values))
        statistic = float(_ks_from_counts(ref_counts, cur_counts))
        totals = ref_counts + cur_counts
        draws = rng.multivariate_hypergeometric(totals, len(cur_len), size=cfg.drift_permutations)
        p = _monte_carlo_p(_ks_from_counts(totals - draws, draws), statistic)
    return {
        "test": "kolmogorov-smirnov (permutation)", "p_value": p, "alpha": alpha, "statistic": round(statistic, 4),
        "reference_median_words": float(np.median(ref_len)) if len(ref_len) else None,
        "current_median_words": float(np.median(cur_len)) if len(cur_len) else None,
        "drift": bool(p < alpha and statistic >= cfg.drift_min_effect),
    }


def _cap(texts: list[str]) -> list[str]:
    if len(texts) <= MAX_SENTENCES:
        return texts
    return sorted(texts, key=lambda t: unit_hash("drift-sample", t))[:MAX_SENTENCES]


def unseen_check(reference: list[str], current: list[str], cfg: ValidateConfig, rng: np.random.Generator | None = None,
                 alpha: float | None = None) -> dict[str, Any]:
    """Share of the current sentences' word occurrences unseen in the reference, against its permutation null."""
    from scipy import sparse

    rng = rng or rng_for("unseen")
    alpha = cfg.drift_alpha / N_CHECKS if alpha is None else alpha
    reference, current = _cap(reference), _cap(current)
    sentences = [WORD.findall(t.casefold()) for t in reference + current]
    n_ref = len(reference)
    ref_words = Counter(w for s in sentences[:n_ref] for w in s)
    vocabulary = set(ref_words)
    current_words = [w for s in sentences[n_ref:] for w in s]
    share = sum(w not in vocabulary for w in current_words) / max(1, len(current_words))
    # The reference's own growth curve at its size: leaving one sentence out, the share of its word occurrences
    # the other sentences never show (Good-Turing's missing mass, counted by sentence, as words come in bursts).
    in_sentences = Counter(w for s in sentences[:n_ref] for w in set(s))
    expected = sum(ref_words[w] for w, df in in_sentences.items() if df == 1) / max(1, sum(ref_words.values()))
    p, null_mean = 1.0, None
    if n_ref and current_words:
        ids: dict[str, int] = {}
        rows, cols, counts = [], [], []
        for i, words in enumerate(sentences):
            for word, count in Counter(words).items():
                rows.append(i)
                cols.append(ids.setdefault(word, len(ids)))
                counts.append(count)
        shape = (len(sentences), len(ids))
        occurrences = sparse.csr_matrix((np.array(counts, dtype=np.float32), (rows, cols)), shape=shape).T.tocsr()
        presence = occurrences.copy()
        presence.data[:] = 1.0
        lengths = np.asarray(occurrences.sum(axis=0)).ravel()
        null = []
        for start in range(0, cfg.drift_permutations, CHUNK):
            size = min(CHUNK, cfg.drift_permutations - start)
            in_ref = np.zeros((len(sentences), size), dtype=np.float32)
            for j in range(size):
                in_ref[rng.permutation(len(sentences))[:n_ref], j] = 1.0
            seen = np.asarray(presence @ in_ref) > 0
            unseen = (np.asarray(occurrences @ (1.0 - in_ref)) * ~seen).sum(axis=0)
            null.append(unseen / np.maximum(1.0, lengths @ (1.0 - in_ref)))
        null = np.concatenate(null)
        p, null_mean = _monte_carlo_p(null, share), round(float(null.mean()), 4)
    return {
        "test": "unseen-word share (permutation, one-sided)", "p_value": p, "alpha": alpha,
        "current_unseen_share": round(share, 4), "expected_unseen_share": round(expected, 4),
        "permutation_mean_share": null_mean, "increase": round(share - expected, 4),
        "drift": bool(p < alpha and share - expected >= cfg.drift_min_unseen_increase),
    }


def compare(reference: dict[str, list], current: dict[str, list], cfg: ValidateConfig, alpha: float,
            seed: str = "") -> dict[str, Any]:
    """The three checks of the rows of `current` that `reference` does not hold against `reference`.

    Both are column dicts with `row_id`, `text`, `label`. New and vanished labels are judged on the whole data.
    """
    # Enough resamples that a p-value below alpha is reachable with room to spare (the smallest is 1 / (1 + B)).
    cfg = cfg.model_copy(update={"drift_permutations": max(cfg.drift_permutations, math.ceil(4 / alpha))})
    known = set(reference["row_id"])
    new = [i for i, rid in enumerate(current["row_id"]) if rid not in known]
    current_ids = set(current["row_id"])
    rows = {"reference": len(known), "current": len(current["row_id"]), "new": len(new),
            "no_longer_present": sum(rid not in current_ids for rid in known)}
    new_texts = [current["text"][i] for i in new]
    new_labels = [current["label"][i] for i in new]
    labels = label_check(reference["label"], new_labels, cfg, rng_for(seed, "labels"), alpha)
    added = sorted(set(current["label"]) - set(reference["label"]))
    removed = sorted(set(reference["label"]) - set(current["label"]))
    labels.update(new_labels=added, vanished_labels=removed)
    labels["drift"] = bool(added or removed or (labels["p_value"] < alpha
                                                 and labels["cramers_v"] >= cfg.drift_min_effect))
    if not new:
        checks = {"labels": labels} if added or removed else {}
        drifted = [name for name, check in checks.items() if check["drift"]]
        return {"status": "drift" if drifted else "no new rows", "rows": rows, "checks": checks, "drifted": drifted}
    checks = {
        "labels": labels,
        "length": length_check(reference["text"], new_texts, cfg, rng_for(seed, "length"), alpha),
        "unseen_tokens": unseen_check(reference["text"], new_texts, cfg, rng_for(seed, "unseen"), alpha),
    }
    drifted = [name for name, check in checks.items() if check["drift"]]
    return {"status": "drift" if drifted else "ok", "rows": rows, "checks": checks, "drifted": drifted}


def drift(validated: ArtifactRef, reference: ArtifactRef | None, cfg: ValidateConfig, workdir: Path,
          champion_data: ArtifactRef | None = None) -> ArtifactRef:
    """Compare the new rows of `validated` with `reference` (the last successful run's data; None on a first
    run) and with `champion_data` (the data the current champion was trained on, if known); write and return
    the drift report.

    Raises `InvalidData` when drift is found and `cfg.drift == "fail"`.
    """
    baselines: dict[str, ArtifactRef] = {}
    missing: dict[str, str] = {}
    for name, ref in (("last_run", reference), ("champion_data", champion_data)):
        if ref is None:
            continue
        if any(ref.sha256 == other.sha256 for other in baselines.values()):
            missing[name] = "the same data as the last successful run"
        elif ref.is_intact(workdir):
            baselines[name] = ref
        else:
            missing[name] = "no longer in the workdir (pruned or altered)"
    comparisons: dict[str, Any] = {name: {"status": "not compared", "reason": why} for name, why in missing.items()}
    if not baselines:
        report: dict[str, Any] = {
            "status": "no reference", "checks": {}, "drifted": [], "comparisons": comparisons,
            "reason": "no earlier successful run in this workdir" if reference is None and champion_data is None
            else "the reference data is no longer in the workdir"}
    else:
        alpha = cfg.drift_alpha / (N_CHECKS * len(baselines))
        cur = read_parquet(validated, workdir, columns=["row_id", "text", "label"]).to_pydict()
        for name, ref in baselines.items():
            data = read_parquet(ref, workdir, columns=["row_id", "text", "label"]).to_pydict()
            comparisons[name] = {**compare(data, cur, cfg, alpha, seed=f"{ref.sha256}\0{validated.sha256}"),
                                 "reference": {"sha256": ref.sha256, "rows": len(data["row_id"]),
                                               **{k: v for k, v in ref.meta.items() if k in ("run_id", "version")}}}
        comparisons = {name: comparisons[name] for name in BASELINES if name in comparisons}
        drifted = sorted({check for c in comparisons.values() for check in c.get("drifted", [])})
        primary = next(c for name, c in comparisons.items() if name in baselines)
        report = {"status": "drift" if drifted else "ok", "drifted": drifted, "comparisons": comparisons,
                  "checks": primary["checks"], "rows": primary["rows"], "alpha_per_test": alpha, "policy": cfg.drift,
                  "reference": primary["reference"]}
    failures = []
    for name, comparison in comparisons.items():
        for check in comparison.get("drifted", []):
            details = comparison["checks"][check]
            log.warning("drift: %s changed since %s: %s", check, BASELINES[name], _describe(details))
            failures.append(Failure(validated.meta.get("source", "input"), "file", "",
                                    f"data drift in {check} since {BASELINES[name]} ({_describe(details)}); "
                                    "set validate.drift=warn to train anyway"))
    if failures and cfg.drift == "fail":
        raise InvalidData(failures)
    return store_json(workdir, "drift", report, rows=validated.rows, meta={"report": report})


def _describe(check: dict[str, Any]) -> str:
    keys = ("p_value", "cramers_v", "statistic", "increase", "new_labels", "vanished_labels")
    return ", ".join(f"{k}={check[k]}" for k in keys if k in check and check[k] not in ([], None))


# Never cached: like the gate, it depends on the workdir's state (its last successful run), not on inputs alone.
drift_task = step_task(drift, cached=False)
