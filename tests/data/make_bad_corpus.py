"""Writes tests/data/bad/: one small file per kind of broken input (run once; the files are committed).

The 10 MB single-row file is not committed: tests/test_bad_inputs.py writes it at test time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent / "bad"
GOOD = [
    ("Operating profit rose to EUR 13.1 mn from EUR 8.7 mn .", "positive"),
    ("The company 's net sales fell by 5 % .", "negative"),
    ("The annual general meeting will be held in Helsinki .", "neutral"),
    ("Sales increased strongly in all regions .", "positive"),
    ("The group recorded a loss of EUR 2 mn .", "negative"),
    ("The report is available on the company website .", "neutral"),
]


def csv_lines(rows, header="text,label"):
    return header + "\n" + "".join(f'"{t}",{l}\n' for t, l in rows)


def main() -> None:
    HERE.mkdir(exist_ok=True)
    files: dict[str, bytes] = {
        "empty.csv": b"",
        "header_only.csv": b"text,label\n",
        "missing_text_column.csv": csv_lines(GOOD, "sentence,label").encode(),
        "missing_label_column.tsv": ("text\tcategory\n" + "".join(f"{t}\t{l}\n" for t, l in GOOD)).encode(),
        "blank_text.csv": csv_lines(GOOD[:3] + [("   ", "neutral")] + GOOD[3:]).encode(),
        "empty_label.csv": csv_lines(GOOD[:2] + [("Profit was flat .", "")] + GOOD[2:]).encode(),
        "numeric_text.csv": csv_lines(GOOD[:4] + [("12345.6", "positive")] + GOOD[4:]).encode(),
        "wrong_field_count.csv": (csv_lines(GOOD[:3]) + "Sales rose, strongly,positive\n" + csv_lines(GOOD[3:])
                                  .split("\n", 1)[1]).encode(),
        "unterminated_quote.csv": (csv_lines(GOOD[:4]) + '"Sales rose strongly,positive\nMore text,neutral\n').encode(),
        "mixed_encodings.csv": csv_lines(GOOD[:2]).encode() + '"Caf\u00e9 sales fell",negative\n'.encode("latin-1")
        + csv_lines([("Nestl\u00e9 results were steady", "neutral")] + GOOD[2:]).split("\n", 1)[1].encode(),
        "latin1.csv": csv_lines(GOOD[:2] + [("Sepp\u00e4l\u00e4 sold its shares", "neutral")] + GOOD[2:])
        .encode("latin-1"),
        "utf16.csv": csv_lines(GOOD).encode("utf-16-le"),  # no byte-order mark: with one, the file is read
        "control_chars.csv": csv_lines(GOOD[:1] + [("Profit\x00 rose", "positive")] + GOOD[1:]).encode(),
        "single_class.csv": csv_lines([(t, "positive") for t, _ in GOOD]).encode(),
        "label_case.csv": csv_lines(GOOD + [("Margins improved markedly .", "Positive")]).encode(),
        "conflicting_labels.csv": csv_lines(GOOD + [("Sales increased strongly in all regions .", "neutral")]).encode(),
        "unknown_label.csv": csv_lines(GOOD + [("Orders grew by a third .", "postive")]).encode(),
        "duplicate_header.csv": csv_lines(GOOD, "text,text").encode(),
        "unknown_extension.xlsx": b"PK\x03\x04 not really a spreadsheet",
        "broken_line.jsonl": "\n".join([json.dumps({"text": t, "label": l}) for t, l in GOOD[:3]]
                                       + ['{"text": "Sales rose", "label": "positive"'] +
                                       [json.dumps({"text": t, "label": l}) for t, l in GOOD[3:]]).encode(),
        "not_an_object.jsonl": "\n".join([json.dumps({"text": t, "label": l}) for t, l in GOOD]
                                         + ['["Sales rose", "positive"]']).encode(),
        "null_label.jsonl": "\n".join([json.dumps({"text": t, "label": l}) for t, l in GOOD]
                                      + [json.dumps({"text": "Profit doubled .", "label": None})]).encode(),
        "numeric_text.jsonl": "\n".join([json.dumps({"text": 12345, "label": "neutral"})]
                                        + [json.dumps({"text": t, "label": l}) for t, l in GOOD]).encode(),
        "bool_label.jsonl": "\n".join([json.dumps({"text": t, "label": l}) for t, l in GOOD]
                                      + [json.dumps({"text": "Profit doubled .", "label": True})]).encode(),
        "not_parquet.parquet": b"text,label\nthis is a CSV wearing a Parquet name,positive\n",
        "too_few_per_class.csv": csv_lines(GOOD).encode(),
        "utf8_read_as_latin1.csv": csv_lines(GOOD + [("Nestl\u00e9 results were steady", "neutral")]).encode(),
        # the header holds two delimiters and the rows settle neither: the message names data.delimiter
        "ambiguous_delimiter.csv": b"text;label,extra\nProfit, rose; strongly, up;positive\nSales fell;negative,x,y\n",
        # the real-files issue's 180 rows, read with --text-col label --label-col text
        "swapped_columns.csv": (HERE.parent / "real" / "baseline_180.csv").read_bytes(),
    }
    for name, data in files.items():
        (HERE / name).write_bytes(data)
    table = pa.table({"text": [t for t, _ in GOOD] + ["Profit doubled ."], "label": [l for _, l in GOOD] + [None]})
    pq.write_table(table, HERE / "null_label.parquet")
    pq.write_table(pa.table({"text": [t for t, _ in GOOD] * 50, "label": [l for _, l in GOOD] * 50}),
                   HERE / "truncated.parquet")
    full = (HERE / "truncated.parquet").read_bytes()
    (HERE / "truncated.parquet").write_bytes(full[: len(full) // 2])


if __name__ == "__main__":
    main()
