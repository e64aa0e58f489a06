"""Project-wide pages that belong to no single app."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from deployments.selectors import fleet_overview


@staff_member_required
def home(request: HttpRequest) -> HttpResponse:
    """The landing page: headline fleet figures and the way to the admin and the API docs."""
    return render(request, "home.html", {"figures": fleet_overview()})
