"""Project-wide pages that belong to no single app."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect


def home(request: HttpRequest) -> HttpResponse:
    """The landing page is the dashboard's overview (which asks anonymous visitors to log in)."""
    return redirect("dashboard:overview")
