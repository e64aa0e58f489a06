"""The platform's event log, written from every app without importing the app that stores it.

Services call ``record_event`` for what they decided; it logs the event and sends
``event_recorded``, whose receiver in the deployments app (``deployments.receivers``) stores it as
an ``Event`` row inside the caller's transaction, and whose receiver in the webhooks app
(``webhooks.receivers``) writes the deliveries of the events webhooks subscribe to in the same
one. So tenants and the registry record events while importing nothing above them.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger("tenantml.events")

SEVERITIES = ("info", "warning", "error")
LOG_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

# Sent with the event's fields (kind, message, actor, severity, tenant, version, endpoint,
# instance, data); a receiver that stores it returns the stored row.
event_recorded = Signal()


def record_event(
    *,
    kind: str,
    message: str,
    actor: str,
    severity: str = "info",
    tenant=None,
    version=None,
    endpoint=None,
    instance=None,
    data: dict | None = None,
):
    """Record one event (stored by the event log's receiver, and logged), attached to whatever
    it concerns; returns the stored row."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, not {severity!r}")
    if tenant is None and version is not None:
        tenant = version.model.tenant
    # One transaction for every receiver: the stored event and the webhook deliveries it
    # becomes are written together or not at all.
    with transaction.atomic():
        responses = event_recorded.send(
            sender=None,
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
    logger.log(LOG_LEVELS[severity], "%s [%s] %s", kind, actor, message)
    return next((stored for _, stored in responses if stored is not None), None)
