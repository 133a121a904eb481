"""The suggest flow: which unlabelled sentences to label next, best first (active learning).

    .venv/bin/python -m flows.suggest --pool PATH --n N --out FILE.csv [--model champion|VERSION]
                                      [--workdir DIR] [--name NAME] [--text-col NAME] [--set data.KEY=VALUE ...]

Reads the pool (CSV, TSV, Parquet or JSON lines, read as retrain reads; no label column needed), scores it with
the model through the workdir's feature cache (a pool scored before costs no backbone run), and writes the N rows
most worth labelling (`tasks.suggest`: margin-weighted k-means, Zhdanov 2019, arXiv:1901.05954, by default; or
--method badge, Ash et al. 2020, arXiv:1906.03671), best first: the pool's columns, `rank`, `predicted_label`, one
`prob_<label>` per label, `score` (the model's uncertainty), `margin` and `reason`. Never a sentence of the model's labelled data or a near-duplicate of one (cosine of
the embeddings >= --max-similarity, default 0.95), nor two near-duplicates of each other. Every pool row is
accounted for in the log (invalid, repeated, already labelled, near-duplicate, candidate). `--out` ends in .csv or
.parquet and is written atomically.

The last line on stdout is the absolute path of the output. Exit codes as retrain's: 65 invalid pool (a column
named like an added one), 66 pool missing, 1 anything else (no champion yet, the model's data pruned), 2 bad
command line.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # the command line: Prefect's temporary API boots while the imports below run
    from flows import local_api

    _early_api = local_api.TemporaryAPI.start() if local_api.wanted(sys.argv[1:]) else None

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow  # noqa: E402

from flows import cli, local_api  # noqa: E402
from flows.predict import READING_KEYS, reading_settings  # noqa: E402
from schemas.config import ConfigError  # noqa: E402
from core.registry import resolve_version  # noqa: E402
from tasks.suggest import FORMATS, MAX_SIMILARITY, METHODS, suggest_task  # noqa: E402
from core.storage.records import FlowOutcomeSerializer  # noqa: E402

TABLE_ROWS = 100  # rows of the list shown in the dashboard's table artifact (the file holds all of them)


@flow(name="suggest", log_prints=True, persist_result=False, result_serializer=FlowOutcomeSerializer())
def suggest(pool: str, out: str, n: int = 100, model: str = "champion", workdir: str = "workdir",
            text_col: str | None = None, name: str = "default", overrides: dict[str, Any] | None = None,
            max_similarity: float = MAX_SIMILARITY, method: str = "margin-kmeans") -> dict:
    """Write the `n` rows of `pool` most worth labelling for model `model` of `name` (registry in `workdir`) to
    `out`; returns the accounting of the pool's rows (`tasks.suggest.suggest_file`). Publishes the list as the
    `<name>-suggestions` table artifact when a Prefect API records the run."""
    folder = resolve_version(Path(workdir), name, model)
    settings = reading_settings(folder, overrides)
    figures = suggest_task(Path(pool), Path(out), n, folder, Path(workdir), text_col or settings.text_col,
                           settings.encoding, settings.max_chars, settings.max_file_mb, settings.delimiter,
                           max_similarity, method=method)
    publish(figures, name)
    return figures


def publish(figures: dict, name: str) -> None:
    """The list as a table artifact (`<name>-suggestions`), its accounting in the description."""
    import pandas as pd
    from prefect.artifacts import create_table_artifact

    path = Path(figures["out"])
    frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    rows = frame.head(TABLE_ROWS).astype(object).where(frame.head(TABLE_ROWS).notna(), None)
    create_table_artifact(
        key=f"{name}-suggestions", table=rows.to_dict(orient="records"),
        description=(f"What to label next, best first: {figures['suggested']} of {figures['rows']} pool rows "
                     f"({figures['candidates']} candidates; {figures['already_labelled']} already labelled, "
                     f"{figures['near_labelled']} near-duplicates of labelled ones, {figures['duplicates_in_pool']} "
                     f"repeated, {figures['invalid']} invalid), model {figures['model']}; the whole list: {path}"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flows.suggest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", required=True, type=cli.path_arg,
                        help="unlabelled CSV, TSV, Parquet or JSON-lines file (a path or a file:// URL)")
    parser.add_argument("--n", required=True, type=_positive, help="how many rows to suggest")
    parser.add_argument("--out", required=True, type=cli.path_arg, help="file to write: .csv or .parquet")
    parser.add_argument("--model", default="champion", help="`champion` (default) or a version from the registry")
    parser.add_argument("--workdir", default="workdir", type=cli.path_arg,
                        help="the retrain workdir holding the registry and the feature cache (default: ./workdir)")
    parser.add_argument("--name", default="default", help="model name (model.name), default: default")
    parser.add_argument("--text-col", default=None,
                        help="column holding the text (default: the one the model was trained on, else text)")
    parser.add_argument("--max-similarity", type=float, default=MAX_SIMILARITY,
                        help="cosine of the sentence embeddings at or above which two sentences count as "
                             f"near-duplicates (default {MAX_SIMILARITY})")
    parser.add_argument("--method", choices=METHODS, default=METHODS[0],
                        help="margin-kmeans (default: margin-weighted k-means, Zhdanov 2019) or badge (Ash et al. "
                             "2020); both uncertain and diverse")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help=f"a data-reading setting, as for retrain (repeatable): {', '.join(READING_KEYS)}")
    return parser


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {number}")
    return number


def main(argv: list[str] | None = None, early_api: local_api.TemporaryAPI | None = None) -> int:
    """Parse the command line, run the flow, print the output's path; returns the exit code. `early_api`:
    Prefect's temporary API if the command line started it already (`flows.local_api`); stopped before this
    returns."""
    try:
        return _main(argv, early_api)
    finally:
        if early_api is not None:
            early_api.stop()


def _main(argv: list[str] | None, early_api: local_api.TemporaryAPI | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = cli.overrides_from(parser, args.assignments)
    if args.out.suffix.lower() not in FORMATS:
        parser.error(f"--out must end in {' or '.join(FORMATS)}, got {args.out.name}")
    if not 0 < args.max_similarity <= 1:
        parser.error(f"--max-similarity must be in (0, 1], got {args.max_similarity}")
    try:
        cli.restrict_set(overrides, READING_KEYS, "suggest")
    except ConfigError as exc:
        parser.error(str(exc))
    cli.quiet_expected_errors()

    def action() -> Path:
        with local_api.for_run("threads", early_api):
            suggest(pool=str(args.pool), out=str(args.out), n=args.n, model=args.model, workdir=str(args.workdir),
                    text_col=args.text_col, name=args.name, overrides=overrides,
                    max_similarity=args.max_similarity, method=args.method)
        return Path(args.out).resolve()

    return cli.run_command("suggest", args.pool, action)


if __name__ == "__main__":
    sys.exit(main(early_api=_early_api))
