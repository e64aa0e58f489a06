"""Reads of the event log for the API: the events a caller may see, by type, severity and time.

``fleet.events_for_caller`` says who sees what (a platform caller every event, anyone else only
their tenants'); this module adds the API's filters on top, each served by an index on
``(kind, -created_at)``, ``(tenant, -created_at)`` or ``created_at``.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from deployments.models import Event
from deployments.selectors.fleet import events_for_caller
from tenants.access import Caller
from tenants.models import Tenant

# An event type is dotted lower-case words ("placement.evicted"); a trailing dot makes it a
# prefix ("training." is every training event).
EVENT_TYPE_PATTERN = r"^[a-z0-9_]+(\.[a-z0-9_]+)*\.?$"
EVENT_TYPE_MAX_CHARS = Event._meta.get_field("kind").max_length


def events_matching(
    *,
    caller: Caller,
    tenant: Tenant | None = None,
    event_type: str = "",
    severity: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[Event]:
    """The events ``caller`` may see, newest first (ties by id): only ``tenant``'s when given,
    of ``event_type`` (exactly, or every type under it when it ends in a dot), of ``severity``,
    at or after ``since`` and before ``until``."""
    prefix = event_type if event_type.endswith(".") else ""
    events = events_for_caller(caller=caller, kind_prefix=prefix, severity=severity)
    if tenant is not None:
        events = events.filter(tenant=tenant)
    if event_type and not prefix:
        events = events.filter(kind=event_type)
    if since is not None:
        events = events.filter(created_at__gte=since)
    if until is not None:
        events = events.filter(created_at__lt=until)
    return events
