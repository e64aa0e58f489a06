"""``manage.py seed_demo``: three demo tenants from different verticals with labelled tickets."""

from django.core.management.base import BaseCommand

from models_registry.demo.seeding import seed_demo


class Command(BaseCommand):
    help = (
        "Create demo tenants (ride-sharing, apparel retail, banking) with ticket and reply "
        "datasets."
    )

    def add_arguments(self, parser):
        parser.add_argument("--rows", type=int, default=480, help="Tickets per tenant (>= 300).")
        parser.add_argument("--seed", type=int, default=7)

    def handle(self, *args, rows: int, seed: int, **options):
        for result in seed_demo(rows=rows, seed=seed, actor="seed_demo"):
            state = "created" if result.created else "already present"
            self.stdout.write(
                f"{result.tenant.slug} ({result.tenant.name}, {result.tenant.tier}): {state}"
            )
            for dataset, model in zip(result.datasets, result.models, strict=True):
                contents = f"{len(dataset.labels)} labels" if dataset.labels else "replies"
                self.stdout.write(
                    f"  dataset {dataset.name}: {dataset.rows} rows, {contents}"
                    f" -> model {model.name} ({model.kind})"
                )
