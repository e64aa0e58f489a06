"""What the local backend asks of one Triton instance, and the plain values that cross it.

The local backend manages instances (start, stop, health) and the models loaded on each (load,
unload, list, invoke, memory). Everything crossing this boundary is a plain value: the caller
passes the host, port, pid and working directory it recorded and gets dataclasses back, so no ORM
object and no protocol client leaks into the runtime that records them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class InstanceHandle:
    """How to reach one instance: what the platform stores on its ``Instance`` row."""

    host: str
    port: int
    metrics_port: int | None = None
    pid: int | None = None
    workdir: Path | None = None


@dataclass(frozen=True)
class LoadedModel:
    """One model an instance reports as loaded: its name and the directory it came from."""

    name: str
    url: str


@dataclass(frozen=True)
class LoadResult:
    """The outcome of a successful load; ``already_loaded`` when the instance had it already."""

    name: str
    url: str
    already_loaded: bool
    load_time_ms: float


@dataclass(frozen=True)
class MemoryReading:
    """Host memory held by one loaded model's processes, in MB (1 MB = 2**20 bytes).

    ``rss_mb`` counts every page the processes map (shared libraries included), ``pss_mb`` shares
    each shared page among the processes mapping it, so PSS sums to the machine's real use when
    several models are loaded; ``processes`` is how many processes were measured.
    """

    rss_mb: float
    pss_mb: float | None
    processes: int


@runtime_checkable
class TritonInstances(Protocol):
    """Managing Triton instances and the models loaded on each (``triton.LocalTritonBackend``)."""

    def start_instance(self, *, workdir: Path, host: str = "127.0.0.1") -> InstanceHandle:
        """Start an instance and return once it answers health checks."""
        ...

    def stop_instance(self, instance: InstanceHandle, *, timeout_s: float = 10.0) -> None:
        """Stop an instance and everything it started; stopping a stopped one is a no-op."""
        ...

    def is_healthy(self, instance: InstanceHandle) -> bool:
        """Whether the instance answers its health check now (never raises)."""
        ...

    def load_model(
        self, instance: InstanceHandle, name: str, model_url: str, *, timeout_s: float
    ) -> LoadResult:
        """Load the model repository at ``model_url`` as ``name``; idempotent for the same pair."""
        ...

    def unload_model(
        self, instance: InstanceHandle, name: str, *, timeout_s: float | None = None
    ) -> bool:
        """Unload ``name``; False when it was not loaded."""
        ...

    def list_models(self, instance: InstanceHandle) -> list[LoadedModel]:
        """The models the instance has loaded now."""
        ...

    def invoke(self, instance: InstanceHandle, name: str, body: dict) -> dict:
        """Send a KServe v2 JSON inference request to ``name`` and return the JSON answer."""
        ...

    def model_memory_mb(self, instance: InstanceHandle, name: str) -> MemoryReading | None:
        """Measured host memory of one loaded model, or None where it cannot be measured."""
        ...
