"""Liveness and readiness probes for load balancers, compose healthchecks and ``manage.py up``."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET


@require_GET
def healthz(request):
    """The process is up and serving requests."""
    return JsonResponse({"status": "ok"})


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "not ready"
        return f"database: {exc.__class__.__name__}: {exc}"
    return None


def _check_broker() -> str | None:
    from config.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # any transport error means "not ready"
        return f"broker: {exc.__class__.__name__}: {exc}"
    return None


@require_GET
def readyz(request):
    """The database and the task broker answer; 503 naming what does not."""
    problems = [p for p in (_check_database(), _check_broker()) if p]
    body = {
        "status": "ready" if not problems else "not ready",
        "profile": settings.TENANTML_PROFILE,
        "problems": problems,
    }
    return JsonResponse(body, status=200 if not problems else 503)
