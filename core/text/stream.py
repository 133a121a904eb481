"""Reading a file to score in bounded chunks (memory does not grow with the file), with the readers' checks.

`ChunkReader(path, ...).chunks()` yields `RawTable`s of at most `chunk_rows` rows each (parsed rows and rows
that could not be parsed), in file order, with the locations `core.text.readers.read_raw` gives (`line N`, the
header being line 1; `row N` for Parquet). Every chunk has the same columns: the file's, less the unnamed columns
that are empty on every row of the whole file (known after one pass: `scan`). What `read_raw(...,
blank_lines="rows")` checks, this checks too, with the same messages: file type, size, emptiness, encoding
(undecodable lines, mojibake), the delimiter (detected on the same 64 KiB sample), the header, field counts,
blank lines (a row between rows; the end of the file after the last), JSON records. Faults of the whole file
are collected over a whole pass (`file_failures`) so that one report lists every one, as `read_raw` does.

How each type streams: Parquet by record batches (`pyarrow.parquet.ParquetFile.iter_batches`); CSV/TSV and
JSON lines line by line from the binary file (each line decoded on its own, which is how `read_raw` reports
undecodable lines anyway), CSV through `csv.reader` over those lines (quoted newlines included). Where the
whole-file reader decides from the whole file, or the file cannot be split by lines, the file is read whole by
`read_raw` itself and then handed out in chunks (memory then grows with that file; the result is the same):
a UTF-16/32 file (a byte-order mark, or one without), Excel's `sep=` first line, a JSON array in a .json file,
`data.header=none`, a header that looks like a data row (`data.header=auto`), rows that all end in a trailing
delimiter. Each is rare in files of millions of rows, which exporters write plainly.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import Failure, InputNotFound, InvalidData
from core.text import readers
from core.text.readers import FORMATS, RawTable, require_file

log = logging.getLogger(__name__)

CHUNK_ROWS = 4096


@dataclass
class Scan:
    """What one pass over the file found: its columns (those kept: empty unnamed ones dropped), its rows
    (parsed or not), the notes for a person (delimiter, columns ignored) and the delimiter."""

    columns: list[str]
    rows: int
    notes: list[str] = field(default_factory=list)
    delimiter: str | None = None
    read_as: list = field(default_factory=list)  # the same columns under the names chunks are read with
    whole: bool = False  # read whole by read_raw (see the module's docstring), then handed out in chunks
    data_like_header: str | None = None  # as RawTable's: line 1 may be a data row, not a header


class ChunkReader:
    """A file to score, read in chunks of `chunk_rows` rows. Raises `InputNotFound` or `InvalidData` at
    construction for what is wrong with the file as a whole before reading it (missing, unknown type, too
    large, empty)."""

    def __init__(self, path: Path, encoding: str = "utf-8", max_file_mb: int = 512, delimiter: str = "auto",
                 chunk_rows: int = CHUNK_ROWS, header: str = "auto"):
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.path, self.name = Path(path), str(path)
        self.encoding, self.delimiter_setting, self.chunk_rows, self.header = encoding, delimiter, chunk_rows, header
        self.max_file_mb = max_file_mb
        require_file(self.path)
        self.fmt = FORMATS.get(self.path.suffix.lower())
        if self.fmt is None:
            raise InvalidData([Failure(self.name, "file", "", f"unknown file type {self.path.suffix!r}: use one of "
                                                             f"{', '.join(sorted(FORMATS))}")])
        try:
            size = self.path.stat().st_size
        except PermissionError as exc:
            raise InputNotFound(f"{self.name} cannot be opened: {exc.strerror}") from None
        if size > max_file_mb * 1024 * 1024:
            raise InvalidData([Failure(self.name, "file", "", f"file is {size / 2**20:.0f} MiB, over the limit of "
                                                            f"data.max_file_mb={max_file_mb}: split it, or raise the "
                                                            "limit with --set data.max_file_mb=N")])
        if size == 0:
            raise InvalidData([Failure(self.name, "file", "", "file is empty")])
        self.file_failures: list[Failure] = []
        self.columns: list[str] | None = None  # set by `scan`: every chunk after it has exactly these
        self._kept: list | None = None  # the same columns under the names the chunks are read with
        self._header: list[str] | None = None  # CSV/TSV: the header (chunks are read with positions as names)
        self._whole = False
        self._data_like: str | None = None
        self.delimiter: str | None = None
        self.notes: list[str] = []

    # ------------------------------------------------------------------------------------------ the passes

    def scan(self, visit: Callable[[RawTable], None] | None = None) -> Scan:
        """One pass over the whole file: the columns to keep, the row count, the notes; `visit` is called with each
        chunk as read (the file's column names, before any is dropped). Raises `InvalidData` listing every fault
        of the whole file (undecodable lines, an unreadable CSV, a repeated header, no rows)."""
        try:
            return self._scan(visit)
        except _Whole:
            self._whole = True  # the whole-file reader decides this file (see the module's docstring)
            return self._scan(visit)

    def _scan(self, visit: Callable[[RawTable], None] | None) -> Scan:
        rows, seen, holding = 0, [], set()
        for chunk in self._chunks():
            rows += chunk.rows_read
            if visit is not None and not self.file_failures:
                visit(RawTable(chunk.frame.set_axis([self._name(c) for c in chunk.frame.columns], axis=1),
                               chunk.locations, chunk.failures, delimiter=self.delimiter))
            for column in chunk.frame.columns:
                if column not in seen:
                    seen.append(column)
                if column not in holding and not readers.all_empty(chunk.frame[column]):
                    holding.add(column)
        if self.file_failures:
            raise InvalidData(self.file_failures)
        dropped = [i for i, column in enumerate(seen) if isinstance(self._name(column), str)
                   and readers._UNNAMED.match(self._name(column)) and column not in holding]
        names = [self._name(c) for i, c in enumerate(seen) if i not in dropped]
        readers._check_header(names, self.name)  # after the empty unnamed columns are gone, as read_raw does
        if not rows:
            raise InvalidData([Failure(self.name, "file", "", "file has no data rows (only a header, or blank)")])
        notes = list(self.notes)
        if dropped:
            notes.append(readers._unnamed_note([i + 1 for i in dropped]))
        self._kept = [c for i, c in enumerate(seen) if i not in dropped]
        self.columns = names
        for note in notes:
            log.info("%s: %s", self.name, note)
        return Scan(self.columns, rows, notes, self.delimiter, self._kept, self._whole, self._data_like)

    def _name(self, column):
        """A column's name in the file (CSV/TSV columns are read under their positions: names may repeat)."""
        return self._header[column] if self._header is not None else column

    def chunks(self, start: int = 0, stop: int | None = None, scan: Scan | None = None) -> Iterator[RawTable]:
        """The chunks numbered `start` (0) up to `stop` (exclusive; None: to the end), each with the columns
        `scan` kept (this reader's own `scan()`, or the `Scan` another process made of the same file). Chunks
        before `start` are read and skipped (cheap next to scoring)."""
        if scan is not None:
            self.columns, self._kept, self._whole = scan.columns, scan.read_as, scan.whole
        if self.columns is None:
            raise RuntimeError("ChunkReader.scan() must run before chunks()")
        kept = self._kept
        for number, chunk in enumerate(self._chunks()):
            if stop is not None and number >= stop:
                return
            if number >= start:
                frame = chunk.frame.reindex(columns=kept) if list(chunk.frame.columns) != kept else chunk.frame
                yield RawTable(frame.set_axis(self.columns, axis=1).astype(object), chunk.locations, chunk.failures,
                               delimiter=self.delimiter)

    # ------------------------------------------------------------------------------------------ by file type

    def _chunks(self) -> Iterator[RawTable]:
        self.file_failures, self.notes, self._header, self._data_like = [], [], None, None
        if self._whole or self._needs_whole():
            self._whole = True
            yield from self._from_whole()
        elif self.fmt == "parquet":
            yield from self._parquet()
        elif self.fmt == "jsonl":
            yield from self._jsonl()
        else:
            yield from self._delimited()

    def _needs_whole(self) -> bool:
        """What the file's first bytes show the whole-file reader must read (see the module's docstring)."""
        if self.fmt == "parquet":
            return False
        if self.fmt in ("csv", "tsv") and self.header == "none":
            return True
        with open(self.path, "rb") as handle:
            head = handle.read(4096)
        if self.encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig") and (
                any(head.startswith(mark) for mark, _ in readers.BOMS) or readers._looks_like_utf16(head)):
            return True
        first = head.split(b"\n", 1)[0].decode("utf-8", errors="replace").rstrip("\r")
        if self.fmt == "jsonl":
            return head.lstrip(codecs.BOM_UTF8 + b" \t\r\n").startswith(b"[")
        return bool(readers._EXCEL_SEP.match(first))

    def _from_whole(self) -> Iterator[RawTable]:
        """`read_raw`'s table of the whole file, handed out in chunks of rows (parsed and unparsed, in file order)."""
        raw = readers.read_raw(self.path, self.encoding, self.max_file_mb, self.delimiter_setting, blank_lines="rows",
                               header=self.header)  # logs its own notes
        self.delimiter, self._data_like = raw.delimiter, raw.data_like_header
        located = [f for f in raw.failures if f.location.startswith(("line ", "row "))]
        others = [f for f in raw.failures if f not in located]
        items = sorted([(readers.line_number(loc), i, None) for i, loc in enumerate(raw.locations)]
                       + [(readers.line_number(f.location), -1, f) for f in located], key=lambda item: item[0])
        frame = raw.frame.reset_index(drop=True)
        for start in range(0, max(len(items), 1), self.chunk_rows):
            part = items[start: start + self.chunk_rows]
            rows = [i for _, i, f in part if f is None]
            yield RawTable(frame.iloc[rows].reset_index(drop=True), [raw.locations[i] for i in rows],
                           (others if start == 0 else []) + [f for _, _, f in part if f is not None],
                           delimiter=raw.delimiter, data_like_header=raw.data_like_header)

    def _parquet(self) -> Iterator[RawTable]:
        try:
            handle = pq.ParquetFile(self.path)
            batches = handle.iter_batches(batch_size=self.chunk_rows)
            done = 0
            for batch in batches:
                frame = batch.to_pandas().astype(object)
                yield RawTable(frame, [f"row {done + i}" for i in range(1, len(frame) + 1)])
                done += len(frame)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise InvalidData([Failure(self.name, "file", "", f"not a readable Parquet file (truncated or not "
                                       f"Parquet): {exc}")]) from None

    def _lines(self) -> Iterator[tuple[int, str]]:
        """(line number, decoded line with its line end) of the file, in order; an undecodable line is recorded
        in `file_failures` (as `read_raw` words it) and decoded with replacement characters."""
        is_utf8 = self.encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig")
        codec = "utf-8-sig" if is_utf8 else self.encoding
        try:
            codecs.lookup(codec)
        except LookupError:
            raise InvalidData([Failure(self.name, "file", "", f"unknown encoding {self.encoding!r} in "
                                                            "data.encoding")]) from None
        if "\n".encode(codec, errors="ignore").lstrip(codecs.BOM_UTF8) != b"\n":  # UTF-16 and the like: whole
            text = readers._decode(self.path.read_bytes(), self.encoding, self.name)
            yield from enumerate(io.StringIO(text, newline="").readlines(), start=1)
            return
        bad, offset, clean_non_ascii, all_utf8, non_ascii, bad_bytes = [], 0, 0, True, False, b""
        with open(self.path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                body = raw[:-1] if raw.endswith(b"\n") else raw
                if not raw.isascii():
                    non_ascii = True
                    all_utf8 = all_utf8 and readers._is_utf8(body)
                try:
                    line = raw.decode(codec if number == 1 else codec.replace("-sig", ""))
                    clean_non_ascii += not raw.isascii()
                except UnicodeDecodeError as exc:
                    hexed = body[exc.start:exc.end].hex(" ")
                    bad.append(Failure(self.name, f"line {number}", "", f"not valid {self.encoding}: byte "
                                       f"{offset + exc.start} of the file (byte {exc.start + 1} of the line, "
                                       f"0x{hexed}) cannot be decoded"))
                    if len(bad_bytes) < 1 << 20:
                        bad_bytes += body
                    line = raw.decode(codec, errors="replace")
                offset += len(raw)
                yield number, line
        if not is_utf8 and non_ascii and all_utf8:
            self.file_failures.append(Failure(self.name, "file", "", f"the file is valid UTF-8 with non-ASCII "
                                      f"characters, but data.encoding={self.encoding} was given: reading it that "
                                      "way would garble them (mojibake); read it as UTF-8: drop the data.encoding "
                                      "setting, or --set data.encoding=utf-8"))
        elif bad:
            hint = (f"the file mixes encodings ({clean_non_ascii} other lines are valid non-ASCII {self.encoding}): "
                    f"re-save the lines above as {self.encoding}" if clean_non_ascii
                    else readers._encoding_hint(bad_bytes, self.encoding))
            self.file_failures.extend(Failure(f.file, f.location, f.column, f"{f.rule}; {hint}") for f in bad)

    def _jsonl(self) -> Iterator[RawTable]:
        records, locations, failures, pending = [], [], [], []
        for number, line in self._lines():
            line = line.rstrip("\r\n")
            if not line.strip():
                pending.append(number)
                continue
            for blank in pending:  # blank lines between records are rows (rows in = rows out)
                records.append({})
                locations.append(f"line {blank}")
                if len(records) + len(failures) >= self.chunk_rows:
                    yield _jsonl_table(records, locations, failures)
                    records, locations, failures = [], [], []
            pending = []
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                failures.append(Failure(self.name, f"line {number}", "", f"not valid JSON ({exc.msg} at character "
                                        f"{exc.pos + 1})", readers._preview(line)))
            else:
                if isinstance(record, dict):
                    records.append(record)
                    locations.append(f"line {number}")
                else:
                    failures.append(Failure(self.name, f"line {number}", "", "a JSON-lines record must be an object "
                                            '({"text": ..., "label": ...})', readers._preview(line)))
            if len(records) + len(failures) >= self.chunk_rows:
                yield _jsonl_table(records, locations, failures)
                records, locations, failures = [], [], []
        if records or failures:
            yield _jsonl_table(records, locations, failures)

    def _delimited(self) -> Iterator[RawTable]:
        lines = self._lines()
        head: list[tuple[int, str]] = []
        size = 0
        for item in lines:  # the sample `read_raw` detects the delimiter on: the first 64 KiB (and one more line)
            head.append(item)
            size += len(item[1])
            if size > readers.SNIFF_BYTES:
                break
        sample = "".join(line for _, line in head)
        if self.file_failures:  # an undecodable sample: finish the pass to list every such line, then stop
            for _ in lines:
                pass
            return
        self._header = None
        delimiter, how = readers._choose_delimiter(sample, self.fmt, self.delimiter_setting, self.name, self.header)
        self.delimiter = delimiter
        self.notes.append(f"columns separated by '{readers.show_invisible(delimiter)}' ({how})")
        kind = readers._delimiter_word(delimiter)[:-1] if delimiter in readers.DELIMITER_NAMES else repr(delimiter)

        def text() -> Iterator[str]:
            for _, line in head:
                yield line
            for _, line in lines:
                yield line

        reader = csv.reader(text(), delimiter=delimiter)
        header: list[str] | None = None
        records, locations, failures, pending = [], [], [], []
        last_line = 0
        try:
            for fields in reader:
                start, last_line = last_line + 1, reader.line_num
                if header is None:
                    if not fields or readers.is_blank(fields):
                        continue
                    header = [h.strip() for h in fields]
                    self._header = header
                    header_key = [h.casefold() for h in header]
                    if self.header == "auto" and any(readers._looks_like_data(h) for h in header):
                        raise _Whole()  # line 1 may be a data row: the whole-file reader words it
                    continue
                if readers.is_blank(fields):
                    pending.append((start, fields))
                    continue
                for number, blank in pending:
                    records.append((list(blank) + [""] * len(header))[: len(header)] if blank else [""] * len(header))
                    locations.append(f"line {number}")
                    if len(records) + len(failures) >= self.chunk_rows:
                        yield _delimited_table(len(header), records, locations, failures)
                        records, locations, failures = [], [], []
                pending = []
                if len(fields) > len(header) and not any(f.strip() for f in fields[len(header):]):
                    raise _Whole()  # a trailing delimiter: on every row (an unnamed empty column) or not, file-wide
                if self.header == "auto" and readers._data_like_header(header, [(start, fields)]):
                    raise _Whole()  # a header name found as a value in its own column: line 1 may be a data row
                if len(fields) >= 2 and [f.strip().casefold() for f in fields] == header_key:
                    failures.append(Failure(self.name, f"line {start}", "", "this line repeats the header (two "
                                            "exports joined into one file?): delete it",
                                            readers._preview(delimiter.join(fields))))
                elif len(fields) != len(header):
                    failures.append(Failure(self.name, f"line {start}", "", f"row has {len(fields)} fields, the "
                                            f"header has {len(header)} (an unquoted {kind} or quote?)",
                                            readers._preview(delimiter.join(fields))))
                else:
                    records.append(fields)
                    locations.append(f"line {start}")
                if len(records) + len(failures) >= self.chunk_rows:
                    yield _delimited_table(len(header), records, locations, failures)
                    records, locations, failures = [], [], []
        except csv.Error as exc:
            self.file_failures.append(Failure(self.name, f"line {reader.line_num}", "",
                                              f"unreadable {self.fmt.upper()}: {exc}"))
        if header is None:
            if not self.file_failures:
                raise InvalidData([Failure(self.name, "file", "", "file has no header row")])
            return
        # The end of the file: trailing empty lines end it, a trailing line of spaces is a row the user wrote.
        written = [i for i, (_, blank) in enumerate(pending) if any(blank)]
        for number, blank in pending[: written[-1] + 1 if written else 0]:
            records.append((list(blank) + [""] * len(header))[: len(header)])
            locations.append(f"line {number}")
            if len(records) + len(failures) >= self.chunk_rows:
                yield _delimited_table(len(header), records, locations, failures)
                records, locations, failures = [], [], []
        if records or failures or self.columns is None:
            yield _delimited_table(len(header), records, locations, failures)


class _Whole(Exception):
    """The file is one the whole-file reader must decide (see the module's docstring): read it whole."""


def _delimited_table(width: int, records: list, locations: list[str], failures: list[Failure]) -> RawTable:
    """Cells under their positions (0, 1, ...) as column names: a header may repeat a name (unnamed columns)."""
    frame = (pd.DataFrame.from_records(records, columns=range(width)) if records
             else pd.DataFrame(columns=range(width)))
    return RawTable(frame.astype(object), locations, failures)


def _jsonl_table(records: list, locations: list[str], failures: list[Failure]) -> RawTable:
    # dtype=object: each value as JSON gave it (a chunk must not turn 1 into 1.0 because its other rows lack the
    # key); the whole column's type is settled over the file when it is written (tasks.predict.check_file).
    frame = pd.DataFrame(records, dtype=object) if records else pd.DataFrame()
    if len(frame) != len(records):  # a chunk of blank lines only ({} records): rows without cells
        frame = pd.DataFrame(index=range(len(records)))
    return RawTable(frame, locations, failures)
