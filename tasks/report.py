"""What a run shows on the Prefect dashboard: artifacts with stable keys, readable by operators and the API.

Each function publishes one artifact of the current flow run; outside a flow run (plain function calls,
`--validate-only`) there is no run to attach to and they do nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from tasks.errors import Failure

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
                             description=f"Data drift since the last successful run: {report['status']}")


def drift_markdown(report: dict[str, Any]) -> str:
    """The drift report as a markdown table, one row per check."""
    lines = [f"# Data drift: {report['status']}", ""]
    if not report["checks"]:
        return "\n".join(lines + [report.get("reason", "")])
    lines += ["| check | test | p-value | effect | drift |", "|---|---|---|---|---|"]
    for name, check in report["checks"].items():
        effect = check.get("cramers_v", check.get("statistic", check.get("increase")))
        lines.append(f"| {name} | {check['test']} | {check['p_value']:.3g} | {effect} | "
                     f"{'**yes**' if check['drift'] else 'no'} |")
    labels = report["checks"]["labels"]
    lines += ["", "Label shares (reference → current): " + ", ".join(
        f"{k} {labels['reference_share'].get(k, 0):.1%} → {labels['current_share'].get(k, 0):.1%}"
        for k in labels["current_share"])]
    return "\n".join(lines)
