"""Writes for the registry's own records: a tenant's named models and their numbered versions."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max

from config.errors import DomainError
from config.events import record_event
from models_registry.exceptions import (
    ModelAlreadyExists,
)
from models_registry.kinds import get_kind
from models_registry.models import ModelVersion, TenantModel, TrainingJob
from tenants.models import SLUG_VALIDATOR, Tenant


def create_model(
    *, tenant: Tenant, name: str, kind: str, actor: str, description: str = ""
) -> TenantModel:
    """Create a tenant's named model of a registered kind."""
    get_kind(kind)
    try:
        SLUG_VALIDATOR(name)
    except ValidationError as exc:
        raise DomainError(f"name {name!r}: {exc.messages[0]}", field="name") from exc
    try:
        with transaction.atomic():
            model = TenantModel.objects.create(
                tenant=tenant, name=name, kind=kind, description=description
            )
            record_event(
                kind="model.created",
                message=f"Model {tenant.slug}/{name} ({kind}) created.",
                actor=actor,
                tenant=tenant,
            )
    except IntegrityError as exc:
        raise ModelAlreadyExists(
            f"Tenant {tenant.slug} already has a model named {name!r}.", field="name"
        ) from exc
    return model


def register_version(
    *,
    model: TenantModel,
    actor: str,
    training_job: TrainingJob | None = None,
    artifact_uri: str = "",
    metrics: dict | None = None,
) -> ModelVersion:
    """Add the next numbered version of a model.

    The model row is locked while the number is chosen, so two jobs finishing together get
    consecutive numbers instead of one failing on the unique constraint.
    """
    with transaction.atomic():
        TenantModel.objects.select_for_update().get(pk=model.pk)
        last = model.versions.aggregate(last=Max("number"))["last"] or 0
        version = ModelVersion.objects.create(
            model=model,
            number=last + 1,
            training_job=training_job,
            artifact_uri=artifact_uri,
            metrics=metrics or {},
        )
        record_event(
            kind="version.registered",
            message=f"{model} v{version.number} registered.",
            actor=actor,
            version=version,
        )
    return version
