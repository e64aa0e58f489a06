"""Writes for request capture: a deployment's capture settings, storing captured requests as
JSON Lines per tenant, model and day, deleting days past their retention, and turning a captured
day into a dataset.

Captured requests live in the artifact store under
``capture/<tenant>/<model>/<YYYY-MM-DD>/<part>.jsonl`` (UTC days): one tenant's records are
never written into another's folder, and every part holds one model's records of one day.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

from django.db import transaction
from django.db.models import F

from config.events import record_event
from deployments.exceptions import CaptureNotFound, InvalidCapture
from deployments.models import Deployment
from deployments.passes import CAPTURE_RETENTION, recorded_pass
from models_registry import artifacts
from models_registry.models import Dataset, TenantModel

logger = logging.getLogger(__name__)

CAPTURE_ROOT = "capture"
DAY_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Records per part file: a part is read whole when a day becomes a dataset.
PART_MAX_RECORDS = 5000


def capture_prefix(*, tenant_slug: str, model_name: str, day: str | None = None) -> str:
    """The store folder of a model's captured requests (of one day)."""
    prefix = f"{CAPTURE_ROOT}/{tenant_slug}/{model_name}"
    return f"{prefix}/{day}" if day else prefix


def update_capture_settings(
    *,
    deployment: Deployment,
    actor: str,
    enabled: bool | None = None,
    sample_percent: float | None = None,
    retention_days: int | None = None,
) -> Deployment:
    """Turn a deployment's capture on or off, or change its sampling or retention."""
    changes = {
        name: value
        for name, value in (
            ("capture_enabled", enabled),
            ("capture_sample_percent", sample_percent),
            ("capture_retention_days", retention_days),
        )
        if value is not None
    }
    if not changes:
        return deployment
    with transaction.atomic():
        Deployment.objects.filter(pk=deployment.pk).update(**changes)
        deployment.refresh_from_db()
        record_event(
            kind="deployment.capture_changed",
            actor=actor,
            message=(
                f"{deployment.model}: request capture "
                + (
                    f"on, {deployment.capture_sample_percent:g} % of requests kept "
                    f"{deployment.capture_retention_days} days"
                    if deployment.capture_enabled
                    else "off"
                )
                + "."
            ),
            tenant=deployment.model.tenant,
            data={
                "enabled": deployment.capture_enabled,
                "sample_percent": deployment.capture_sample_percent,
                "retention_days": deployment.capture_retention_days,
            },
        )
    return deployment


def capture_settings(*, model_ids: set[int]) -> dict[int, tuple[bool, float]]:
    """(enabled, sample percent) of these models' deployments (models without one are absent)."""
    rows = Deployment.objects.filter(model_id__in=model_ids).values_list(
        "model_id", "capture_enabled", "capture_sample_percent"
    )
    return {model_id: (enabled, percent) for model_id, enabled, percent in rows}


def store_captured(*, records: list[tuple[int, str, str, str, dict]], dropped: dict[int, int]):
    """Store captured records — (model id, tenant slug, model name, day, record) — as parts of
    at most ``PART_MAX_RECORDS`` lines, and add what was written and dropped to each
    deployment's counts; returns the records written. A part the store refuses is counted
    as dropped."""
    groups: dict[tuple[int, str, str, str], list[dict]] = defaultdict(list)
    for model_id, tenant_slug, model_name, day, record in records:
        groups[(model_id, tenant_slug, model_name, day)].append(record)
    written: dict[int, int] = defaultdict(int)
    dropped = defaultdict(int, dropped)
    stamp = datetime.now(UTC).strftime("%H%M%S")
    for (model_id, tenant_slug, model_name, day), rows in groups.items():
        folder = capture_prefix(tenant_slug=tenant_slug, model_name=model_name, day=day)
        for start in range(0, len(rows), PART_MAX_RECORDS):
            part = rows[start : start + PART_MAX_RECORDS]
            content = "".join(
                json.dumps(row, separators=(",", ":"), ensure_ascii=False) + "\n" for row in part
            ).encode()
            try:
                artifacts.put_bytes(f"{folder}/{stamp}-{uuid.uuid4().hex[:12]}.jsonl", content)
            except Exception:
                logger.exception("Storing %d captured requests under %s failed.", len(part), folder)
                dropped[model_id] += len(part)
                continue
            written[model_id] += len(part)
    for model_id in set(written) | set(dropped):
        Deployment.objects.filter(model_id=model_id).update(
            capture_records_written=F("capture_records_written") + written.get(model_id, 0),
            capture_records_dropped=F("capture_records_dropped") + dropped.get(model_id, 0),
        )
    return sum(written.values())


def captured_days(*, model: TenantModel) -> list[str]:
    """The days (YYYY-MM-DD) the model has captured requests for, oldest first."""
    prefix = capture_prefix(tenant_slug=model.tenant.slug, model_name=model.name)
    days = {key[len(prefix) + 1 :].split("/", 1)[0] for key in artifacts.list_keys(prefix)}
    return sorted(day for day in days if DAY_PATTERN.match(day))


def delete_expired_capture(*, today: date | None = None) -> int:
    """Delete every captured day older than its deployment's retention; returns the days
    deleted. Models whose deployment is gone keep the platform's default retention."""
    from deployments.models import CAPTURE_DEFAULT_RETENTION_DAYS

    today = today or datetime.now(UTC).date()
    retention = {
        (slug, name): days
        for slug, name, days in Deployment.objects.values_list(
            "model__tenant__slug", "model__name", "capture_retention_days"
        )
    }
    by_day: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for key in artifacts.list_keys(CAPTURE_ROOT):
        parts = key.split("/")
        if len(parts) == 5 and DAY_PATTERN.match(parts[3]):
            by_day[(parts[1], parts[2], parts[3])].append(key)
    deleted = 0
    with recorded_pass(CAPTURE_RETENTION) as record:
        for (tenant_slug, model_name, day), keys in sorted(by_day.items()):
            days = retention.get((tenant_slug, model_name), CAPTURE_DEFAULT_RETENTION_DAYS)
            try:
                captured_on = date.fromisoformat(day)
            except ValueError:
                continue
            # A day is kept for ``days`` whole days after it ends.
            if captured_on + timedelta(days=days) < today:
                artifacts.delete_keys(keys)
                deleted += 1
        record.items = len(by_day)
        record.summary = {"days_deleted": deleted}
    return deleted


def dataset_from_capture(*, model: TenantModel, day: str, name: str, actor: str) -> Dataset:
    """A dataset of one captured day of the model's answers, through the dataset service's
    checks: for a classifier, each text with the label the model predicted (``"label_source":
    "predicted"`` on every row, for the team to correct); for a kind that drafts replies, each
    text with the reply it generated. Kinds whose answers are no training target (embeddings)
    are refused."""
    from models_registry.kinds import get_kind
    from models_registry.services.datasets import create_dataset

    if not DAY_PATTERN.match(day):
        raise InvalidCapture("day: must be a date, YYYY-MM-DD.", field="day")
    kind = get_kind(model.kind)
    columns = tuple(kind.dataset_columns)
    if columns not in (("text", "label"), ("text", "reply")):
        raise InvalidCapture(
            f"model: {model.kind} models answer with no label or reply to train on; only "
            "classifiers and reply models turn captured requests into datasets.",
            field="model",
        )
    target = columns[1]
    folder = capture_prefix(tenant_slug=model.tenant.slug, model_name=model.name, day=day)
    keys = artifacts.list_keys(folder)
    if not keys:
        raise CaptureNotFound(f"day: no captured requests of {model.name} on {day}.", field="day")
    lines = []
    for key in keys:
        for line in artifacts.read_bytes(artifacts.uri_for(key)).decode().splitlines():
            for text, answer in _texts_and_answers(json.loads(line), target):
                row = {"text": text, target: answer}
                if target == "label":
                    row["label_source"] = "predicted"
                lines.append(json.dumps(row, ensure_ascii=False))
    if not lines:
        raise InvalidCapture(
            f"day: the requests captured on {day} hold no text with a {target} to train on.",
            field="day",
        )
    return create_dataset(
        tenant=model.tenant,
        name=name,
        content=("\n".join(lines) + "\n").encode(),
        actor=actor,
        format="jsonl",
        conflicting_labels="keep",
    )


def _texts_and_answers(record: dict, target: str) -> list[tuple[str, str]]:
    """The (text, predicted label or generated reply) pairs of one captured record: a native
    request's inputs and outputs, or a tensor request's TEXT input and LABEL output."""
    inputs, outputs = record.get("inputs"), record.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list):
        return []
    if inputs and isinstance(inputs[0], dict):  # Open Inference Protocol tensors
        inputs = _tensor(inputs, "TEXT")
        outputs = [{"label": label} for label in _tensor(outputs, "LABEL")]
    key = "label" if target == "label" else "text"
    pairs = []
    for text, output in zip(inputs, outputs, strict=False):
        answer = output.get(key) if isinstance(output, dict) else None
        if isinstance(text, str) and text.strip() and isinstance(answer, str) and answer.strip():
            pairs.append((text, answer))
    return pairs


def _tensor(tensors: list, name: str) -> list:
    for tensor in tensors:
        if isinstance(tensor, dict) and tensor.get("name") == name:
            data, flat = tensor.get("data") or [], []
            stack = list(reversed(data))
            while stack:
                item = stack.pop()
                if isinstance(item, list):
                    stack.extend(reversed(item))
                else:
                    flat.append(item)
            return flat
    return []
