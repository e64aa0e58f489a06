"""Parsing uploaded datasets (CSV or JSON Lines with ``text,label`` and optional ``group``, or
``text,reply`` for reply models).

Pure functions: bytes in, rows or a list of problems out. Every problem names the row (1-based,
counting the header for CSV) and the field, so a user can fix the file.

Texts are compared after Unicode normalisation (NFKC), case folding and collapsing whitespace
(``fold_text``). A row that repeats an earlier row's text with the same label (and group) is kept
in the parse but left out of the counts and the split: real data has such rows, and training on
a text twice only weights it. The same text under two labels is found too (``conflicts``); whether
that refuses the file is the caller's choice. Messages name rows by number, never their text.

A dataset of replies (a ``reply`` column where a labelled one has ``label``: the agent's reply
to the ticket, or the rest of a reply whose start is the text) has no labels: its rows are split
at random, it needs ``MIN_REPLY_ROWS`` rows, and the same text with two different replies is no
conflict (agents answer alike tickets differently).

Cells that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab
or a carriage return) are kept verbatim: they are ordinary ticket text ("-1 star", "@support")
and the model must train on what customers wrote. They are neutralized where text leaves the
platform as CSV (``export_csv``), never in the stored dataset.
"""

from __future__ import annotations

import csv
import io
import json
import random
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field

REQUIRED_COLUMNS = ("text", "label")
OPTIONAL_COLUMNS = ("group",)
# A reply dataset's columns: ``reply`` stands where a labelled dataset has ``label``.
REPLY_COLUMNS = ("text", "reply")
MAX_TEXT_CHARS = 2000
MAX_REPLY_CHARS = 2000
# A reply model learns a tenant's style from its rows: fewer cannot be split and scored.
MIN_REPLY_ROWS = 20
# Labels and groups are names (a label becomes a class of the served model), not prose.
MAX_LABEL_CHARS = 200
MAX_GROUP_CHARS = 200
# Bounds the memory a 20 MB file of tiny rows can take to parse (a row costs ~1 KB in Python).
MAX_ROWS = 200_000
MAX_PROBLEMS_REPORTED = 20
# How many row numbers a warning lists (then "and N more"), and how many conflicting texts.
MAX_ROWS_LISTED = 20
MAX_CONFLICTS_LISTED = 10
# Above this an upload is refused before it is parsed (the API answers 413).
MAX_FILE_BYTES = 20 * 1024 * 1024
# Fewer examples than this per label cannot be split into train and validation meaningfully.
MIN_ROWS_PER_LABEL = 5
# A paraphrase group is a positive pair at least.
MIN_ROWS_PER_GROUP = 2
VALIDATION_FRACTION = 0.2
# Fixed, so a dataset's split is the same on every machine and every upload of the same file.
SPLIT_SEED = "tenantml-split-v1"


@dataclass
class ParsedDataset:
    # Every well-formed row in file order, repeats included (stored splits index into these).
    rows: list[dict[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # The file line (1-based, header counted for CSV) each parsed row came from.
    line_numbers: list[int] = field(default_factory=list)
    # Indexes into ``rows`` of rows repeating an earlier row's folded text with the same label
    # (and group): dropped from the counts and the split.
    repeated: list[int] = field(default_factory=list)
    # For each folded text found under more than one label, the indexes of its kept rows.
    conflicts: list[list[int]] = field(default_factory=list)

    @property
    def kept(self) -> list[int]:
        """Indexes into ``rows`` of the rows a model trains on (repeats dropped)."""
        dropped = set(self.repeated)
        return [index for index in range(len(self.rows)) if index not in dropped]

    @property
    def has_groups(self) -> bool:
        return bool(self.rows) and all("group" in row for row in self.rows)

    @property
    def has_replies(self) -> bool:
        return bool(self.rows) and all("reply" in row for row in self.rows)

    @property
    def columns(self) -> list[str]:
        """The columns every row has, as a model's training reads them."""
        if self.has_replies:
            return list(REPLY_COLUMNS)
        return ["text", "label", *(["group"] if self.has_groups else [])]

    @property
    def group_count(self) -> int:
        return len({self.rows[i]["group"] for i in self.kept if "group" in self.rows[i]})

    @property
    def label_counts(self) -> dict[str, int]:
        """Rows kept per label (none for a dataset of replies)."""
        return dict(
            sorted(
                Counter(self.rows[i]["label"] for i in self.kept if "label" in self.rows[i]).items()
            )
        )

    def split(self, *, validation_fraction: float = VALIDATION_FRACTION) -> dict[str, list[int]]:
        """The stratified split of the kept rows, as indexes into ``rows``."""
        kept = self.kept
        split = stratified_split(
            [self.rows[i] for i in kept], validation_fraction=validation_fraction
        )
        return {side: [kept[position] for position in split[side]] for side in split}

    def repeats_warning(self) -> str:
        """What was dropped, by row number; empty when nothing was."""
        if not self.repeated:
            return ""
        count = len(self.repeated)
        rows = row_list([self.line_numbers[i] for i in self.repeated])
        if count == 1:
            return (
                f"1 row repeats an earlier row's text with the same label and was dropped: {rows}."
            )
        return (
            f"{count} rows repeat an earlier row's text with the same label and were dropped: "
            f"{rows}."
        )

    def conflicts_summary(self) -> str:
        """Which rows share a text under different labels, by row number; empty when none."""
        if not self.conflicts:
            return ""
        shown = [
            row_list([self.line_numbers[i] for i in indexes], shown=5)
            for indexes in self.conflicts[:MAX_CONFLICTS_LISTED]
        ]
        more = len(self.conflicts) - len(shown)
        count = len(self.conflicts)
        return (
            f"{count} text{'s' if count != 1 else ''} appear{'s' if count == 1 else ''} under "
            "more than one label: "
            + ", ".join(shown)
            + (f" and {more} more text(s)" if more else "")
        )


def fold_text(text: str) -> str:
    """A text as rows are compared: NFKC-normalised, case-folded, whitespace runs as one space."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def row_list(line_numbers: list[int], *, shown: int = MAX_ROWS_LISTED) -> str:
    """``row 7``, ``rows 7 and 9``, ``rows 7, 9, 12 and 3 more``: row numbers, capped."""
    if len(line_numbers) == 1:
        return f"row {line_numbers[0]}"
    listed = [str(number) for number in line_numbers[:shown]]
    more = len(line_numbers) - len(listed)
    if more:
        return "rows " + ", ".join(listed) + f" and {more} more"
    return "rows " + ", ".join(listed[:-1]) + f" and {listed[-1]}"


def detect_format(filename: str, content: bytes) -> str:
    """``csv`` or ``jsonl``, from the file name, else from the first non-blank character."""
    lowered = filename.lower()
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lowered.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    return "jsonl" if content.lstrip()[:1] == b"{" else "csv"


def parse_dataset(
    content: bytes,
    *,
    format: str,
    min_rows_per_label: int = MIN_ROWS_PER_LABEL,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> ParsedDataset:
    """Decode and parse a dataset file, collecting every row-level and whole-file problem."""
    parsed = ParsedDataset()
    if len(content) > max_file_bytes:
        parsed.problems.append(file_too_big_message(len(content), max_file_bytes))
        return parsed
    if content.startswith((b"\xff\xfe", b"\xfe\xff")):
        parsed.problems.append("file: UTF-16 text (byte-order mark found); save it as UTF-8.")
        return parsed
    if b"\x00" in content:
        row = content[: content.index(b"\x00")].count(b"\n") + 1
        parsed.problems.append(
            f"row {row}: contains NUL bytes (a binary file, or UTF-16 text); upload UTF-8 text."
        )
        return parsed
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        row = content[: exc.start].count(b"\n") + 1
        parsed.problems.append(
            f"row {row}: not UTF-8 text (byte {exc.start} is invalid); save the file as UTF-8."
        )
        return parsed
    records = _csv_records(text, parsed) if format == "csv" else _jsonl_records(text, parsed)
    replies = _is_reply_file(records)
    for line_number, record in records:
        _check_record(line_number, record, parsed, replies=replies)
    if not parsed.problems:
        _check_whole_file(parsed, min_rows_per_label=min_rows_per_label)
    return parsed


def file_too_big_message(size_bytes: int, max_file_bytes: int = MAX_FILE_BYTES) -> str:
    """The problem reported for an upload over the size limit, naming both sizes."""
    return (
        f"file: {size_bytes / 1e6:,.1f} MB ({size_bytes} bytes) is over the "
        f"{max_file_bytes / 1e6:,.0f} MB limit."
    )


def _lines(parsed: ParsedDataset, indexes: list[int], shown: int = 5) -> str:
    lines = [str(parsed.line_numbers[i]) for i in indexes[:shown]]
    more = f" and {len(indexes) - shown} more" if len(indexes) > shown else ""
    return ("row " if len(indexes) == 1 else "rows ") + ", ".join(lines) + more


def _find_repeats_and_conflicts(parsed: ParsedDataset) -> None:
    """Mark rows repeating an earlier row (folded text, label and group) and collect the texts
    found under more than one label."""
    seen: set[tuple] = set()
    by_text: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(parsed.rows):
        text = fold_text(row["text"])
        if "reply" in row:
            key = (text, fold_text(row["reply"]))
        else:
            key = (text, row["label"], row.get("group"))
        if key in seen:
            parsed.repeated.append(index)
            continue
        seen.add(key)
        by_text[text].append(index)
    if parsed.has_replies:
        return  # one ticket, two replies: both are the tenant's style
    parsed.conflicts = [
        indexes
        for indexes in by_text.values()
        if len({parsed.rows[i]["label"] for i in indexes}) > 1
    ]


def _check_whole_file(parsed: ParsedDataset, *, min_rows_per_label: int) -> None:
    """Repeats and conflicting labels, the group column's consistency and the per-label /
    per-group minimums (counted over the rows kept)."""
    _find_repeats_and_conflicts(parsed)
    if parsed.has_replies:
        kept = parsed.kept
        if len(kept) < MIN_REPLY_ROWS:
            parsed.problems.append(
                f"file, field reply: {len(kept)} row(s) with a reply; a reply dataset needs at "
                f"least {MIN_REPLY_ROWS}."
            )
        return
    with_group = [i for i, row in enumerate(parsed.rows) if "group" in row]
    if with_group and len(with_group) != len(parsed.rows):
        missing = [i for i, row in enumerate(parsed.rows) if "group" not in row]
        parsed.problems.append(
            f"{_lines(parsed, missing)}, field group: missing, while other rows have a group."
        )
        return
    kept = parsed.kept
    by_label: dict[str, list[int]] = defaultdict(list)
    for index in kept:
        by_label[parsed.rows[index]["label"]].append(index)
    if len(by_label) == 1:
        (only,) = by_label
        parsed.problems.append(
            f"{_lines(parsed, by_label[only])}, field label: every row has the label {only!r}; "
            "at least two labels are needed."
        )
        return
    if parsed.has_groups:
        # Paraphrase datasets are judged by their groups: each label may be a single pair.
        by_group: dict[str, list[int]] = defaultdict(list)
        for index in kept:
            by_group[parsed.rows[index]["group"]].append(index)
        for group, indexes in by_group.items():
            if len(indexes) < MIN_ROWS_PER_GROUP:
                parsed.problems.append(
                    f"{_lines(parsed, indexes)}, field group: group {group!r} has "
                    f"{len(indexes)} row(s); a group needs at least {MIN_ROWS_PER_GROUP}."
                )
        return
    for label, indexes in by_label.items():
        if len(indexes) < min_rows_per_label:
            parsed.problems.append(
                f"{_lines(parsed, indexes)}, field label: label {label!r} has {len(indexes)} "
                f"example(s); each label needs at least {min_rows_per_label}."
            )


def stratified_split(
    rows: list[dict[str, str]], *, validation_fraction: float = VALIDATION_FRACTION
) -> dict[str, list[int]]:
    """Row indexes (0-based, into the parsed rows) for training and validation, deterministic.

    Labelled rows are stratified by label, and every label with two or more rows puts at least
    one in validation. Rows with a ``group`` are split by whole groups, because a paraphrase pair
    split across the two sides could not be scored. Rows of replies are split at random.
    """
    units: dict[str, list[int]] = defaultdict(list)
    grouped = bool(rows) and all("group" in row for row in rows)
    for index, row in enumerate(rows):
        # Replies have no label: they are one stratum, split at random.
        units[row["group"] if grouped else row.get("label", "")].append(index)
    train: list[int] = []
    validation: list[int] = []
    if grouped:
        names = sorted(units)
        random.Random(f"{SPLIT_SEED}:groups").shuffle(names)
        held = set(names[: _validation_count(len(names), validation_fraction)])
        for name, indexes in units.items():
            (validation if name in held else train).extend(indexes)
    else:
        for label in sorted(units):
            members = list(units[label])
            random.Random(f"{SPLIT_SEED}:{label}").shuffle(members)
            count = _validation_count(len(members), validation_fraction)
            validation.extend(members[:count])
            train.extend(members[count:])
    return {"train": sorted(train), "validation": sorted(validation)}


def _validation_count(size: int, fraction: float) -> int:
    if size < 2:
        return 0
    return min(size - 1, max(1, round(size * fraction)))


def export_csv(rows: list[dict[str, str]]) -> str:
    """Rows as CSV for people to open in a spreadsheet, with formula-like cells neutralized."""
    if rows and all("reply" in row for row in rows):
        columns = list(REPLY_COLUMNS)
    else:
        columns = [
            "text",
            "label",
            *(["group"] if rows and all("group" in r for r in rows) else []),
        ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: neutralize_formula(row.get(column, "")) for column in columns})
    return buffer.getvalue()


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralize_formula(cell: str) -> str:
    """``cell`` with a leading apostrophe when a spreadsheet would evaluate it (OWASP advice)."""
    return f"'{cell}" if cell.startswith(FORMULA_PREFIXES) else cell


def _csv_records(text: str, parsed: ParsedDataset):
    reader = csv.DictReader(io.StringIO(text))
    try:
        fieldnames = reader.fieldnames
    except csv.Error as exc:
        parsed.problems.append(f"row 1: malformed CSV header ({exc}).")
        return []
    columns = [c.strip() for c in (fieldnames or [])]
    if "reply" in columns and "label" in columns:
        parsed.problems.append(
            "header: has both label and reply; a dataset has labels (text,label) or replies "
            "(text,reply), not both."
        )
        return []
    wanted = REPLY_COLUMNS if "reply" in columns else REQUIRED_COLUMNS
    missing = [c for c in wanted if c not in columns]
    if missing:
        parsed.problems.append(
            f"header: missing column(s) {', '.join(missing)}; found {', '.join(columns) or 'none'}."
        )
        return []
    records = []
    try:
        for record in reader:
            if len(records) >= MAX_ROWS:
                parsed.problems.append(_too_many_rows(reader.line_num))
                break
            cleaned = {(k or "").strip(): v for k, v in record.items()}
            records.append((reader.line_num, cleaned))
    except csv.Error as exc:
        # The reader's own line count stops short inside a bad line: name the one after the
        # last good row.
        row = (records[-1][0] if records else 1) + 1
        parsed.problems.append(f"row {row}: malformed CSV ({exc}).")
    return records


def _jsonl_records(text: str, parsed: ParsedDataset):
    records = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(records) >= MAX_ROWS:
            parsed.problems.append(_too_many_rows(line_number))
            break
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as exc:
            # ValueError also covers integers over Python's 4300-digit limit; RecursionError a
            # line of nested brackets.
            if isinstance(exc, json.JSONDecodeError):
                reason = exc.msg
            else:
                reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            parsed.problems.append(f"row {line_number}: not valid JSON ({reason}).")
            continue
        if not isinstance(record, dict):
            parsed.problems.append(
                f"row {line_number}: must be a JSON object with text and label (or reply)."
            )
            continue
        records.append((line_number, record))
    return records


def _too_many_rows(line_number: int) -> str:
    return f"row {line_number}: the file has more than {MAX_ROWS:,} rows; split it."


# The longest value each column may hold.
MAX_CHARS = {
    "text": MAX_TEXT_CHARS,
    "label": MAX_LABEL_CHARS,
    "group": MAX_GROUP_CHARS,
    "reply": MAX_REPLY_CHARS,
}


def _is_reply_file(records: list[tuple[int, dict]]) -> bool:
    """Whether the file holds replies: its first row has a reply and no label."""
    return bool(records) and "reply" in records[0][1] and "label" not in records[0][1]


def _check_record(line_number: int, record: dict, parsed: ParsedDataset, *, replies: bool) -> None:
    if "reply" in record and "label" in record:
        parsed.problems.append(
            f"row {line_number}: has both label and reply; a dataset has labels (text,label) or "
            "replies (text,reply), not both."
        )
        return
    required = REPLY_COLUMNS if replies else REQUIRED_COLUMNS
    optional = () if replies else OPTIONAL_COLUMNS
    row: dict[str, str] = {}
    for column in required + optional:
        value = record.get(column)
        if value is None:
            if column in required:
                parsed.problems.append(f"row {line_number}, field {column}: missing.")
                return
            continue
        if not isinstance(value, str | int):
            parsed.problems.append(f"row {line_number}, field {column}: must be a string.")
            return
        row[column] = str(value).strip()
        if "\x00" in row[column]:
            # Escaped as \u0000 in JSON Lines; the database cannot store it in text or JSON.
            parsed.problems.append(f"row {line_number}, field {column}: contains a NUL character.")
            return
    for column in required + optional:
        if column not in row:
            continue
        if not row[column]:
            parsed.problems.append(f"row {line_number}, field {column}: empty.")
            return
        if len(row[column]) > MAX_CHARS[column]:
            parsed.problems.append(
                f"row {line_number}, field {column}: {len(row[column])} characters, over the "
                f"{MAX_CHARS[column]} limit."
            )
            return
    parsed.rows.append(row)
    parsed.line_numbers.append(line_number)
