"""The reconciler: make every endpoint hold what the placements say, and restart stalled rollouts.

Run every minute (django-celery-beat). Each backend repairs all its live endpoints
(``backend_named(name).reconcile``): for local endpoints, dead Triton processes restarted and
their pinned and hot models reloaded, missing and orphaned models put right, instances trimmed to
budget and topped up to their minimum — see ``deployments.backends.local.reconcile``; for
SageMaker endpoints, the instances each runs mirrored as Instance rows, so cost counts them, and
one deleted outside the platform retired — see ``deployments.backends.sagemaker.instances``. Then
a deployment whose rollout has made no progress for ``STALE_ROLLOUT_S`` (its worker died) is queued
again, up to its attempt limit. Every action is an Event with actor "reconciler".

Each backend gets all its live endpoints at once, so a pass reads the fleet in a fixed few
queries rather than a few per instance (the local backend also asks its instances at most
``RECONCILE_CONCURRENCY`` at a time). The pass records itself in the ``reconcile``
``BackgroundPass`` row (``deployments.passes``): how long it took, the instances it checked, its
queries and errors, and what it repaired.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from config.errors import DomainError
from config.events import record_event
from deployments.backends import backend_named
from deployments.backends.base import ReconcileReport
from deployments.models import Deployment, Endpoint
from deployments.passes import RECONCILE, recorded_pass
from deployments.services import rollouts

logger = logging.getLogger(__name__)

ACTOR = "reconciler"
STALE_ROLLOUT_S = 300


def reconcile_fleet(*, now=None) -> ReconcileReport:
    """One pass over every endpoint (each repaired by its backend) and every stalled rollout,
    recorded as the ``reconcile`` job's last pass."""
    report = ReconcileReport()
    with recorded_pass(RECONCILE) as record:
        try:
            _reconcile(report=report, now=now or timezone.now())
        finally:
            # A failed pass's record says how far it got.
            record.items = report.instances_checked
            record.errors = len(report.errors)
            record.summary = summary_of(report)
    return report


def _reconcile(*, report: ReconcileReport, now) -> None:
    endpoints = (
        Endpoint.objects.exclude(status__in=[Endpoint.Status.RETIRING, Endpoint.Status.RETIRED])
        .select_related("instance_type")
        .order_by("name")
    )
    by_backend: dict[str, list[Endpoint]] = {}
    for endpoint in endpoints:
        by_backend.setdefault(endpoint.backend, []).append(endpoint)
    for name, group in sorted(by_backend.items()):
        try:
            backend_named(name).reconcile(endpoints=group, report=report)
        except DomainError as exc:
            report.errors.append(f"{name} endpoints: {exc.message}")
            logger.warning("Reconciling the %s endpoints failed: %s", name, exc.message)
    # Each backend that has (or had) endpoints, and the one deployments go to, looks for what
    # its account holds under the platform's names that no row accounts for.
    names = set(Endpoint.objects.values_list("backend", flat=True).distinct())
    for name in sorted(names | {settings.TENANTML_DEPLOY_BACKEND}):
        try:
            backend_named(name).audit_account(report=report)
        except DomainError as exc:
            report.errors.append(f"{name} account audit: {exc.message}")
            logger.warning("Auditing the %s account failed: %s", name, exc.message)
    _requeue_stalled_rollouts(report=report, now=now)


def summary_of(report: ReconcileReport) -> dict[str, int]:
    """A pass's report in counts (what its ``BackgroundPass`` row keeps)."""
    return {
        item.name: value if isinstance(value, int) else len(value)
        for item in fields(report)
        for value in (getattr(report, item.name),)
    }


def _requeue_stalled_rollouts(*, report: ReconcileReport, now) -> None:
    stale_before = now - timedelta(seconds=STALE_ROLLOUT_S)
    stalled = Deployment.objects.filter(
        status=Deployment.Status.ROLLING_OUT,
        target_version__isnull=False,
        updated_at__lt=stale_before,
    ).select_related("model__tenant", "target_version")
    for deployment in stalled:
        if deployment.attempts >= rollouts.MAX_ROLLOUT_ATTEMPTS:
            rollouts.fail_rollout(
                deployment,
                DomainError(f"no progress after {deployment.attempts} attempts"),
                actor=ACTOR,
            )
            continue
        Deployment.objects.filter(pk=deployment.pk).update(updated_at=now)
        rollouts.queue_rollout(deployment.pk)
        report.rollouts_requeued.append(deployment.pk)
        record_event(
            kind="deployment.requeued",
            severity="warning",
            actor=ACTOR,
            message=(
                f"{deployment.model}: the rollout of v{deployment.target_version.number} made no "
                "progress for 5 minutes; queued again."
            ),
            tenant=deployment.model.tenant,
            version=deployment.target_version,
        )
