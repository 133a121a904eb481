"""The predict flow: score a file with the champion (or a named version) and write predictions to Parquet.

    .venv/bin/python -m flows.predict --data PATH --out FILE.parquet [--model champion|VERSION]
                                      [--workdir DIR] [--text-col NAME] [--name MODEL_NAME]
                                      [--set data.KEY=VALUE ...] [--on-invalid refuse|keep]

Writes one row per input row, in input order: the input's columns, `predicted_label` and one `prob_<label>` per
label. The file is read the way retrain reads its data: `--set` takes the same data-reading settings
(data.encoding, data.delimiter, data.max_chars, data.max_file_mb); any not given default to those the model was
trained with (its lineage), and the text column to the model's own (`data.text_col`), else `text`.

Rows in = rows out: a blank line between rows is a row with an empty text, in every file type. By default
(`--on-invalid refuse`) any invalid row refuses the whole file, every bad row listed (exit 65); with
`--on-invalid keep` invalid rows are written too, with an empty prediction and a `reason` column.

Large files stream: rows are read, checked, scored and written `predict.chunk_rows` (4096) at a time, so memory
does not grow with the file; the output is written under a temporary name and renamed at the end (a killed run
leaves no partial output). `--set runner=dask` scores the chunks on Dask workers (a local cluster of
`dask.workers` processes, or the scheduler at `dask.address`), joined in input order: the same predictions.

`--out` may hold `{date}` (the UTC date, e.g. scores/{date}.parquet: a scheduled run's own file). Each run publishes
a `<name>-scoring` artifact: rows scored, time, and the predicted labels' shares against the model's own data with
their population stability index (PSI; the `predict/score-daily` deployment in prefect.yaml runs it daily).

The last line on stdout is the absolute path of the output. Exit codes as retrain's: 65 invalid input (every
bad row listed), 66 input missing, 1 anything else (e.g. no champion yet), 2 bad command line.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import flow

from flows import cli
from schemas.config import ConfigError, DataConfig, RetrainConfig
from core.text.inputs import ON_INVALID
from tasks.predict import predict_file, prediction_drift
from core.registry import resolve_version
from core.storage.records import FlowOutcomeSerializer
from core.registry.version import Version

# The settings of retrain that say how a file is read: the ones predict accepts with --set.
READING_KEYS = ("data.encoding", "data.delimiter", "data.max_chars", "data.max_file_mb", "data.header")
# ... and how it is scored (never taken from the model's lineage: they do not change a prediction).
SCORING_KEYS = ("predict.chunk_rows", "predict.batch_size", "runner", "dask.address", "dask.workers", "dask.shards")


def reading_settings(folder: Path, overrides: dict[str, Any] | None = None) -> DataConfig:
    """How to read the file to score: `overrides` (READING_KEYS only), else what the model in `folder` was trained
    with (its lineage's `data` settings), else the defaults. Raises `ConfigError` on another key or a bad value."""
    overrides = {key: value for key, value in (overrides or {}).items() if key not in SCORING_KEYS}
    if unknown := sorted(set(overrides) - set(READING_KEYS)):
        raise ConfigError(f"flows.predict cannot set {', '.join(unknown)}: its --set takes the data-reading "
                          f"settings {', '.join(READING_KEYS)}")
    try:
        trained = Version(folder).read_lineage()["config"]["data"]
    except (OSError, ValueError, KeyError, TypeError):
        trained = {}
    # data.header describes one file (is its line 1 a header?), not how the model reads: never taken from training
    tree = {key: trained[key.split(".")[1]] for key in READING_KEYS
            if key.split(".")[1] in trained and key != "data.header"}
    cfg = RetrainConfig.from_parameters(text_col=trained.get("text_col", "text"), overrides={**tree, **overrides})
    return cfg.data


@flow(name="predict", log_prints=True, persist_result=False, result_serializer=FlowOutcomeSerializer())
def predict(data: str, out: str, model: str = "champion", workdir: str = "workdir", text_col: str | None = None,
            name: str = "default", overrides: dict[str, Any] | None = None, on_invalid: str = "refuse") -> dict:
    """Score `data` with model `model` of `name` from the registry in `workdir`; returns figures.

    `overrides` holds data-reading settings (READING_KEYS) and scoring ones (SCORING_KEYS: chunk size, batch size,
    runner, Dask cluster); `on_invalid` is `refuse` or `keep`."""
    folder = resolve_version(Path(workdir), name, model)
    settings = reading_settings(folder, overrides)
    out = out.replace("{date}", datetime.now(timezone.utc).strftime("%Y-%m-%d"))  # a scheduled run's own file
    scoring = RetrainConfig.from_parameters(overrides={k: v for k, v in (overrides or {}).items() if k in SCORING_KEYS})
    figures = predict_file(Path(data), Path(out), folder, text_col or settings.text_col, None,  # its own backbone
                           settings.encoding, settings.max_chars, settings.max_file_mb, settings.delimiter,
                           on_invalid, settings.header, scoring.predict.chunk_rows, scoring.predict.batch_size,
                           scoring.dask if scoring.runner == "dask" else None)
    figures["drift"] = prediction_drift(folder, figures["predicted_counts"])
    figures["out"] = str(Path(out).resolve())
    publish_scoring(name, figures)
    return figures


def publish_scoring(name: str, figures: dict) -> None:
    """The run's `<name>-scoring` artifact: rows scored, time, and the predicted labels against the model's own
    data (shares, PSI, chi-square: `tasks.predict.prediction_drift`)."""
    from prefect.artifacts import create_markdown_artifact
    from core.reports.dashboard import artifact_key

    drift = figures["drift"]
    create_markdown_artifact(markdown=scoring_markdown(figures), key=artifact_key(name, "scoring"),
                             description=f"flows.predict: {figures['rows']:,} rows, PSI {drift.get('psi')}")


def scoring_markdown(figures: dict) -> str:
    """The scoring artifact's text (see `publish_scoring`)."""
    drift = figures["drift"]
    lines = [f"# Scoring with {figures['model']}", "",
             f"**{figures['rows']:,} rows** scored ({figures['scored']:,} predicted, {figures['invalid_kept']:,} "
             f"invalid kept) in **{figures['seconds']:.1f} s** ({figures['sentences_per_second']:.0f} sentences/s, "
             f"{figures['runner']}) -> `{figures['out']}`", ""]
    if drift.get("psi") is not None:
        lines += ["| label | predicted share | share in the model's data |", "|---|---|---|"]
        lines += [f"| {label} | {share:.1%} | {drift['reference_share'][label]:.1%} |"
                  for label, share in drift["predicted_share"].items()]
        lines += ["", f"Drift of the predictions: PSI **{drift['psi']:.3f}** ({drift['verdict']}; < 0.1 stable, "
                      f"0.1-0.25 moderate, > 0.25 large); chi-square {drift['chi_square']:.1f}, p = "
                      f"{drift['chi_square_p']:.2g} (reference: the model's {drift['reference_rows']:,} test rows)."]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flows.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=cli.path_arg,
                        help="CSV, TSV, Parquet or JSON-lines file to score (a path or a file:// URL)")
    parser.add_argument("--out", required=True, type=cli.path_arg, help="Parquet file to write")
    parser.add_argument("--model", default="champion", help="`champion` (default) or a version from the registry")
    parser.add_argument("--workdir", default="workdir", type=cli.path_arg,
                        help="the retrain workdir holding the registry (default: ./workdir)")
    parser.add_argument("--text-col", default=None,
                        help="column holding the text (default: the one the model was trained on, else text)")
    parser.add_argument("--name", default="default", help="model name (model.name), default: default")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="a data-reading setting, as for retrain (repeatable): "
                             f"{', '.join(READING_KEYS)} (default: the model's training settings); or a scoring "
                             f"one: {', '.join(SCORING_KEYS)} (e.g. runner=dask)")
    parser.add_argument("--on-invalid", choices=ON_INVALID, default="refuse",
                        help="refuse (default): any invalid row refuses the file, every bad row listed; keep: "
                             "write invalid rows too, with an empty prediction and a `reason` column")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = cli.overrides_from(parser, args.assignments)
    try:
        cli.restrict_set(overrides, READING_KEYS + SCORING_KEYS, "predict", "data-reading or scoring")  # bad values:
    except ConfigError as exc:                                                                  # exit 2 before start-up
        cli.setting_error(parser, str(exc))
    cli.quiet_expected_errors()
    return cli.run_command("predict", args.data, lambda: predict(
        data=str(args.data), out=str(args.out), model=args.model, workdir=str(args.workdir), text_col=args.text_col,
        name=args.name, overrides=overrides, on_invalid=args.on_invalid)["out"])


if __name__ == "__main__":
    sys.exit(main())
