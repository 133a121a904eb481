"""Sentence embeddings of a file, for search and clustering, and to hold any body against its reference.

    .venv/bin/python -m flows.embed --data PATH --out FILE.parquet [--backbone NAME|FOLDER] [--text-col NAME]
                                    [--workdir DIR] [--set data.KEY=VALUE ...]

Writes one row per input row, in input order: the input's columns plus `embedding`, a float32 list (the backbone's
hidden size: 384 for all-minilm-l6-v2, 768 for all-mpnet-base-v2), mean-pooled over the real tokens and
L2-normalised, as sentence-transformers computes it. Each sentence is truncated where the backbone's
sentence-transformers folder says (`sentence_bert_config.json`'s `max_seq_length`), else to its positions.
The file is read as retrain reads its data (CSV, TSV, Parquet, JSON lines; `--set` takes data.encoding,
data.delimiter, data.max_chars, data.max_file_mb); an invalid row refuses the whole file, every bad row listed.
Embeddings go through the workdir's feature cache (`core.storage.feature_cache`), shared with retrain: a sentence
already embedded by the same weights is read, not computed.
The last line on stdout is the absolute path of the output. Exit codes: 0, 2 bad command line (an unknown or
uninstalled backbone: `make mpnet` installs all-mpnet-base-v2), 65 invalid input, 66 input missing, 1 other.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flows import cli
from schemas.config import ConfigError

log = logging.getLogger("flows.embed")
READING_KEYS = ("data.encoding", "data.delimiter", "data.max_chars", "data.max_file_mb")
COLUMN = "embedding"


def truncation(preset: Path, positions: int) -> int:
    """Tokens kept per sentence, `<s>`/`[CLS]` and `</s>`/`[SEP]` included: the folder's sentence-transformers
    `max_seq_length` (384 for all-mpnet-base-v2, 256 for all-MiniLM-L6-v2), else the backbone's positions."""
    try:
        return min(int(json.loads((Path(preset) / "sentence_bert_config.json").read_text())["max_seq_length"]),
                   positions)
    except (OSError, ValueError, KeyError, TypeError):
        return positions


def embed_file(data: Path, out: Path, backbone_setting: str | None, text_col: str, workdir: Path,
               reading: dict) -> dict:
    """Embed every row of `data` (read with `reading`: DataConfig's reading settings) with the backbone
    `backbone_setting` names and write `out` atomically (input columns + `embedding`); returns figures.
    Raises `ConfigError` if the input already has an `embedding` column (it would be overwritten),
    `InvalidData` for invalid rows."""
    from core.model.backbone import Backbone, encode_for_model
    from core.storage.artifacts import atomic_path
    from core.model.features import cached_features
    from core.text.inputs import rows_to_arrow
    from core.text.inputs import read_texts

    backbone = Backbone.resolve(backbone_setting)
    inputs = read_texts(Path(data), text_col, **reading)
    if COLUMN in inputs.frame.columns:
        raise ConfigError(f"{data} already has a column {COLUMN!r}: it would be overwritten; rename it first")
    shape = backbone.architecture
    texts = inputs.frame[text_col].astype(str).tolist()
    sequences = encode_for_model(backbone.path, texts, truncation(backbone.path, shape.max_positions))
    embeddings, _, counts = cached_features(backbone, sequences, shape.blocks, Path(workdir))
    table = rows_to_arrow(inputs.frame).append_column(
        COLUMN, pa.array(list(np.asarray(embeddings, np.float32)), pa.list_(pa.float32())))
    with atomic_path(Path(out)) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    log.info("embed: %d rows in, %d rows out (%d distinct sentences: %d computed, %d from the feature cache) -> %s",
             len(texts), table.num_rows, counts["distinct"], counts["computed"], counts["reused"], out)
    return {"rows": table.num_rows, **counts, "backbone_sha256": backbone.sha256}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flows.embed",
        description="Write the sentence embedding (mean-pooled, L2-normalised, float32) of every row of a file, "
                    "beside its columns, as Parquet. The last line on stdout is the output's path.",
        epilog="Exit codes: 0 success, 2 bad command line or backbone not installed, 65 invalid input, "
               "66 input missing, 1 any other failure.")
    parser.add_argument("--data", required=True, help="CSV, TSV, Parquet or JSON-lines file (by extension)")
    parser.add_argument("--out", required=True, help="the Parquet file to write")
    parser.add_argument("--backbone", default=None, help="all-minilm-l6-v2 (default), all-mpnet-base-v2 (after "
                                                         "`make mpnet`) or a backbone folder")
    parser.add_argument("--text-col", default="text", help="column holding the text (default: text)")
    parser.add_argument("--workdir", default="workdir", help="whose feature cache to use (default: ./workdir)")
    cli.add_set_option(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = cli.overrides_from(parser, args.assignments)
    try:
        data_cfg = cli.restrict_set(overrides, READING_KEYS, "embed").data
        from core.model.backbone import preset_folder

        preset_folder(args.backbone)  # an uninstalled all-mpnet-base-v2: exit 2 with `make mpnet`, before any work
    except ConfigError as exc:
        cli.setting_error(parser, str(exc))
    cli.quiet_expected_errors()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    reading = {"encoding": data_cfg.encoding, "max_chars": data_cfg.max_chars, "max_file_mb": data_cfg.max_file_mb,
               "delimiter": data_cfg.delimiter}

    def action() -> Path:
        embed_file(Path(args.data), Path(args.out), args.backbone, args.text_col, Path(args.workdir), reading)
        return Path(args.out).resolve()

    return cli.run_command("embed", args.data, action)


if __name__ == "__main__":
    sys.exit(main())
