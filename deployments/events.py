"""Recording what the platform decided; every service that changes state calls ``record_event``."""

from __future__ import annotations

import logging

from deployments.models import Event

logger = logging.getLogger("tenantml.events")


def record_event(
    *,
    kind: str,
    message: str,
    actor: str,
    severity: str = Event.Severity.INFO,
    tenant=None,
    version=None,
    endpoint=None,
    instance=None,
    data: dict | None = None,
) -> Event:
    """Store one Event (and log it), attached to whatever it concerns."""
    if tenant is None and version is not None:
        tenant = version.model.tenant
    event = Event.objects.create(
        kind=kind,
        message=message,
        actor=actor,
        severity=severity,
        tenant=tenant,
        version=version,
        endpoint=endpoint,
        instance=instance,
        data=data or {},
    )
    level = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}[severity]
    logger.log(level, "%s [%s] %s", kind, actor, message)
    return event
