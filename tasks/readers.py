"""Readers for raw labelled files (CSV, TSV, Parquet, JSON lines), keeping where each row came from.

Each reader returns a `RawTable`: the cells as read (no type guessing), the location of every row in the
terms CONTRACT.md uses (`line N` for text files, counting the header as line 1; `row N` for Parquet), and
the rows that could not be parsed at all. Problems with the whole file raise `InvalidData` at once.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.errors import Failure, InputNotFound, InvalidData

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet",
           ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}

csv.field_size_limit(sys.maxsize)  # size is bounded by max_file_mb and data.max_chars, not by csv's 128 KiB


@dataclass
class RawTable:
    """Cells as read, one location per row (`line N` / `row N`), and rows that failed to parse."""

    frame: pd.DataFrame
    locations: list[str]
    failures: list[Failure] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        """Rows found in the file, parsed or not."""
        return len(self.locations) + len(self.failures)


def require_file(path: Path) -> None:
    """Raise `InputNotFound` unless `path` is an existing file."""
    if not Path(path).is_file():
        reason = "is a folder, not a file" if Path(path).is_dir() else "does not exist"
        raise InputNotFound(f"{path} {reason}")


def read_raw(path: Path, encoding: str = "utf-8", max_file_mb: int = 512) -> RawTable:
    """Read a labelled file by its extension; raises `InputNotFound` or `InvalidData` for file-level faults."""
    path = Path(path)
    name = str(path)
    require_file(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidData([Failure(name, "file", "", f"unknown file type {path.suffix!r}: use one of "
                                                   f"{', '.join(sorted(FORMATS))}")])
    try:
        size = path.stat().st_size
        if size > max_file_mb * 1024 * 1024:
            raise InvalidData([Failure(name, "file", "", f"file is {size / 2**20:.0f} MiB, over the limit of "
                                                       f"data.max_file_mb={max_file_mb}: split it, or raise the "
                                                       "limit with --set data.max_file_mb=N")])
        if size == 0:
            raise InvalidData([Failure(name, "file", "", "file is empty")])
        if fmt == "parquet":
            table = _read_parquet(path)
        else:
            data = path.read_bytes()
            text = _decode(data, encoding, name)
            table = _read_jsonl(text, name) if fmt == "jsonl" else _read_delimited(text, name, fmt)
    except PermissionError as exc:
        raise InputNotFound(f"{name} cannot be opened: {exc.strerror}") from None
    if not table.locations and not table.failures:
        raise InvalidData([Failure(name, "file", "", "file has no data rows (only a header, or blank)")])
    return table


def _decode(data: bytes, encoding: str, name: str) -> str:
    is_utf8 = encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig")
    codec = "utf-8-sig" if is_utf8 else encoding
    if not is_utf8 and not data.isascii() and _is_utf8(data):
        raise InvalidData([Failure(name, "file", "", f"the file is valid UTF-8 with non-ASCII characters, but "
                                   f"data.encoding={encoding} was given: reading it that way would garble them "
                                   "(mojibake); drop the data.encoding setting")])
    try:
        return data.decode(codec)
    except LookupError:
        raise InvalidData([Failure(name, "file", "", f"unknown encoding {encoding!r} in data.encoding")]) from None
    except UnicodeDecodeError:
        raise InvalidData(_undecodable_lines(data, codec, encoding, name)) from None


def _undecodable_lines(data: bytes, codec: str, encoding: str, name: str) -> list[Failure]:
    """One failure per line that does not decode, with the byte where it breaks and a hint for the fix."""
    failures, offset, clean_non_ascii = [], 0, 0
    for number, line in enumerate(data.split(b"\n"), start=1):
        try:
            line.decode(codec)
            clean_non_ascii += not line.isascii()
        except UnicodeDecodeError as exc:
            bad = line[exc.start:exc.end].hex(" ")
            failures.append(Failure(name, f"line {number}", "", f"not valid {encoding}: byte {offset + exc.start} "
                                    f"of the file (byte {exc.start + 1} of the line, 0x{bad}) cannot be decoded"))
        offset += len(line) + 1
    if clean_non_ascii:
        hint = (f"the file mixes encodings ({clean_non_ascii} other lines are valid non-ASCII {encoding}): "
                f"re-save the lines above as {encoding}")
    else:
        hint = _encoding_hint(data, encoding)
    return [Failure(f.file, f.location, f.column, f"{f.rule}; {hint}") for f in failures]


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _encoding_hint(data: bytes, encoding: str) -> str:
    for candidate in ("utf-8", "cp1252", "latin-1"):
        if candidate == encoding.lower():
            continue
        try:
            data.decode(candidate)
        except UnicodeDecodeError:
            continue
        return f"if the file is {candidate}, run with --set data.encoding={candidate}"
    return "convert the file to UTF-8, or name its encoding with --set data.encoding=NAME"


def _read_delimited(text: str, name: str, fmt: str) -> RawTable:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ",")
    header: list[str] | None = None
    records, locations, failures = [], [], []
    last_line = 0
    try:
        for fields in reader:
            start, last_line = last_line + 1, reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip() and header is not None and len(header) > 1):
                continue  # a blank line (in a one-column file, a blank line is a row with a blank text)
            if header is None:
                header = [h.strip() for h in fields]
                _check_header(header, name)
                continue
            if len(fields) != len(header):
                failures.append(Failure(name, f"line {start}", "", f"row has {len(fields)} fields, the header "
                                        f"has {len(header)} (an unquoted {'tab' if fmt == 'tsv' else 'comma'} or "
                                        "quote?)", _preview(",".join(fields))))
                continue
            records.append(fields)
            locations.append(f"line {start}")
    except csv.Error as exc:
        failures.append(Failure(name, f"line {reader.line_num}", "", f"unreadable {fmt.upper()}: {exc}"))
    if header is None:
        raise InvalidData([Failure(name, "file", "", "file has no header row")])
    frame = pd.DataFrame.from_records(records, columns=header) if records else pd.DataFrame(columns=header)
    return RawTable(frame.astype(object), locations, failures)


def _check_header(header: list[str], name: str) -> None:
    seen = [h for h in header if header.count(h) > 1]
    if seen:
        raise InvalidData([Failure(name, "line 1", "", f"header repeats column {seen[0]!r}")])


def _read_jsonl(text: str, name: str) -> RawTable:
    records, locations, failures = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            failures.append(Failure(name, f"line {number}", "", f"not valid JSON ({exc.msg} at character "
                                    f"{exc.pos + 1})", _preview(line)))
            continue
        if not isinstance(record, dict):
            failures.append(Failure(name, f"line {number}", "", "a JSON-lines record must be an object "
                                    '({"text": ..., "label": ...})', _preview(line)))
            continue
        records.append(record)
        locations.append(f"line {number}")
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    return RawTable(frame.astype(object), locations, failures)


def _read_parquet(path: Path) -> RawTable:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidData([Failure(str(path), "file", "", f"not a readable Parquet file (truncated or not "
                                   f"Parquet): {exc}")]) from None
    frame = table.to_pandas(types_mapper=None).astype(object)
    return RawTable(frame, [f"row {i}" for i in range(1, len(frame) + 1)], [])


def _preview(value: str, limit: int = 80) -> str:
    value = value.replace("\n", "\\n")
    return value if len(value) <= limit else value[:limit] + "..."
