"""The statistics behind evaluate, the gate and the model report (core/metrics.py): the vectorised macro-F1
is scikit-learn's, and the scipy bootstraps see real differences, ignore noise and cover their estimates."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_recall_fscore_support

from tasks.gate import mcnemar
from core.metrics import bootstrap_intervals, class_intervals, macro_f1_many, paired_bootstrap


def test_vectorised_macro_f1_matches_scikit_learn():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 3, (5, 200)), rng.integers(0, 3, (5, 200))
    expected = [f1_score(a, b, labels=[0, 1, 2], average="macro", zero_division=0) for a, b in zip(y, p)]
    np.testing.assert_allclose(macro_f1_many(y, p, 3), expected)


def test_bootstrap_and_mcnemar_see_a_real_difference_and_ignore_noise():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 600)
    good = np.where(rng.random(600) < 0.85, y, rng.integers(0, 3, 600))
    bad = np.where(rng.random(600) < 0.55, y, rng.integers(0, 3, 600))
    clearly = paired_bootstrap(y, good, bad, 3, 1000, 0.95)
    assert clearly["lower_bound"] > 0.1 and clearly["interval"][0] > 0
    assert mcnemar(y, good, bad)[0] < 1e-6
    twin = np.where(rng.random(600) < 0.85, y, rng.integers(0, 3, 600))
    assert paired_bootstrap(y, twin, good, 3, 1000, 0.95)["lower_bound"] < 0


def test_the_vectorised_macro_f1_is_scikit_learns_and_the_intervals_cover_the_point():
    """The statistic behind all three bootstraps agrees with scikit-learn on random and degenerate labels
    (a class never predicted, a class absent), and each interval holds its own point estimate."""
    rng = np.random.default_rng(3)
    for y, p in ((rng.integers(0, 4, 200), rng.integers(0, 4, 200)), (np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0])),
                 (np.array([0, 1, 0, 1]), np.array([0, 1, 1, 1]))):
        assert macro_f1_many(y[None], p[None], 4)[0] == pytest.approx(
            f1_score(y, p, labels=range(4), average="macro", zero_division=0))
    y = rng.integers(0, 3, 300)
    p = np.where(rng.random(300) < 0.8, y, rng.integers(0, 3, 300))
    ci = bootstrap_intervals(y, p, 3)
    assert ci["accuracy"][0] < (y == p).mean() < ci["accuracy"][1]
    assert ci["macro_f1"][0] < f1_score(y, p, average="macro") < ci["macro_f1"][1]
    per_class = class_intervals(y, p, 3)
    for metric, values in zip(("precision", "recall", "f1"), precision_recall_fscore_support(y, p)[:3]):
        assert (per_class[metric][:, 0] < values).all() and (values < per_class[metric][:, 1]).all()
