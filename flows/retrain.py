"""The retrain flow: validate, drift, split, augment, tokenize, embed, finetune, evaluate, gate, promote.

Run it: `.venv/bin/python -m flows.retrain [--data PATH] [--set KEY=VALUE ...]` (see --help), or as the
Prefect deployments in prefect.yaml. The flow's parameters are those of CONTRACT.md; they build the one
typed `RetrainConfig`, and each step receives only its own section of it.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # the command line: Prefect's temporary API boots while the imports below run
    from flows import local_api

    _early_api = local_api.TemporaryAPI.start() if local_api.wanted(sys.argv[1:]) else None

import argparse  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402

from core.model.backbone import Backbone  # noqa: E402
from core import faults  # noqa: E402
from core.run.runner import StepRunner  # noqa: E402
from core.storage.records import FlowOutcomeSerializer  # noqa: E402
from core.text.readers import require_file  # noqa: E402
from flows import cli, dag, local_api  # noqa: E402
from schemas.config import ConfigError, RetrainConfig  # noqa: E402
from flows import approval  # noqa: E402


@flow(name="retrain", log_prints=True, persist_result=False, result_serializer=FlowOutcomeSerializer())
def retrain(
    data: str | None = None,
    text_col: str = "text",
    label_col: str = "label",
    workdir: str = "workdir",
    overrides: dict[str, Any] | None = None,
) -> str:
    """Re-train the text classifier on `data` and promote it; returns the path of the run's summary.json.

    validate -> drift -> split -> augment -> tokenize -> embed -> finetune -> evaluate -> gate -> promote: each
    step a Prefect task run through the StepRunner, called by `flows/dag.py: pipeline`; then the
    version's report and, with gate.approval=manual, a reviewer's decision.
    """
    cfg = RetrainConfig.from_parameters(data, text_col, label_col, workdir, overrides)
    cli.check_backbone_settings(cfg)  # the settings the backbone bounds, from its config.json (as the command line)
    backbone = Backbone.resolve(cfg.model.backbone, cfg.train.unfreeze_top)  # ConfigError before any step
    with StepRunner(cfg, run_id=str(flow_run.id)) as run:
        done = dag.pipeline(run, cfg, backbone)  # each step a Prefect task run through the StepRunner
        approval.review(run, done["promote"], done["gate"], cfg.gate)  # report.html; gate.approval=manual: a reviewer decides
        if cfg.suggest.pool:
            suggest_next(run, cfg, done["promote"])
        return str(run.write_summary())


def suggest_next(run: StepRunner, cfg: RetrainConfig, release) -> None:
    """With `suggest.pool` set: the step `suggest` ranks the pool for the champion (this run's model if there
    is none) and writes `runs/<run_id>/suggestions.csv`. The model is already registered by then, so a failure
    here (a pool gone missing, say) is logged and recorded in the summary, never the run's failure."""
    import logging

    from core import registry
    from tasks.suggest import suggest_task

    try:
        folder = registry.resolve_version(run.workdir, cfg.model.name, "champion")
    except registry.RegistryError:
        folder = Path(release.path)
    out = run.workdir / "runs" / run.run_id / "suggestions.csv"
    try:
        run.step("suggest", suggest_task, Path(cfg.suggest.pool), out, cfg.suggest.n, folder,
                 text_col=cfg.data.text_col, encoding=cfg.data.encoding, max_chars=cfg.data.max_chars,
                 max_file_mb=cfg.data.max_file_mb, delimiter=cfg.data.delimiter)
    except Exception as exc:  # noqa: BLE001 (after promotion nothing may fail the run; the summary says what happened)
        logging.getLogger(__name__).warning("suggest: no list written for %s: %s", cfg.suggest.pool, exc)
        run.refs["suggest"] = {"error": f"{type(exc).__name__}: {exc}", "pool": str(cfg.suggest.pool)}


def build_parser() -> argparse.ArgumentParser:
    """The command line of CONTRACT.md."""
    parser = argparse.ArgumentParser(
        prog="python -m flows.retrain",
        description="Validate a labelled text file, fine-tune the classifier on a frozen pre-trained backbone, "
                    "evaluate it on a held-out split and promote it. The last line on stdout is the path of "
                    "the run's summary.json.",
        epilog="Exit codes: 0 success, 2 bad command line, 65 invalid data (every failing row is listed), "
               "66 input file missing or unreadable, 1 any other failure (the stage is named).")
    parser.add_argument("--data", help="CSV, TSV, Parquet or JSON-lines file (by extension); default: the "
                                       "bundled Financial PhraseBank demo data")
    parser.add_argument("--text-col", default="text", help="column holding the text (default: text)")
    parser.add_argument("--label-col", default="label", help="column holding the label (default: label)")
    parser.add_argument("--workdir", default="workdir", help="root of artifacts, caches, models and run "
                                                             "records: a path or a file:// URL (default: ./workdir)")
    parser.add_argument("--validate-only", action="store_true", help="validate and split the data, print the "
                                                                     "report, train nothing")
    cli.add_set_option(parser)
    return parser


def main(argv: list[str] | None = None, early_api: local_api.TemporaryAPI | None = None) -> int:
    """Parse the command line, run the flow (or validation alone), print the summary path; returns the exit code.
    `early_api`: Prefect's temporary API if the command line started it already (see `flows.local_api`); it is
    stopped before this returns."""
    try:
        return _main(argv, early_api)
    finally:
        if early_api is not None:
            early_api.stop()  # unused (bad command line, missing file, ...) or already stopped: never left behind


def _main(argv: list[str] | None, early_api: local_api.TemporaryAPI | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = cli.overrides_from(parser, args.assignments)
    try:
        cfg = RetrainConfig.from_parameters(args.data, args.text_col, args.label_col, args.workdir, overrides)
        cli.check_backbone_settings(cfg)  # exit 2 before Prefect or TensorFlow start: --validate-only and a run alike
    except ConfigError as exc:
        cli.setting_error(parser, str(exc))
    cli.quiet_expected_errors()
    faults.arm(os.environ.get(faults.ENV))  # test-only failpoints; inert unless the variable is set
    try:
        if args.data:
            require_file(cfg.data.path)  # fail fast, before any Prefect or TensorFlow start-up
        cli.ensure_writable(cfg.workdir)
        if args.validate_only:
            from flows.validate_only import validate_only

            result = validate_only(cfg)
        else:
            with local_api.for_run(cfg.runner, early_api):
                result = retrain(data=args.data, text_col=args.text_col, label_col=args.label_col,
                                 workdir=args.workdir, overrides=overrides)
    except Exception as exc:  # noqa: BLE001 (the command line's last line of defence: a message, an exit code)
        return cli.report(exc, cfg.validate_.max_reported)
    print(Path(result).resolve())
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main(early_api=_early_api))
