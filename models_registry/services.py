"""Writes for datasets, tenant models, versions and training jobs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max

from config.errors import DomainError
from deployments.events import record_event
from models_registry import artifacts
from models_registry.datasets import MAX_PROBLEMS_REPORTED, detect_format, parse_dataset
from models_registry.exceptions import (
    InvalidDataset,
    InvalidVersion,
    JobNotCancellable,
    ModelAlreadyExists,
)
from models_registry.kinds import get_kind
from models_registry.models import Dataset, ModelVersion, TenantModel, TrainingJob
from tenants.models import SLUG_VALIDATOR, Tenant


def create_dataset(
    *, tenant: Tenant, name: str, content: bytes, actor: str, format: str | None = None
) -> Dataset:
    """Validate an uploaded file and store it; an invalid file raises and stores nothing."""
    format = format or detect_format(name, content)
    parsed = parse_dataset(content, format=format)
    if not parsed.problems and not parsed.rows:
        parsed.problems.append("file: has no rows.")
    if parsed.problems:
        shown = parsed.problems[:MAX_PROBLEMS_REPORTED]
        more = len(parsed.problems) - len(shown)
        message = "; ".join(shown) + (f"; and {more} more problem(s)." if more else "")
        raise InvalidDataset(message, field="file")
    digest = hashlib.sha256(content).hexdigest()
    stored = artifacts.put_bytes(f"datasets/{tenant.slug}/{digest}.{format}", content)
    try:
        with transaction.atomic():
            dataset = Dataset.objects.create(
                tenant=tenant,
                name=name,
                format=format,
                storage_uri=stored.uri,
                size_bytes=stored.size_bytes,
                sha256=stored.sha256,
                rows=len(parsed.rows),
                labels=parsed.label_counts,
                validation_report={"problems": [], "rows": len(parsed.rows)},
            )
            record_event(
                kind="dataset.uploaded",
                message=f"Dataset {name} ({len(parsed.rows)} rows) uploaded for {tenant.slug}.",
                actor=actor,
                tenant=tenant,
            )
    except IntegrityError as exc:
        raise InvalidDataset(
            f"Tenant {tenant.slug} already has a dataset named {name!r}.", field="name"
        ) from exc
    return dataset


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


def request_training_cancel(*, job: TrainingJob, actor: str) -> TrainingJob:
    """Ask a queued or running job to stop; the job's runner honours the flag."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if job.is_terminal:
            raise JobNotCancellable(f"Training job {job.pk} already {job.status}.")
        job.cancel_requested = True
        update = ["cancel_requested"]
        if job.status == TrainingJob.Status.QUEUED:
            # Nothing runs yet, so the cancellation is complete at once.
            job.status = TrainingJob.Status.CANCELLED
            update.append("status")
        job.save(update_fields=update)
        record_event(
            kind="training.cancel_requested",
            message=f"Cancellation of training job {job.pk} requested.",
            actor=actor,
            tenant=job.model.tenant,
        )
    return job


@dataclass(frozen=True)
class SeededTenant:
    tenant: Tenant
    created: bool
    datasets: list[Dataset]
    models: list[TenantModel]


def seed_demo(*, rows: int, seed: int, actor: str) -> list[SeededTenant]:
    """Create the demo tenants with labelled ticket datasets and their models; idempotent.

    Each tenant gets an intent dataset (``tickets.csv``) and an ``intents`` model; the premium
    tenant also gets a paraphrase-pair dataset and an ``embeddings`` model for retrieval.
    """
    from models_registry import demo_data
    from tenants.services import create_tenant

    results = []
    for index, (slug, info) in enumerate(demo_data.DEMO_TENANTS.items()):
        tier = Tenant.Tier.PREMIUM if info["vertical"] == "banking" else Tenant.Tier.STANDARD
        tenant = Tenant.objects.filter(slug=slug).first()
        created = tenant is None
        if created:
            tenant = create_tenant(slug=slug, name=info["name"], tier=tier, actor=actor)
        wanted = [
            (
                "tickets.csv",
                "intents",
                "intent-classifier",
                lambda s=slug, i=index: demo_data.generate_tickets(s, rows=rows, seed=seed + i),
            ),
        ]
        if tier == Tenant.Tier.PREMIUM:
            wanted.append(
                (
                    "pairs.csv",
                    "embeddings",
                    "embedding",
                    lambda s=slug, i=index: demo_data.generate_pairs(
                        s, groups=max(rows // 2, 8), seed=seed + i
                    ),
                ),
            )
        datasets, models = [], []
        for dataset_name, model_name, kind, make_rows in wanted:
            dataset = Dataset.objects.filter(tenant=tenant, name=dataset_name).first()
            if dataset is None:
                dataset = create_dataset(
                    tenant=tenant,
                    name=dataset_name,
                    content=demo_data.to_csv(make_rows()),
                    actor=actor,
                )
            model = TenantModel.objects.filter(tenant=tenant, name=model_name).first()
            if model is None:
                model = create_model(tenant=tenant, name=model_name, kind=kind, actor=actor)
            datasets.append(dataset)
            models.append(model)
        results.append(
            SeededTenant(tenant=tenant, created=created, datasets=datasets, models=models)
        )
    return results


def package_version(*, version: ModelVersion, actor: str) -> ModelVersion:
    """Build the version's Triton package (``model.tar.gz``), store it with its sha256 and size,
    and mark the version ready to serve; a failure marks it failed with the reason."""
    import tempfile
    from pathlib import Path

    from models_registry.packaging import build_triton_package

    with transaction.atomic():
        version = (
            ModelVersion.objects.select_for_update()
            .select_related("model__tenant")
            .get(pk=version.pk)
        )
        if version.status == ModelVersion.Status.READY and version.package_uri:
            return version  # a re-delivered task: already done
        if not version.artifact_uri:
            raise InvalidVersion(f"{version} has no trained artifact to package.", field="version")
        version.status = ModelVersion.Status.PACKAGING
        version.save(update_fields=["status", "updated_at"])
    try:
        with tempfile.TemporaryDirectory(prefix="tenantml-package-") as scratch:
            info = build_triton_package(
                kind=version.model.kind,
                artifact_dir=Path(artifacts.local_copy(version.artifact_uri, Path(scratch))),
                triton_model_name=version.triton_model_name,
                out_path=Path(scratch) / "model.tar.gz",
            )
            stored = artifacts.put_file(
                f"packages/{version.model.tenant.slug}/{version.model.name}/"
                f"v{version.number}/model.tar.gz",
                info.path,
            )
    except (DomainError, OSError, ValueError) as exc:
        reason = getattr(exc, "message", None) or str(exc)
        ModelVersion.objects.filter(pk=version.pk).update(
            status=ModelVersion.Status.FAILED, status_reason=f"Packaging failed: {reason}"
        )
        record_event(
            kind="version.packaging_failed",
            severity="error",
            message=f"{version} could not be packaged for Triton: {reason}",
            actor=actor,
            version=version,
        )
        raise
    with transaction.atomic():
        ModelVersion.objects.filter(pk=version.pk).update(
            status=ModelVersion.Status.READY,
            package_uri=stored.uri,
            sha256=stored.sha256,
            size_bytes=stored.size_bytes,
            status_reason="",
        )
        record_event(
            kind="version.packaged",
            message=(
                f"{version} packaged for Triton: {stored.size_bytes / 1e6:,.1f} MB, "
                f"sha256 {stored.sha256[:12]}…"
            ),
            actor=actor,
            version=version,
            data={"sha256": stored.sha256, "size_bytes": stored.size_bytes},
        )
    version.refresh_from_db()
    return version
