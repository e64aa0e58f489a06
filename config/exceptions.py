"""The one DRF exception handler: domain and validation errors become 4xx JSON answers."""

from __future__ import annotations

from django.db import IntegrityError
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

from config.errors import DomainError


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
            return {prefix or "non_field_errors": [str(item) for item in detail]}
        out = {}
        for index, item in enumerate(detail):
            out.update(_flatten(item, f"{prefix}[{index}]"))
        return out
    return {prefix or "non_field_errors": [str(detail)]}


def api_exception_handler(exc, context):
    """Map domain and validation errors to ``{"error": {code, message, field(s)}}`` bodies."""
    if isinstance(exc, DomainError):
        body = {"code": exc.code, "message": exc.message}
        if exc.field:
            body["field"] = exc.field
        return Response({"error": body}, status=exc.status_code)
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
        response.data = {"error": {"code": "invalid", "message": message, "fields": fields}}
    else:
        detail = getattr(exc, "detail", str(exc))
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        response.data = {"error": {"code": str(code), "message": str(detail)}}
    return response
