"""Macro-F1 over many resamples at once, and the two bootstraps built on it (scipy.stats.bootstrap).

- `bootstrap_intervals`: percentile-bootstrap 95 % intervals of one model's accuracy and macro-F1 (evaluate);
- `paired_bootstrap`: the paired bootstrap of the macro-F1 difference between two models scored on the same
  rows (the gate), with what those rows can detect.

Resampling, batching and the percentile intervals are scipy's (`scipy.stats.bootstrap`, paired and
vectorised); what stays here is the statistic, vectorised over resamples, because scikit-learn's `f1_score`
scores one sample at a time (1,000 calls per bootstrap).
"""

from __future__ import annotations

from typing import Any

import numpy as np

BOOTSTRAP_SAMPLES = 1000


def macro_f1_many(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> np.ndarray:
    """Macro-F1 of each row of (resamples x n) int label arrays, vectorised; float64 (resamples,).

    Classes absent from both truth and prediction score 0, as scikit-learn's `f1_score(labels=range(n_labels),
    average="macro", zero_division=0)` (a test checks the two agree)."""
    scores = np.zeros(y_true.shape[0])
    for k in range(n_labels):
        tp = ((y_true == k) & (y_pred == k)).sum(axis=1)
        fp = ((y_true != k) & (y_pred == k)).sum(axis=1)
        fn = ((y_true == k) & (y_pred != k)).sum(axis=1)
        denominator = 2 * tp + fp + fn
        scores += np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    return scores / n_labels


def _vectorised(score):
    """A statistic for scipy.stats.bootstrap from `score`, which maps (batch, n) resampled arrays to (batch,)
    values, or to (m, batch) for m statistics at once (scipy takes vector-valued statistics): 1-D rows give
    the scalar (or the m values) of the rows themselves."""
    def statistic(*arrays: np.ndarray, axis: int = -1) -> np.ndarray:
        values = score(*(np.atleast_2d(a) for a in arrays))
        return values if np.ndim(arrays[0]) > 1 else values[..., 0]
    return statistic


def _bootstrap(arrays: tuple[np.ndarray, ...], score, samples: int, seed: int, confidence: float = 0.95):
    from scipy.stats import bootstrap

    return bootstrap(arrays, _vectorised(score), n_resamples=samples, paired=True, vectorized=True, axis=-1,
                     confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))


def bootstrap_intervals(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int, samples: int = BOOTSTRAP_SAMPLES,
                        seed: int = 0) -> dict[str, list[float]]:
    """95 % percentile-bootstrap intervals of accuracy and macro-F1 over resampled rows (fixed seed).

    Takes int label arrays (n,); returns {"accuracy": [low, high], "macro_f1": [low, high]}, fractions in [0, 1].
    Both from one bootstrap (the same resamples)."""
    result = _bootstrap((y_true, y_pred), lambda y, p: np.stack([(y == p).mean(axis=1), macro_f1_many(y, p, n_labels)]),
                        samples, seed)
    low, high = result.confidence_interval
    return {name: [float(low[i]), float(high[i])] for i, name in enumerate(("accuracy", "macro_f1"))}


def paired_bootstrap(y: np.ndarray, challenger: np.ndarray, baseline: np.ndarray, n_labels: int, samples: int,
                     confidence: float, seed: int = 0, power: float = 0.8) -> dict[str, Any]:
    """Paired bootstrap of macro-F1(challenger) - macro-F1(baseline) over resampled rows.

    Takes int label arrays (n,) of the truth and of both models' predictions on the same rows. Besides the
    difference, its two-sided `confidence` interval and the one-sided `lower_bound`, what these rows can
    detect: `promotion_threshold`, the one-sided half-width (difference - lower bound: the smallest observed
    gain that would promote), and `detectable_difference`, the minimum detectable effect of a power
    calculation, (z_confidence + z_power) x the bootstrap standard error of the difference: a true gain that
    large is promoted with probability `power` (normal approximation; e.g. van Belle, Statistical Rules of
    Thumb, 2nd ed. 2008, section 2.4; the standard error from the bootstrap, Efron & Tibshirani 1993, ch. 6).
    """
    from scipy.stats import norm

    def difference(truth, one, other):
        return macro_f1_many(truth, one, n_labels) - macro_f1_many(truth, other, n_labels)

    result = _bootstrap((y, challenger, baseline), difference, samples, seed, confidence)
    diffs = result.bootstrap_distribution
    point = float(difference(y[None], challenger[None], baseline[None])[0])
    lower = float(np.quantile(diffs, 1 - confidence))  # the one-sided bound: same resamples as the interval
    se = float(result.standard_error)
    return {"difference": point, "lower_bound": lower, "standard_error": se,
            "promotion_threshold": max(0.0, point - lower),
            "detectable_difference": float((norm.ppf(confidence) + norm.ppf(power)) * se), "power": power,
            "interval": [float(result.confidence_interval.low), float(result.confidence_interval.high)],
            "difference_histogram": dict(zip(("counts", "edges"), (a.tolist() for a in np.histogram(diffs, bins=40))))}


def _counts(y: np.ndarray, pred: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, false positives, false negatives of class `k` in each row of (resamples x n) arrays."""
    return (((y == k) & (pred == k)).sum(axis=1).astype(float), ((y != k) & (pred == k)).sum(axis=1).astype(float),
            ((y == k) & (pred != k)).sum(axis=1).astype(float))


PER_CLASS = {  # metric -> f(tp, fp, fn), 0 where undefined (scikit-learn's zero_division=0)
    "precision": lambda tp, fp, fn: np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0),
    "recall": lambda tp, fp, fn: np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0),
    "f1": lambda tp, fp, fn: np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0),
}


def class_intervals(y: np.ndarray, pred: np.ndarray, n_labels: int, samples: int = BOOTSTRAP_SAMPLES,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """95 % percentile-bootstrap intervals of per-class precision, recall and F1.

    Takes int label arrays (n,); returns {"precision"|"recall"|"f1": float64 (n_labels, 2) of [low, high]}.
    One bootstrap whose statistic is the vector of all metrics x classes, so the counts of each resample are
    computed once."""
    def every_metric(t: np.ndarray, p: np.ndarray) -> np.ndarray:  # (metrics x classes, resamples)
        counts = [_counts(t, p, k) for k in range(n_labels)]
        return np.stack([f(*c) for f in PER_CLASS.values() for c in counts])

    result = _bootstrap((y, pred), every_metric, samples, seed)
    low, high = (np.asarray(bound).reshape(len(PER_CLASS), n_labels) for bound in result.confidence_interval)
    return {metric: np.stack([low[i], high[i]], axis=1) for i, metric in enumerate(PER_CLASS)}


ECE_BINS = 15


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the support-weighted gap between confidence and accuracy over equal-width confidence bins."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            gap += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(gap)


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, macro-F1 (each with a bootstrap 95 % interval), per-class precision/recall/F1, confusion
    matrix, log loss, expected calibration error, and the majority-class baseline.

    A class with no test row is not measured: its per-class entry says `"measured": false`, it is listed in
    `unmeasured_classes`, and `macro_f1` (scikit-learn, zero_division=0) counts it as 0, as the contract has
    it; `macro_f1_measured` is the macro-F1 over the measured classes only (None if none is)."""
    from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score, log_loss,
                                 precision_recall_fscore_support)

    ids = list(range(len(labels)))
    y_pred = proba.argmax(axis=1)
    clipped = np.clip(proba, 1e-7, 1)  # log loss: clipped at 1e-7, then renormalised to sum to 1
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    majority = int(np.bincount(y_true, minlength=len(labels)).argmax()) if len(y_true) else 0
    baseline = np.full_like(y_true, majority)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        "macro_f1_measured": float(f1[support > 0].mean()) if (support > 0).any() else None,
        "log_loss": float(log_loss(y_true, clipped / clipped.sum(axis=1, keepdims=True), labels=ids)),
        "ece": expected_calibration_error(y_true, proba),
        "ci95": bootstrap_intervals(y_true, y_pred, len(labels)) if len(y_true) else {},
        "per_class": {
            label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                    "support": int(support[i]), "measured": bool(support[i] > 0)}
            for i, label in enumerate(labels)
        },
        "unmeasured_classes": [label for i, label in enumerate(labels) if support[i] == 0],
        "confusion_matrix": {"labels": labels, "rows_true_cols_predicted":
                             confusion_matrix(y_true, y_pred, labels=ids).tolist()},
        "majority_baseline": {
            "label": labels[majority],
            "accuracy": float(accuracy_score(y_true, baseline)),
            "macro_f1": float(f1_score(y_true, baseline, labels=ids, average="macro", zero_division=0)),
        },
    }
