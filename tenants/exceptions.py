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


class SignatureRejected(DomainError):
    """A SigV4-signed request the platform refuses; codes are AWS's, so boto3 reports them as-is.

    AWS answers 403 for every one of these; ``code`` is what boto3 shows as the error code.
    """

    status_code = 403
    code = "InvalidSignatureException"


class InvalidSignature(SignatureRejected):
    """The signature does not match the request, or the request is outside the allowed skew."""

    code = "InvalidSignatureException"


class IncompleteSignature(SignatureRejected):
    """The Authorization header or the signed parts of the request are malformed or missing."""

    code = "IncompleteSignature"


class UnrecognizedClient(SignatureRejected):
    """The access key id is unknown, or its token is revoked, expired or of a suspended tenant."""

    code = "UnrecognizedClientException"


class MissingAuthenticationToken(SignatureRejected):
    """The request carries no Authorization header at all."""

    code = "MissingAuthenticationToken"
