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

The last line on stdout is the absolute path of the output. Exit codes as retrain's: 65 invalid input (every
bad row listed), 66 input missing, 1 anything else (e.g. no champion yet), 2 bad command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from prefect import flow

from flows import cli
from schemas.config import ConfigError, DataConfig, RetrainConfig
from tasks.predict import ON_INVALID, predict_file, resolve_version
from core.storage.records import FlowOutcomeSerializer
from core.text.readers import require_file

# The settings of retrain that say how a file is read: the ones predict accepts with --set.
READING_KEYS = ("data.encoding", "data.delimiter", "data.max_chars", "data.max_file_mb", "data.header")


def reading_settings(folder: Path, overrides: dict[str, Any] | None = None) -> DataConfig:
    """How to read the file to score: `overrides` (READING_KEYS only), else what the model in `folder` was trained
    with (its lineage's `data` settings), else the defaults. Raises `ConfigError` on another key or a bad value."""
    overrides = dict(overrides or {})
    if unknown := sorted(set(overrides) - set(READING_KEYS)):
        raise ConfigError(f"flows.predict cannot set {', '.join(unknown)}: its --set takes the data-reading "
                          f"settings {', '.join(READING_KEYS)}")
    try:
        trained = json.loads((folder / "lineage.json").read_text())["config"]["data"]
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

    `overrides` holds data-reading settings (READING_KEYS); `on_invalid` is `refuse` or `keep`."""
    folder = resolve_version(Path(workdir), name, model)
    settings = reading_settings(folder, overrides)
    return predict_file(Path(data), Path(out), folder, text_col or settings.text_col, None,  # its own backbone
                        settings.encoding, settings.max_chars, settings.max_file_mb, settings.delimiter, on_invalid,
                        settings.header)


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
                             f"{', '.join(READING_KEYS)}; default: the model's training settings")
    parser.add_argument("--on-invalid", choices=ON_INVALID, default="refuse",
                        help="refuse (default): any invalid row refuses the file, every bad row listed; keep: "
                             "write invalid rows too, with an empty prediction and a `reason` column")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = cli.overrides_from(parser, args.assignments)
    try:
        if unknown := sorted(set(overrides) - set(READING_KEYS)):
            raise ConfigError(f"--set {', '.join(unknown)} is not a data-reading setting; flows.predict takes "
                              f"--set with {', '.join(READING_KEYS)}")
        RetrainConfig.from_parameters(overrides=overrides)  # bad values: exit 2 before any start-up
    except ConfigError as exc:
        cli.setting_error(parser, str(exc))
    cli.quiet_expected_errors()
    try:
        require_file(args.data)
        predict(data=str(args.data), out=str(args.out), model=args.model, workdir=str(args.workdir),
                text_col=args.text_col, name=args.name, overrides=overrides, on_invalid=args.on_invalid)
    except Exception as exc:  # noqa: BLE001 (the command line's last line of defence: a message, an exit code)
        return cli.report(exc, command="predict")
    print(Path(args.out).resolve())
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
