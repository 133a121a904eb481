"""drift: real shifts are flagged, sampling noise is not; `validate.drift=fail` stops the run."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from schemas.config import DataConfig, ValidateConfig
from tasks.drift import drift, label_check, unseen_check
from core.errors import InvalidData
from tasks.validate import validate
from tests.conftest import first_per_label, phrasebank_rows, write_csv


def _validated(tmp_path: Path, name: str, rows):
    return validate(DataConfig(path=write_csv(tmp_path / f"{name}.csv", rows), conflicts="drop",
                               min_per_class=1), tmp_path)


def _report(tmp_path, reference_rows, current_rows, cfg=ValidateConfig()):
    reference = _validated(tmp_path, "reference", reference_rows)
    current = _validated(tmp_path, "current", current_rows)
    return drift(current, reference, cfg, tmp_path).meta["report"]


def test_first_run_has_no_reference(tmp_path: Path):
    current = _validated(tmp_path, "current", first_per_label(20))
    assert drift(current, None, ValidateConfig(), tmp_path).meta["report"]["status"] == "no reference"


def test_two_samples_of_the_same_data_do_not_drift(tmp_path: Path):
    rows = phrasebank_rows()
    random.Random(1).shuffle(rows)
    report = _report(tmp_path, rows[:1500], rows[1500:3000])
    assert report["status"] == "ok", report
    small = _report(tmp_path, rows[:60], rows[60:120])
    assert small["status"] == "ok", small


def test_more_of_the_same_data_does_not_drift(tmp_path: Path):
    # A random sample: the file's own order is not (rows 200-240 of each label are 5 words shorter, in median,
    # than the first 200, which the new-rows comparison rightly calls a length shift).
    rows = phrasebank_rows()
    random.Random(2).shuffle(rows)
    report = _report(tmp_path, rows[:600], rows[:720])
    assert report["status"] == "ok" and report["rows"]["new"] == 120, report


def test_shifted_label_proportions_drift(tmp_path: Path):
    reference = first_per_label(200)
    current = [r for r in first_per_label(300) if r["label"] == "negative"] + first_per_label(40, skip=300)
    report = _report(tmp_path, reference, current)
    assert "labels" in report["drifted"] and "unseen_tokens" not in report["drifted"], report
    assert report["checks"]["labels"]["cramers_v"] >= 0.1


def test_new_vocabulary_and_longer_texts_drift(tmp_path: Path):
    rng = random.Random(0)
    reference = first_per_label(150)
    current = [{"text": " ".join("".join(rng.choice("qxzjvkw") for _ in range(7)) for _ in range(40)),
                "label": r["label"]} for r in first_per_label(150, skip=150)]
    report = _report(tmp_path, reference, current)
    assert set(report["drifted"]) == {"length", "unseen_tokens"}, report
    assert report["checks"]["unseen_tokens"]["current_unseen_share"] > 0.9


def test_a_new_label_is_always_reported(tmp_path: Path):
    reference = first_per_label(30)
    current = first_per_label(30) + [{"text": "The outlook was withdrawn entirely", "label": "mixed"}]
    report = _report(tmp_path, reference, current)
    assert report["checks"]["labels"]["new_labels"] == ["mixed"] and "labels" in report["drifted"]


def test_drift_fail_policy_is_invalid_data(tmp_path: Path):
    current = [r for r in first_per_label(300) if r["label"] == "negative"] + first_per_label(40, skip=300)
    with pytest.raises(InvalidData) as caught:
        _report(tmp_path, first_per_label(200), current, ValidateConfig(drift="fail"))
    failures = caught.value.failures
    assert all(f.location == "file" and "validate.drift=warn" in f.rule for f in failures)
    assert any("data drift in labels" in f.rule for f in failures)


# ------------------------------------------------------------------------------------------ the statistics

def test_cramers_v_is_the_library_definition_on_a_hand_computed_table():
    # 2 x 3 table: reference 30/50/20, current 50/30/20 (n = 200). Expected counts 40/40/20 in both rows, so
    # chi2 = 4 * 10^2 / 40 = 10 and V = sqrt(chi2 / (n * min(rows - 1, cols - 1))) = sqrt(10 / 200) = 0.2236.
    reference = ["a"] * 30 + ["b"] * 50 + ["c"] * 20
    current = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    check = label_check(reference, current, ValidateConfig())
    assert check["chi2"] == pytest.approx(10.0)
    assert check["cramers_v"] == pytest.approx(math.sqrt(10 / 200), abs=1e-4)
    # a permutation p-value near the asymptotic chi-square one (2 degrees of freedom: exp(-10 / 2) = 0.0067)
    assert check["p_value"] == pytest.approx(math.exp(-5), abs=0.004)


def test_only_the_new_rows_are_compared_so_an_appended_shift_is_seen(tmp_path: Path):
    # Last week: 200 sentences per label. This week: the same plus 150 new sentences, all negative. Compared
    # whole (overlapping samples), the label shares move from 33/33/33 to 47/27/27 % (the old check's
    # understated Cramér's V: 0.095, under the 0.1 minimum); the 150 new rows alone are 100 % negative.
    reference = first_per_label(200)
    appended = [r for r in first_per_label(350, skip=200) if r["label"] == "negative"][:150]
    report = _report(tmp_path, reference, reference + appended)
    assert report["rows"] == {"reference": 598, "current": 748, "new": 150, "no_longer_present": 0}  # 2 conflicts
    assert report["checks"]["labels"]["current_share"]["negative"] == 1.0
    assert "labels" in report["drifted"] and report["checks"]["labels"]["cramers_v"] > 0.5, report


def test_an_unchanged_rerun_has_no_new_rows_and_no_drift(tmp_path: Path):
    rows = first_per_label(40)
    report = _report(tmp_path, rows, rows)
    assert report["status"] == "ok" and report["comparisons"]["last_run"]["status"] == "no new rows"


def _shuffled_by_label(seed: int = 4) -> dict[str, list[dict[str, str]]]:
    """The bundled rows of each label in a random order (the file's own order groups similar sentences)."""
    rows = phrasebank_rows()
    random.Random(seed).shuffle(rows)
    return {label: [{"text": r["text"], "label": label} for r in rows if r["label"] == label]
            for label in ("negative", "neutral", "positive")}


def _weekly_drift(by_label: dict[str, list[dict[str, str]]], weeks: int) -> list[list[dict[str, str]]]:
    """Real sentences (after the first 200 of each label) whose label mix leans a little more negative than a
    balanced reference: 15 negative, 8 neutral and 7 positive new rows a week."""
    out = []
    for week in range(weeks):
        out.append([row for label, count in (("negative", 15), ("neutral", 8), ("positive", 7))
                    for row in by_label[label][200 + week * count: 200 + (week + 1) * count]])
    return out


def test_slow_drift_is_seen_against_the_champions_training_data(tmp_path: Path):
    by_label = _shuffled_by_label()
    champion_rows = [row for rows in by_label.values() for row in rows[:200]]
    weeks = _weekly_drift(by_label, 6)
    last_rows = champion_rows + [r for week in weeks[:5] for r in week]
    current_rows = last_rows + weeks[5]
    champion = _validated(tmp_path, "champion", champion_rows)
    last = _validated(tmp_path, "last", last_rows)
    current = _validated(tmp_path, "current", current_rows)
    report = drift(current, last, ValidateConfig(), tmp_path, champion_data=champion).meta["report"]
    week_on_week, since_champion = report["comparisons"]["last_run"], report["comparisons"]["champion_data"]
    assert week_on_week["rows"]["new"] == 30 and week_on_week["drifted"] == [], week_on_week
    assert since_champion["rows"]["new"] == 180 and "labels" in since_champion["drifted"], since_champion
    assert report["status"] == "drift" and report["drifted"] == ["labels"]
    assert report["alpha_per_test"] == pytest.approx(0.01 / 6)  # two comparisons of three tests share alpha
    # the same champion data as the last run is compared once
    once = drift(current, last, ValidateConfig(), tmp_path, champion_data=last).meta["report"]
    assert once["comparisons"]["champion_data"]["status"] == "not compared"


def test_the_champions_training_data_is_found_from_its_lineage(tmp_path: Path):
    import json

    from core import registry
    from core.run.summary import champion_training_data

    assert champion_training_data(tmp_path, "m") is None
    validated = _validated(tmp_path, "trained-on", first_per_label(20))
    folder = registry.version_dir(tmp_path, "m", "v1")
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"x")
    (folder / "lineage.json").write_text(json.dumps({"validated_sha256": validated.sha256, "run_id": "r1"}))
    registry.promote(tmp_path, "m", "v1", "test")
    found = champion_training_data(tmp_path, "m")
    assert found.sha256 == validated.sha256 and found.path == validated.path and found.is_intact(tmp_path)
    assert found.meta == {"version": "v1", "run_id": "r1"}


def test_the_unseen_word_null_has_the_reference_size(tmp_path: Path):
    # Two random halves of the bundled data: the share of unseen words expected from the reference's own growth
    # curve must match what a same-size sample shows. (Estimated from half the reference, as before, it was
    # about 10 % against an observed 7.7 %, so real increases of up to 2 points passed unseen.)
    rows = phrasebank_rows()
    random.Random(3).shuffle(rows)
    half = len(rows) // 2
    check = unseen_check([r["text"] for r in rows[:half]], [r["text"] for r in rows[half:]],
                         ValidateConfig(drift_permutations=199))
    assert abs(check["increase"]) < 0.01, check
    assert abs(check["expected_unseen_share"] - check["permutation_mean_share"]) < 0.01, check
    assert check["p_value"] > 0.01 and not check["drift"]


# ------------------------------------------------------------------------------------------ calibration
# The fast version of benchmarks/drift_calibration.py (100 cuts of 2,420 sentences each, figures in
# benchmarks/RESULTS.md): smaller samples, same tests, same code path (`tasks.drift.compare`).

def test_each_check_alarms_at_its_nominal_rate_on_two_samples_of_one_source():
    from benchmarks.drift_calibration import simulate

    result = simulate("same source", repetitions=100, sample_size=300, permutations=199, seed=0)
    for check in ("labels", "length", "unseen_tokens"):
        p = result[check]
        assert (p < 0.01).sum() <= 2, (check, sorted(p)[:5])  # nominal 1 in 100
        assert 3 <= (p < 0.1).sum() <= 20, (check, (p < 0.1).sum())  # nominal 10 in 100: calibrated, not mute
    assert result["any:alarm"].sum() <= 2


def test_a_real_shift_is_caught():
    from benchmarks.drift_calibration import simulate

    reweighted = simulate("labels re-weighted", repetitions=10, sample_size=300, permutations=199, seed=1)
    assert reweighted["labels:alarm"].sum() == 10 and reweighted["unseen_tokens:alarm"].sum() == 0
    foreign = simulate("another source", repetitions=10, sample_size=300, permutations=199, seed=1)
    assert foreign["any:alarm"].sum() == 10 and foreign["length:alarm"].sum() == 10
    assert foreign["labels:alarm"].sum() == 0  # the labels were not touched
    all_foreign = simulate("another source, all new rows", repetitions=5, sample_size=300, permutations=199, seed=1)
    assert all_foreign["unseen_tokens:alarm"].sum() == 5
