"""The API's answers as typed, read-only records.

Each record has the fields the platform documents; ``raw`` keeps the whole answer, so a field a
newer platform adds is readable before this package names it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

R = TypeVar("R")

TRAINING_TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
DEPLOYMENT_TERMINAL_STATUSES = frozenset({"live", "failed", "retired"})


def _timestamp(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def build(cls: type[R], data: dict[str, Any]) -> R:
    """``cls`` from an answer: its documented fields (None where absent), timestamps parsed."""
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
        if spec.name == "raw":
            continue
        value = data.get(spec.name)
        if spec.name.endswith("_at") or spec.name in ("live_since",):
            value = _timestamp(value)
        values[spec.name] = value
    return cls(**values, raw=data)


@dataclass(frozen=True)
class Tenant:
    slug: str
    name: str
    tier: str
    status: str
    created_at: datetime | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class IssuedToken:
    """A new API token; ``token`` (and the SigV4 key pair) are shown only in this answer."""

    id: int
    name: str
    scope: str
    tenant: str | None
    prefix: str
    token: str
    aws_access_key_id: str | None
    aws_secret_access_key: str | None
    expires_at: datetime | None
    created_at: datetime | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Dataset:
    id: int
    name: str
    format: str
    status: str
    rows: int
    labels: list[str] | None
    train_rows: int
    validation_rows: int
    size_bytes: int
    sha256: str
    created_at: datetime | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Model:
    name: str
    kind: str
    description: str
    tenant: str
    active_version: int | None
    created_at: datetime | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Version:
    number: int
    status: str
    status_reason: str
    metrics: dict[str, Any]
    sha256: str
    size_bytes: int | None
    host_memory_mb: float | None
    gpu_memory_mb: float | None
    promoted_at: datetime | None
    is_active: bool
    created_at: datetime | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class TrainingJob:
    """A training job. ``gate`` is the quality gate's decision on the version it produced
    (``{"outcome": "promoted" | "held" | None, "reason": ...}``); ``deployable`` says whether
    deploying the model now serves that version."""

    id: int
    tenant: str
    model: str
    dataset: str
    backend: str
    status: str
    progress_pct: int
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any]
    failure_reason: str
    log_tail: str
    version: int | None
    gate: dict[str, Any] | None
    deployable: bool | None
    attempts: int
    cancel_requested: bool
    created_at: datetime | None
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_terminal(self) -> bool:
        return self.status in TRAINING_TERMINAL_STATUSES


@dataclass(frozen=True)
class Deployment:
    tenant: str
    model: str
    mode: str
    backend: str
    replicas: int
    endpoint: str | None
    status: str
    status_reason: str
    live_version: int | None
    target_version: int | None
    previous_version: int | None
    rollout_started_at: datetime | None
    live_since: datetime | None
    updated_at: datetime | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_terminal(self) -> bool:
        return self.status in DEPLOYMENT_TERMINAL_STATUSES


@dataclass(frozen=True)
class Invocation:
    """A model's answer: one output per input, in the order of the inputs."""

    outputs: list[Any]
    model_version: int
    cold_start: bool
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
