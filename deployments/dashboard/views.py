"""Dashboard pages for the fleet: overview, endpoints, the cost what-if and the event log.

Thin: resolve the caller, call a selector, render the page, or only its partial for htmx. A form
the page refuses answers 422 with what it shows (the page, or for htmx the partial, which htmx is
configured to swap), naming the field.
"""

from __future__ import annotations

import hashlib
import json

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_http_methods

from config.errors import DomainError, NotFound
from deployments.dashboard.charts import trend_charts
from deployments.dashboard.cloud_charts import cloud_charts
from deployments.dashboard.forms import EventFilterForm, WhatIfForm
from deployments.selectors import cloud_metrics as cloud_selectors
from deployments.selectors import costs as cost_selectors
from deployments.selectors import endpoints as endpoint_selectors
from deployments.selectors import fleet as selectors
from deployments.selectors.rebalance import rebalance_report
from deployments.selectors.traffic import fleet_trends
from deployments.services import rebalance as rebalance_service
from tenants.access import Caller, caller_for_user

EVENTS_PER_PAGE = 25
TENANT_COSTS_PER_PAGE = 50


def _caller(request: HttpRequest) -> Caller:
    return caller_for_user(request.user)


def _platform_caller(request: HttpRequest) -> Caller:
    """Fleet-wide pages show every tenant's models: operators (staff) only, 404 for others."""
    caller = _caller(request)
    if not caller.is_platform:
        raise Http404("No such page.")
    return caller


def _page_or_partial(
    request: HttpRequest, page: str, partials: dict[str, str], context: dict, status: int = 200
) -> HttpResponse:
    """The whole page, or for htmx the partial whose element id htmx targets (else the first)."""
    if request.htmx:
        target = request.htmx.target or ""
        template = partials.get(target) or next(iter(partials.values()))
        return render(request, template, context, status=status)
    return render(request, page, context, status=status)


def _charts(trends: dict) -> list[dict]:
    # The SVG is built by deployments.dashboard.charts, which escapes every piece of text it writes.
    return [{"id": c["id"], "svg": mark_safe(c["svg"])} for c in trend_charts(trends)]  # noqa: S308


def _fleet_cloud(caller: Caller) -> dict | None:
    cloud = cloud_selectors.fleet_cloud_figures(caller=caller)
    if cloud is not None:
        cloud["charts"] = cloud_charts(cloud["trends"], prefix="cloud-fleet", utilization=False)
    return cloud


def _endpoint_cloud(endpoint) -> dict | None:
    cloud = cloud_selectors.endpoint_cloud_figures(endpoint=endpoint)
    if cloud is not None:
        cloud["charts"] = cloud_charts(
            cloud["trends"], prefix="cloud", multi_model=cloud["multi_model"], gpu=cloud["gpu"]
        )
    return cloud


def _version_of(figures: dict) -> str:
    """A short digest of what a live part shows: unchanged figures, unchanged digest."""
    text = json.dumps(figures, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _unchanged(request: HttpRequest, version: str) -> bool:
    """Whether the polling element already shows ``version`` (it sends it as If-None-Match)."""
    return request.headers.get("If-None-Match") == f'"{version}"'


def _refresh(request: HttpRequest, template: str, context: dict, version: str) -> HttpResponse:
    """A live part for its poll: 204 No Content when the element already shows these figures
    (htmx swaps nothing and keeps polling), else the partial with its new version as ETag."""
    if _unchanged(request, version):
        return HttpResponse(status=204)
    response = render(request, template, context)
    response["ETag"] = f'"{version}"'
    return response


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    """Fleet cost, savings against dedicated endpoints, utilization, traffic and trends."""
    caller = _caller(request)
    target = request.htmx.target if request.htmx else None
    if target == "overview-figures":
        # The 5-second refresh: the headline figures only, and nothing when they are unchanged.
        figures = {
            "utilization": selectors.fleet_utilization(caller=caller),
            "costs": cost_selectors.fleet_costs(caller=caller, lists=False),
        }
        version = _version_of(figures)
        context = {"figures": figures, "figures_version": version}
        return _refresh(request, "dashboard/partials/_overview_figures.html", context, version)
    if target == "overview-charts":
        context = {"charts": _charts(fleet_trends(caller=caller))}
        return render(request, "dashboard/partials/_overview_charts.html", context)
    if target == "overview-costs":
        context = {"figures": {"costs": cost_selectors.fleet_costs(caller=caller)}}
        return render(request, "dashboard/partials/_overview_costs.html", context)
    if target == "overview-cloud-metrics":
        context = {"cloud": _fleet_cloud(caller)}
        if context["cloud"] is None:
            return HttpResponse(status=204)  # no SageMaker endpoint any more: keep what is shown
        return render(request, "dashboard/partials/_overview_cloud_metrics.html", context)
    figures = selectors.fleet_figures(caller=caller)
    headline = {**figures, "costs": cost_selectors.headline_costs(figures["costs"])}
    context = {
        "figures": figures,
        "figures_version": _version_of(headline),
        "charts": _charts(fleet_trends(caller=caller)),
        "cloud": _fleet_cloud(caller),
    }
    return render(request, "dashboard/overview.html", context)


@login_required
def tenant_costs(request: HttpRequest) -> HttpResponse:
    """Every tenant's share of the fleet's cost, most expensive first, a page at a time."""
    page = cost_selectors.tenant_costs_page(
        caller=_caller(request), number=request.GET.get("page"), per_page=TENANT_COSTS_PER_PAGE
    )
    return render(request, "dashboard/tenant_costs.html", {"page": page})


@login_required
def endpoint_list(request: HttpRequest) -> HttpResponse:
    """Every endpoint with its instances, cost and memory use (operators), a page at a time."""
    _platform_caller(request)
    page = endpoint_selectors.endpoints_page(page_number=request.GET.get("page"))
    return _page_or_partial(
        request,
        "dashboard/endpoint_list.html",
        {"endpoint-rows": "dashboard/partials/_endpoint_rows.html"},
        {"page": page, "rows": page.object_list},
    )


@login_required
def endpoint_detail(request: HttpRequest, name: str) -> HttpResponse:
    """One endpoint: each instance's memory bar of packed models and a searchable, paginated
    table of its models with their traffic."""
    _platform_caller(request)
    try:
        endpoint = selectors.endpoint_by_name(name=name)
    except NotFound as exc:
        raise Http404(exc.message) from exc
    if request.htmx and request.htmx.target == "endpoint-cloud-metrics":
        context = {"detail": {"endpoint": endpoint}, "cloud": _endpoint_cloud(endpoint)}
        if context["cloud"] is None:
            return HttpResponse(status=204)
        return render(request, "dashboard/partials/_endpoint_cloud_metrics.html", context)
    search = request.GET.get("q", "")[:100]
    detail = endpoint_selectors.endpoint_detail(
        endpoint=endpoint,
        search=search,
        page_number=request.GET.get("page"),
        instance_page_number=request.GET.get("instances"),
    )
    query = request.GET.copy()
    query.pop("page", None)
    instance_query = request.GET.copy()
    instance_query.pop("instances", None)
    version = _version_of(
        {
            "cost": detail["usd_per_hour"],
            "traffic": detail["traffic"],
            "bars": [
                (
                    bar["instance"].pk,
                    bar["instance"].status,
                    bar["used_mb"],
                    bar["models"],
                    [(s["placement"].pk, s["lru_rank"]) for s in bar["segments"]],
                )
                for bar in detail["instances"]
            ],
        }
    )
    context = {
        "detail": detail,
        "query": query.urlencode(),
        "instance_query": instance_query.urlencode(),
        "live_version": version,
        "cloud": _endpoint_cloud(endpoint),
    }
    if request.htmx and request.htmx.target == "endpoint-instances":
        return _refresh(request, "dashboard/partials/_endpoint_instances.html", context, version)
    return _page_or_partial(
        request,
        "dashboard/endpoint_detail.html",
        {"endpoint-placements": "dashboard/partials/_endpoint_placements.html"},
        context,
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
            result = cost_selectors.what_if_costs(
                instance_type=form.cleaned_data["instance_type"],
                target_utilization=float(form.cleaned_data["target_utilization"]),
                replicas=form.cleaned_data["replicas"],
            )
        except DomainError as exc:
            form.add_error(exc.field if exc.field in form.fields else "instance_type", exc.message)
    context = {"form": form, "result": result}
    status = 422 if request.method == "POST" and form.errors else 200
    if request.htmx:
        return render(request, "dashboard/partials/_what_if_result.html", context, status=status)
    return render(request, "dashboard/what_if.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def rebalance(request: HttpRequest) -> HttpResponse:
    """What packing the local fleet afresh would save (GET), and running it (POST)."""
    caller = _platform_caller(request)
    if request.method == "POST":
        report = rebalance_service.request_rebalance(actor=caller.label)
        requested = True
    else:
        report = rebalance_report()
        requested = False
    context = {"rebalance": report.as_dict(), "requested": requested}
    return render(request, "dashboard/partials/_rebalance.html", context)


@login_required
def event_list(request: HttpRequest) -> HttpResponse:
    """The event log (members: their tenants' events), filtered and paginated."""
    caller = _caller(request)
    form = EventFilterForm(request.GET or None)
    query = request.GET.copy()
    query.pop("page", None)
    context = {"form": form, "page": None, "query": query.urlencode()}
    # Filters the log cannot apply are named (422), rather than showing events they do not select.
    refused = form.is_bound and not form.is_valid()
    if not refused:
        filters = form.cleaned_data if form.is_bound else {}
        events = selectors.events_for_caller(
            caller=caller,
            kind_prefix=filters.get("kind", ""),
            severity=filters.get("severity", ""),
            tenant_slug=filters.get("tenant", ""),
        )
        context["page"] = Paginator(events, EVENTS_PER_PAGE).get_page(request.GET.get("page"))
    return _page_or_partial(
        request,
        "dashboard/event_list.html",
        {"event-rows": "dashboard/partials/_event_rows.html"},
        context,
        status=422 if refused else 200,
    )
