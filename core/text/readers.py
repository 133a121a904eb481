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
  row whose cells are empty. Blank lines after the last row are the end of the file, never rows;
- what the file says of itself is read where it cannot be mistaken: a UTF-16 or UTF-32 byte-order mark (the
  encoding), Excel's `sep=;` first line (the delimiter), a JSON array of records in a .json file; a trailing
  delimiter on every data row is an unnamed empty column (ignored, with a note);
- what cannot be read safely is refused with its cause and fix: a header line that looks like a data row (a
  header-less file: `data.header=none` reads it, columns numbered 1, 2, ...), a title line above the header, the
  header repeated further down (two exports joined), UTF-16 without a byte-order mark.
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

from core.errors import Failure, InputNotFound, InvalidData
from schemas.files import DELIMITERS, parse_delimiter  # noqa: F401 (the readers' entry points: data.delimiter)
from schemas.raw import escaped, label_key, spelling_difference

log = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet",
           ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
# `data.delimiter` by name; a single character is accepted as itself.
DELIMITER_NAMES = {char: name for name, char in DELIMITERS.items()}
SNIFF_BYTES = 64 * 1024
# Byte-order marks that name their encoding beyond doubt (UTF-32 first: its little-endian mark starts like UTF-16's).
BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"))
# `data.header`: "auto" (the first line is the header unless it looks like a data row: then refused, with the fix),
# "first" (the first line is the header, whatever it holds), "none" (no header: columns are named 1, 2, ...).
HEADER_MODES = ("auto", "first", "none")
_EXCEL_SEP = re.compile(r'^\ufeff?"?sep=(.)"?\s*$', re.IGNORECASE)
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
    # data.header=auto: the header cell that looks like a data row (a sentence), if any: the file may have no header
    data_like_header: str | None = None

    @property
    def rows_read(self) -> int:
        """Rows found in the file, parsed or not."""
        return len(self.locations) + len(self.failures)

    def missing_column(self, name: str, column: str, option: str) -> Failure:
        """The failure for a column the file lacks: the header as read (invisible characters escaped) and,
        where the header holds another delimiter, how to name it."""
        if self.data_like_header is not None:
            return Failure(name, "line 1", "", self.header_rule(option))
        found = ", ".join(f"'{show_invisible(str(c))}'" for c in self.frame.columns) or "none"
        rule = f"missing column {column!r} (columns found: {found}); name the right one with {option}"
        twins = [str(c) for c in self.frame.columns if label_key(str(c)) == label_key(column)]
        if twins:  # a header a person reads as the column asked for: say how it differs, and how to name it
            twin = twins[0]
            rule = (f"missing column {column!r}: the header has '{escaped(twin)}', which differs from it only in "
                    f"{spelling_difference(twin, column)}; rename that header to {column!r}"
                    + (f", or name it with {option} {twin}" if twin.isascii() else ""))
        if self.delimiter is not None and len(self.frame.columns) == 1:
            header = str(self.frame.columns[0])
            others = [d for d in DELIMITERS.values() if d != self.delimiter and d in header]
            if others:
                rule += (f"; or, if the columns are separated by {' or '.join(_delimiter_word(d) for d in others)}, "
                         f"name it with --set data.delimiter={DELIMITER_NAMES[others[0]]}")
        return Failure(name, "file", column, rule)


    def header_rule(self, option: str) -> str:
        """Why a header that looks like a data row is refused, and the two ways on (`option`: the command's flag for
        the column, `--text-col` when scoring, both flags when training)."""
        one = len(self.frame.columns) == 1
        then = ("its one column is the text" if one and option == "--text-col" else
                f"e.g. {option}{' N' if option == '--text-col' else ''}")
        return (f"no header line? line 1 looks like a data row ('{show_invisible(self.data_like_header, 30)}'), not column "
                f"names: read it as a row with --set data.header=none (columns are then 1, 2, ...: {then}); if line 1 "
                "is the header, --set data.header=first")

    def check_header(self, name: str, columns: dict[str, str], option: str) -> list[Failure]:
        """The failure when a column named (`columns`: option -> name) exists only because line 1, a data row, was
        taken for the header (`data.header=auto`): following a hint such as `--text-col <a sentence>` would lose
        that row. `option` is what the fix names (`--text-col 1`, say)."""
        if self.data_like_header is None or not any(
                column in [str(c) for c in self.frame.columns] and _looks_like_data(column) for column in columns.values()):
            return []
        return [Failure(name, "line 1", "", self.header_rule(option))]


def _looks_like_data(cell: str) -> bool:
    """A header cell that reads like a sentence (six or more words, or 60 or more characters): a data row, most
    likely, in a file that has no header line. Column names are short."""
    return len(cell.split()) >= 6 or len(cell) >= 60


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


def read_raw(path: Path, encoding: str = "utf-8", max_file_mb: int = 512, delimiter: str = "auto",
             blank_lines: Literal["skip", "rows"] = "skip", header: str = "auto") -> RawTable:
    """Read a labelled file by its extension; raises `InputNotFound` or `InvalidData` for file-level faults.

    `header` (`data.header`, CSV and TSV only): `auto`, `first` or `none` (see HEADER_MODES)."""
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
            text, notes = _decode(data, encoding, name)
            if fmt == "jsonl":
                _refuse_json_of_columns(text, name)
                table = (_read_json_array(text, name) if _is_json_array(text) else None) or _read_jsonl(
                    text, name, blank_lines)
            else:
                text, hint = _excel_sep_line(text)
                if hint:
                    notes.append(f"line 1 'sep={show_invisible(hint)}' (Excel's delimiter line) read as the delimiter "
                                 "and skipped; the header is line 2")
                    if parse_delimiter(delimiter) == "auto":
                        delimiter = hint
                chosen = _choose_delimiter(text, fmt, delimiter, name, header)
                if hint and chosen[0] == hint:
                    chosen = (hint, "Excel's sep= line")
                table = _read_delimited(text, name, fmt, chosen, blank_lines, header)
            table.notes[:0] = notes
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


def _decode(data: bytes, encoding: str, name: str) -> tuple[str, list[str]]:
    """The file's text and notes on how it was decoded. A UTF-16/32 byte-order mark names the encoding beyond doubt
    and is followed when `data.encoding` is the default utf-8; UTF-16 without one is named, with the setting."""
    is_utf8 = encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig")
    codec = "utf-8-sig" if is_utf8 else encoding
    if is_utf8:
        for mark, bom_codec in BOMS:
            if data.startswith(mark):
                try:
                    return data.decode(bom_codec), [f"read as {bom_codec.upper()} (the file starts with its byte-order "
                                                    "mark)"]
                except UnicodeDecodeError as exc:
                    raise InvalidData([Failure(name, "file", "", f"the file starts with a {bom_codec.upper()} byte-order "
                                               f"mark but byte {exc.start} is not valid {bom_codec.upper()}: re-save it "
                                               "as UTF-8")]) from None
        if order := _utf32_order(data):  # before UTF-16: UTF-32's zeros would pass for UTF-16's
            raise InvalidData([Failure(name, "file", "", f"the file looks like UTF-32 without a byte-order mark (three "
                                       f"bytes in four are 0): run with --set data.encoding=utf-32-{order}, or re-save "
                                       "it as UTF-8")])
        if _looks_like_utf16(data):
            order = "le" if data[1:2] == b"\x00" else "be"
            raise InvalidData([Failure(name, "file", "", f"the file looks like UTF-16 without a byte-order mark (every "
                                       f"other byte is 0): run with --set data.encoding=utf-16-{order}, or re-save it "
                                       "as UTF-8")])
    if not is_utf8 and not data.isascii() and _is_utf8(data):
        raise InvalidData([Failure(name, "file", "", f"the file is valid UTF-8 with non-ASCII characters, but "
                                   f"data.encoding={encoding} was given: reading it that way would garble them "
                                   "(mojibake); read it as UTF-8: drop the data.encoding setting, or "
                                   "--set data.encoding=utf-8")])
    try:
        return data.decode(codec), []
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


def _looks_like_utf16(data: bytes) -> bool:
    """UTF-16 text with no byte-order mark: mostly ASCII, so half its bytes (all at even or all at odd offsets) are 0."""
    sample = data[:4096]
    if len(sample) < 8:
        return False
    even, odd = sample[0::2], sample[1::2]
    return max(even.count(0) / len(even), odd.count(0) / len(odd)) > 0.6


def _utf32_order(data: bytes) -> str | None:
    """`le` or `be` for UTF-32 text with no byte-order mark (mostly ASCII: the three high bytes of each four are 0),
    else None."""
    sample = data[: 4096 - 4096 % 4]
    if len(sample) < 16 or len(sample) % 4:
        return None
    zero = [sample[i::4].count(0) / (len(sample) // 4) for i in range(4)]
    if min(zero[1:]) > 0.9:
        return "le"
    if min(zero[:3]) > 0.9:
        return "be"
    return None


def _excel_sep_line(text: str) -> tuple[str, str | None]:
    """Excel's `sep=;` first line (written by Excel to say which delimiter its CSV uses): the text from line 2 on,
    as blank lines keeping line numbers, and the delimiter it names; (text, None) when there is no such line."""
    first, newline, rest = text.partition("\n")
    match = _EXCEL_SEP.match(first.rstrip("\r"))
    if not match:
        return text, None
    return "\n" + rest, match.group(1)


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


def _choose_delimiter(text: str, fmt: str, setting: str, name: str, header: str = "auto") -> tuple[str, str]:
    """The delimiter to read with: `data.delimiter` if set; a tab for .tsv; for .csv, what `csv.Sniffer` finds
    among the candidate delimiters that the header line holds. Logs which, and how it was chosen. Refuses a title
    line above the header (a first line without delimiters over lines that have them), naming both lines."""
    setting = parse_delimiter(setting)
    lines = [line.rstrip("\r") for line in text.lstrip("\ufeff").split("\n", 50)[:50]]
    filled = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    titles = _title_above_header(filled, setting, fmt) if len(filled) >= 3 and header != "none" else 0
    if titles:
        (first_no, first), (second_no, second) = filled[0], filled[titles]
        lines = (f"line {first_no}" if titles == 1 else f"lines {first_no} to {filled[titles - 1][0]}")
        raise InvalidData([Failure(name, f"line {first_no}", "", f"{lines} '{show_invisible(first, 60)}'"
                                   f"{' ...' if titles > 1 else ''} look{'s' * (titles == 1)} like a title above the "
                                   f"header: {'it has one field' if titles == 1 else 'they have one field each'}, while line "
                                   f"{second_no} ('{show_invisible(second, 60)}') and the lines below have several; "
                                   f"delete {lines} (everything above the header) and run again")])
    if setting != "auto":
        return setting, "data.delimiter"
    if fmt == "tsv":
        return "\t", "by the file's extension"
    header_line = filled[0][1] if filled else ""
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


def _title_above_header(filled: list[tuple[int, str]], setting: str, fmt: str) -> int:
    """How many title lines stand above the header (0 if none): up to five first lines of one field each (no column
    separator, or only trailing ones: `Title,,`), the first of several words, over a line of two or more short names,
    the lines below holding as many fields as that one: the title (and subtitle) a spreadsheet export put above the
    header. (A one-column file whose sentences hold commas is not one: its second line is a sentence, and its
    field counts vary.)"""
    if len(filled[0][1].split()) < 2:
        return 0
    chars = [setting] if setting != "auto" else ["\t"] if fmt == "tsv" else list(DELIMITERS.values())
    for char in chars:
        def fields(line: str) -> list[str]:
            return next(csv.reader([line], delimiter=char), [])
        for titles in range(1, min(5, len(filled) - 2) + 1):
            head = fields(filled[titles - 1][1])
            if sum(bool(f.strip()) for f in head) != 1 or not head[0].strip():
                break  # a title line holds one field (trailing separators allowed)
            names = fields(filled[titles][1])
            if len(names) < 2 or any(len(n) > 40 or _looks_like_data(n) for n in names) or not all(
                    n.strip() for n in names):
                continue
            counts = [len(fields(line)) for _, line in filled[titles + 1:]]
            if counts and sum(c == len(names) for c in counts) >= 0.8 * len(counts):
                return titles
    return 0


def is_blank(fields: list[str]) -> bool:
    return all(not f.strip() for f in fields)


def _read_delimited(text: str, name: str, fmt: str, chosen: tuple[str, str], blank_lines: str,
                    header_mode: str = "auto") -> RawTable:
    delimiter, how = chosen
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []  # (line where the row starts, fields), blank rows included
    last_line = 0
    unreadable = None
    try:
        for fields in reader:
            start, last_line = last_line + 1, reader.line_num
            if header is None and (not fields or is_blank(fields)):
                continue  # blank lines before the header
            if header is None and header_mode != "none":
                header = [h.strip() for h in fields]
                continue
            if header is None:  # data.header=none: columns numbered from 1, as wide as the widest row
                header = []
            rows.append((start, fields))
    except csv.Error as exc:
        unreadable = Failure(name, f"line {reader.line_num}", "", f"unreadable {fmt.upper()}: {exc}")
    if header is None:
        raise InvalidData([Failure(name, "file", "", "file has no header row")])
    notes = [f"columns separated by '{show_invisible(delimiter)}' ({how})"]
    if header_mode == "none":
        header = [str(i) for i in range(1, max((len(f) for _, f in rows if not is_blank(f)), default=1) + 1)]
        notes.append(f"no header line (data.header=none): columns numbered 1 to {len(header)}, line 1 is a row")
    elif extra := _trailing_delimiters(rows, len(header)):
        header = header + [""] * extra  # every data row ends with `extra` empty fields: unnamed empty columns
        notes.append(f"every data row ends with {extra} {_delimiter_word(delimiter)[:-1] if extra == 1 else _delimiter_word(delimiter)} "
                     "that the header lacks (a trailing delimiter): the empty field read as an unnamed empty column")
    elif extra := _header_trailing_delimiters(rows, header):
        header = header[:-extra]  # the header line alone ends with `extra` delimiters: empty names, no column
        notes.append(f"the header line ends with {extra} {_delimiter_word(delimiter)[:-1] if extra == 1 else _delimiter_word(delimiter)} "
                     "that no data row has (a trailing delimiter): the empty column name ignored")
    data_like = _data_like_header(header, rows) if header_mode == "auto" else None
    records, locations, failures, skipped, pending = [], [], [], [], []
    kind = _delimiter_word(delimiter)[:-1] if delimiter in DELIMITER_NAMES else repr(delimiter)
    header_key = [h.casefold() for h in header]
    for start, fields in rows:
        if is_blank(fields):
            # a row, or the end of the file: known when a row follows (or, scoring, when it holds spaces)
            pending.append((start, fields))
            continue
        _flush_blank(pending, len(pending), blank_lines, header, records, locations, skipped)
        pending = []
        if header_mode != "none" and len(fields) >= 2 and [f.strip().casefold() for f in fields] == header_key:
            failures.append(Failure(name, f"line {start}", "", "this line repeats the header (two exports joined "
                                    "into one file?): delete it", _preview(delimiter.join(fields))))
            continue
        if header_mode == "none" and len(fields) < len(header):
            fields = fields + [""] * (len(header) - len(fields))
        if len(fields) != len(header):
            trailing = len(fields) == len(header) + 1 and not fields[-1].strip()
            cause = f"a trailing {kind} at the end of the row?" if trailing else f"an unquoted {kind} or quote?"
            failures.append(Failure(name, f"line {start}", "", f"row has {len(fields)} fields, the header "
                                    f"has {len(header)} ({cause})", _preview(delimiter.join(fields))))
            continue
        records.append(fields)
        locations.append(f"line {start}")
    if unreadable:
        failures.append(unreadable)
    if blank_lines == "rows":
        # Scoring: trailing empty lines end the file, but a trailing line of spaces is a row the user wrote
        # (rows in = rows out: it is refused, or kept with a reason, never dropped without a word).
        written = [i for i, (_, fields) in enumerate(pending) if any(fields)]
        _flush_blank(pending, written[-1] + 1 if written else 0, blank_lines, header, records, locations, skipped)
    drop = [i for i, h in enumerate(header) if not h and all(not r[i].strip() for r in records)]
    if drop:
        header = [h for i, h in enumerate(header) if i not in drop]
        records = [[v for i, v in enumerate(r) if i not in drop] for r in records]
        notes.append(_unnamed_note([i + 1 for i in drop]))
    _check_header(header, name)
    frame = pd.DataFrame.from_records(records, columns=header) if records else pd.DataFrame(columns=header)
    return RawTable(frame.astype(object), locations, failures, notes, delimiter, skipped, data_like)


def _data_like_header(header: list[str], rows: list[tuple[int, list[str]]]) -> str | None:
    """The header cell that says line 1 is a data row, if one does: a sentence (`_looks_like_data`), or a value that
    its own column holds again further down (a label such as `positive` on line 1 of a header-less file). Rows that
    repeat the whole header (two exports joined) are not counted: they are named on their own."""
    if cell := next((h for h in header if _looks_like_data(h)), None):
        return cell
    key = [h.casefold() for h in header]
    for _, fields in rows:
        values = [f.strip().casefold() for f in fields]
        if len(values) == len(key) and values != key:
            for name, value in zip(key, values):
                if name and value == name:
                    return header[key.index(name)]
    return None


def _trailing_delimiters(rows: list[tuple[int, list[str]]], width: int) -> int:
    """How many empty fields every data row has beyond the header's `width` (a delimiter at the end of each data
    row, not of the header: an export's habit); 0 when any row has not, or has a value there."""
    filled = [fields for _, fields in rows if not is_blank(fields)]
    if not filled:
        return 0
    extra = min(len(fields) for fields in filled) - width
    if extra <= 0 or any(field.strip() for fields in filled for field in fields[width:]):
        return 0
    return extra if all(len(fields) == width + extra for fields in filled) else 0


def _header_trailing_delimiters(rows: list[tuple[int, list[str]]], header: list[str]) -> int:
    """How many empty names end the header when every data row is that much narrower (a delimiter at the end of
    the header line only); 0 otherwise."""
    extra = 0
    while extra < len(header) - 1 and not header[len(header) - 1 - extra]:
        extra += 1
    filled = [fields for _, fields in rows if not is_blank(fields)]
    if not extra or not filled or any(len(fields) != len(header) - extra for fields in filled):
        return 0
    return extra


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


def all_empty(values) -> bool:
    """Null or blank on every row (what makes an unnamed column ignorable)."""
    return all(v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and not v.strip())
               for v in values)


def line_number(location: str) -> int:
    """The number in a row's location (`line 12`, `row 3`), 0 if it has none: the order of a file's rows."""
    tail = location.rpartition(" ")[2]
    return int(tail) if tail.isdigit() else 0


def _drop_empty_unnamed(table: RawTable) -> None:
    """Unnamed columns (`''`, pandas' `Unnamed: 3`) that are null or blank on every row: dropped, with a note."""
    frame = table.frame
    drop = [i for i, col in enumerate(frame.columns) if isinstance(col, str) and _UNNAMED.match(col)
            and all_empty(frame.iloc[:, i])]
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


def _refuse_json_of_columns(text: str, name: str) -> None:
    """Refuses a file that is one JSON object of columns, not one record per line: pandas' `to_json()` default
    (orient='columns': `{"text": {"0": ...}, "label": {"0": ...}}`) or orient='split' (`{"columns": [...],
    "data": [...]}`). Read as JSON lines it would be one row whose cells are whole columns."""
    if not text.lstrip("\ufeff \t\r\n").startswith("{"):
        return
    try:
        whole = json.loads(text.lstrip("\ufeff"))
    except json.JSONDecodeError:
        return  # JSON lines (several objects), or broken: read line by line
    if not isinstance(whole, dict) or not whole or not all(isinstance(v, (dict, list)) for v in whole.values()):
        return
    orient = "split" if {"columns", "data"} <= set(whole) else "columns"
    raise InvalidData([Failure(name, "line 1", "", f"the file is one JSON object of columns (pandas' "
                               f"to_json(orient='{orient}'), keys {', '.join(map(repr, list(whole)[:5]))}), not one "
                               "record per line: re-export it as JSON lines, e.g. df.to_json(path, orient='records', "
                               "lines=True), or as CSV or Parquet")])


def _is_json_array(text: str) -> bool:
    """The file is one JSON array (`[{...}, {...}]`, as `json.dump(records)` and many exports write), not JSON lines."""
    return text.lstrip("\ufeff \t\r\n").startswith("[")


def _read_json_array(text: str, name: str) -> RawTable | None:
    """A JSON array of records, each located by the line where it starts (as JSON lines are). An element that is
    not an object fails on its line; an array that does not parse is refused saying it is an array, where it breaks.
    None when text follows the array's end: JSON lines whose first record is an array, read (and refused) as such."""
    decoder = json.JSONDecoder()
    records, locations, failures = [], [], []
    position = text.index("[") + 1
    ws = re.compile(r"[\s,]*")
    try:
        while True:
            position = ws.match(text, position).end()
            if position >= len(text) or text[position] == "]":
                if text[position + 1:].strip():
                    return None
                break
            line = text.count("\n", 0, position) + 1
            value, position = decoder.raw_decode(text, position)
            if isinstance(value, dict):
                records.append(value)
                locations.append(f"line {line}")
            else:
                failures.append(Failure(name, f"line {line}", "", "an element of the JSON array is not an object "
                                        '({"text": ..., "label": ...})', _preview(json.dumps(value))))
    except json.JSONDecodeError as exc:
        raise InvalidData([Failure(name, f"line {exc.lineno}", "", f"the file is a JSON array (not JSON lines) that "
                                   f"is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}; fix it, "
                                   "or write one JSON object per line (JSON lines)")]) from None
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    note = f"read as a JSON array of {len(records) + len(failures)} records (not JSON lines)"
    return RawTable(frame.astype(object), locations, failures, [note])


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
