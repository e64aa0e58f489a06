"""Verification of AWS Signature Version 4 on requests to the SageMaker-runtime-compatible proxy.

This lets boto3's ``sagemaker-runtime`` client, pointed at the proxy with ``endpoint_url``, call
tenant models with an access key pair the platform issued. The module is pure: it knows the
protocol, not where credentials live; the caller passes ``lookup`` (``tenants.services`` has the
one backed by API tokens).

The canonical request is built the way botocore builds it for non-S3 services (SageMaker runtime
included), which is what the signature covers:

- the path is the one sent on the wire (already percent-encoded by the client), with empty and dot
  segments removed, then percent-encoded once more, keeping ``/`` and ``~``; so an endpoint named
  ``a b`` travels as ``/endpoints/a%20b/invocations`` and is signed as
  ``/endpoints/a%2520b/invocations``;
- query parameters are decoded, re-encoded with only ``A-Za-z0-9-_.~`` left bare, and sorted;
- header names are lowercased and values trimmed with inner whitespace runs collapsed to one space.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

from tenants.exceptions import (
    IncompleteSignature,
    InvalidSignature,
    MissingAuthenticationToken,
    UnrecognizedClient,
)

ALGORITHM = "AWS4-HMAC-SHA256"
SCOPE_TERMINATOR = "aws4_request"
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
# The header names boto3 signs that the proxy must see unchanged: without host the signature would
# not bind the request to this proxy, without x-amz-date it could not be dated.
REQUIRED_SIGNED_HEADERS = ("host", "x-amz-date")
# Payload markers that mean "the body is not covered by the signature"; a proxy that forwards the
# body to a model must not accept those.
UNSIGNED_PAYLOAD_MARKERS = ("UNSIGNED-PAYLOAD", "STREAMING-")
SIGNATURE_PATTERN = re.compile(r"[0-9a-f]{64}")
# Same answer whatever the reason (unknown key, revoked, expired, suspended), as for bearer tokens.
UNRECOGNIZED_MESSAGE = "The security token included in the request is invalid."

CredentialLookup = Callable[[str], tuple[object, str] | None]


def verify_request(
    *,
    method: str,
    path: str,
    query_string: str,
    headers: Mapping[str, str],
    body: bytes,
    lookup: CredentialLookup,
    now: datetime | None = None,
    service: str = "sagemaker",
    max_skew_s: int = 900,
) -> object:
    """Check a request's SigV4 signature and return the principal ``lookup`` gave for its key.

    ``path`` is the path as sent, still percent-encoded and without the query (ASGI ``raw_path``,
    gunicorn's ``RAW_URI``); Django's decoded ``request.path`` gives the same result for names made
    of letters, digits and ``-._~`` only. ``headers`` may be any mapping (names are compared
    case-insensitively), e.g. Django's ``request.headers``; ``Host`` must be the one the client
    sent. ``lookup(access_key_id)`` returns ``(principal, secret_access_key)`` or None.

    Raises ``MissingAuthenticationToken``, ``IncompleteSignature``, ``UnrecognizedClient`` or
    ``InvalidSignature`` (all ``SignatureRejected``, HTTP 403).
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    authorization = lowered.get("authorization", "").strip()
    if not authorization:
        raise MissingAuthenticationToken("Missing Authentication Token.")
    access_key_id, scope, signed_headers, signature = _parse_authorization(authorization)
    scope_date, region, scope_service = scope

    if scope_service != service:
        raise InvalidSignature(
            f"Credential should be scoped to correct service: '{service}', not '{scope_service}'."
        )
    amz_date = lowered.get("x-amz-date", "").strip()
    if not amz_date:
        raise IncompleteSignature("The request must carry an X-Amz-Date header.")
    try:
        signed_at = datetime.strptime(amz_date, AMZ_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise IncompleteSignature("X-Amz-Date must be a UTC time like 20240101T000000Z.") from exc
    if scope_date != amz_date[:8]:
        raise InvalidSignature(
            f"Credential should be scoped to a valid date: '{amz_date[:8]}', not '{scope_date}'."
        )
    _check_skew(signed_at=signed_at, now=now, max_skew_s=max_skew_s)

    for required in REQUIRED_SIGNED_HEADERS:
        if required not in signed_headers:
            raise IncompleteSignature(f"SignedHeaders must include '{required}'.")
    missing = [name for name in signed_headers if name not in lowered]
    if missing:
        raise InvalidSignature(f"Signed header '{missing[0]}' is missing from the request.")

    payload_hash = hashlib.sha256(body).hexdigest()
    declared_hash = lowered.get("x-amz-content-sha256")
    if declared_hash is not None:
        declared_hash = declared_hash.strip()
        if declared_hash.startswith(UNSIGNED_PAYLOAD_MARKERS):
            raise IncompleteSignature("Unsigned payloads are not accepted; sign the body.")
        if declared_hash.lower() != payload_hash:
            raise InvalidSignature("X-Amz-Content-SHA256 does not match the request body.")

    found = lookup(access_key_id)
    if found is None:
        raise UnrecognizedClient(UNRECOGNIZED_MESSAGE)
    principal, secret_access_key = found

    request = canonical_request(
        method=method,
        path=path,
        query_string=query_string,
        headers=lowered,
        signed_headers=signed_headers,
        payload_hash=payload_hash,
    )
    credential_scope = f"{scope_date}/{region}/{scope_service}/{SCOPE_TERMINATOR}"
    expected = compute_signature(
        secret_access_key=secret_access_key,
        amz_date=amz_date,
        credential_scope=credential_scope,
        canonical_request=request,
    )
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii")):
        raise InvalidSignature(
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method."
        )
    return principal


def canonical_request(
    *,
    method: str,
    path: str,
    query_string: str,
    headers: Mapping[str, str],
    signed_headers: list[str],
    payload_hash: str,
) -> str:
    """The SigV4 canonical request; ``headers`` keys must already be lowercase."""
    canonical_headers = "".join(
        f"{name}:{_trim_header_value(headers[name])}\n" for name in signed_headers
    )
    return "\n".join(
        [
            method.upper(),
            canonical_path(path),
            canonical_query_string(query_string),
            canonical_headers,
            ";".join(signed_headers),
            payload_hash,
        ]
    )


def canonical_path(path: str) -> str:
    """The wire path as botocore signs it for non-S3 services (normalized, encoded once more)."""
    return quote(_remove_dot_segments(path) or "/", safe="/~")


def canonical_query_string(query_string: str) -> str:
    """Parameters decoded, re-encoded with AWS's unreserved set, sorted by name then value."""
    pairs = []
    for pair in query_string.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        pairs.append((_aws_quote(unquote(name)), _aws_quote(unquote(value))))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def compute_signature(
    *, secret_access_key: str, amz_date: str, credential_scope: str, canonical_request: str
) -> str:
    """Hex HMAC-SHA256 signature of a canonical request under the scope's derived signing key."""
    string_to_sign = "\n".join(
        [
            ALGORITHM,
            amz_date,
            credential_scope,
            hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
        ]
    )
    key = f"AWS4{secret_access_key}".encode()
    for part in credential_scope.split("/"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def _parse_authorization(header: str) -> tuple[str, tuple[str, str, str], list[str], str]:
    """Split ``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``."""
    algorithm, _, rest = header.partition(" ")
    if algorithm != ALGORITHM:
        raise IncompleteSignature(
            f"Authorization header must use {ALGORITHM} (a platform bearer token goes to the "
            "platform API, not to this SigV4 endpoint)."
        )
    parameters: dict[str, str] = {}
    for part in rest.split(","):
        name, separator, value = part.strip().partition("=")
        if not separator or name in parameters:
            raise IncompleteSignature(
                f"Authorization header parameter {name!r} is malformed or repeated."
            )
        parameters[name] = value.strip()
    for required in ("Credential", "SignedHeaders", "Signature"):
        if not parameters.get(required):
            raise IncompleteSignature(f"Authorization header requires '{required}' parameter.")

    credential = parameters["Credential"].split("/")
    if len(credential) != 5 or not all(credential) or credential[4] != SCOPE_TERMINATOR:
        raise IncompleteSignature(
            "Credential must be ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request."
        )
    access_key_id, scope_date, region, scope_service, _ = credential

    signed_headers = parameters["SignedHeaders"].split(";")
    if any(not name or name != name.lower().strip() for name in signed_headers):
        raise IncompleteSignature("SignedHeaders must be lowercase names separated by ';'.")
    signature = parameters["Signature"]
    if not SIGNATURE_PATTERN.fullmatch(signature):
        raise IncompleteSignature("Signature must be 64 lowercase hexadecimal characters.")
    # The canonical request lists headers sorted, whatever order the client wrote them in.
    return (
        access_key_id,
        (scope_date, region, scope_service),
        sorted(set(signed_headers)),
        signature,
    )


def _check_skew(*, signed_at: datetime, now: datetime | None, max_skew_s: int) -> None:
    """Refuse requests signed too long ago (replays) or too far ahead (clock trouble)."""
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    skew = timedelta(seconds=max_skew_s)
    if signed_at < now - skew:
        raise InvalidSignature(
            f"Signature expired: {signed_at.strftime(AMZ_DATE_FORMAT)} is now earlier than "
            f"{(now - skew).astimezone(UTC).strftime(AMZ_DATE_FORMAT)}."
        )
    if signed_at > now + skew:
        raise InvalidSignature(
            f"Signature not yet current: {signed_at.strftime(AMZ_DATE_FORMAT)} is still later "
            f"than {(now + skew).astimezone(UTC).strftime(AMZ_DATE_FORMAT)}."
        )


def _trim_header_value(value: str) -> str:
    """Trim and collapse inner whitespace runs, as botocore does before signing."""
    return " ".join(value.split())


def _aws_quote(value: str) -> str:
    """Percent-encode everything except AWS's unreserved characters (A-Za-z0-9-_.~)."""
    return quote(value, safe="-_.~")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 dot-segment removal plus empty-segment removal, as botocore normalizes paths."""
    if not path:
        return ""
    segments: list[str] = []
    for segment in path.split("/"):
        if not segment or segment == ".":
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    leading = "/" if path.startswith("/") else ""
    trailing = "/" if path.endswith("/") and segments else ""
    return leading + "/".join(segments) + trailing
