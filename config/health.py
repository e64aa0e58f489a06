"""Liveness and readiness probes for load balancers, compose healthchecks and ``manage.py up``.

A probe's answer is public: it says which dependency fails in a fixed phrase and never the
driver's own text (a connection error can carry a hostname, a user or a password). The
exception goes to the server's log instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)


@require_GET
def healthz(request):
    """The process is up and serving requests."""
    return JsonResponse({"status": "ok"})


def check_database() -> None:
    """Raises unless the default database answers a query."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_broker() -> None:
    """Raises unless the task broker accepts a connection (one retry, two seconds)."""
    from config.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


# Each readiness check: its name in the answer, what it calls, and the reason shown on failure.
READINESS_CHECKS: tuple[tuple[str, Callable[[], None], str], ...] = (
    ("database", check_database, "database unreachable"),
    ("broker", check_broker, "task broker unreachable"),
)


@require_GET
def readyz(request):
    """Each dependency's status; 503 with a generic reason for each one that fails."""
    checks, problems = {}, []
    for name, check, reason in READINESS_CHECKS:
        try:
            check()
        except Exception:  # any driver or transport error means "not ready"
            logger.exception("Readiness check %r failed.", name)
            checks[name] = {"status": "failing", "reason": reason}
            problems.append(reason)
        else:
            checks[name] = {"status": "ok"}
    body = {
        "status": "ready" if not problems else "not ready",
        "profile": settings.TENANTML_PROFILE,
        "checks": checks,
        "problems": problems,
    }
    return JsonResponse(body, status=200 if not problems else 503)
