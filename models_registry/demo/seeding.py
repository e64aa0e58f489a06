"""The demo tenants written into the database: ``manage.py seed_demo``'s service.

Owns which demo tenants exist, which datasets and models each one gets, and doing it
idempotently; the tickets themselves come from ``models_registry.demo.tickets`` and the replies
from ``models_registry.demo.replies``.
"""

from __future__ import annotations

from dataclasses import dataclass

from models_registry.demo import replies, tickets
from models_registry.models import Dataset, TenantModel
from models_registry.services.datasets import create_dataset
from models_registry.services.registry import create_model
from tenants.models import Tenant
from tenants.services import create_tenant


@dataclass(frozen=True)
class SeededTenant:
    """One demo tenant, whether this run created it, and its datasets and models."""

    tenant: Tenant
    created: bool
    datasets: list[Dataset]
    models: list[TenantModel]


def seed_demo(*, rows: int, seed: int, actor: str) -> list[SeededTenant]:
    """Create the demo tenants with labelled ticket datasets and their models; idempotent.

    Each tenant gets an intent dataset (``tickets.csv``) and an ``intents`` model, and a dataset
    of its agents' replies (``replies.csv``) and a ``replies`` model that drafts them; the
    premium tenant also gets a paraphrase-pair dataset and an ``embeddings`` model for
    retrieval.
    """
    results = []
    for index, (slug, info) in enumerate(tickets.DEMO_TENANTS.items()):
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
                lambda s=slug, i=index: tickets.generate_tickets(s, rows=rows, seed=seed + i),
            ),
        ]
        wanted.append(
            (
                "replies.csv",
                "replies",
                "reply-autocomplete",
                lambda s=slug, i=index: replies.generate_replies(s, rows=rows, seed=seed + i),
            ),
        )
        if tier == Tenant.Tier.PREMIUM:
            wanted.append(
                (
                    "pairs.csv",
                    "embeddings",
                    "embedding",
                    lambda s=slug, i=index: tickets.generate_pairs(
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
                    content=tickets.to_csv(make_rows()),
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
