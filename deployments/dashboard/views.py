"""Dashboard pages for the fleet: overview, endpoints, the cost what-if and the event log.

Thin: resolve the caller, call a selector, render the page, or only its partial for htmx.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_http_methods

from config.errors import DomainError, NotFound
from deployments.dashboard.charts import trend_charts
from deployments.dashboard.forms import EventFilterForm, WhatIfForm
from deployments.selectors import fleet as selectors
from tenants.access import Caller, caller_for_user

EVENTS_PER_PAGE = 25


def _caller(request: HttpRequest) -> Caller:
    return caller_for_user(request.user)


def _platform_caller(request: HttpRequest) -> Caller:
    """Fleet-wide pages show every tenant's models: operators (staff) only, 404 for others."""
    caller = _caller(request)
    if not caller.is_platform:
        raise Http404("No such page.")
    return caller


def _page_or_partial(
    request: HttpRequest, page: str, partials: dict[str, str], context: dict
) -> HttpResponse:
    """The whole page, or for htmx the partial whose element id htmx targets (else the first)."""
    if request.htmx:
        target = request.htmx.target or ""
        template = partials.get(target) or next(iter(partials.values()))
        return render(request, template, context)
    return render(request, page, context)


def _charts(trends: dict) -> list[dict]:
    # The SVG is built by deployments.dashboard.charts, which escapes every piece of text it writes.
    return [{"id": c["id"], "svg": mark_safe(c["svg"])} for c in trend_charts(trends)]  # noqa: S308


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    """Fleet cost, savings against dedicated endpoints, utilization, traffic and trends."""
    caller = _caller(request)
    context = {"figures": selectors.fleet_figures(caller=caller)}
    if not request.htmx or request.htmx.target == "overview-charts":
        context["charts"] = _charts(selectors.fleet_trends(caller=caller))
    return _page_or_partial(
        request,
        "dashboard/overview.html",
        {
            "overview-figures": "dashboard/partials/_overview_figures.html",
            "overview-charts": "dashboard/partials/_overview_charts.html",
        },
        context,
    )


@login_required
def endpoint_list(request: HttpRequest) -> HttpResponse:
    """Every endpoint with its instances, cost and memory use (operators)."""
    _platform_caller(request)
    return _page_or_partial(
        request,
        "dashboard/endpoint_list.html",
        {"endpoint-rows": "dashboard/partials/_endpoint_rows.html"},
        {"rows": selectors.endpoints_for_dashboard()},
    )


@login_required
def endpoint_detail(request: HttpRequest, name: str) -> HttpResponse:
    """One endpoint: each instance's memory bar of packed models and per-model traffic."""
    _platform_caller(request)
    try:
        endpoint = selectors.endpoint_by_name(name=name)
    except NotFound as exc:
        raise Http404(exc.message) from exc
    return _page_or_partial(
        request,
        "dashboard/endpoint_detail.html",
        {"endpoint-instances": "dashboard/partials/_endpoint_instances.html"},
        {"detail": selectors.endpoint_detail(endpoint=endpoint)},
    )


@login_required
@require_http_methods(["GET", "POST"])
def what_if(request: HttpRequest) -> HttpResponse:
    """Project the placed fleet's cost on one instance type before deploying anything."""
    _platform_caller(request)
    form = WhatIfForm(request.POST or None)
    result = None
    if request.method == "POST" and form.is_valid():
        try:
            result = selectors.what_if_costs(
                instance_type=form.cleaned_data["instance_type"],
                target_utilization=float(form.cleaned_data["target_utilization"]),
                replicas=form.cleaned_data["replicas"],
            )
        except DomainError as exc:
            form.add_error(exc.field if exc.field in form.fields else "instance_type", exc.message)
    context = {"form": form, "result": result}
    status = 400 if request.method == "POST" and form.errors else 200
    if request.htmx:
        return render(request, "dashboard/partials/_what_if_result.html", context, status=status)
    return render(request, "dashboard/what_if.html", context, status=status)


@login_required
def event_list(request: HttpRequest) -> HttpResponse:
    """The event log (members: their tenants' events), filtered and paginated."""
    caller = _caller(request)
    form = EventFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    events = selectors.events_for_caller(
        caller=caller,
        kind_prefix=filters.get("kind", ""),
        severity=filters.get("severity", ""),
        tenant_slug=filters.get("tenant", ""),
    )
    page = Paginator(events, EVENTS_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return _page_or_partial(
        request,
        "dashboard/event_list.html",
        {"event-rows": "dashboard/partials/_event_rows.html"},
        {"form": form, "page": page, "query": query.urlencode()},
    )
