"""Reports are views of what the run recorded: a user's labels are shown as typed, never parsed as markup or
mathtext, so no label can break a table or fail a run after promotion. (End to end, with the flow, in
tests/test_reliability.py: a run whose labels are mathtext and markup, and injected report failures.)"""

from __future__ import annotations

import re

from core.reports import model_report
from core.reports.dashboard import md, run_markdown

HOSTILE = ["a|b", "<b>bold</b>", "$\\invalid{$", "`code`", "[x](http://e)"]


def _summary(labels: list[str]) -> dict:
    k = len(labels)
    test = {"accuracy": 0.5, "macro_f1": 0.5, "n": 10, "majority_baseline": {"accuracy": 0.2, "macro_f1": 0.1},
            "confusion_matrix": {"labels": labels, "rows_true_cols_predicted": [[1] * k for _ in range(k)]}}
    return {"run_id": "r", "dataset": {"path": "d.csv", "sha256": "0" * 64, "rows": 10, "rows_used": 10,
                                       "duplicates_dropped": 0, "conflicts_dropped": 0, "labels": labels},
            "metrics": {"test": test}, "gate": {"decision": "promote", "reason": "better"},
            "model": {"name": "m", "version": "v"}}


def test_labels_with_markup_or_pipes_keep_the_confusion_table_whole():
    markdown = run_markdown(_summary(HOSTILE))
    table = [line for line in markdown.splitlines() if line.startswith("| ")][-len(HOSTILE) - 1:]
    assert len(table) == len(HOSTILE) + 1
    for line in table:  # every row has one cell per label plus the row header: no label split a cell
        assert len(re.findall(r"(?<!\\)\|", line)) == len(HOSTILE) + 2, line
    assert "<b>" not in markdown and "&lt;b&gt;bold&lt;/b&gt;" in markdown
    assert "](http" not in markdown and "`code`" not in markdown
    assert md("x\ny") == "x y" and md("plain label") == "plain label"


def test_mathtext_in_a_label_is_drawn_as_typed():
    plt = model_report._pyplot()
    fig, ax = plt.subplots()
    ax.set_xticks(range(len(HOSTILE)), HOSTILE)
    ax.set_title(HOSTILE[2])
    assert model_report._png(fig)  # mathtext parsing would raise ValueError here
