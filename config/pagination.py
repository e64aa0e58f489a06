"""The REST API's one pagination convention: ``?limit=&offset=`` pages in a
``{"count", "next", "previous", "results"}`` envelope, with strict parameters."""

from __future__ import annotations

import re

from rest_framework import pagination
from rest_framework.request import Request
from rest_framework.response import Response

from config.errors import DomainError

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# More digits than this is past the end of any table; parsing them all would only cost time.
_PAST_ANY_TABLE = 10**18
_DIGITS = re.compile(r"[0-9]+")


def _query_integer(request: Request, name: str, *, default: int, message: str) -> int:
    """A query parameter as a non-negative integer; anything else is a 400 naming it."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    # The message never repeats the value: it may be long, and it is the caller's own.
    if not _DIGITS.fullmatch(raw):
        raise DomainError(message, field=name)
    digits = raw.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else _PAST_ANY_TABLE


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """DRF's limit/offset pages, but a malformed ``limit`` or ``offset`` is a 400, not ignored."""

    default_limit = DEFAULT_LIMIT
    max_limit = MAX_LIMIT
    limit_query_description = (
        f"Rows per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}); a larger value is capped "
        f"at {MAX_LIMIT}."
    )
    offset_query_description = (
        "How many rows of the list's order to skip (default 0); past the end the page is empty."
    )

    def get_limit(self, request: Request) -> int:
        """``?limit=``: default 100, capped at 1000; 0 or a non-integer is a 400."""
        message = f"limit must be a whole number from 1 to {MAX_LIMIT}."
        limit = _query_integer(request, "limit", default=DEFAULT_LIMIT, message=message)
        if limit == 0:
            raise DomainError(message, field="limit")
        return min(limit, MAX_LIMIT)

    def get_offset(self, request: Request) -> int:
        """``?offset=``: default 0; a negative or non-integer value is a 400."""
        message = "offset must be a whole number, 0 or more."
        return _query_integer(request, "offset", default=0, message=message)

    def paginate_queryset(self, queryset, request: Request, view=None) -> list:
        """One page of ``queryset``; both parameters are checked before the table is counted."""
        self.request = request
        self.limit = self.get_limit(request)
        self.offset = self.get_offset(request)
        self.count = self.get_count(queryset)
        if self.offset >= self.count:
            return []
        return list(queryset[self.offset : self.offset + self.limit])

    def get_paginated_response_schema(self, schema: dict) -> dict:
        """The envelope in OpenAPI; all four keys are always present."""
        envelope = super().get_paginated_response_schema(schema)
        envelope["required"] = ["count", "next", "previous", "results"]
        example = "https://ml.example.com/api/v1/tenants/?limit=100&offset={}"
        envelope["properties"]["next"]["example"] = example.format(300)
        envelope["properties"]["previous"]["example"] = example.format(100)
        return envelope

    def get_schema_operation_parameters(self, view) -> list[dict]:
        """``limit`` and ``offset`` with their bounds and defaults."""
        limit, offset = super().get_schema_operation_parameters(view)
        limit["schema"] = {"type": "integer", "minimum": 1, "default": DEFAULT_LIMIT}
        offset["schema"] = {"type": "integer", "minimum": 0, "default": 0}
        return [limit, offset]

    def counted_page_response(
        self, request: Request, *, rows: list, count: int, limit: int, offset: int
    ) -> Response:
        """The envelope for a page a selector already cut and counted (an aggregate computed in
        the database, not a queryset this class could slice)."""
        self.request, self.limit, self.offset, self.count = request, limit, offset, count
        return self.get_paginated_response(rows)
