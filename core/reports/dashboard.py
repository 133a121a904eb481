"""What a run shows on the Prefect dashboard: artifacts with stable keys, readable by operators and the API.

Each function publishes one artifact of the current flow run; outside a flow run (plain function calls,
`--validate-only`) there is no run to attach to and they do nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from core.run.errors import Failure

log = logging.getLogger(__name__)
MAX_TABLE_ROWS = 1000


def _in_flow_run() -> bool:
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None


def publish_failures(failures: list[Failure]) -> None:
    """The validation failure table (file, location, column, rule, value), key `validation-failures`."""
    if not _in_flow_run():
        return
    from prefect.artifacts import create_table_artifact

    rows = [f.as_row() for f in failures[:MAX_TABLE_ROWS]]
    more = f" (first {MAX_TABLE_ROWS} of {len(failures)})" if len(failures) > MAX_TABLE_ROWS else ""
    create_table_artifact(table=rows, key="validation-failures",
                          description=f"Rows that broke a validation rule{more}; nothing was trained.")


def publish_drift(report: dict[str, Any]) -> None:
    """The data-drift report as markdown, key `data-drift`."""
    if not _in_flow_run():
        return
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown=drift_markdown(report), key="data-drift",
                             description=f"Drift of the new rows vs the last run and the champion's training data: "
                                         f"{report['status']}")


BASELINE_TITLES = {"last_run": "new rows vs the last successful run",
                   "champion_data": "new rows vs the current champion's training data"}


def drift_markdown(report: dict[str, Any]) -> str:
    """The drift report as markdown: per baseline, what was compared, then one row per check."""
    lines = [f"# Data drift: {report['status']}", ""]
    comparisons = report.get("comparisons") or ({"last_run": report} if report.get("checks") else {})
    if not any(c.get("checks") for c in comparisons.values()):
        lines.append(report.get("reason", ""))
    for name, comparison in comparisons.items():
        title = BASELINE_TITLES.get(name, name)
        if "rows" not in comparison:
            lines += [f"**{title}**: not compared ({comparison.get('reason', '')})", ""]
            continue
        rows, ref = comparison["rows"], comparison.get("reference", {})
        whose = ", ".join(f"{k} `{v}`" for k, v in ref.items() if k in ("version", "run_id") and v)
        lines += [f"**{title}**{f' ({whose})' if whose else ''}: {rows['new']} new rows of {rows['current']} "
                  f"against {rows['reference']} reference rows ({rows.get('no_longer_present', 0)} of which are "
                  f"no longer in the data): {comparison['status']}", ""]
        if not comparison.get("checks"):
            continue
        lines += ["| check | test | p-value | alpha | effect | drift |", "|---|---|---|---|---|---|"]
        for check_name, check in comparison["checks"].items():
            effect = check.get("cramers_v", check.get("statistic", check.get("increase")))
            alpha = f"{check['alpha']:.3g}" if "alpha" in check else ""
            lines.append(f"| {check_name} | {check['test']} | {check['p_value']:.3g} | {alpha} | {effect} | "
                         f"{'**yes**' if check['drift'] else 'no'} |")
        labels = comparison["checks"]["labels"]
        lines += ["", "Label shares (reference → new rows): " + ", ".join(
            f"{md(k)} {labels['reference_share'].get(k, 0):.1%} → {labels['current_share'].get(k, 0):.1%}"
            for k in labels["current_share"]), ""]
    return "\n".join(lines).rstrip()


def artifact_key(model_name: str, what: str) -> str:
    """A stable artifact key per model name (Prefect keys allow lower-case letters, digits and dashes)."""
    return "-".join(filter(None, ("".join(c if c.isalnum() else "-" for c in model_name.lower()), what)))


def publish_run(summary: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """The run's dashboard: metrics table, markdown report and the workdir's history, under stable keys."""
    if not _in_flow_run():
        return
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    name = summary.get("model", {}).get("name", "default")
    test = summary["metrics"]["test"]
    create_table_artifact(table=metrics_rows(test), key=artifact_key(name, "metrics"),
                          description=f"Test metrics of run {summary['run_id']} (overall and per class)")
    create_markdown_artifact(markdown=run_markdown(summary), key=artifact_key(name, "run-report"),
                             description="What this run did: data, validation, drift, augmentation, training, "
                                         "evaluation, promotion")
    create_table_artifact(table=history, key=artifact_key(name, "history"),
                          description="Key metrics of every successful run in this workdir, newest first")


def _round(value: float | None) -> float | None:
    """4 decimals; None stays None (no test row: estimate mode)."""
    return None if value is None else round(value, 4)


def metrics_rows(test: dict[str, Any]) -> list[dict[str, Any]]:
    """One row for the overall figures, then one per class."""
    rows = [{"scope": "overall", "accuracy": _round(test["accuracy"]), "macro_f1": _round(test["macro_f1"]),
             "precision": None, "recall": None, "f1": None, "support": test["n"]}]
    for label, figures in test["per_class"].items():
        rows.append({"scope": label, "accuracy": None, "macro_f1": None, "precision": _round(figures["precision"]),
                     "recall": _round(figures["recall"]), "f1": _round(figures["f1"]),
                     "support": figures["support"]})
    return rows


def history_row(summary: dict[str, Any]) -> dict[str, Any]:
    """The key figures of one run, for the history table."""
    test = summary.get("metrics", {}).get("test", {})
    return {"run_id": summary["run_id"], "finished": summary.get("finished"), "dataset_sha256":
            summary["dataset"]["sha256"][:12], "rows_used": summary["dataset"]["rows_used"],
            "accuracy": _round(test.get("accuracy", float("nan"))), "macro_f1": _round(test.get("macro_f1", float("nan"))),
            "model_version": summary.get("model", {}).get("version"), "promoted": summary.get("promoted"),
            "drift": summary.get("drift", {}).get("status"), "approval": approval_status(summary),
            "seconds": summary.get("seconds")}


MARKDOWN_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "&#124;", "\\": "&#92;", "`": "&#96;",
                     "*": "&#42;", "[": "&#91;", "]": "&#93;", "#": "&#35;", "$": "&#36;", "~": "&#126;"}


def md(text: Any) -> str:
    """`text` (a user's label, a value from the data) as literal markdown: HTML and markdown syntax (`|` would
    split a table cell, `<b>` would render) become character entities, line breaks spaces."""
    return "".join(MARKDOWN_ENTITIES.get(char, char) for char in " ".join(str(text).splitlines()))


def approval_status(summary: dict[str, Any]) -> str | None:
    """The registry's current word on the run's version: "approved by X (at)", "awaiting approval", ..."""
    from core.storage import registry

    model = summary.get("model") or {}
    try:
        record = registry.approval_record(Path(summary["config"]["workdir"]), model["name"], model["version"])
    except (KeyError, TypeError, OSError, ValueError):
        return None
    who = f" by {record['reviewer']}" if record.get("reviewer") else ""
    return f"{record['status']}{who}" + (f" ({record['at']})" if record.get("at") else "")


def run_markdown(summary: dict[str, Any]) -> str:
    """The run report: one section per part of the run."""
    data, test = summary["dataset"], summary["metrics"]["test"]
    lines = [f"# Retrain run {summary['run_id']}", "",
             "## Data", f"- file: `{data['path']}` (sha256 `{data['sha256'][:16]}`)",
             f"- rows read {data['rows']}, used {data['rows_used']}; duplicates dropped "
             f"{data['duplicates_dropped']}, conflicting rows dropped {data['conflicts_dropped']}",
             f"- labels: {', '.join(md(label) for label in data['labels'])}"]
    if split := summary.get("split"):
        lines.append(f"- split: {split['split_rows']}")
        lines += [f"- warning: {md(warning)}" for warning in (split.get("unmeasured_classes") or {}).get("warnings", [])]
    lines += ["", "## Validation and drift", "Validation passed: every row met every rule."]
    if drift := summary.get("drift"):
        lines += ["", drift_markdown(drift).replace("# Data drift", "Drift")]
    if augment := summary.get("augment"):
        lines += ["", "## Augmentation", f"{augment['augmented_rows']} augmented rows from "
                  f"{augment['rows_in']} ({augment['n_aug']} per training sentence, strengths {augment['strengths']})"]
    if embed := summary.get("embed"):
        lines += ["", "## Backbone", f"{embed['computed']} sentences computed, {embed['reused']} from the feature cache "
                  f"(unfreeze_top={embed['unfreeze_top']})"]
    if training := summary.get("training"):
        budget = training.get("budget") or {}
        lines += ["", "## Training"]
        if training.get("regime"):
            lines += [f"regime **{training['regime']}**: {training.get('regime_reason')}", ""]
        lines += [f"epoch {training['best_epoch']} of {training['epochs_run']} kept: "
                  f"{training.get('selection', 'best epoch')} (val macro-F1 {training.get('best_val_macro_f1')}, "
                  f"val loss {training['best_val_loss']}); budget {budget.get('epochs')} epochs of "
                  f"{budget.get('steps_per_epoch')} steps"]
        for phase, curve in training.get("history", {}).items():
            lines += ["", f"| {phase} epoch | loss | val loss | val accuracy | val macro-F1 |", "|---|---|---|---|---|"]
            lines += [f"| {i + 1} | {l:.4f} | {v:.4f} | {a:.3f} | {f:.3f} |" for i, (l, v, a, f) in
                      enumerate(zip(curve["loss"], curve["val_loss"], curve.get("val_accuracy", curve["val_loss"]),
                                    curve.get("val_macro_f1", curve["val_loss"])))]
    labels = test["confusion_matrix"]["labels"]
    if estimate := summary["metrics"].get("estimate"):  # estimate mode: no test split (tasks.estimate)
        figures = estimate["estimate"]
        lines += ["", "## Cross-validated estimate (no test split)", md(estimate["why"]["reason"]) + ": every labelled "
                  f"row trained the model. {md(figures['method'])}.", "",
                  f"estimated macro-F1 **{figures['macro_f1']['mean']:.4f}** [{figures['macro_f1']['low']:.4f}, "
                  f"{figures['macro_f1']['high']:.4f}], accuracy **{figures['accuracy']['mean']:.4f}** "
                  f"[{figures['accuracy']['low']:.4f}, {figures['accuracy']['high']:.4f}] "
                  f"({figures['confidence']:.0%} intervals): an estimate, not a test figure"]
    else:
        lines += ["", "## Evaluation on the test split",
              f"accuracy **{test['accuracy']:.4f}**, macro-F1 **{test['macro_f1']:.4f}** on {test['n']} sentences "
              f"(majority baseline {test['majority_baseline']['accuracy']:.4f} / {test['majority_baseline']['macro_f1']:.4f})"]
    if (unmeasured := test.get("unmeasured_classes")) and not estimate:
        measured_f1 = test.get("macro_f1_measured")
        lines += ["", f"Not measured (no test rows): {', '.join(md(repr(c)) for c in unmeasured)}; macro-F1 counts each as 0"
                  + (f"; over the measured classes it is {measured_f1:.4f}" if measured_f1 is not None else "")]
    if not estimate:
        lines += ["", "| true \\ predicted | " + " | ".join(map(md, labels)) + " |", "|---|" + "---|" * len(labels)]
        lines += [f"| {md(label)} | " + " | ".join(str(v) for v in row) + " |"
                  for label, row in zip(labels, test["confusion_matrix"]["rows_true_cols_predicted"])]
    lines += ["", "## Promotion"]
    if gate := summary.get("gate"):
        lines.append(f"decision: **{gate.get('decision')}**: {md(gate.get('reason', ''))}")
        if gate.get("detectable_note"):
            lines += ["", f"What this test split can detect: {gate['detectable_note']}."]
    model = summary.get("model", {})
    lines.append(f"model `{model.get('name')}` version `{model.get('version')}`: "
                 f"{'promoted to champion' if summary.get('promoted') else 'registered, not promoted'}")
    if model.get("path") and (Path(model["path"]) / "report.html").is_file():
        lines += ["", "## Model report",
                  f"The version's self-contained HTML report (data, learning curves, confusion matrix, per-class "
                  f"intervals, calibration, the gate's bootstrap, lineage, approval): "
                  f"[`{Path(model['path']) / 'report.html'}`]({(Path(model['path']) / 'report.html').as_uri()})"]
    if suggestions := summary.get("suggestions"):
        lines += ["", "## What to label next"]
        if "error" in suggestions:
            lines.append(f"No list: the pool `{suggestions['pool']}` could not be ranked ({suggestions['error']}).")
        else:
            lines.append(f"{suggestions['candidates']} of {suggestions['rows']} pool rows ranked for model "
                         f"`{suggestions['model']}` ({suggestions['already_labelled'] + suggestions['near_labelled']} "
                         f"already labelled or near-duplicates of labelled ones, {suggestions['duplicates_in_pool']} "
                         f"repeated, {suggestions['invalid']} invalid); the {suggestions['suggested']} most worth "
                         f"labelling, best first: `{suggestions['out']}`")
    if (approval := (summary.get("gate") or {}).get("approval")) and approval.get("approve"):
        lines += ["", f"Awaiting a second person's approval: `{approval['approve']}` (or `{approval['reject']}`)"]
    return "\n".join(lines)
