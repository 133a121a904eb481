"""Batch prediction with a registered model: validate the input's text column, score, write Parquet, in chunks.

The model is the champion of `name` or a named version. Its card says which backbone, labels and sequence
length it was trained with; the texts are tokenized the same way and scored in length-grouped batches (no
padding computed that is not needed). The output has the input's columns, `predicted_label` and one
`prob_<label>` per label.

Streaming: the file is read twice in chunks of `predict.chunk_rows` rows (`core.text.stream`), never whole, so
memory does not grow with the file. The first pass checks every row (all failures listed at once, as before)
and settles the output's columns and types; the second scores each chunk and appends it to a Parquet file under
a temporary name beside the output, renamed over it at the end (a killed run leaves no partial output under the
final name). Progress (rows, rows per second, time left) is logged as chunks finish. With `runner=dask` the
chunks are dealt out in contiguous shards to Dask workers, each scoring its chunks exactly as the threads
runner would (same chunks, same batches: identical probabilities), and the shards are joined in input order.
"""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.raw import label_key
from schemas.tables import predictions_schema
from core.registry.scoring import BATCH, Scorer, trained_backbone
from core.model.backbone import Backbone
from core.errors import Failure, InvalidData
from core.storage.artifacts import atomic_path
from core.text.readers import RawTable, line_number
from core.text.stream import CHUNK_ROWS, ChunkReader, Scan
from core.text.inputs import (Inputs, arrow_type, assemble, check_columns, check_on_invalid, check_rows, header_text_col,
                              rows_to_arrow, unify_types)
from core.registry.version import Version

log = logging.getLogger(__name__)
PROGRESS_SECONDS = 10.0



def output_collisions(name: str, columns: list[str], labels: list[str], on_invalid: str) -> list[Failure]:
    """The input columns the output would overwrite (`predicted_label`, `prob_<label>` of the model's labels, and
    `reason` with `--on-invalid keep`): one file-level failure naming them and the fix. A column of the user's
    file is never overwritten (CONTRACT.md); an earlier output scored again is the usual cause. A column that a
    person cannot tell from an added one (`label_key`: case, spacing, invisible characters, look-alike letters,
    as Parquet keeps them: `Predicted_Label`, `predicted_label `) is refused too: written beside it, it would be
    two columns that read the same, and one column to case-insensitive tools (SQL engines, spreadsheets)."""
    added = {label_key(column): column for column in
             ["predicted_label", *(f"prob_{label}" for label in labels), *(["reason"] if on_invalid == "keep" else [])]}
    clash = [str(c) for c in columns if label_key(str(c)) in added]
    if not clash:
        return []
    named = ", ".join(repr(c) + (f" (read as {added[label_key(c)]!r})" if added[label_key(c)] != c else "")
                      for c in clash)
    return [Failure(name, "file", clash[0], f"the input already has column{'s' * (len(clash) > 1)} "
                    f"{named}, which the output adds (predicted_label, prob_<label> per "
                    "label): scoring would overwrite the file's own values; rename or drop "
                    f"{'them' if len(clash) > 1 else 'it'} in the input (is it an earlier output scored again?), or "
                    "score only the text column")]


def result_frame(inputs: Inputs, proba: np.ndarray, labels: list[str], on_invalid: str) -> pd.DataFrame:
    """The output rows of `inputs`: its cells, `predicted_label` and `prob_<label>` (empty for rows that were not
    scored), and with `on_invalid="keep"` the `reason` column. `proba` holds the valid rows' probabilities, in
    order. Checked against the predictions schema (a known label, probabilities summing to 1)."""
    valid = inputs.valid
    result = inputs.frame.copy()
    predicted = np.full(len(result), None, dtype=object)
    predicted[valid] = [labels[i] for i in proba.argmax(axis=1)]
    result["predicted_label"] = pd.Series(predicted, index=result.index, dtype=object)  # None stays null
    for i, label in enumerate(labels):
        column = np.full(len(result), np.nan)
        column[valid] = proba[:, i]
        result[f"prob_{label}"] = column
    if on_invalid == "keep":
        result["reason"] = inputs.reasons
    if valid:  # (no rows to check in a chunk of invalid rows; pandera cannot tell an empty column's type)
        predictions_schema(labels).validate(result.iloc[valid])
    return result


@dataclass
class Plan:
    """What the checking pass settled: the output's Arrow schema (input columns' types over the whole file),
    the row counts, the reading settings, and where each chunk's rows start (for shards and progress)."""

    schema: pa.Schema
    rows: int
    invalid: int
    chunks: int
    scan: Scan
    reading: dict = field(default_factory=dict)
    text_col: str = "text"


def check_file(data: Path, text_col: str, labels: list[str], encoding: str = "utf-8", max_chars: int = 2000,
               max_file_mb: int = 512, delimiter: str = "auto", on_invalid: str = "refuse",
               chunk_rows: int = CHUNK_ROWS, header: str = "auto") -> Plan:
    """The checking passes: read `data` in chunks (its structure, then every row); returns the `Plan` of the
    output. Raises `InvalidData` for a fault of the file, a missing text column, input columns the output would
    overwrite, or (with `on_invalid="refuse"`) any invalid row, every one listed in file order."""
    check_on_invalid(on_invalid)
    name = str(data)
    reading = {"encoding": encoding, "max_file_mb": max_file_mb, "delimiter": delimiter, "chunk_rows": chunk_rows,
               "header": header}
    reader = ChunkReader(data, **reading)
    scan = reader.scan()
    columns = RawTable(pd.DataFrame(columns=scan.columns), [], delimiter=scan.delimiter,
                       data_like_header=scan.data_like_header)
    text_col = header_text_col(columns, text_col, header)
    check_columns(columns, name, text_col)
    if clash := output_collisions(name, scan.columns, labels, on_invalid):
        raise InvalidData(clash)
    failures: list = []
    types: dict[str, set] = {}
    chunks = 0
    for chunk in reader.chunks(scan=scan):
        chunks += 1
        failures.extend(check_rows(chunk, name, text_col, max_chars)[1])
        for column in chunk.frame.columns:
            types.setdefault(column, set()).add(arrow_type(chunk.frame[column]))
    if failures and on_invalid == "refuse":
        raise InvalidData(sorted(failures, key=lambda f: line_number(f.location)))
    fields = [pa.field(str(c), unify_types(types.get(c, set()))) for c in scan.columns]
    fields += [pa.field("predicted_label", pa.string())] + [pa.field(f"prob_{label}", pa.float64()) for label in labels]
    if on_invalid == "keep":
        fields.append(pa.field("reason", pa.string()))
    invalid = len({f.location for f in failures})
    return Plan(pa.schema(fields), scan.rows, invalid, chunks, scan, reading, text_col)


def score_chunk(chunk: RawTable, scorer: Callable[[list[str]], np.ndarray], labels: list[str], name: str,
                text_col: str, max_chars: int, on_invalid: str, schema: pa.Schema) -> pa.Table:
    """One chunk's output rows (rows in = rows out, in order) as an Arrow table of `schema`: the one helper both
    runners score through."""
    unparsed, failures = check_rows(chunk, name, text_col, max_chars)
    inputs = assemble(chunk, unparsed, failures)
    valid = inputs.valid
    texts = inputs.frame[text_col].iloc[valid].astype(str).tolist()
    proba = scorer(texts) if texts else np.zeros((0, len(labels)))
    return rows_to_arrow(result_frame(inputs, proba, labels, on_invalid), schema)


class Progress:
    """Log lines as chunks finish: rows done of all, rows per second, time left; at most one every
    `PROGRESS_SECONDS` (and the last)."""

    def __init__(self, total: int, what: str = "predict"):
        self.total, self.what, self.done = total, what, 0
        self.started = self.last = time.perf_counter()

    def restart(self) -> None:
        """Count rates from now (after the model is loaded: its seconds are not scoring)."""
        self.started = self.last = time.perf_counter()

    def add(self, rows: int) -> None:
        self.done += rows
        now = time.perf_counter()
        if now - self.last < PROGRESS_SECONDS and self.done < self.total:
            return
        self.last = now
        rate = self.done / max(now - self.started, 1e-9)
        left = (self.total - self.done) / rate if rate else float("inf")
        log.info("%s: %s/%s rows (%.1f %%), %.0f rows/s, about %s left", self.what, f"{self.done:,}",
                 f"{self.total:,}", 100 * self.done / max(self.total, 1), rate, _duration(left))


def _duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s" if rest >= 60 else f"{rest} s"


def predict_file(data: Path, out: Path, folder: Path, text_col: str, backbone: Backbone | None = None,
                 encoding: str = "utf-8", max_chars: int = 2000, max_file_mb: int = 512, delimiter: str = "auto",
                 on_invalid: str = "refuse", header: str = "auto", chunk_rows: int = CHUNK_ROWS,
                 batch_size: int = BATCH, dask: object | None = None) -> dict:
    """Score every row of `data` with the model in `folder`; write `out` atomically; returns figures.

    `backbone` defaults to the one the model was trained on (`trained_backbone`). Rows in = rows out, in
    input order. With `on_invalid="keep"` an invalid row is written with an empty `predicted_label`, empty
    probabilities and its `reason`; by default any invalid row refuses the file (before anything is scored).
    `header` is `data.header` (auto, first, none). Reads and scores `chunk_rows` rows at a time. `dask` (a `schemas.config.DaskConfig`) scores the chunks on a
    Dask cluster instead of in this process (`runner=dask`)."""
    backbone = backbone or trained_backbone(folder)
    labels = [str(label) for label in Version(folder).read_card()["labels"]]
    started = time.perf_counter()
    plan = check_file(data, text_col, labels, encoding, max_chars, max_file_mb, delimiter, on_invalid, chunk_rows,
                      header)
    checked = time.perf_counter() - started
    log.info("predict: %s rows in %d chunks of up to %d checked in %.1f s; scoring with %s", f"{plan.rows:,}",
             plan.chunks, chunk_rows, checked, folder.name)
    job = ScoreJob(str(data), str(folder), str(backbone.path), plan.text_col, max_chars, on_invalid, plan, batch_size)
    out = Path(out)
    with atomic_path(out) as tmp:
        if dask is None:
            runner = "threads"
            counts = _write_chunks(job, tmp, 0, plan.chunks, Progress(plan.rows))[1]
        else:
            runner, counts = _score_on_dask(job, tmp, dask)
    seconds = time.perf_counter() - started
    scored = plan.rows - plan.invalid
    rate = scored / seconds if seconds else 0.0
    log.info("predict: %d rows in, %d rows out: %d scored with %s in %.1f s (%.0f sentences/s, %s)%s -> %s",
             plan.rows, plan.rows, scored, folder.name, seconds, rate, runner,
             f", {plan.invalid} invalid kept with an empty prediction and a reason" if plan.invalid else "", out)
    return {"rows": plan.rows, "scored": scored, "invalid_kept": plan.invalid, "model": folder.name,
            "seconds": round(seconds, 3), "check_seconds": round(checked, 3), "sentences_per_second": round(rate, 1),
            "chunks": plan.chunks, "runner": runner, "labels": labels, "predicted_counts": counts}


@dataclass(frozen=True)
class ScoreJob:
    """Everything a process needs to score chunks of the file (picklable: it travels to Dask workers)."""

    data: str
    folder: str
    backbone: str
    text_col: str
    max_chars: int
    on_invalid: str
    plan: Plan
    batch_size: int


@functools.lru_cache(maxsize=2)
def _scorer(folder: str, backbone: str, batch_size: int) -> Scorer:
    """One loaded model per worker process and version (a Dask worker scores several shards)."""
    return Scorer(Path(folder), Backbone.resolve(Path(backbone)), batch_size)


def _write_chunks(job: ScoreJob, dest: Path, start: int, stop: int,
                  progress: Progress | None = None) -> tuple[int, dict[str, int]]:
    """Score chunks `start` to `stop` (exclusive) of the job's file and write them, in order, as one Parquet file
    `dest`; returns the rows written and the count of each predicted label."""
    scorer = _scorer(job.folder, job.backbone, job.batch_size)
    reader = ChunkReader(Path(job.data), **job.plan.reading)
    if progress is not None:
        progress.restart()
    rows, counts = 0, dict.fromkeys(scorer.labels, 0)
    with pq.ParquetWriter(dest, job.plan.schema, compression="zstd") as writer:
        for chunk in reader.chunks(start, stop, job.plan.scan):  # the columns the checking pass settled
            table = score_chunk(chunk, scorer, scorer.labels, job.data, job.text_col, job.max_chars, job.on_invalid,
                                job.plan.schema)
            writer.write_table(table)
            rows += table.num_rows
            for label, n in zip(*np.unique(table["predicted_label"].drop_null().to_numpy(zero_copy_only=False),
                                           return_counts=True)):
                counts[str(label)] += int(n)
            if progress is not None:
                progress.add(table.num_rows)
    return rows, counts


def _score_on_dask(job: ScoreJob, dest: Path, cfg) -> tuple[str, dict[str, int]]:
    """Deal the chunks out to the Dask cluster in contiguous shards (`dask.shards`, default two per worker), each
    written to a part file beside `dest`, then join the parts into `dest` in input order; returns the runner's
    description and the count of each predicted label. The parts' folder is removed whatever happens."""
    from core.run.dask import dask_client

    parts = Path(tempfile.mkdtemp(prefix=f".{dest.name}.parts-", dir=dest.parent))
    try:
        with dask_client(cfg) as client:
            workers = len(client.scheduler_info()["workers"])
            count = max(1, min(cfg.shards or 2 * workers, job.plan.chunks))
            bounds = [(job.plan.chunks * i // count, job.plan.chunks * (i + 1) // count) for i in range(count)]
            log.info("predict: %d chunks in %d shards on %d Dask workers (%s)", job.plan.chunks, count, workers,
                     client.scheduler.address)
            futures = [client.submit(_write_chunks, job, parts / f"{i:05d}.parquet", a, b, key=f"predict-shard-{i}",
                                     pure=False) for i, (a, b) in enumerate(bounds)]
            progress = Progress(job.plan.rows)
            from distributed import as_completed

            counts: dict[str, int] = {}
            for future in as_completed(futures):
                rows, shard_counts = future.result()
                progress.add(rows)
                for label, n in shard_counts.items():
                    counts[label] = counts.get(label, 0) + n
            description = f"dask ({client.scheduler.address}, {workers} workers, {count} shards)"
        with pq.ParquetWriter(dest, job.plan.schema, compression="zstd") as writer:
            for i in range(count):
                for batch in pq.ParquetFile(parts / f"{i:05d}.parquet").iter_batches():
                    writer.write_batch(batch)
        return description, counts
    finally:
        shutil.rmtree(parts, ignore_errors=True)


def prediction_drift(folder: Path, counts: dict[str, int]) -> dict:
    """The predicted labels' distribution against the labels of the model's own data: the true labels of its test
    split (`predictions.parquet`, registered with the version; the split is a hash of each sentence, so its label
    shares are the training data's up to sampling noise). Returns shares, the population stability index
    PSI = sum over labels of (p - q) ln(p / q) (p: predicted share, q: reference share, each floored at 1e-4;
    Siddiqi, *Credit Risk Scorecards*, 2006: < 0.1 stable, 0.1-0.25 a moderate shift, > 0.25 a large one) and
    Pearson's chi-square goodness-of-fit test of the counts against the reference shares (`scipy.stats.chisquare`;
    with thousands of rows it flags even a trivial shift: PSI is the one to act on)."""
    from scipy.stats import chisquare

    reference = pq.read_table(Version(folder).predictions, columns=["label"])["label"].to_pylist()
    labels = list(counts)
    ref_counts = np.array([sum(1 for r in reference if str(r) == label) for label in labels], dtype=float)
    got = np.array([counts[label] for label in labels], dtype=float)
    if not got.sum() or not ref_counts.sum():
        return {"rows": int(got.sum()), "reference_rows": int(ref_counts.sum()), "psi": None}
    p, q = np.maximum(got / got.sum(), 1e-4), np.maximum(ref_counts / ref_counts.sum(), 1e-4)
    psi = float(np.sum((p - q) * np.log(p / q)))
    chi = chisquare(got, q / q.sum() * got.sum())
    verdict = "stable" if psi < 0.1 else "moderate shift" if psi < 0.25 else "large shift"
    return {"rows": int(got.sum()), "reference_rows": int(ref_counts.sum()),
            "predicted_share": {label: round(float(v), 4) for label, v in zip(labels, got / got.sum())},
            "reference_share": {label: round(float(v), 4) for label, v in zip(labels, ref_counts / ref_counts.sum())},
            "psi": round(psi, 4), "verdict": verdict, "chi_square": round(float(chi.statistic), 3),
            "chi_square_p": float(chi.pvalue)}


