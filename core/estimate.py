"""The honest estimate at tiny sizes: when a test split cannot measure, and the cross-validated figure instead.

With a few labelled rows per class a hash split holds out a third of them for validation and test, and the
handful of test sentences measure nothing (one sentence moves macro-F1 by points; the gate can detect no real
difference). Below `evaluate.min_test_per_class` expected test rows in some class, the run therefore keeps no
hold-out: every labelled row trains the model, and quality is *estimated* by repeated stratified k-fold
cross-validation on those rows (scikit-learn's RepeatedStratifiedKFold), training each fold as the run trains.

The interval is Nadeau & Bengio's corrected resampled t (C. Nadeau, Y. Bengio, "Inference for the
Generalization Error", Machine Learning 52:239-281, 2003; applied to repeated k-fold by R. Bouckaert, E. Frank,
"Evaluating the Replicability of Significance Tests for Comparing Learning Algorithms", PAKDD 2004): the folds'
training sets overlap, so their scores are correlated and the naive t-interval (variance / J) is far too narrow;
the correction inflates the variance to (1/J + n_test/n_train) * s^2.

Plain functions: the decision, the folds, the interval, and the gate's words when it cannot compare (reading the
registry); the step that trains the folds is `tasks.estimate`, the gate's use of the words `tasks.gate`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def unmeasurable(class_counts: dict[str, int], test_fraction: float, min_test_per_class: int) -> dict[str, Any] | None:
    """Whether the test split is too small to measure, decided before splitting from the labelled rows per class
    (`class_counts`, label -> rows) and `split.test_fraction`: None if every class is expected to have at least
    `min_test_per_class` test rows (or the rule is off, 0); else a dict: `class` (the smallest), `rows` (its
    labelled rows), `expected_test_rows`, `rows_needed_per_class` (rows a class needs for a measured gate),
    `more_rows_needed` (for the smallest class) and `reason` (in words, for the log and the gate).

    The expected count (rows times the fraction), not the hash split's draw, decides: it only grows with the
    data, so a file that gains rows leaves estimate mode once and does not flicker in and out of it."""
    if not min_test_per_class or not class_counts:
        return None
    label = min(class_counts, key=lambda k: (class_counts[k], k))
    rows = int(class_counts[label])
    expected = rows * test_fraction
    if expected >= min_test_per_class:
        return None
    needed = math.ceil(min_test_per_class / test_fraction - 1e-9)
    short = {k: int(n) for k, n in sorted(class_counts.items()) if n * test_fraction < min_test_per_class}
    return {"class": label, "rows": rows, "expected_test_rows": round(expected, 1),
            "min_test_per_class": int(min_test_per_class), "rows_needed_per_class": needed,
            "more_rows_needed": needed - rows, "short_classes": short,
            "reason": (f"the test split is too small to measure: class {label!r} has {rows} labelled rows, so about "
                       f"{expected:.0f} test rows at split.test_fraction={test_fraction}, fewer than "
                       f"evaluate.min_test_per_class={min_test_per_class}")}


def repeated_folds(labels: np.ndarray, folds: int, repeats: int, seed: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    """The (train positions, test positions) pairs of repeated stratified k-fold on `labels` (int, one per row),
    and the k used: `folds`, lowered to the smallest class's row count (each fold needs a row of every class
    for stratification), at least 2. Raises ValueError if some class has fewer than 2 rows."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    counts = np.bincount(labels)
    smallest = int(counts[counts > 0].min())
    if smallest < 2:
        raise ValueError("cross-validation needs at least 2 rows of every class")
    k = min(folds, smallest)
    splitter = RepeatedStratifiedKFold(n_splits=k, n_repeats=repeats, random_state=seed)
    return [(train, test) for train, test in splitter.split(np.zeros(len(labels)), labels)], k


def pooled_estimate(pooled: list[float], fold_scores: list[float], n_train: float, n_test: float,
                    confidence: float = 0.95) -> dict[str, float]:
    """The estimate a run reports: centred on the *pooled* out-of-fold figure (each repeat's predictions of every
    row scored at once, averaged over repeats), with the half-width of the corrected resampled t-interval of the
    folds' own scores (`corrected_resampled_t`). Why pooled: macro-F1 averaged over folds of a few rows is biased low
    (a class with one held-out row scores 0 or 1), and Forman & Scholz ("Apples-to-Apples in Cross-Validation
    Studies", SIGKDD Explorations 12(1), 2010) recommend computing F-measures from the pooled fold predictions; the
    folds' spread stays the measure of the uncertainty. Keys: `corrected_resampled_t`'s, with `mean` the pooled
    figure and `fold_mean` the folds' average."""
    folds = corrected_resampled_t(fold_scores, n_train, n_test, confidence)
    centre = float(np.mean(pooled))
    half = _half_width(fold_scores, n_train, n_test, confidence)
    return {**folds, "mean": round(centre, 5), "fold_mean": folds["mean"],
            "low": round(max(0.0, centre - half), 5), "high": round(min(1.0, centre + half), 5)}


def _half_width(scores, n_train: float, n_test: float, confidence: float) -> float:
    from scipy.stats import t

    values = np.asarray(scores, dtype=np.float64)
    j = len(values)
    if j < 2:
        return float("nan")
    return float(t.ppf(0.5 + confidence / 2, j - 1) * math.sqrt((1 / j + n_test / n_train) * values.var(ddof=1)))


def corrected_resampled_t(scores: list[float] | np.ndarray, n_train: int, n_test: int,
                          confidence: float = 0.95) -> dict[str, float]:
    """Mean of the folds' `scores` and its two-sided `confidence` interval by Nadeau & Bengio's corrected
    resampled t-test: variance (1/J + n_test/n_train) * s^2 with s^2 the folds' sample variance, J-1 degrees
    of freedom (J = len(scores)). `n_train` / `n_test`: rows trained / scored per fold (mean over folds).
    Returns mean, sd (of the folds), standard_error (corrected), low, high (clipped to [0, 1]) and J."""
    from scipy.stats import t

    values = np.asarray(scores, dtype=np.float64)
    j = len(values)
    mean = float(values.mean())
    sd = float(values.std(ddof=1)) if j > 1 else 0.0
    se = math.sqrt((1 / j + n_test / n_train) * sd ** 2) if j > 1 else float("nan")
    half = float(t.ppf(0.5 + confidence / 2, j - 1) * se) if j > 1 else float("nan")
    return {"mean": round(mean, 5), "sd": round(sd, 5), "standard_error": round(se, 5),
            "low": round(max(0.0, mean - half), 5), "high": round(min(1.0, mean + half), 5), "folds": j}


# The gate's words in estimate mode (`tasks.gate`): no test split to compare on, so it says so, says what the
# operator can do, and `gate.unmeasurable` decides: keep the champion (default: a model is not replaced on evidence
# that cannot tell the two apart) or promote on the estimate; with no champion the first model is promoted.

def _interval(figures: dict[str, Any]) -> str:
    return f"{figures['mean']:.4f} [{figures['low']:.4f}, {figures['high']:.4f}]"


def operator_advice(why: dict[str, Any]) -> str:
    """How many more rows to label for a measured gate, per class short of it, in words."""
    needed = why["rows_needed_per_class"]
    short = why.get("short_classes") or {why["class"]: why["rows"]}
    more = ", ".join(f"{needed - rows} more of {label!r}" for label, rows in sorted(short.items(), key=lambda x: x[1]))
    return (f"label at least {why['more_rows_needed']} more rows per class ({more}: {needed} rows a class give "
            f"about {why['min_test_per_class']} test rows each) to get a measured gate")


def champion_estimate(workdir: Path, name: str, version: str) -> dict[str, Any] | None:
    """The champion's own cross-validated estimate, if it was trained in estimate mode (else None)."""
    from core.storage import registry

    try:
        return json.loads((registry.version_dir(workdir, name, version) / "metrics.json").read_text()).get("estimate")
    except (OSError, ValueError):
        return None


def unmeasurable_verdict(estimate: dict[str, Any], setting: str, workdir: Path, name: str) -> tuple[bool, str, str | None]:
    """The gate's decision when the test split was too small to measure: (promote?, the reason in words, the
    champion's version or None). `estimate` is evaluate's `meta["estimate"]` (`why`: `unmeasurable`'s record;
    `estimate`: `tasks.estimate.cross_validate`'s figures); `setting` is `gate.unmeasurable` ("keep" or "promote")."""
    from core.storage import registry

    why, figures = estimate["why"], estimate["estimate"]
    current = registry.champion(workdir, name)
    said = (f"{why['reason']}. The gate cannot compare: there is no test split; the model was trained on all "
            f"{figures['rows']} labelled rows, and its cross-validated estimate (not a test figure; "
            f"{figures['repeats']} x {figures['folds']}-fold, {figures['confidence']:.0%} corrected resampled "
            f"t-interval) is macro-F1 {_interval(figures['macro_f1'])}, accuracy {_interval(figures['accuracy'])}")
    if current is None:
        return True, f"{said}. No champion yet: the first model is promoted on the estimate; {operator_advice(why)}", None
    registry.verify(workdir, name, current["version"])
    promote = setting == "promote"
    theirs = champion_estimate(workdir, name, current["version"])
    if theirs:
        said += (f"; champion {current['version']}'s own estimate, on its rows: macro-F1 "
                 f"{_interval(theirs['estimate']['macro_f1'])}")
    verdict = (f"gate.unmeasurable=promote: promoted on the estimate over champion {current['version']}" if promote
               else f"gate.unmeasurable=keep: champion {current['version']} is kept (set gate.unmeasurable=promote "
                    "to promote on the estimate)")
    return promote, f"{said}. {verdict}; {operator_advice(why)}", current["version"]
