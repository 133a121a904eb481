"""benchmarks/peers.py (SetFit as a peer) keeps each body's files apart and compares it with that body's own
learning curve, on the same rows. Paths and recorded files only: no torch, no backbone, no training."""

from __future__ import annotations

import json

from benchmarks import learning_curve, peers

MPNET = "all-mpnet-base-v2"


def test_minilm_keeps_its_historical_names():
    assert peers.outputs(peers.DEFAULT_BODY) == (peers.HERE / "peers-runs.json", "peers",
                                                 peers.HERE / "learning-curve-runs.json")
    assert peers.DEFAULT_BODY == learning_curve.DEFAULT_BODY


def test_each_body_is_compared_with_its_own_learning_curve():
    for body in (peers.DEFAULT_BODY, MPNET):
        runs, section, curve = peers.outputs(body)
        assert curve == learning_curve.outputs(body)[0]
        assert curve.is_file()
        assert runs != peers.RUNS or body == peers.DEFAULT_BODY
    assert peers.outputs(MPNET)[:2] == (peers.HERE / f"peers-runs-{MPNET}.json", f"peers_{MPNET}")


def test_each_body_and_data_set_is_compared_with_its_own_learning_curve():
    """`--data` keys every file and section by the data set too, and SetFit's table reads that data's curve."""
    names = set()
    for body in (peers.DEFAULT_BODY, MPNET):
        for data in ("", "wordnet-verbs", "wordnet-nouns", "/somewhere/bank-news.csv"):
            runs, section, curve = peers.outputs(body, data)
            assert curve == learning_curve.outputs(body, data)[0]
            names |= {runs, section, curve}
    assert len(names) == 3 * 2 * 4  # no two (body, data) pairs share a file or a section
    assert peers.outputs(peers.DEFAULT_BODY, "wordnet-verbs")[2].is_file()  # recorded: benchmarks/RESULTS.md


def test_mpnet_table_reads_methods_its_curve_recorded():
    curve = json.loads(peers.outputs(MPNET)[2].read_text())
    for method in peers.BODY_METHODS[MPNET]:
        assert any(method in cut for cut in curve), method


def test_the_two_curves_ran_on_the_same_rows():
    """The export step checks MPNet's rows against MPNet's file; the rows are the learning curve's sample of one
    split, so both bodies' TF-IDF baselines (which never touch the body) agree on every cut both recorded."""
    minilm = {(c["size"], c["seed"]): c for c in json.loads(peers.CURVE_RUNS.read_text())}
    shared = [c for c in json.loads(peers.outputs(MPNET)[2].read_text()) if (c["size"], c["seed"]) in minilm]
    assert shared
    for cut in shared:
        twin = minilm[(cut["size"], cut["seed"])]
        assert cut["train_rows"] == twin["train_rows"]
        assert cut["tfidf"] == twin["tfidf"], (cut["size"], cut["seed"])
