"""The REST API's OpenAPI conventions: the error envelope as a component, the error answers each
operation can give, the resource tags and the path parameters' shapes.

Every operation names its own summary, description, tag and operationId in its view
(``extend_schema``) and the errors only it can give (a 409, a 413, a 503) with
``error_responses``. The errors that follow from what an operation is — a body or query
parameters to validate (400, 415), credentials (401), a CSRF-checked browser session or a
platform-only permission (403), path parameters naming something (404), content negotiation
(406), throttling (429) — are added here by ``AutoSchema``, so they are never forgotten and never
claimed where they cannot happen.
"""

from __future__ import annotations

from django.core.validators import RegexValidator
from drf_spectacular import openapi
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from config.fields import TextField
from config.openapi_tags import API_TAGS

TAG_NAMES = frozenset(tag["name"] for tag in API_TAGS)

ERROR_DESCRIPTIONS = {
    400: "A field or parameter is invalid; `error.field` names it (validation errors list "
    "every field at fault in `error.fields`).",
    401: "No credentials, or a token that is unknown, revoked or expired.",
    404: "No such resource visible to the caller; another tenant's resources answer the same "
    "as missing ones.",
    406: "The Accept header excludes application/json.",
    409: "The request conflicts with the resource's current state.",
    413: "The body is larger than the server accepts.",
    415: "The body's Content-Type is not one this operation reads.",
    429: "Too many requests from this caller in the current window; retry after Retry-After "
    "seconds.",
    503: "Temporarily unavailable; retry after Retry-After seconds where it is given.",
}
# Text DRF's CharField accepts: no NUL character and, unless blank is allowed, something besides
# whitespace. (Where blank is allowed the schema generator offers "" as a branch of its own, so
# the pattern must not match it too.)
ANY_TEXT = r"^[^\u0000]+$"
NON_BLANK_TEXT = r"^[^\u0000]*[^\u0000\s][^\u0000]*$"
PLAIN_TEXT_FIELDS = (serializers.CharField, TextField)
PLATFORM_ONLY = "This operation needs a platform token."
CSRF = "A signed-in browser session's request without its CSRF token."


def _retry_after(*, required: bool) -> dict:
    return {
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "required": required,
            "schema": {"type": "integer", "minimum": 1},
        }
    }


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text='A stable code, e.g. "invalid", "not_found".')
    message = serializers.CharField(help_text="What went wrong and what to do about it.")
    field = serializers.CharField(
        required=False, help_text="The field or parameter at fault, where there is one."
    )
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text='Validation errors: every field at fault with its messages ("a.b", "c[0]" '
        "for nested ones).",
    )


class ErrorSerializer(serializers.Serializer):
    """The envelope of every error answer."""

    error = ErrorDetailSerializer()

    class Meta:
        ref_name = "Error"


def error_responses(errors: dict[int, str]) -> dict[int, OpenApiResponse]:
    """Responses for ``extend_schema``: each status with its description, the body the error
    envelope."""
    return {
        status: OpenApiResponse(response=ErrorSerializer, description=description)
        for status, description in errors.items()
    }


def _needs_platform(view) -> bool:
    """Whether a permission of ``view`` admits platform callers only (it says so with a
    ``platform_only`` attribute)."""
    return any(getattr(permission, "platform_only", False) for permission in view.get_permissions())


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's schema, plus the error answers that follow from what an operation is,
    request bodies as JSON, and text fields as strictly as DRF validates them."""

    def map_parsers(self) -> list[str]:
        """JSON where a view reads it: the API's request bodies are JSON objects (the views
        also read the form encodings DRF parses by default, for a browser, undocumented)."""
        media_types = super().map_parsers()
        return ["application/json"] if "application/json" in media_types else media_types

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        shaped = any(isinstance(validator, RegexValidator) for validator in field.validators)
        if direction == "request" and type(field) in PLAIN_TEXT_FIELDS and not shaped:
            # DRF refuses NUL characters in every text field and, unless blank is allowed,
            # one that is only whitespace (it trims it first); minLength alone says neither.
            blank_allowed = field.allow_blank or not field.trim_whitespace
            schema.setdefault("pattern", ANY_TEXT if blank_allowed else NON_BLANK_TEXT)
        return schema

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        responses = operation["responses"]
        error_ref = self.resolve_serializer(ErrorSerializer, "response").ref
        for status, description in self._implied_errors(operation).items():
            response = responses.setdefault(str(status), {"description": description})
            if description not in response["description"]:
                response["description"] = f"{response['description']} Or: {description}"
        for status, response in responses.items():
            if status >= "400":
                response["content"] = {"application/json": {"schema": error_ref}}
                if status in ("429", "503"):
                    # A throttled request always says when to retry; an unavailable one does
                    # where the platform knows.
                    response["headers"] = _retry_after(required=status == "429")
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def _implied_errors(self, operation: dict) -> dict[int, str]:
        """The statuses ``operation`` can answer by its shape: body, parameters, auth, throttles."""
        parameters = operation.get("parameters", [])
        has_body = "requestBody" in operation
        errors: dict[int, str] = {}
        if has_body or any(parameter["in"] == "query" for parameter in parameters):
            errors[400] = ERROR_DESCRIPTIONS[400]
        security = operation.get("security", [])
        if security and {} not in security:
            errors[401] = ERROR_DESCRIPTIONS[401]
        forbidden = []
        if _needs_platform(self.view):
            forbidden.append(PLATFORM_ONLY)
        if self.method not in ("GET", "HEAD", "OPTIONS") and any(
            "cookieAuth" in requirement for requirement in security
        ):
            forbidden.append(CSRF)
        if forbidden:
            errors[403] = " Or: ".join(forbidden)
        if any(parameter["in"] == "path" for parameter in parameters):
            errors[404] = ERROR_DESCRIPTIONS[404]
        errors[406] = ERROR_DESCRIPTIONS[406]
        if has_body:
            errors[413] = ERROR_DESCRIPTIONS[413]
            errors[415] = ERROR_DESCRIPTIONS[415]
        if self.view.get_throttles():
            errors[429] = ERROR_DESCRIPTIONS[429]
        return errors
