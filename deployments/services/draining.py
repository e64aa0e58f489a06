"""Draining an instance: its models are loaded elsewhere first, then it stops."""

from __future__ import annotations

from deployments.backends import backend_for
from deployments.models import Instance


def drain_instance(*, instance: Instance, actor: str, stop: bool = True) -> Instance:
    """Move every model off an instance (loaded elsewhere first), then stop it."""
    return backend_for(instance.endpoint).drain_instance(instance=instance, actor=actor, stop=stop)
