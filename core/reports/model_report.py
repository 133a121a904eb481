"""The model report: one self-contained HTML page per registered version (`<version>/report.html`).

What a reviewer needs before approving a model, readable in any browser with no network and no server: the
data (rows, classes, split, drift), the learning curves, the confusion matrix as a heat map, per-class
precision / recall / F1 with bootstrap intervals, a reliability diagram with the expected calibration error,
the gate's bootstrap distribution of the macro-F1 difference with its decision and the smallest difference
it could detect, the lineage, and the approval. Every plot is drawn by matplotlib (Agg, no display) and
embedded as a base64 PNG; nothing is fetched.

The page is rendered from the version's recorded files (model.json, metrics.json, predictions.parquet,
lineage.json), the registry's review log and, where it still exists, the run's summary (data and drift). It
is the one file of a version folder that is not hashed at registration: it is re-written when the version's
review changes (candidate, approved, rejected), and only then: the page records a hash of what it was rendered
from (`<meta name="report-inputs">`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from core.run import faults
from core.storage import registry
from core.storage.artifacts import atomic_path
from core.storage.versions import code_version
from core.text.identity import sha256_hex
from core.metrics import BOOTSTRAP_SAMPLES, class_intervals

log = logging.getLogger(__name__)
REPORT_FILE = "report.html"
SECTIONS = ("Data", "Learning curves", "Confusion matrix", "Per-class precision, recall and F1",
            "Calibration", "Gate", "Lineage", "Approval")


def report_path(workdir: Path, name: str, version: str) -> Path:
    """Where the report of a version lives."""
    return registry.version_dir(workdir, name, version) / REPORT_FILE


def write_report(workdir: Path, name: str, version: str, summary: dict[str, Any] | None = None) -> Path:
    """Render the report of `version` and write it atomically; returns its path.

    `summary` is the run's summary (data and drift); by default the one the version's run wrote, if any.
    """
    faults.point("report:render", workdir)
    folder = registry.version_dir(workdir, name, version)
    lineage = json.loads((folder / "lineage.json").read_text())
    if summary is None:
        path = Path(workdir) / "runs" / str(lineage.get("run_id")) / "summary.json"
        summary = json.loads(path.read_text()) if path.is_file() else {}
    approval, reviews = registry.approval_record(workdir, name, version), registry.reviews(workdir, name, version)
    target = folder / REPORT_FILE
    # The page is a pure function of these inputs (the version's own files never change) and of this code: an
    # unchanged re-run finds it up to date and skips the plots and bootstraps (about 1 s, scipy and matplotlib).
    inputs = sha256_hex(code_version(__name__), json.dumps([lineage, summary, approval, reviews, name],
                                                           sort_keys=True, default=str))
    stamp = f'<meta name="report-inputs" content="{inputs}">'
    if target.is_file() and stamp in _head(target):
        log.info("model report of %s version %s is up to date: %s", name, version, target.resolve())
        return target.resolve()
    page = render(folder, lineage, summary, approval, reviews, name).replace(HEAD, HEAD + stamp, 1)
    with atomic_path(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log.info("model report of %s version %s: %s", name, version, target.resolve())
    return target.resolve()


def _head(page: Path, chars: int = 2000) -> str:
    """The first `chars` characters of a report page (where its `report-inputs` stamp is)."""
    with open(page, encoding="utf-8", errors="replace") as handle:
        return handle.read(chars)


# ------------------------------------------------------------------------------------------ figures

def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(data: str, alt: str) -> str:
    return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    # Labels are the user's strings: `$\\invalid{$` must be drawn as typed, not parsed as mathtext (which raises).
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


def learning_curves(history: dict[str, dict[str, list[float]]]) -> str | None:
    """Training and validation loss (and accuracy) per epoch, one column per training phase."""
    phases = [(phase, curve) for phase, curve in history.items() if curve.get("loss")]
    if not phases:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(phases), figsize=(5 * len(phases), 6), squeeze=False)
    for column, (phase, curve) in enumerate(phases):
        epochs = np.arange(1, len(curve["loss"]) + 1)
        panels = (("loss", (("loss", "train"), ("val_loss", "validation"))),
                  ("accuracy and macro-F1", (("accuracy", "train accuracy"), ("val_accuracy", "validation accuracy"),
                                             ("macro_f1", "train macro-F1"), ("val_macro_f1", "validation macro-F1"))))
        for row, (title, series) in enumerate(panels):
            ax = axes[row][column]
            for key, label in series:
                if curve.get(key):
                    style = "-s" if key.startswith("val_") else "-o"
                    ax.plot(epochs[: len(curve[key])], curve[key], style, label=label, markersize=4)
            ax.set_title(f"{phase}: {title}")
            ax.set_xlabel("epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    return _png(fig)


def confusion_heatmap(labels: list[str], matrix: list[list[int]]) -> str:
    """The test confusion matrix as a heat map (row-normalised colour, counts written in each cell)."""
    plt = _pyplot()
    counts = np.asarray(matrix, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 2, 1.4 * len(labels) + 1.5))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{int(counts[i, j])}\n{shares[i, j]:.0%}", ha="center", va="center",
                    color="white" if shares[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(image, ax=ax, label="share of the true class")
    fig.tight_layout()
    return _png(fig)


def per_class_plot(labels: list[str], per_class: dict[str, dict[str, float]], intervals: dict[str, np.ndarray]) -> str:
    """Per-class precision, recall and F1 as bars with their bootstrap intervals."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(labels)), 4))
    width = 0.26
    x = np.arange(len(labels))
    for i, metric in enumerate(("precision", "recall", "f1")):
        values = np.array([per_class[label][metric] for label in labels])
        low, high = intervals[metric][:, 0], intervals[metric][:, 1]
        ax.bar(x + (i - 1) * width, values, width, label=metric,
               yerr=[np.maximum(values - low, 0), np.maximum(high - values, 0)], capsize=3)
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (95 % bootstrap interval)")
    ax.legend(ncol=3, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def reliability(y: np.ndarray, proba: np.ndarray, bins: int = 10) -> tuple[str, float, list[dict[str, float]]]:
    """Reliability diagram (accuracy vs confidence per equal-width bin) and the ECE it shows."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            acc, conf = float(correct[members].mean()), float(confidence[members].mean())
            ece += members.mean() * abs(acc - conf)
            rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "n": int(members.sum()),
                         "accuracy": acc, "confidence": conf})
    plt = _pyplot()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.bar([r["low"] for r in rows], [r["accuracy"] for r in rows], width=1 / bins, align="edge",
           edgecolor="black", alpha=0.7, label="accuracy in bin")
    ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], "o", color="darkred",
            label="mean confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram (ECE {ece:.3f})")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    hist.hist(confidence, bins=edges, color="grey")
    hist.set_xlabel("confidence (highest class probability)")
    hist.set_ylabel("sentences")
    fig.tight_layout()
    return _png(fig), float(ece), rows


def gate_plot(gate: dict[str, Any]) -> str | None:
    """The gate's bootstrap distribution of macro-F1(challenger) - macro-F1(baseline), with its bounds."""
    histogram = gate.get("difference_histogram")
    if not histogram:
        return None
    plt = _pyplot()
    edges, counts = np.asarray(histogram["edges"]), np.asarray(histogram["counts"])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#8fb3d9", edgecolor="white")
    ax.axvline(0, color="black", lw=1, label="no difference")
    if gate.get("difference") is not None:
        ax.axvline(gate["difference"], color="#1f4e79", lw=2, label=f"observed {gate['difference']:+.4f}")
    if gate.get("lower_bound") is not None:
        ax.axvline(gate["lower_bound"], color="darkred", ls="--", lw=2,
                   label=f"{gate.get('confidence', 0.95):.0%} lower bound {gate['lower_bound']:+.4f}")
    ax.set_xlabel("macro-F1 difference, challenger - baseline (bootstrap resamples)")
    ax.set_ylabel("resamples")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


# ------------------------------------------------------------------------------------------ page

def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(title: str, body: str) -> str:
    anchor = title.lower().split(",")[0].replace(" ", "-")
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{body}</section>'


def _p(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def estimate_section(estimate: dict[str, Any]) -> str:
    """The report's section for a model trained in estimate mode: why there is no test split, and the
    cross-validated estimate with its intervals and per-fold figures, labelled as what it is."""
    figures = estimate["estimate"]
    rows = [[f["fold"], f["train_rows"], f["test_rows"], f"{f['macro_f1']:.3f}", f"{f['accuracy']:.3f}"]
            for f in figures["per_fold"]]
    summary = (f"Macro-F1 {figures['macro_f1']['mean']:.4f} [{figures['macro_f1']['low']:.4f}, "
               f"{figures['macro_f1']['high']:.4f}], accuracy {figures['accuracy']['mean']:.4f} "
               f"[{figures['accuracy']['low']:.4f}, {figures['accuracy']['high']:.4f}]: "
               f"{figures['confidence']:.0%} intervals: the out-of-fold predictions pooled per repeat, with the "
               "half-width of the corrected resampled t-interval over the fits (Nadeau & Bengio 2003), which allows "
               "for the overlap of the folds' training rows. An estimate of how a model trained this way does on "
               "unseen rows, not a test figure.")
    return _section("Cross-validated estimate (no test split)",
                    _p(f"{estimate['why']['reason']}: every labelled row trained this model. {figures['method']}.")
                    + _p(summary) + _table(["fit", "rows trained", "rows held out", "macro-F1", "accuracy"], rows))


def render(folder: Path, lineage: dict[str, Any], summary: dict[str, Any], approval: dict[str, Any],
           review_log: list[dict[str, Any]], name: str) -> str:
    """The report page of the version in `folder`, as one self-contained HTML string."""
    import pyarrow.parquet as pq

    card = json.loads((folder / "model.json").read_text())
    recorded = json.loads((folder / "metrics.json").read_text())
    test, estimate = recorded["test"], recorded.get("estimate")
    predictions = pq.read_table(folder / "predictions.parquet").to_pandas()
    labels = list(card["labels"])
    y = predictions["label"].map(labels.index).to_numpy()
    pred = predictions["predicted_label"].map(labels.index).to_numpy()
    proba = predictions[[f"prob_{label}" for label in labels]].to_numpy(dtype=float)
    version = lineage.get("version", folder.name)
    gate = lineage.get("gate") or summary.get("gate") or {}
    sections = []

    # Data
    data = summary.get("dataset", {})
    body = []
    if data:
        body.append(_table(["file", "sha256", "rows read", "rows used", "duplicates dropped", "conflicts dropped"],
                           [[data.get("path"), str(data.get("sha256", ""))[:16], data.get("rows"), data.get("rows_used"),
                             data.get("duplicates_dropped"), data.get("conflicts_dropped")]]))
    else:
        body.append(_p(f"The run's summary is gone; data file sha256 {lineage.get('dataset_sha256', '')[:16]}."))
    body.append(_p(f"Classes ({len(labels)}): {', '.join(labels)}; test rows per class: " + ", ".join(
        f"{label} {test['per_class'][label]['support']}" for label in labels) + "."))
    if split := summary.get("split"):
        body.append(_p(f"Split: {split.get('split_rows', split)}"))
    drift = summary.get("drift")
    if drift:
        # One comparison (older summaries) or several (`comparisons`: vs the last run, vs the champion's data).
        comparisons = drift.get("comparisons") or {"last run": drift}
        rows = [[baseline, check_name, check.get("test"), f"{check.get('p_value', float('nan')):.3g}",
                 "yes" if check.get("drift") else "no"]
                for baseline, comparison in comparisons.items()
                for check_name, check in (comparison.get("checks") or {}).items()]
        body.append(f'<p>Drift: <b class="drift">{html.escape(str(drift.get("status")))}'
                    f'</b> {html.escape(str(drift.get("reason", "")))}</p>')
        if rows:
            body.append(_table(["against", "check", "test", "p-value", "drift"], rows))
    else:
        body.append(_p("Drift: not recorded for this run."))
    sections.append(_section("Data", "".join(body)))

    # Learning curves
    curves = learning_curves(card.get("history") or {})
    sections.append(_section("Learning curves", (_img(curves, "learning curves") if curves else
                                                 _p("No training history recorded.")) + _p(
        f"Best epoch {card.get('best_epoch', '?')} of {card.get('epochs_run', '?')}: the weights kept are that "
        f"epoch's (validation loss {card.get('best_val_loss', '?')}).")))

    if estimate:  # estimate mode: no test split, so no test figures (tasks.estimate)
        sections.append(estimate_section(estimate))
    else:
        # Confusion matrix
        cm = test["confusion_matrix"]
        sections.append(_section("Confusion matrix", _img(confusion_heatmap(cm["labels"], cm["rows_true_cols_predicted"]),
                                                          "confusion matrix") + _p(
            f"Test split: {test['n']} sentences, accuracy {test['accuracy']:.4f}, macro-F1 {test['macro_f1']:.4f} "
            f"(majority baseline {test['majority_baseline']['accuracy']:.4f} / {test['majority_baseline']['macro_f1']:.4f}).")))

        # Per class
        intervals = class_intervals(y, pred, len(labels))
        rows = [[label] + [f"{test['per_class'][label][m]:.3f} [{intervals[m][i][0]:.3f}, {intervals[m][i][1]:.3f}]"
                           for m in ("precision", "recall", "f1")] + [test["per_class"][label]["support"]]
                for i, label in enumerate(labels)]
        ci = {key: "[" + ", ".join(f"{v:.3f}" for v in bounds) + "]" for key, bounds in (test.get("ci95") or {}).items()}
        overall = (f"Accuracy {test['accuracy']:.4f} {ci.get('accuracy', '')}, macro-F1 {test['macro_f1']:.4f} "
                   f"{ci.get('macro_f1', '')}; per class: 95 % percentile-bootstrap intervals over "
                   f"{BOOTSTRAP_SAMPLES} resamples of the test rows.")
        sections.append(_section("Per-class precision, recall and F1", _img(per_class_plot(labels, test["per_class"], intervals),
                                                                           "per-class scores") +
                                 _table(["class", "precision", "recall", "F1", "support"], rows) + _p(overall)))

        # Calibration
        picture, ece, bins = reliability(y, proba)
        sections.append(_section("Calibration", _img(picture, "reliability diagram") + _p(
            f"Expected calibration error (10 bins): {ece:.4f}; evaluate's ECE (15 bins): {test.get('ece', float('nan')):.4f}; "
            f"log loss {test.get('log_loss', float('nan')):.4f}.") + _table(
            ["confidence bin", "sentences", "accuracy", "mean confidence"],
            [[f"{b['low']:.1f}-{b['high']:.1f}", b["n"], f"{b['accuracy']:.3f}", f"{b['confidence']:.3f}"] for b in bins])))

    # Gate
    body = [f'<p>Decision: <b class="decision">{html.escape(str(gate.get("decision", "not gated")))}</b>. '
            f'{html.escape(str(gate.get("reason", "")))}</p>']
    if plot := gate_plot(gate):
        body.append(_img(plot, "gate bootstrap distribution"))
    if gate.get("difference") is not None and gate.get("lower_bound") is not None:
        margin = gate.get("detectable_difference") or gate["difference"] - gate["lower_bound"]
        body.append(_p(f"Test: {gate.get('test')}; n = {gate.get('n')}; difference {gate['difference']:+.4f}, "
                       f"{gate.get('confidence', 0.95):.0%} interval "
                       f"[{', '.join(f'{v:+.4f}' for v in gate.get('interval') or [])}], McNemar p = "
                       f"{gate.get('mcnemar_p', float('nan')):.3g}. Smallest detectable difference: {margin:.4f} macro-F1 "
                       + (f"(the true gain the gate promotes with {gate.get('power') or 0.8:.0%} power on these rows)."
                          if gate.get("detectable_difference") else
                          "(the one-sided margin: a smaller true gain cannot be told from resampling noise).")))
        if gate.get("detectable_note"):
            body.append(_p(f"What this test split can detect: {gate['detectable_note']}."))
    against = gate.get("champion_version") or ("nothing: no champion, the first model is promoted on the estimate"
                                               if gate.get("estimate") else "the majority-class predictor (no champion)")
    body.append(_p(f"Compared against: {against}."))
    sections.append(_section("Gate", "".join(body)))

    # Lineage
    config = lineage.get("config", {})
    rows = [["version", version], ["model", name], ["registered", lineage.get("registered_at")],
            ["run", lineage.get("run_id")], ["data file", lineage.get("dataset_path")],
            ["data sha256", lineage.get("dataset_sha256")], ["validated data sha256", lineage.get("validated_sha256")],
            ["code version", lineage.get("code_version")], ["parent champion", lineage.get("parent_champion") or "none"],
            ["model sha256", lineage.get("model_sha256")], ["backbone sha256", card.get("backbone_sha256")]]
    params = {section: config.get(section) for section in ("train", "augment", "split", "gate") if config.get(section)}
    sections.append(_section("Lineage", _table(["what", "value"], rows) + "<h3>Parameters</h3><pre>" +
                             html.escape(json.dumps({"seed": config.get("seed"), **params}, indent=2)) + "</pre>"))

    # Approval
    status = approval.get("status", "")
    body = [f'<p>Status: <b class="approval">{html.escape(status)}</b>'
            + (f" by {html.escape(str(approval['reviewer']))}" if approval.get("reviewer") else "")
            + (f" at {html.escape(str(approval['at']))}" if approval.get("at") else "")
            + (f": {html.escape(str(approval['comment']))}" if approval.get("comment") else "") + "</p>"]
    if status == "awaiting approval":
        body.append(_p(f"Approve: python -m flows.registry approve {version} --name {name} --reviewer NAME "
                       f"--comment TEXT (or reject the same way), or use the form of the paused run in the Prefect UI."))
    if review_log:
        body.append(_table(["event", "reviewer", "at", "comment"],
                           [[e.get("action"), e.get("reviewer") or "", e.get("at"), e.get("comment") or e.get("gate_reason")
                             or ""] for e in review_log]))
    sections.append(_section("Approval", "".join(body)))

    return PAGE.format(title=html.escape(f"{name} {version}"), name=html.escape(name), version=html.escape(version),
                       status=html.escape(status), body="\n".join(sections))


HEAD = '<html lang="en"><head><meta charset="utf-8">'
PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Model report: {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; line-height: 1.4; }}
h1 {{ border-bottom: 2px solid #1f4e79; padding-bottom: .3rem; }}
h2 {{ color: #1f4e79; margin-top: 2rem; }}
table {{ border-collapse: collapse; margin: .6rem 0; }}
th, td {{ border: 1px solid #ccc; padding: .25rem .6rem; text-align: left; font-size: .9rem; }}
th {{ background: #eef3f8; }}
img.plot {{ max-width: 100%; display: block; margin: .6rem 0; }}
pre {{ background: #f6f8fa; padding: .6rem; overflow-x: auto; font-size: .8rem; }}
.status {{ font-size: 1.1rem; }}
</style></head>
<body>
<h1>Model report: {name}, version {version}</h1>
<p class="status">Review status: <b>{status}</b></p>
{body}
</body></html>
"""
