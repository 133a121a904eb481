"""`--validate-only`: the DAG's first steps (validate, drift, split) as plain functions, a report, no training.

No Prefect run is started (it would only add start-up time); the steps write their content-addressed
artifacts as a full run would, so a following run finds them cached.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

from core.reports.dashboard import drift_markdown
from core.storage.artifacts import write_json_atomic
from flows import dag
from schemas.config import RetrainConfig


def validate_only(cfg: RetrainConfig) -> Path:
    """Validate and split `cfg.data`; print the report on stderr and return the path of its JSON copy."""
    done = dag.run(dag.Plain(cfg), cfg, until="split")
    validated, splits, drifted = done["validate"], done["split"], done["drift"].meta["report"]
    report = {"dataset": str(Path(cfg.data.path).resolve()), "validated": validated.meta, "split": splits.meta,
              "drift": {**drifted, "reference_run_id": done.baselines.last_run_id}}
    meta = validated.meta
    print(f"{meta['source']}: valid. {meta['rows_read']} rows read, {meta['rows_used']} used "
          f"({meta['duplicates_dropped']} duplicates and {meta['conflicts_dropped']} conflicting rows dropped); "
          f"labels {', '.join(meta['labels'])}; split {splits.meta['split_rows']}", file=sys.stderr)
    for note in meta.get("read_notes", []):
        print(f"note: {note}", file=sys.stderr)
    for warning in splits.meta.get("unmeasured_classes", {}).get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    if estimate := splits.meta.get("estimate"):  # no hold-out: a run estimates quality by cross-validation
        print(f"note: {estimate['reason']}: a run trains on every labelled row and reports a cross-validated "
              f"estimate; {estimate['rows_needed_per_class']} rows a class give a measured test split", file=sys.stderr)
    print(drift_markdown(drifted), file=sys.stderr)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return write_json_atomic(Path(cfg.workdir) / "validation" / f"{stamp}.json", report)
