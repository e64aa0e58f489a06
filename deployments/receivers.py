"""What the deployments app does when other parts of the platform tell it something.

Signals are declared where they are sent (``config.events``, ``models_registry.signals``,
``deployments.signals``); their handlers live here and are connected by ``DeploymentsConfig.ready``,
so no lower layer imports this app to reach it.
"""

from __future__ import annotations

from django.db.models.signals import post_migrate
from django.dispatch import receiver

from config.events import event_recorded
from deployments.models import Event
from models_registry.signals import version_activated


@receiver(event_recorded, dispatch_uid="tenantml_store_event")
def store_event(sender, *, signal=None, **fields) -> Event:
    """Store a recorded event as an ``Event`` row (in the caller's transaction)."""
    return Event.objects.create(**fields)


@receiver(post_migrate, dispatch_uid="tenantml_sync_periodic_tasks")
def sync_periodic_tasks_after_migrate(sender, app_config=None, **kwargs) -> None:
    """Create the declared periodic tasks once the deployments app is migrated."""
    if app_config is None or app_config.label != "deployments":
        return
    from deployments.services.fleet import sync_periodic_tasks

    sync_periodic_tasks(using=kwargs.get("using", "default"))


@receiver(version_activated, dispatch_uid="tenantml_roll_out_activated_version")
def roll_out_activated_version(sender, *, version, actor: str, **kwargs) -> None:
    """A promoted (or rolled-back-to) version rolls out where its model is deployed; a model
    never deployed stays undeployed."""
    from deployments.services.candidates import on_version_promoted

    on_version_promoted(version=version, actor=actor)
