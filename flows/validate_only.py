"""`--validate-only`: validate and split the data with the plain step functions, print a report, train nothing.

No Prefect run is started (it would only add start-up time); the steps write their content-addressed
artifacts as a full run would, so a following run finds them cached.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

from schemas.config import RetrainConfig
from tasks.drift import drift
from core.storage.artifacts import write_json_atomic
from core.reports.dashboard import drift_markdown
from core.run.runner import champion_training_data, latest_success
from tasks.split import split
from tasks.validate import validate


def validate_only(cfg: RetrainConfig) -> Path:
    """Validate and split `cfg.data`; print the report on stderr and return the path of its JSON copy."""
    validated = validate(cfg.data, cfg.workdir)
    reference_run, reference = latest_success(cfg.workdir)
    drifted = drift(validated, reference, cfg.validate_, cfg.workdir,
                    champion_data=champion_training_data(cfg.workdir, cfg.model.name)).meta["report"]
    splits = split(validated, cfg.split, cfg.data.max_train_rows, cfg.data.min_per_class, cfg.workdir)
    report = {"dataset": str(Path(cfg.data.path).resolve()), "validated": validated.meta, "split": splits.meta,
              "drift": {**drifted, "reference_run_id": reference_run}}
    meta = validated.meta
    print(f"{meta['source']}: valid. {meta['rows_read']} rows read, {meta['rows_used']} used "
          f"({meta['duplicates_dropped']} duplicates and {meta['conflicts_dropped']} conflicting rows dropped); "
          f"labels {', '.join(meta['labels'])}; split {splits.meta['split_rows']}", file=sys.stderr)
    for note in meta.get("read_notes", []):
        print(f"note: {note}", file=sys.stderr)
    for warning in splits.meta.get("unmeasured_classes", {}).get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    print(drift_markdown(drifted), file=sys.stderr)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return write_json_atomic(Path(cfg.workdir) / "validation" / f"{stamp}.json", report)
