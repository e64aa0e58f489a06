"""The one DRF exception handler: domain and validation errors become 4xx JSON answers."""

from __future__ import annotations

import math

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

from config.errors import DomainError

# DRF's own message for a value outside a field's choices quotes the value: an answer never repeats
# what the caller sent (it may be long, and it is theirs), so it says this instead.
DRF_INVALID_CHOICE_SUFFIX = " is not a valid choice."
INVALID_CHOICE = "Not one of the allowed values."


def _message(item) -> str:
    text = str(item)
    if getattr(item, "code", None) == "invalid_choice" and text.endswith(DRF_INVALID_CHOICE_SUFFIX):
        return INVALID_CHOICE
    return text


def _flatten(detail, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested validation detail as {"field.sub": [messages]}."""
    if isinstance(detail, dict):
        out: dict[str, list[str]] = {}
        for key, value in detail.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            out.update(_flatten(value, name))
        return out
    if isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            return {prefix or "non_field_errors": [_message(item) for item in detail]}
        out = {}
        for index, item in enumerate(detail):
            out.update(_flatten(item, f"{prefix}[{index}]"))
        return out
    return {prefix or "non_field_errors": [_message(detail)]}


def api_exception_handler(exc, context):
    """Map domain and validation errors to ``{"error": {code, message, field(s)}}`` bodies; a
    validation error names its first field in ``field`` and every one in ``fields``."""
    if isinstance(exc, DomainError):
        body = {"code": exc.code, "message": exc.message}
        if exc.field:
            body["field"] = exc.field
        response = Response({"error": body}, status=exc.status_code)
        retry_after_s = getattr(exc, "retry_after_s", None)
        if retry_after_s is not None:  # e.g. a deployment under way: when to try again
            response["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
        return response
    if isinstance(exc, RecursionError) and "JSON" in str(exc):
        # DRF's JSON parser only turns ValueError into a 400; a body of nested brackets (a few
        # hundred kilobytes of "[[[[") exhausts the decoder's recursion instead.
        return Response(
            {
                "error": {
                    "code": "parse_error",
                    "message": "JSON parse error - the body is nested too deeply.",
                }
            },
            status=400,
        )
    if isinstance(exc, IntegrityError):
        return Response(
            {"error": {"code": "conflict", "message": "The request conflicts with existing data."}},
            status=409,
        )
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, drf_exceptions.ValidationError):
        fields = _flatten(exc.detail)
        first_field, first_messages = next(iter(fields.items()))
        message = f"{first_field}: {first_messages[0]}"
        response.data = {
            "error": {"code": "invalid", "message": message, "field": first_field, "fields": fields}
        }
    else:
        detail = getattr(exc, "detail", str(exc))
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        response.data = {"error": {"code": str(code), "message": str(detail)}}
    return response


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's 400 for a request it refuses before any view reads it (a form body past
    DATA_UPLOAD_MAX_MEMORY_SIZE or with too many fields): under ``/api/`` the error envelope, a
    body too large a 413; the plain page elsewhere."""
    if not request.path.startswith("/api/"):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        error = {"code": "too_large", "message": f"The request body is over {limit} bytes."}
        return JsonResponse({"error": error}, status=413)
    if isinstance(exception, TooManyFieldsSent | TooManyFilesSent):
        error = {"code": "invalid", "message": "The request body has too many fields."}
    else:
        error = {"code": "bad_request", "message": "The request is malformed."}
    return JsonResponse({"error": error}, status=400)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's 404 for a URL no route matches: the error envelope under ``/api/`` (a client
    reading JSON gets JSON, as from any other API error), the plain page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"error": {"code": "not_found", "message": "No API route matches this path."}},
            status=404,
        )
    return defaults.page_not_found(request, exception)
