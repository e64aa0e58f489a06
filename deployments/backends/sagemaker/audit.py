"""The account audit: what the SageMaker account holds under the platform's names (``tml-*``
endpoints, endpoint configs, models, inference components and alarms; objects under the
artifact store's ``endpoints/`` prefix) that no row of the database accounts for.

Each such orphan is reported once per pass as an Event (``sagemaker.orphan_found``); with
``SAGEMAKER_DELETE_ORPHANS`` on, it is deleted (``sagemaker.resource_deleted``). Resources
younger than ``GRACE_MINUTES`` are left alone: a rollout creates its model and component before
the placement row that accounts for them. An endpoint whose retirement was interrupted
(``retiring`` in the database) is finished here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.conf import settings

from config.events import record_event
from deployments.backends.base import ReconcileReport
from deployments.backends.sagemaker import deploy, retire, scaling
from deployments.backends.sagemaker.client import (
    SageMakerEndpointBackend,
    component_alarm_names,
    config_owner,
    endpoint_model_name,
)
from deployments.backends.sagemaker.deploy import (
    component_name,
    endpoint_backend,
    mme_prefix,
    version_model_name,
)
from deployments.models import Endpoint, Placement

PREFIX = "tml-"
GRACE_MINUTES = 15


def audit_account(*, report: ReconcileReport, actor: str, now: datetime | None = None) -> None:
    """Report (and, if enabled, delete) the platform-named resources nobody accounts for."""
    if not settings.TENANTML_SAGEMAKER_ROLE_ARN:
        return  # SageMaker is not configured: there is no account to audit
    backend = endpoint_backend()
    for endpoint in Endpoint.objects.filter(
        backend=Endpoint.Backend.SAGEMAKER, status=Endpoint.Status.RETIRING
    ):
        retire.finish_retiring(endpoint=endpoint, actor=actor)
    cutoff = (now or datetime.now(UTC)) - timedelta(minutes=GRACE_MINUTES)
    known = _known()
    found: list[tuple[str, str]] = []
    for what, name, created in _listed(backend):
        if name in known.get(what, set()):
            continue
        # Every generation of a live endpoint's configs is its own (the current one and those
        # an interrupted update left behind go when the endpoint does).
        if what == "endpoint config" and config_owner(name) in known["endpoint"]:
            continue
        if created is not None and created > cutoff:
            continue
        found.append((what, name))
    for what, name in found:
        report.cloud_orphans_found.append(f"{what} {name}")
        record_event(
            kind="sagemaker.orphan_found",
            severity="warning",
            actor=actor,
            message=(
                f"The account holds {what} {name}, which no deployment accounts for"
                + (
                    "; deleting it."
                    if settings.TENANTML_SAGEMAKER_DELETE_ORPHANS
                    else " (set SAGEMAKER_DELETE_ORPHANS=true to delete such resources)."
                )
            ),
            data={"resource": what, "name": name},
        )
    if settings.TENANTML_SAGEMAKER_DELETE_ORPHANS:
        # Components before endpoints (an endpoint with components cannot go), endpoints before
        # their configs and models.
        order = ["alarm", "inference component", "endpoint", "endpoint config", "model", "S3"]
        for what, name in sorted(found, key=lambda item: order.index(item[0])):
            for deleted_what, deleted_name in _delete(backend, what, name):
                report.cloud_orphans_deleted.append(f"{deleted_what} {deleted_name}")
                retire.record_deletion(
                    what=deleted_what,
                    name=deleted_name,
                    actor=actor,
                    reason="no deployment accounts for it",
                )


def _known() -> dict[str, set[str]]:
    """The names the database accounts for, by kind of resource."""
    live = Endpoint.objects.filter(backend=Endpoint.Backend.SAGEMAKER).exclude(
        status=Endpoint.Status.RETIRED
    )
    known: dict[str, set[str]] = {
        "endpoint": set(),
        "endpoint config": set(),
        "model": set(),
        "inference component": set(),
        "alarm": set(),
        "S3": set(),
    }
    for endpoint in live:
        known["endpoint"].add(endpoint.name)
        known["model"].add(endpoint_model_name(endpoint.name))
    wanted = (
        Placement.objects.filter(endpoint__in=live)
        .exclude(
            desired_state=Placement.DesiredState.UNLOADED,
            actual_state=Placement.ActualState.UNLOADED,
        )
        .select_related("version__model__tenant", "endpoint")
    )
    for placement in wanted:
        if placement.endpoint.mode == Endpoint.Mode.INFERENCE_COMPONENT:
            component = component_name(placement.version.model)
            known["inference component"].add(component)
            known["alarm"].update(component_alarm_names(component))
            known["model"].add(version_model_name(placement.version))
        elif placement.endpoint.mode == Endpoint.Mode.MME and placement.external_name:
            known["S3"].add(f"{mme_prefix(placement.endpoint)}{placement.external_name}")
    return known


def _listed(backend: SageMakerEndpointBackend):
    """``(kind of resource, name, created)`` for everything under the platform's names."""
    for summary in backend.pages("list_endpoints", "Endpoints", NameContains=PREFIX):
        if summary["EndpointName"].startswith(PREFIX):
            yield "endpoint", summary["EndpointName"], summary.get("CreationTime")
    for summary in backend.pages("list_endpoint_configs", "EndpointConfigs", NameContains=PREFIX):
        if summary["EndpointConfigName"].startswith(PREFIX):
            yield "endpoint config", summary["EndpointConfigName"], summary.get("CreationTime")
    for summary in backend.pages("list_models", "Models", NameContains=PREFIX):
        if summary["ModelName"].startswith(PREFIX):
            yield "model", summary["ModelName"], summary.get("CreationTime")
    for summary in backend.pages(
        "list_inference_components", "InferenceComponents", NameContains=PREFIX
    ):
        if summary["InferenceComponentName"].startswith(PREFIX):
            yield (
                "inference component",
                summary["InferenceComponentName"],
                summary.get("CreationTime"),
            )
    for alarm in backend.alarms(prefix=PREFIX):
        yield "alarm", alarm["AlarmName"], alarm.get("AlarmConfigurationUpdatedTimestamp")
    store = settings.ARTIFACT_STORE
    if store.kind == "s3":
        for uri, modified in backend.objects(f"{store.uri}/endpoints/"):
            yield "S3", uri, modified


def _delete(backend: SageMakerEndpointBackend, what: str, name: str) -> list[tuple[str, str]]:
    """Delete one orphan; what went with it (an endpoint takes its configs and model)."""
    if what == "endpoint":
        retired = backend.retire_endpoint(name, delay_s=deploy.WAIT_DELAY_S)
        return (
            [("endpoint", name)] * (retired.endpoint is not None)
            + [("endpoint config", config) for config in retired.endpoint_configs]
            + [("model", model) for model in retired.models]
            + [("alarm", alarm) for alarm in retired.alarms]
        )
    if what == "endpoint config":
        deleted = backend.delete_endpoint_config(name)
    elif what == "model":
        deleted = backend.delete_model(name)
    elif what == "inference component":
        deleted_with = backend.remove_component(name, delay_s=deploy.WAIT_DELAY_S)
        alarms = scaling.retire_component_policies(backend=backend, component=name)
        deleted_with += [("alarm", alarm) for alarm in alarms]
        return deleted_with
    elif what == "alarm":
        deleted = backend.delete_alarm(name)
    else:
        deleted = backend.delete_object(name)
    return [(what, name)] if deleted else []
