"""The REST API's list filters (``?status=``, ``?type=``, ``?since=``): each is a field of a
DRF serializer that the view validates and the schema documents as a query parameter, enums and
formats included; a bad value is a 400 naming the parameter."""

from __future__ import annotations

from rest_framework.request import Request


def query_filters(request: Request) -> dict[str, str]:
    """The query parameters as a filter serializer's data: each one's last value, an empty one
    kept, so ``?status=`` is a 400 naming ``status`` rather than a filter left out (DRF reads a
    query dict's empty value as a form's empty field, that is, as absent)."""
    return request.query_params.dict()
