"""The API's error envelope as exceptions: one class per kind of answer a caller acts on.

Every refusal the platform answers carries ``{"error": {"code", "message", "field"}}`` (a
validation error names every field under ``fields``); ``error_from_response`` turns it into the
matching subclass of ``TenantMLError``, keeping the status, code, message and field.
"""

from __future__ import annotations

import contextlib
from typing import Any

import httpx


class TenantMLError(Exception):
    """Anything the platform refused or failed to answer; ``status`` is None without an answer."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "error",
        field: str | None = None,
        fields: dict[str, list[str]] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.field = field
        self.fields = fields or {}
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        prefix = f"{self.status} {self.code}: " if self.status is not None else ""
        return f"{prefix}{self.message}{where}"


class ClientError(TenantMLError):
    """A 4xx: the request must change before it can succeed."""


class ValidationError(ClientError):
    """400 or 422: input the platform refuses; ``field`` names it (``fields`` lists them all)."""


class AuthenticationError(ClientError):
    """401: no token, an unknown one, or a revoked or expired one."""


class PermissionDenied(ClientError):
    """403: the token may not do this (a tenant token on a platform route, a suspended tenant)."""


class NotFound(ClientError):
    """404: no such tenant, model, version, job or deployment (or another tenant's)."""


class Conflict(ClientError):
    """409: the request contradicts the current state (a name taken, nothing to roll back to)."""


class PayloadTooLarge(ClientError):
    """413: the body is over the platform's limit."""


class RateLimited(ClientError):
    """429: over the tenant's request rate; ``retry_after_s`` says when to try again."""


class ServerError(TenantMLError):
    """A 5xx: the platform could not answer this time."""


class UpstreamError(ServerError):
    """502: the model's server refused or failed the request."""


class Unavailable(ServerError):
    """503: not processed, try again (``retry_after_s`` says when): a rollout in progress, no
    loaded copy yet, every copy busy."""


class ConnectionFailed(TenantMLError):
    """No answer: the platform could not be reached, or the connection broke mid-request."""


class WaitTimeout(TenantMLError):
    """A wait helper gave up before the job or deployment reached a final state."""


class TrainingFailed(TenantMLError):
    """A training job ended ``failed`` or ``cancelled``; ``job`` is its last answer."""

    def __init__(self, message: str, *, job: Any) -> None:
        super().__init__(message, code=f"training_{job.status}")
        self.job = job


class DeploymentFailed(TenantMLError):
    """A deployment ended ``failed`` (or was retired while waited for); ``deployment`` is its
    last answer."""

    def __init__(self, message: str, *, deployment: Any) -> None:
        super().__init__(message, code=f"deployment_{deployment.status}")
        self.deployment = deployment


_BY_STATUS: dict[int, type[TenantMLError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationError,
    429: RateLimited,
    502: UpstreamError,
    503: Unavailable,
}


def error_class_for(status: int) -> type[TenantMLError]:
    """The exception class an answer with ``status`` becomes."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else ClientError


def error_from_response(
    response: httpx.Response, *, retry_after_s: float | None = None
) -> TenantMLError:
    """The typed exception for a refused answer, from its error envelope where it has one (an
    answer from something in front of the platform may be HTML or empty)."""
    status = response.status_code
    envelope: Any = None
    with contextlib.suppress(ValueError):
        envelope = response.json()
    error = envelope.get("error") if isinstance(envelope, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or response.reason_phrase)
        code = str(error.get("code") or "error")
        fields = error.get("fields") if isinstance(error.get("fields"), dict) else {}
        field = error.get("field") or next(iter(fields), None)
    else:
        # The v2 and SageMaker routes answer {"error": "..."} / {"message": "..."}; anything
        # else (an HTML 404 from a wrong base URL, a proxy's 502 page) is told by its status.
        text = error if isinstance(error, str) else None
        if text is None and isinstance(envelope, dict):
            text = envelope.get("message")
        message = str(text or f"{response.reason_phrase or 'HTTP error'} ({response.url.path})")
        code, field, fields = "error", None, {}
    return error_class_for(status)(
        message,
        status=status,
        code=code,
        field=field,
        fields=fields,
        retry_after_s=retry_after_s,
    )
