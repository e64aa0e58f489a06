"""``LocalTritonBackend``: the per-instance operations (``instances.TritonInstances``) over
Triton processes on this machine — start, stop, health, load, unload, list, invoke, memory."""

from __future__ import annotations

import threading
from pathlib import Path

from deployments.backends.local.client import TritonMultiModelClient
from deployments.backends.local.instances import (
    InstanceHandle,
    LoadedModel,
    LoadResult,
    MemoryReading,
)
from deployments.backends.local.memory import model_memory_mb
from deployments.backends.local.process import LOG_FILE, TritonProcess, start_triton, stop_triton


class LocalTritonBackend:
    """``TritonInstances`` over local Triton processes (one client per instance address)."""

    def __init__(
        self,
        *,
        backend_directory: Path | None = None,
        timeout_s: float = 30.0,
        startup_timeout_s: float = 60.0,
    ) -> None:
        self.backend_directory = backend_directory
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self._clients: dict[tuple[str, int], TritonMultiModelClient] = {}
        self._lock = threading.Lock()

    def client(self, instance: InstanceHandle) -> TritonMultiModelClient:
        key = (instance.host, instance.port)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                log_path = Path(instance.workdir) / LOG_FILE if instance.workdir else None
                client = TritonMultiModelClient(
                    instance.host,
                    instance.port,
                    instance.metrics_port,
                    self.timeout_s,
                    log_path=log_path,
                )
                self._clients[key] = client
            return client

    def start_instance(self, *, workdir: Path, host: str = "127.0.0.1") -> TritonProcess:
        return start_triton(
            workdir=workdir,
            host=host,
            startup_timeout_s=self.startup_timeout_s,
            backend_directory=self.backend_directory,
        )

    def stop_instance(self, instance: InstanceHandle, *, timeout_s: float = 10.0) -> None:
        process = instance if isinstance(instance, TritonProcess) else _as_process(instance)
        stop_triton(process, timeout_s=timeout_s)
        with self._lock:
            client = self._clients.pop((instance.host, instance.port), None)
        if client is not None:
            client.close()

    def is_healthy(self, instance: InstanceHandle) -> bool:
        return self.client(instance).ping()

    def load_model(
        self, instance: InstanceHandle, name: str, model_url: str, *, timeout_s: float
    ) -> LoadResult:
        return self.client(instance).load_model(name, model_url, timeout_s=timeout_s)

    def unload_model(
        self, instance: InstanceHandle, name: str, *, timeout_s: float | None = None
    ) -> bool:
        return self.client(instance).unload_model(name, timeout_s=timeout_s)

    def list_models(self, instance: InstanceHandle) -> list[LoadedModel]:
        return self.client(instance).list_models()

    def invoke(self, instance: InstanceHandle, name: str, body: dict) -> dict:
        return self.client(instance).invoke(name, body)

    def model_memory_mb(self, instance: InstanceHandle, name: str) -> MemoryReading | None:
        if not instance.pid:
            return None
        return model_memory_mb(instance.pid, name)


def _as_process(instance: InstanceHandle) -> TritonProcess:
    return TritonProcess.from_record(
        pid=instance.pid or 0,
        host=instance.host,
        port=instance.port,
        metrics_port=instance.metrics_port,
        workdir=instance.workdir,
    )
