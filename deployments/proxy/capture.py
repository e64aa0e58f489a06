"""Request capture in the serving process: the sampled share of a model's answered requests,
kept with their inputs and outputs, off the request's path.

A finished request is offered here (``offer``): a dictionary lookup of the model's capture
settings, a random draw against its sampling percentage and an append to a bounded in-memory
buffer — no I/O, no JSON, no lock held for more than the append. When the buffer is full the
record is dropped and counted (``tenantml_capture_dropped_records_total`` on ``/metrics`` and the
deployment's ``capture_records_dropped``), so a slow artifact store costs captured records,
never a request's time. A writer thread in the serving process (``CAPTURE_FLUSH_INTERVAL_S``)
drains the buffer, turns records into JSON Lines and hands them to
``deployments.services.capture`` to store per tenant, model and day.

The settings are cached per model for ``CAPTURE_SETTINGS_TTL_S`` and refreshed by the writer,
never on the request's path: a model's first request in a process is buffered tentatively and
kept or discarded by the writer once its settings are read.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from deployments.proxy.metrics import REGISTRY
from deployments.proxy.routing import Route

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptureSettings:
    """A model's capture settings as the serving process needs them."""

    enabled: bool
    sample_percent: float

    def sampled(self, draw: float) -> bool:
        """Whether a request with ``draw`` (uniform in [0, 1)) is kept."""
        return self.enabled and draw * 100 < self.sample_percent


DISABLED = CaptureSettings(enabled=False, sample_percent=0.0)


@dataclass
class CapturedRequest:
    """One answered request as it was offered: references only, serialized by the writer."""

    tenant_slug: str
    model_name: str
    model_id: int
    kind: str
    version_number: int | None
    protocol: str
    request_id: str
    captured_at: float  # Unix time
    latency_ms: float
    cold_start: bool
    inputs: object
    outputs: object
    tentative: bool = False

    def as_json(self) -> dict:
        """The JSON Lines record (outputs given as an answer's bytes are decoded here)."""
        return {
            "request_id": self.request_id,
            "timestamp": datetime.fromtimestamp(self.captured_at, UTC).isoformat(),
            "tenant": self.tenant_slug,
            "model": self.model_name,
            "kind": self.kind,
            "model_version": self.version_number,
            "protocol": self.protocol,
            "latency_ms": round(self.latency_ms, 3),
            "cold_start": self.cold_start,
            "inputs": self.inputs,
            "outputs": _decoded(self.outputs),
        }

    @property
    def day(self) -> str:
        return datetime.fromtimestamp(self.captured_at, UTC).strftime("%Y-%m-%d")


def _decoded(outputs: object) -> object:
    """A tensor answer's body (bytes) as its JSON ``outputs``; other outputs as they are."""
    if not isinstance(outputs, bytes):
        return outputs
    try:
        return json.loads(outputs).get("outputs")
    except (ValueError, AttributeError):
        return {"base64": base64.b64encode(outputs).decode()}


class CaptureBuffer:
    """A bounded buffer of offered records; a full one drops and counts instead of waiting."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._records: list[CapturedRequest] = []
        # Dropped since the writer last took them (per model id), and ever (per public name).
        self._dropped: dict[int, int] = {}
        self.dropped_total: dict[str, int] = {}
        self.offered_total = 0

    def offer(self, record: CapturedRequest) -> bool:
        """Keep ``record`` unless the buffer is full (then count it dropped)."""
        with self._lock:
            self.offered_total += 1
            if len(self._records) >= self.capacity:
                self._dropped[record.model_id] = self._dropped.get(record.model_id, 0) + 1
                name = f"{record.tenant_slug}.{record.model_name}"
                self.dropped_total[name] = self.dropped_total.get(name, 0) + 1
                return False
            self._records.append(record)
            return True

    def drain(self) -> tuple[list[CapturedRequest], dict[int, int]]:
        """Everything buffered and the drops counted since the last drain."""
        with self._lock:
            records, self._records = self._records, []
            dropped, self._dropped = self._dropped, {}
        return records, dropped

    def dropped_by_model(self) -> dict[str, int]:
        """Records dropped in this process since it started, per model public name."""
        with self._lock:
            return dict(self.dropped_total)

    def __len__(self) -> int:
        return len(self._records)


class SettingsCache:
    """Capture settings per model id; expired or unknown ones are asked for, not read here."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, tuple[float, CaptureSettings]] = {}
        self._wanted: set[int] = set()

    def get(self, model_id: int) -> CaptureSettings | None:
        """The model's settings (possibly stale), or None before they were first read."""
        entry = self._entries.get(model_id)
        if entry is None or entry[0] < time.monotonic():
            with self._lock:  # only on a miss: the writer swaps the set under the same lock
                self._wanted.add(model_id)
        return entry[1] if entry is not None else None

    def refresh(self, load: Callable[[set[int]], dict[int, tuple[bool, float]]]) -> None:
        """Read the settings asked for (``load`` reads the database; the writer calls this)."""
        with self._lock:
            wanted, self._wanted = self._wanted, set()
        if not wanted:
            return
        loaded = load(wanted)
        expires = time.monotonic() + settings.TENANTML_CAPTURE_SETTINGS_TTL_S
        for model_id in wanted:
            enabled, percent = loaded.get(model_id, (False, 0.0))
            self._entries[model_id] = (expires, CaptureSettings(enabled, percent))

    def forget(self) -> None:
        with self._lock:
            self._entries.clear()
            self._wanted.clear()


BUFFER = CaptureBuffer(capacity=settings.TENANTML_CAPTURE_BUFFER_RECORDS)
SETTINGS = SettingsCache()


def offer(
    *,
    route: Route,
    protocol: str,
    inputs: object,
    outputs: object,
    latency_ms: float,
    cold_start: bool,
) -> None:
    """Offer an answered request for capture (the request's path: no I/O, never waits)."""
    found = SETTINGS.get(route.model_id)
    if found is not None and not found.sampled(random.random()):
        return
    BUFFER.offer(
        CapturedRequest(
            tenant_slug=route.tenant_slug,
            model_name=route.model_name,
            model_id=route.model_id,
            kind=route.kind,
            version_number=route.version_number,
            protocol=protocol,
            request_id=uuid.uuid4().hex,
            captured_at=time.time(),
            latency_ms=latency_ms,
            cold_start=cold_start,
            inputs=inputs,
            outputs=outputs,
            tentative=found is None,
        )
    )
    ensure_writer()


def flush_capture() -> int:
    """Store what the buffer holds (blocking: the writer thread, or a test, calls this);
    returns the number of records written."""
    from deployments.services import capture as capture_service

    SETTINGS.refresh(lambda ids: capture_service.capture_settings(model_ids=ids))
    records, dropped = BUFFER.drain()
    draw = random.random
    kept = [
        record
        for record in records
        if not record.tentative or (SETTINGS.get(record.model_id) or DISABLED).sampled(draw())
    ]
    return capture_service.store_captured(
        records=[
            (record.model_id, record.tenant_slug, record.model_name, record.day, record.as_json())
            for record in kept
        ],
        dropped=dropped,
    )


_WRITER_LOCK = threading.Lock()
_WRITER: threading.Thread | None = None
_STOP = threading.Event()


def ensure_writer() -> bool:
    """Start this process's capture writer once (0 s interval: none; tests flush themselves)."""
    global _WRITER
    if _WRITER is not None and _WRITER.is_alive():
        return True
    interval_s = settings.TENANTML_CAPTURE_FLUSH_INTERVAL_S
    if interval_s <= 0:
        return False
    with _WRITER_LOCK:
        if _WRITER is None or not _WRITER.is_alive():
            _STOP.clear()
            _WRITER = threading.Thread(
                target=_write_forever, args=(interval_s,), name="capture-writer", daemon=True
            )
            _WRITER.start()
    return True


def stop_writer(*, timeout_s: float = 10.0) -> None:
    """Stop this process's capture writer after its pass under way (what is buffered stays)."""
    global _WRITER
    _STOP.set()
    with _WRITER_LOCK:
        if _WRITER is not None:
            _WRITER.join(timeout=timeout_s)
        _WRITER = None


def _write_forever(interval_s: float) -> None:
    from django.db import close_old_connections, connections

    while not _STOP.wait(interval_s):
        try:
            close_old_connections()
            flush_capture()
        except Exception:  # a failed pass's records are lost; the store's refusals are counted
            logger.exception("Writing captured requests failed.")
    connections.close_all()


class CaptureCollector(Collector):
    """The capture buffer's figures for ``/metrics``."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        dropped = CounterMetricFamily(
            "tenantml_capture_dropped_records",
            "Captured requests dropped because this process's capture buffer was full.",
            labels=["model"],
        )
        for name, count in sorted(BUFFER.dropped_by_model().items()):
            dropped.add_metric([name], count)
        yield dropped
        offered = CounterMetricFamily(
            "tenantml_capture_offered_records",
            "Answered requests sampled (or not yet known) for capture in this process.",
        )
        offered.add_metric([], BUFFER.offered_total)
        yield offered


REGISTRY.register(CaptureCollector())
