"""Signals the registry sends; whoever acts on them connects a receiver (the deployments app
rolls an activated version out where its model is deployed)."""

from django.dispatch import Signal

# Sent with ``version`` and ``actor`` after a version became its model's active one (promoted,
# or restored by a rollback), once the change is committed.
version_activated = Signal()
