"""Serving backends: the ``ServingBackend`` protocol and its value types (see ``base``).

``local`` runs Triton processes on this machine; import it explicitly where it is needed, so
importing the protocol never pulls in process management.
"""

from deployments.backends.base import (
    InstanceHandle,
    LoadedModel,
    LoadResult,
    MemoryReading,
    ServingBackend,
)

__all__ = ["InstanceHandle", "LoadResult", "LoadedModel", "MemoryReading", "ServingBackend"]
