"""flows.suggest (issue 28): what to label next, on a real small model and real PhraseBank sentences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows import suggest as suggest_cli
from core.text.identity import row_id
from tasks.suggest import badge_order, gradient_embeddings, margin_kmeans_order
from tests.conftest import first_per_label, write_csv


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_badge_picks_uncertain_rows_first_and_never_two_near_duplicates():
    rng = np.random.default_rng(0)
    embeddings = _unit(rng.normal(size=(60, 16)))
    embeddings[1] = embeddings[0]  # an exact copy of row 0 in embedding space
    proba = rng.dirichlet(np.ones(3), size=60)
    proba[5] = [0.34, 0.33, 0.33]  # the most uncertain row
    proba[7] = [1.0, 0.0, 0.0]  # certain: its gradient is 0
    gradients = gradient_embeddings(proba, embeddings)
    assert np.allclose(gradients[7], 0) and gradients.shape == (60, 48)
    blocked = np.zeros(60, dtype=bool)
    blocked[[2, 3]] = True
    order = badge_order(gradients, embeddings, 40, seed=1, blocked=blocked)
    assert order[0] == 5 and len(order) == len(set(order)) == 40
    assert not {2, 3} & set(order) and not {0, 1} <= set(order)
    chosen = embeddings[order]
    similarity = chosen @ chosen.T - 2 * np.eye(len(order))
    assert similarity.max() < 0.95
    assert badge_order(gradients, embeddings, 40, seed=1, blocked=blocked) == order  # deterministic
    assert len(badge_order(gradients, embeddings, 500, seed=1)) == 59  # all but one of the identical pair


def test_margin_kmeans_picks_uncertain_rows_from_distinct_clusters():
    rng = np.random.default_rng(0)
    centres = _unit(rng.normal(size=(6, 16)))
    embeddings = _unit(np.repeat(centres, 20, axis=0) + 0.05 * rng.normal(size=(120, 16)))  # 6 tight clusters
    proba = rng.dirichlet(np.ones(3) * 0.5, size=120)
    blocked = np.zeros(120, dtype=bool)
    blocked[:20] = True  # the first cluster is labelled already
    order = margin_kmeans_order(proba, embeddings, 5, seed=0, blocked=blocked)
    ranked = np.sort(proba, axis=1)
    margin = ranked[:, -1] - ranked[:, -2]
    assert len(order) == len(set(order)) == 5 and min(order) >= 20
    assert sorted({i // 20 for i in order}) == [1, 2, 3, 4, 5]  # one per remaining cluster
    assert list(margin[order]) == sorted(margin[order])
    chosen = embeddings[order]
    assert (chosen @ chosen.T - 2 * np.eye(5)).max() < 0.95
    assert margin_kmeans_order(proba, embeddings, 5, seed=0, blocked=blocked) == order


@pytest.fixture(scope="module")
def model_workdir(prefect_api, tmp_path_factory):
    """A small real model (frozen backbone, 90 sentences) and its labelled data."""
    from flows.retrain import retrain

    root = tmp_path_factory.mktemp("suggest-model")
    labelled = first_per_label(30)
    data = write_csv(root / "train.csv", labelled)
    pool = write_csv(root / "pool.csv", first_per_label(4, skip=30) + labelled[:3], fields=("text",))
    summary = json.loads(Path(retrain(data=str(data), workdir=str(root / "work"), overrides={
        "train.unfreeze_top": 0, "train.max_epochs": 3, "augment.n_aug": 0, "data.min_per_class": 3,
        "evaluate.min_test_per_class": 0,
        "gate.on_label_change": "promote", "suggest.pool": str(pool), "suggest.n": 5})).read_text())
    if not summary["promoted"]:
        from core.storage import registry

        registry.promote(root / "work", "default", summary["model"]["version"], "for the test")
    return {"work": root / "work", "labelled": [r["text"] for r in labelled], "summary": summary}


def test_a_run_with_a_pool_ranks_it_and_says_so_in_its_report(model_workdir):
    from core.reports.dashboard import run_markdown

    summary = model_workdir["summary"]
    listed = summary["suggestions"]
    assert (listed["rows"], listed["already_labelled"], listed["suggested"]) == (15, 3, 5)
    assert summary["stages"]["suggest"]["state"] == "Completed"
    assert Path(listed["out"]) == model_workdir["work"] / "runs" / summary["run_id"] / "suggestions.csv"
    assert len(pd.read_csv(listed["out"])) == 5
    report = run_markdown(summary)
    assert "## What to label next" in report and "of 15 pool rows ranked" in report and listed["out"] in report


def _pool(tmp_path: Path, labelled: list[str]) -> Path:
    """Fresh sentences, some of them twice, plus labelled ones verbatim, re-cased and lightly edited, and a blank
    row."""
    fresh = [r["text"] for r in first_per_label(15, skip=30)]
    near = labelled[5].rstrip(".") + " , as reported ."  # a near-duplicate of a labelled sentence
    texts = fresh + fresh[:5] + labelled[:4] + [f"  {labelled[4].upper()} ", near, ""]
    frame = pd.DataFrame({"id": range(len(texts)), "text": texts, "source": "news"})
    frame.to_csv(tmp_path / "pool.csv", index=False)
    return tmp_path / "pool.csv"


def test_suggest_writes_a_ranked_list_without_labelled_sentences_or_near_duplicates(model_workdir, tmp_path, capsys):
    from core.model.backbone import Backbone
    from tasks.suggest import score_known_embeddings

    pool, out = _pool(tmp_path, model_workdir["labelled"]), tmp_path / "next.csv"
    args = ["--pool", str(pool), "--n", "20", "--out", str(out), "--workdir", str(model_workdir["work"])]
    assert suggest_cli.main(args) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out.resolve())
    got = pd.read_csv(out)
    assert list(got.columns) == ["id", "text", "source", "rank", "predicted_label", "prob_negative", "prob_neutral",
                                 "prob_positive", "score", "margin", "reason"]
    assert got["rank"].tolist() == list(range(1, len(got) + 1)) and len(got) == 20
    probs = got[["prob_negative", "prob_neutral", "prob_positive"]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1) and (got["score"] > 0).all()
    assert (np.diff(got["score"]) <= 1e-12).all() and np.allclose(got["score"], 1 - got["margin"])  # most uncertain first
    known = {row_id(t) for t in model_workdir["labelled"]}
    assert not known & {row_id(t) for t in got["text"]}
    assert got["text"].map(row_id).is_unique
    embeddings = score_known_embeddings(_folder(model_workdir["work"]), got["text"].tolist(), Backbone.resolve(None),
                                        model_workdir["work"])
    similarity = embeddings @ embeddings.T - 2 * np.eye(len(got))
    assert similarity.max() < 0.95
    # every pool row accounted for; the second run finds every sentence in the feature cache
    from flows.suggest import suggest

    figures = suggest(pool=str(pool), out=str(out), n=500, workdir=str(model_workdir["work"]))
    assert figures["rows"] == 57 and figures["invalid"] == 1 and figures["duplicates_in_pool"] == 5
    assert figures["already_labelled"] == 5 and figures["near_labelled"] >= 1 and figures["backbone_computed"] == 0
    assert figures["invalid"] + figures["duplicates_in_pool"] + figures["already_labelled"] + \
        figures["near_labelled"] + figures["candidates"] == figures["rows"]
    assert figures["suggested"] <= figures["candidates"] and len(pd.read_csv(out)) == figures["suggested"]


def _folder(work: Path) -> Path:
    from core.storage import registry

    return registry.resolve_version(work, "default", "champion")


def test_suggest_refuses_what_it_cannot_do_with_the_right_exit_code(model_workdir, tmp_path, capsys):
    work = str(model_workdir["work"])
    clash = write_csv(tmp_path / "clash.csv", [{"text": "Sales rose 5 %.", "rank": "1"}], fields=("text", "rank"))
    out = tmp_path / "o.csv"
    assert suggest_cli.main(["--pool", str(clash), "--n", "3", "--out", str(out), "--workdir", work]) == 65
    assert "column 'rank'" in capsys.readouterr().err and not out.exists()
    assert suggest_cli.main(["--pool", str(tmp_path / "nope.csv"), "--n", "3", "--out", str(out),
                             "--workdir", work]) == 66
    for bad in (["--n", "0"], ["--n", "3", "--out", str(tmp_path / "o.xlsx")]):
        with pytest.raises(SystemExit) as caught:
            suggest_cli.main(["--pool", str(clash), "--out", str(out), "--workdir", work, *bad])
        assert caught.value.code == 2
    assert suggest_cli.main(["--pool", str(clash), "--n", "3", "--out", str(out),
                             "--workdir", str(tmp_path / "empty")]) == 1


def test_self_training_adds_confident_pseudo_labels_to_training_only(model_workdir, tmp_path):
    """train.unlabelled: the champion's confident labels join the training split, marked, never val or test."""
    import pyarrow.parquet as pq

    from flows.retrain import retrain
    from core.storage.artifacts import ArtifactRef

    work, champion = model_workdir["work"], model_workdir["summary"]["model"]["version"]
    data = write_csv(tmp_path / "train.csv", first_per_label(30))
    unlabelled = write_csv(tmp_path / "unlabelled.csv", first_per_label(10, skip=30) + first_per_label(2),
                           fields=("text",))
    summary = json.loads(Path(retrain(data=str(data), workdir=str(work), overrides={
        "train.unfreeze_top": 0, "train.max_epochs": 3, "augment.n_aug": 0, "data.min_per_class": 3,
        "evaluate.min_test_per_class": 0,
        "train.unlabelled": str(unlabelled), "train.pseudo_threshold": 0.4})).read_text())
    report = summary["self_training"]
    assert report["model"] == champion and report["rows"] == 36 and report["already_labelled"] == 6
    assert report["added"] > 0 and sum(report["added_per_label"].values()) == report["added"]
    features = pq.read_table(ArtifactRef(**summary["artifacts"]["pseudo_label"]).resolve(work)).to_pandas()
    embedded = pq.read_table(ArtifactRef(**summary["artifacts"]["embed"]).resolve(work)).to_pandas()
    pseudo = features[features["pseudo_labelled"]]
    assert len(pseudo) == report["added"] and (pseudo["split"] == "train").all()
    assert not set(pseudo["row_id"]) & set(embedded["row_id"])
    kept = features[~features["pseudo_labelled"]].drop(columns="pseudo_labelled")
    assert kept["row_id"].tolist() == embedded["row_id"].tolist() and kept["split"].tolist() == embedded["split"].tolist()
    # without the setting the step hands embed's features on unchanged: nothing else moves
    again = json.loads(Path(retrain(data=str(data), workdir=str(work), overrides={
        "train.unfreeze_top": 0, "train.max_epochs": 3, "augment.n_aug": 0, "data.min_per_class": 3,
        "evaluate.min_test_per_class": 0})).read_text())
    assert "self_training" not in again and again["artifacts"]["pseudo_label"] == again["artifacts"]["embed"]
