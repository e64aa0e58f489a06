"""Signal wiring for the deployments app."""

from django.db.models.signals import post_migrate
from django.dispatch import Signal, receiver

# Sent with ``model_id`` when a model's live version or its copies change (deploy, rollback,
# drain, promotion), so in-process routing caches drop what they hold for it.
routing_changed = Signal()


@receiver(post_migrate, dispatch_uid="tenantml_sync_periodic_tasks")
def sync_periodic_tasks_after_migrate(sender, app_config=None, **kwargs) -> None:
    if app_config is None or app_config.label != "deployments":
        return
    from deployments.services.fleet import sync_periodic_tasks

    sync_periodic_tasks(using=kwargs.get("using", "default"))
