"""Writes for datasets: checking an uploaded file and storing it with its train/validation split.

Rows repeating an earlier row's text with the same label are dropped from the split and the
counts and reported as a warning on the dataset. The same text under different labels is refused
or kept, as the upload (else the ``DATASET_CONFLICTING_LABELS`` setting) says; kept, it is a
warning too.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.db import IntegrityError, transaction

from config.events import record_event
from models_registry import artifacts
from models_registry.dataset_files import (
    MAX_FILE_BYTES,
    MAX_PROBLEMS_REPORTED,
    ParsedDataset,
    detect_format,
    file_too_big_message,
    parse_dataset,
)
from models_registry.exceptions import (
    DatasetAlreadyExists,
    DatasetTooLarge,
    InvalidDataset,
)
from models_registry.models import Dataset
from tenants.models import Tenant

# What an upload may say about texts found under more than one label.
CONFLICTING_LABELS_REFUSE = "refuse"
CONFLICTING_LABELS_KEEP = "keep"
CONFLICTING_LABELS_CHOICES = (CONFLICTING_LABELS_REFUSE, CONFLICTING_LABELS_KEEP)
# Row numbers stored in the validation report beyond the capped warnings.
MAX_ROWS_STORED = 1000


def check_dataset_content(
    *,
    name: str,
    content: bytes,
    format: str | None = None,
    filename: str | None = None,
    conflicting_labels: str | None = None,
) -> tuple[str, ParsedDataset]:
    """The file's format and rows, or InvalidDataset / DatasetTooLarge listing its problems.

    ``conflicting_labels`` (``refuse`` or ``keep``; default: the platform's setting) decides
    whether texts found under more than one label refuse the file.
    """
    conflicting_labels = conflicting_labels or settings.TENANTML_DATASET_CONFLICTING_LABELS
    if conflicting_labels not in CONFLICTING_LABELS_CHOICES:
        raise InvalidDataset(
            f"conflicting_labels must be {' or '.join(CONFLICTING_LABELS_CHOICES)}.",
            field="conflicting_labels",
        )
    if len(content) > MAX_FILE_BYTES:
        raise DatasetTooLarge(file_too_big_message(len(content)), field="file")
    format = format or detect_format(filename or name, content)
    parsed = parse_dataset(content, format=format)
    if not parsed.problems and not parsed.rows:
        parsed.problems.append("file: has no rows.")
    if conflicting_labels == CONFLICTING_LABELS_REFUSE and parsed.conflicts:
        parsed.problems.append(
            f"file: {parsed.conflicts_summary()}. Give each text one label, or upload with "
            "conflicting_labels=keep to train on them as they are."
        )
    if parsed.problems:
        shown = parsed.problems[:MAX_PROBLEMS_REPORTED]
        more = len(parsed.problems) - len(shown)
        message = "; ".join(problem.rstrip(".") for problem in shown) + (
            f"; and {more} more problem(s)." if more else "."
        )
        raise InvalidDataset(message, field="file")
    return format, parsed


def create_dataset(
    *,
    tenant: Tenant,
    name: str,
    content: bytes,
    actor: str,
    format: str | None = None,
    filename: str | None = None,
    conflicting_labels: str | None = None,
) -> Dataset:
    """Validate an uploaded file, fix its train/validation split and store it.

    An invalid file raises and stores nothing; ``filename`` (the uploaded file's own name) helps
    tell CSV from JSON Lines when ``name`` has no extension. The file is stored as uploaded; the
    split leaves out the rows dropped as repeats, and the report says which they were.
    """
    format, parsed = check_dataset_content(
        name=name,
        content=content,
        format=format,
        filename=filename,
        conflicting_labels=conflicting_labels,
    )
    split = parsed.split()
    kept_rows = len(split["train"]) + len(split["validation"])
    warnings = [
        warning
        for warning in (
            parsed.repeats_warning(),
            f"{parsed.conflicts_summary()}; kept as uploaded." if parsed.conflicts else "",
        )
        if warning
    ]
    conflicting_rows = sorted(parsed.line_numbers[i] for rows in parsed.conflicts for i in rows)
    # Checked before the file is stored so a refused upload leaves no file behind; the unique
    # constraint below still settles a race between two uploads of the same name.
    if Dataset.objects.filter(tenant=tenant, name=name).exists():
        raise DatasetAlreadyExists(
            f"Tenant {tenant.slug} already has a dataset named {name!r}.", field="name"
        )
    digest = hashlib.sha256(content).hexdigest()
    stored = artifacts.put_bytes(f"datasets/{tenant.slug}/{digest}.{format}", content)
    columns = parsed.columns
    try:
        with transaction.atomic():
            dataset = Dataset.objects.create(
                tenant=tenant,
                name=name,
                format=format,
                storage_uri=stored.uri,
                size_bytes=stored.size_bytes,
                sha256=stored.sha256,
                rows=kept_rows,
                labels=parsed.label_counts,
                validation_report={
                    "problems": [],
                    "warnings": warnings,
                    "rows": kept_rows,
                    "rows_in_file": len(parsed.rows),
                    "dropped_repeats": len(parsed.repeated),
                    "dropped_rows": [
                        parsed.line_numbers[i] for i in parsed.repeated[:MAX_ROWS_STORED]
                    ],
                    "conflicting_texts": len(parsed.conflicts),
                    "conflicting_rows": conflicting_rows[:MAX_ROWS_STORED],
                    "columns": columns,
                    "groups": parsed.group_count,
                    "train_rows": len(split["train"]),
                    "validation_rows": len(split["validation"]),
                },
                split=split,
            )
            record_event(
                kind="dataset.uploaded",
                message=(
                    f"Dataset {name} ({kept_rows} rows: {len(split['train'])} train, "
                    f"{len(split['validation'])} validation) uploaded for {tenant.slug}."
                    + "".join(f" {warning}" for warning in warnings)
                ),
                severity="warning" if warnings else "info",
                actor=actor,
                tenant=tenant,
            )
    except IntegrityError as exc:
        raise DatasetAlreadyExists(
            f"Tenant {tenant.slug} already has a dataset named {name!r}.", field="name"
        ) from exc
    return dataset
