"""Errors raised by tenant and token services."""

from config.errors import Conflict, DomainError, NotFound


class TenantNotFound(NotFound):
    pass


class TenantAlreadyExists(Conflict):
    pass


class TenantSuspended(DomainError):
    status_code = 403
    code = "tenant_suspended"


class InvalidToken(DomainError):
    status_code = 401
    code = "invalid_token"
