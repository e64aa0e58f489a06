"""Writes for datasets: checking an uploaded file and storing it with its train/validation split."""

from __future__ import annotations

import hashlib

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
    stratified_split,
)
from models_registry.exceptions import (
    DatasetAlreadyExists,
    DatasetTooLarge,
    InvalidDataset,
)
from models_registry.models import Dataset
from tenants.models import Tenant


def check_dataset_content(
    *, name: str, content: bytes, format: str | None = None, filename: str | None = None
) -> tuple[str, ParsedDataset]:
    """The file's format and rows, or InvalidDataset / DatasetTooLarge listing its problems."""
    if len(content) > MAX_FILE_BYTES:
        raise DatasetTooLarge(file_too_big_message(len(content)), field="file")
    format = format or detect_format(filename or name, content)
    parsed = parse_dataset(content, format=format)
    if not parsed.problems and not parsed.rows:
        parsed.problems.append("file: has no rows.")
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
) -> Dataset:
    """Validate an uploaded file, fix its train/validation split and store it.

    An invalid file raises and stores nothing; ``filename`` (the uploaded file's own name) helps
    tell CSV from JSON Lines when ``name`` has no extension.
    """
    format, parsed = check_dataset_content(
        name=name, content=content, format=format, filename=filename
    )
    split = stratified_split(parsed.rows)
    # Checked before the file is stored so a refused upload leaves no file behind; the unique
    # constraint below still settles a race between two uploads of the same name.
    if Dataset.objects.filter(tenant=tenant, name=name).exists():
        raise DatasetAlreadyExists(
            f"Tenant {tenant.slug} already has a dataset named {name!r}.", field="name"
        )
    digest = hashlib.sha256(content).hexdigest()
    stored = artifacts.put_bytes(f"datasets/{tenant.slug}/{digest}.{format}", content)
    columns = ["text", "label", *(["group"] if parsed.has_groups else [])]
    try:
        with transaction.atomic():
            dataset = Dataset.objects.create(
                tenant=tenant,
                name=name,
                format=format,
                storage_uri=stored.uri,
                size_bytes=stored.size_bytes,
                sha256=stored.sha256,
                rows=len(parsed.rows),
                labels=parsed.label_counts,
                validation_report={
                    "problems": [],
                    "rows": len(parsed.rows),
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
                    f"Dataset {name} ({len(parsed.rows)} rows: {len(split['train'])} train, "
                    f"{len(split['validation'])} validation) uploaded for {tenant.slug}."
                ),
                actor=actor,
                tenant=tenant,
            )
    except IntegrityError as exc:
        raise DatasetAlreadyExists(
            f"Tenant {tenant.slug} already has a dataset named {name!r}.", field="name"
        ) from exc
    return dataset
