"""Readers for raw labelled files (CSV, TSV, Parquet, JSON lines), keeping where each row came from.

Each reader returns a `RawTable`: the cells as read (no type guessing), the location of every row in the
terms CONTRACT.md uses (`line N` for text files, counting the header as line 1; `row N` for Parquet), and
the rows that could not be parsed at all. Problems with the whole file raise `InvalidData` at once.

What every reader does the same way, for training, `--validate-only` and prediction alike:
- the delimiter of a `.csv` file is detected (`csv.Sniffer`, among the delimiters its header line holds)
  unless `data.delimiter` names it; `.tsv` / `.tab` files are tab-separated unless it says otherwise;
- unnamed columns that are empty on every row (Excel's `text,label,,`) are dropped, with a note;
- a blank line (no field holds anything but whitespace) is not a row when training (it is counted, with a
  note); with `blank_lines="rows"` (prediction: rows in = rows out) every blank line before the last row is a
  row whose cells are empty. Blank lines after the last row are the end of the file, never rows.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.run.errors import Failure, InputNotFound, InvalidData

log = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet",
           ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
# `data.delimiter` by name; a single character is accepted as itself.
DELIMITERS = {"comma": ",", "semicolon": ";", "tab": "\t", "pipe": "|"}
DELIMITER_NAMES = {char: name for name, char in DELIMITERS.items()}
SNIFF_BYTES = 64 * 1024
_UNNAMED = re.compile(r"^(Unnamed: \d+(_level_\d+)?)?$")  # "" (CSV) or pandas' name for an empty header cell

csv.field_size_limit(sys.maxsize)  # size is bounded by max_file_mb and data.max_chars, not by csv's 128 KiB


@dataclass
class RawTable:
    """Cells as read, one location per row (`line N` / `row N`), and rows that failed to parse.

    `notes` are what a person should know about how the file was read (the delimiter, columns ignored,
    blank lines skipped); `delimiter` is the one used (None for Parquet and JSON lines).
    """

    frame: pd.DataFrame
    locations: list[str]
    failures: list[Failure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    delimiter: str | None = None
    blank_lines: list[str] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        """Rows found in the file, parsed or not."""
        return len(self.locations) + len(self.failures)

    def missing_column(self, name: str, column: str, option: str) -> Failure:
        """The failure for a column the file lacks: the header as read (invisible characters escaped) and,
        where the header holds another delimiter, how to name it."""
        found = ", ".join(f"'{show_invisible(str(c))}'" for c in self.frame.columns) or "none"
        rule = f"missing column {column!r} (columns found: {found}); name the right one with {option}"
        if self.delimiter is not None and len(self.frame.columns) == 1:
            header = str(self.frame.columns[0])
            others = [d for d in DELIMITERS.values() if d != self.delimiter and d in header]
            if others:
                rule += (f"; or, if the columns are separated by {' or '.join(_delimiter_word(d) for d in others)}, "
                         f"name it with --set data.delimiter={DELIMITER_NAMES[others[0]]}")
        return Failure(name, "file", column, rule)


def show_invisible(value: str, limit: int = 80) -> str:
    """`value` with tabs, newlines and other invisible characters written as escapes (`\\t`), cut to `limit`."""
    out = "".join(ch.encode("unicode_escape").decode("ascii")
                  if ch != " " and unicodedata.category(ch) in ("Cc", "Cf", "Zs", "Zl", "Zp") else ch
                  for ch in value)
    return out if len(out) <= limit else f"{out[:limit]}... ({len(value)} characters)"


def require_file(path: Path) -> None:
    """Raise `InputNotFound` unless `path` is an existing file."""
    if not Path(path).is_file():
        reason = "is a folder, not a file" if Path(path).is_dir() else "does not exist"
        raise InputNotFound(f"{path} {reason}")


def parse_delimiter(value: str) -> str:
    """`data.delimiter` as given (`auto`, a name such as `semicolon`, `\\t`, or one character) as `auto` or the
    character; raises `ValueError` naming the accepted values."""
    text = str(value)
    if text.strip().lower() in ("", "auto"):
        return "auto"
    if text.strip().lower() in DELIMITERS:
        return DELIMITERS[text.strip().lower()]
    if text in ("\\t", "\t"):
        return "\t"
    if len(text) == 1 and text not in "\"\r\n" and not text.isalnum():
        return text
    raise ValueError(f"data.delimiter must be auto, {', '.join(DELIMITERS)}, or one character")


def read_raw(path: Path, encoding: str = "utf-8", max_file_mb: int = 512, delimiter: str = "auto",
             blank_lines: Literal["skip", "rows"] = "skip") -> RawTable:
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
            if fmt == "jsonl":
                table = _read_jsonl(text, name, blank_lines)
            else:
                table = _read_delimited(text, name, fmt, _choose_delimiter(text, fmt, delimiter, name), blank_lines)
    except PermissionError as exc:
        raise InputNotFound(f"{name} cannot be opened: {exc.strerror}") from None
    _drop_empty_unnamed(table)
    if not table.locations and not table.failures:
        raise InvalidData([Failure(name, "file", "", "file has no data rows (only a header, or blank)")])
    if table.blank_lines:
        table.notes.append(f"{len(table.blank_lines)} blank line{'s' * (len(table.blank_lines) != 1)} skipped "
                           f"({_some(table.blank_lines)})")
    for note in table.notes:
        log.info("%s: %s", name, note)
    return table


def _decode(data: bytes, encoding: str, name: str) -> str:
    is_utf8 = encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig")
    codec = "utf-8-sig" if is_utf8 else encoding
    if not is_utf8 and not data.isascii() and _is_utf8(data):
        raise InvalidData([Failure(name, "file", "", f"the file is valid UTF-8 with non-ASCII characters, but "
                                   f"data.encoding={encoding} was given: reading it that way would garble them "
                                   "(mojibake); read it as UTF-8: drop the data.encoding setting, or "
                                   "--set data.encoding=utf-8")])
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


def _delimiter_word(char: str) -> str:
    return {",": "commas", ";": "semicolons", "\t": "tabs", "|": "pipes"}.get(char, repr(char))


def _choose_delimiter(text: str, fmt: str, setting: str, name: str) -> tuple[str, str]:
    """The delimiter to read with: `data.delimiter` if set; a tab for .tsv; for .csv, what `csv.Sniffer` finds
    among the candidate delimiters that the header line holds. Logs which, and how it was chosen."""
    setting = parse_delimiter(setting)
    if setting != "auto":
        return setting, "data.delimiter"
    if fmt == "tsv":
        return "\t", "by the file's extension"
    header_line = text.lstrip("\ufeff").split("\n", 1)[0].rstrip("\r")
    candidates = "".join(d for d in DELIMITERS.values() if d in header_line)
    if not candidates:
        return ",", "one column: the header holds no delimiter"
    if len(candidates) == 1:
        chosen = candidates
    else:
        sample = text[:SNIFF_BYTES]
        sample = sample.rsplit("\n", 1)[0] if "\n" in sample and len(text) > SNIFF_BYTES else sample
        try:
            chosen = csv.Sniffer().sniff(sample, delimiters=candidates).delimiter
        except csv.Error:
            raise InvalidData([Failure(name, "line 1", "", "cannot tell which delimiter separates the columns: the "
                                       f"header line is '{show_invisible(header_line)}', which holds "
                                       f"{' and '.join(_delimiter_word(d) for d in candidates)}; name it with "
                                       f"--set data.delimiter={DELIMITER_NAMES[candidates[0]]} (or "
                                       f"{', '.join(DELIMITER_NAMES[d] for d in candidates[1:])})")]) from None
    return chosen, "detected; set data.delimiter to override"


def _is_blank(fields: list[str]) -> bool:
    return all(not f.strip() for f in fields)


def _read_delimited(text: str, name: str, fmt: str, chosen: tuple[str, str], blank_lines: str) -> RawTable:
    delimiter, how = chosen
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    records, locations, failures, skipped, pending = [], [], [], [], []
    last_line = 0
    kind = _delimiter_word(delimiter)[:-1] if delimiter in DELIMITER_NAMES else repr(delimiter)
    try:
        for fields in reader:
            start, last_line = last_line + 1, reader.line_num
            if header is None:
                if not fields or _is_blank(fields):
                    continue  # blank lines before the header
                header = [h.strip() for h in fields]
                continue
            if _is_blank(fields):
                # a row, or the end of the file: known when a row follows (or, scoring, when it holds spaces)
                pending.append((start, fields))
                continue
            _flush_blank(pending, len(pending), blank_lines, header, records, locations, skipped)
            pending = []
            if len(fields) != len(header):
                failures.append(Failure(name, f"line {start}", "", f"row has {len(fields)} fields, the header "
                                        f"has {len(header)} (an unquoted {kind} or quote?)",
                                        _preview(delimiter.join(fields))))
                continue
            records.append(fields)
            locations.append(f"line {start}")
    except csv.Error as exc:
        failures.append(Failure(name, f"line {reader.line_num}", "", f"unreadable {fmt.upper()}: {exc}"))
    if header is None:
        raise InvalidData([Failure(name, "file", "", "file has no header row")])
    if blank_lines == "rows":
        # Scoring: trailing empty lines end the file, but a trailing line of spaces is a row the user wrote
        # (rows in = rows out: it is refused, or kept with a reason, never dropped without a word).
        written = [i for i, (_, fields) in enumerate(pending) if any(fields)]
        _flush_blank(pending, written[-1] + 1 if written else 0, blank_lines, header, records, locations, skipped)
    notes = [f"columns separated by '{show_invisible(delimiter)}' ({how})"]
    drop = [i for i, h in enumerate(header) if not h and all(not r[i].strip() for r in records)]
    if drop:
        header = [h for i, h in enumerate(header) if i not in drop]
        records = [[v for i, v in enumerate(r) if i not in drop] for r in records]
        notes.append(_unnamed_note([i + 1 for i in drop]))
    _check_header(header, name)
    frame = pd.DataFrame.from_records(records, columns=header) if records else pd.DataFrame(columns=header)
    return RawTable(frame.astype(object), locations, failures, notes, delimiter, skipped)


def _flush_blank(pending: list[tuple[int, list[str]]], count: int, blank_lines: str, header: list[str],
                 records: list, locations: list, skipped: list) -> None:
    """The first `count` pending blank lines: rows of empty fields (scoring) or skipped lines (training)."""
    for number, fields in pending[:count]:
        if blank_lines == "rows":
            records.append((list(fields) + [""] * len(header))[: len(header)] if fields else [""] * len(header))
            locations.append(f"line {number}")
        else:
            skipped.append(f"line {number}")


def _unnamed_note(positions: list[int]) -> str:
    return (f"ignored {len(positions)} unnamed column{'s' * (len(positions) != 1)} empty on every row "
            f"(column{'s' * (len(positions) != 1)} {', '.join(map(str, positions))}: a spreadsheet's trailing "
            "separators)")


def _drop_empty_unnamed(table: RawTable) -> None:
    """Unnamed columns (`''`, pandas' `Unnamed: 3`) that are null or blank on every row: dropped, with a note."""
    frame = table.frame
    drop = [i for i, col in enumerate(frame.columns) if isinstance(col, str) and _UNNAMED.match(col)
            and all(v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and not v.strip())
                    for v in frame.iloc[:, i])]
    if drop:
        table.frame = frame.iloc[:, [i for i in range(frame.shape[1]) if i not in drop]]
        table.notes.append(_unnamed_note([i + 1 for i in drop]))


def _check_header(header: list[str], name: str) -> None:
    seen = [h for h in header if header.count(h) > 1]
    if seen:
        raise InvalidData([Failure(name, "line 1", "", f"header repeats column {seen[0]!r}"
                                   + (" (unnamed columns that hold values: name them)" if not seen[0] else ""))])


def _read_jsonl(text: str, name: str, blank_lines: str) -> RawTable:
    records, locations, failures, skipped, pending = [], [], [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            pending.append(number)
            continue
        for blank in pending:
            if blank_lines == "rows":
                records.append({})
                locations.append(f"line {blank}")
            else:
                skipped.append(f"line {blank}")
        pending = []
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
    return RawTable(frame.astype(object), locations, failures, blank_lines=skipped)


def _read_parquet(path: Path) -> RawTable:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidData([Failure(str(path), "file", "", f"not a readable Parquet file (truncated or not "
                                   f"Parquet): {exc}")]) from None
    frame = table.to_pandas(types_mapper=None).astype(object)
    return RawTable(frame, [f"row {i}" for i in range(1, len(frame) + 1)], [])


def _some(locations: list[str], limit: int = 10) -> str:
    return ", ".join(locations[:limit]) + (f" and {len(locations) - limit} more" if len(locations) > limit else "")


def _preview(value: str, limit: int = 80) -> str:
    return show_invisible(value.replace("\n", "\\n"), limit)
