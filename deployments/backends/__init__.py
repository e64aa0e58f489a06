"""Serving backends: the ``ServingBackend`` interface (``base``) and the registry of its
implementations, one package each (``local``, ``sagemaker``).

Callers hold an endpoint and ask ``backend_for(endpoint)``; a deployment names its backend, and
``backend_named`` resolves it. Adding a backend is one package and one entry in ``BACKENDS``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.utils.module_loading import import_string

from config.errors import DomainError

if TYPE_CHECKING:
    from deployments.backends.base import ServingBackend
    from deployments.models import Endpoint

# Imported on first use, so a process that never serves through SageMaker never loads boto3.
BACKENDS = {
    "local": "deployments.backends.local.backend.LocalServingBackend",
    "sagemaker": "deployments.backends.sagemaker.backend.SageMakerServingBackend",
}


_LOADED: dict[str, ServingBackend] = {}


def backend_named(name: str) -> ServingBackend:
    """The backend registered as ``name``; 400 naming the field for one that is not."""
    backend = _LOADED.get(name)
    if backend is not None:
        return backend
    path = BACKENDS.get(name)
    if path is None:
        raise DomainError(
            f"backend must be one of {', '.join(sorted(BACKENDS))}, not {name[:40]!r}.",
            field="backend",
        )
    backend = _LOADED[name] = import_string(path)()
    return backend


def loaded_backends() -> list[ServingBackend]:
    """The backends this process has used so far."""
    return list(_LOADED.values())


def backend_for(endpoint: Endpoint) -> ServingBackend:
    """The backend that serves ``endpoint``."""
    return backend_named(endpoint.backend)


def backends_serving(mode: str) -> list[str]:
    """The names of the backends that serve deployments of ``mode``."""
    return [name for name in sorted(BACKENDS) if mode in backend_named(name).modes]


def backends_reporting_cloud_metrics() -> list[str]:
    """The names of the backends whose endpoints report the cloud's own figures (CloudWatch)."""
    return [name for name in sorted(BACKENDS) if backend_named(name).reports_cloud_metrics]
