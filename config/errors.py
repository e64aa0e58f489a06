"""Domain errors shared by every app; ``config.exceptions`` maps them to HTTP answers."""

from __future__ import annotations


class DomainError(Exception):
    """A failure a user can act on; subclasses set the HTTP status and a stable code."""

    status_code = 400
    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class Conflict(DomainError):
    status_code = 409
    code = "conflict"
