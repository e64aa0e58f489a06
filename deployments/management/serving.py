"""The local endpoints' Triton instances on this machine, as ``manage.py up`` and ``manage.py
serve_local`` run them: started with the platform (one local endpoint per model kind is created on
the first run), checked for readiness, and stopped with it.

Between a start and a stop the reconciler keeps them: it restarts an instance whose process died
and tops an endpoint up to its minimum.
"""

from __future__ import annotations

from collections.abc import Callable

Write = Callable[[str], None]


def start_local_serving(write: Write) -> bool:
    """Bring every local endpoint up to its minimum of Triton instances (creating one endpoint
    per model kind on the first run); False, with the reason written, where Triton cannot start
    here."""
    from deployments.backends.local.runtime import (
        ensure_default_local_endpoints,
        start_local_endpoints,
    )
    from deployments.exceptions import InstanceUnavailable

    for endpoint in ensure_default_local_endpoints(actor="up"):
        write(f"[up] created local endpoint {endpoint.name} for {endpoint.model_kind} models")
    try:
        instances = start_local_endpoints(actor="up")
    except InstanceUnavailable as exc:
        write(f"[up] local Triton did not start; serving is unavailable: {exc.message}")
        return False
    for instance in instances:
        write(
            f"[up] started triton {instance} (pid {instance.pid}, port {instance.port}, "
            f"{instance.memory_budget_mb:,} MB budget)"
        )
    return True


def stop_local_serving(write: Write) -> None:
    """Stop every live local instance, whichever process started it, so that no Triton outlives
    the platform."""
    from deployments.backends.local.runtime import stop_local_endpoints

    for instance in stop_local_endpoints(actor="up", reason="platform stopped"):
        write(f"[up] stopped triton {instance}")


def local_serving_problems() -> list[str]:
    """Why local serving is not ready (empty when every local endpoint answers its probe)."""
    from deployments.backends.local.runtime import local_serving_problems as problems

    return problems()
