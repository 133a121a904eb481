"""The predict flow: score a file with the champion (or a named version) and write predictions to Parquet.

    .venv/bin/python -m flows.predict --data PATH --out FILE.parquet [--model champion|VERSION]
                                      [--workdir DIR] [--text-col NAME] [--name MODEL_NAME]

Writes one row per input row: the input's columns, `predicted_label` and one `prob_<label>` per label. The
last line on stdout is the absolute path of the output. Exit codes as retrain's: 65 invalid input (every bad
row listed), 66 input missing, 1 anything else (e.g. no champion yet), 2 bad command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefect import flow

from flows import cli
from tasks.backbone import Backbone
from tasks.predict import predict_file, resolve_version
from tasks.readers import require_file


@flow(name="predict", log_prints=True)
def predict(data: str, out: str, model: str = "champion", workdir: str = "workdir", text_col: str = "text",
            name: str = "default") -> dict:
    """Score `data` with model `model` of `name` from the registry in `workdir`; returns figures."""
    folder = resolve_version(Path(workdir), name, model)
    return predict_file(Path(data), Path(out), folder, text_col, Backbone.resolve(None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=cli.path_arg,
                        help="CSV, TSV, Parquet or JSON-lines file to score (a path or a file:// URL)")
    parser.add_argument("--out", required=True, type=cli.path_arg, help="Parquet file to write")
    parser.add_argument("--model", default="champion", help="`champion` (default) or a version from the registry")
    parser.add_argument("--workdir", default="workdir", type=cli.path_arg,
                        help="the retrain workdir holding the registry (default: ./workdir)")
    parser.add_argument("--text-col", default="text")
    parser.add_argument("--name", default="default", help="model name (model.name), default: default")
    args = parser.parse_args(argv)
    cli.quiet_expected_errors()
    try:
        require_file(args.data)
        predict(data=str(args.data), out=str(args.out), model=args.model, workdir=str(args.workdir), text_col=args.text_col,
                name=args.name)
    except Exception as exc:  # noqa: BLE001 (the command line's last line of defence: a message, an exit code)
        return cli.report(exc)
    print(Path(args.out).resolve())
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
