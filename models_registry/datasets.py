"""Parsing uploaded datasets (CSV or JSON Lines with ``text,label`` and optional ``group``).

Pure functions: bytes in, rows or a list of problems out. Every problem names the row (1-based,
counting the header for CSV) and the field, so a user can fix the file.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field

REQUIRED_COLUMNS = ("text", "label")
OPTIONAL_COLUMNS = ("group",)
MAX_TEXT_CHARS = 2000
MAX_PROBLEMS_REPORTED = 20


@dataclass
class ParsedDataset:
    rows: list[dict[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def label_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(row["label"] for row in self.rows).items()))


def detect_format(filename: str, content: bytes) -> str:
    """``csv`` or ``jsonl``, from the file name, else from the first non-blank character."""
    lowered = filename.lower()
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lowered.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    return "jsonl" if content.lstrip()[:1] == b"{" else "csv"


def parse_dataset(content: bytes, *, format: str) -> ParsedDataset:
    """Decode and parse a dataset file, collecting every row-level problem."""
    parsed = ParsedDataset()
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        parsed.problems.append(f"file: not UTF-8 text (byte {exc.start} is invalid).")
        return parsed
    if "\x00" in text:
        parsed.problems.append("file: contains NUL bytes; upload a text file, not a binary one.")
        return parsed
    records = _csv_records(text, parsed) if format == "csv" else _jsonl_records(text, parsed)
    for line_number, record in records:
        _check_record(line_number, record, parsed)
    return parsed


def _csv_records(text: str, parsed: ParsedDataset):
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        parsed.problems.append(
            f"header: missing column(s) {', '.join(missing)}; found {', '.join(columns) or 'none'}."
        )
        return []
    records = []
    try:
        for record in reader:
            cleaned = {(k or "").strip(): v for k, v in record.items()}
            records.append((reader.line_num, cleaned))
    except csv.Error as exc:
        parsed.problems.append(f"row {reader.line_num}: malformed CSV ({exc}).")
    return records


def _jsonl_records(text: str, parsed: ParsedDataset):
    records = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            parsed.problems.append(f"row {line_number}: not valid JSON ({exc.msg}).")
            continue
        if not isinstance(record, dict):
            parsed.problems.append(f"row {line_number}: must be a JSON object with text and label.")
            continue
        records.append((line_number, record))
    return records


def _check_record(line_number: int, record: dict, parsed: ParsedDataset) -> None:
    row: dict[str, str] = {}
    for column in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
        value = record.get(column)
        if value is None:
            if column in REQUIRED_COLUMNS:
                parsed.problems.append(f"row {line_number}, field {column}: missing.")
                return
            continue
        if not isinstance(value, str | int):
            parsed.problems.append(f"row {line_number}, field {column}: must be a string.")
            return
        row[column] = str(value).strip()
    if not row["text"]:
        parsed.problems.append(f"row {line_number}, field text: empty.")
        return
    if len(row["text"]) > MAX_TEXT_CHARS:
        parsed.problems.append(
            f"row {line_number}, field text: {len(row['text'])} characters, over the "
            f"{MAX_TEXT_CHARS} limit."
        )
        return
    if not row["label"]:
        parsed.problems.append(f"row {line_number}, field label: empty.")
        return
    parsed.rows.append(row)
