"""Signals the deployments app sends (handlers live with whoever listens)."""

from django.dispatch import Signal

# Sent with ``model_id`` when a model's live version or its copies change (deploy, rollback,
# drain, promotion), so in-process routing caches drop what they hold for it.
routing_changed = Signal()
