"""Dashboard pages for tenants' models: versions, training jobs, deploy, promote, roll back.

The buttons call the same services as the REST API; a DomainError becomes a message on the page
(for htmx: the models partial with that message, answered 422 so the caller can tell it failed).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from config.errors import DomainError, NotFound
from deployments.dashboard.forms import DeployForm
from deployments.selectors.candidates import tenant_candidate_rollouts
from deployments.selectors.costs import fleet_costs
from deployments.selectors.tenants import tenant_models_overview, tenants_matching
from deployments.services import retirement, rollouts
from models_registry import selectors
from models_registry.services.promotion import promote_version
from tenants.access import Caller, caller_for_user
from tenants.models import Tenant
from tenants.selectors import tenant_for_caller


def _tenant(request: HttpRequest, slug: str) -> tuple[Caller, Tenant]:
    """The tenant if this user may see it; 404 otherwise (names of others never leak)."""
    caller = caller_for_user(request.user)
    try:
        return caller, tenant_for_caller(caller=caller, slug=slug)
    except NotFound as exc:
        raise Http404(exc.message) from exc


def _models_context(tenant: Tenant) -> dict:
    rows = tenant_models_overview(tenant=tenant)
    return {
        "tenant": tenant,
        "rows": rows,
        "rolling_out": any(
            r["deployment"] is not None and r["deployment"].status == "rolling_out" for r in rows
        ),
        "modes": DeployForm.base_fields["mode"].choices,
    }


TENANTS_PER_PAGE = 50


def _tenant_costs(tenant: Tenant) -> dict:
    """This tenant's share of the fleet's cost (read from its own placements' holders only)."""
    only = Caller(
        label=f"tenant:{tenant.slug}", is_platform=False, tenant_ids=frozenset({tenant.pk})
    )
    return fleet_costs(caller=only)


@login_required
def tenant_list(request: HttpRequest) -> HttpResponse:
    """The tenants this user may see, by slug, searchable, a page at a time."""
    search = request.GET.get("q", "").strip()[:100]
    tenants = tenants_matching(caller=caller_for_user(request.user), search=search)
    page = Paginator(tenants, TENANTS_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {"page": page, "tenants": page.object_list, "search": search}
    context["query"] = query.urlencode()
    return render(request, "dashboard/tenant_list.html", context)


@login_required
def tenant_detail(request: HttpRequest, slug: str) -> HttpResponse:
    """A tenant's models, versions, deployments, training jobs and share of the fleet's cost."""
    _, tenant = _tenant(request, slug)
    target = request.htmx.target if request.htmx else None
    if target == "tenant-models-status":
        # A rollout's poll: each model's status, buttons and versions, never its deploy form.
        context = _models_context(tenant) | {"oob": True}
        return render(request, "dashboard/partials/_tenant_models_status.html", context)
    context = _models_context(tenant)
    context["costs"] = _tenant_costs(tenant)
    context["jobs"] = selectors.training_jobs_for_tenant(tenant=tenant)
    context["rollouts"] = tenant_candidate_rollouts(tenant=tenant)
    if request.htmx:
        template = {
            "tenant-cost": "dashboard/partials/_tenant_cost.html",
            "tenant-rollouts": "dashboard/partials/_tenant_rollouts.html",
            "tenant-jobs": "dashboard/partials/_training_jobs.html",
        }.get(target or "", "dashboard/partials/_tenant_models.html")
        return render(request, template, context)
    return render(request, "dashboard/tenant_detail.html", context)


@login_required
def training_job(request: HttpRequest, slug: str, job_id: int) -> HttpResponse:
    """One training job's progress; htmx polls the partial until the job is terminal."""
    _, tenant = _tenant(request, slug)
    try:
        job = selectors.training_job_for_tenant(tenant=tenant, job_id=job_id)
    except NotFound as exc:
        raise Http404(exc.message) from exc
    template = (
        "dashboard/partials/_training_job.html" if request.htmx else "dashboard/training_job.html"
    )
    return render(request, template, {"tenant": tenant, "job": job})


def _after_action(request: HttpRequest, tenant: Tenant, *, refused: bool = False) -> HttpResponse:
    """For htmx the tenant's models with the action's message (422 when it was refused: htmx
    is configured to swap a 422, so the reason shows in place); else back to the tenant page,
    which shows the message."""
    if request.htmx:
        context = _models_context(tenant)
        context["show_messages"] = True
        status = 422 if refused else 200
        return render(request, "dashboard/partials/_tenant_models.html", context, status=status)
    return redirect(reverse("dashboard:tenant", args=[tenant.slug]))


def _model(tenant: Tenant, name: str):
    try:
        return selectors.model_for_tenant(tenant=tenant, name=name)
    except NotFound as exc:
        raise Http404(exc.message) from exc


@login_required
@require_POST
def deploy(request: HttpRequest, slug: str, name: str) -> HttpResponse:
    """Request a deployment (``services.rollouts.request_deployment``); the rollout is queued."""
    caller, tenant = _tenant(request, slug)
    model = _model(tenant, name)
    form = DeployForm(request.POST)
    if not form.is_valid():
        for field, errors in form.errors.items():
            messages.error(request, f"{field}: {' '.join(errors)}")
        return _after_action(request, tenant, refused=True)
    data = form.cleaned_data
    try:
        version = (
            selectors.version_for_model(model=model, number=data["version"])
            if data.get("version")
            else None
        )
        deployment, queued = rollouts.request_deployment(
            model=model,
            version=version,
            mode=data.get("mode") or None,
            replicas=data.get("replicas"),
            actor=caller.label,
        )
    except DomainError as exc:
        messages.error(request, exc.message)
        return _after_action(request, tenant, refused=True)
    target = deployment.target_version or deployment.live_version
    if queued:
        messages.success(request, f"{model}: rollout of v{target.number} queued.")
    else:
        messages.info(request, f"{model}: v{target.number} is already deployed that way.")
    return _after_action(request, tenant)


@login_required
@require_POST
def promote(request: HttpRequest, slug: str, name: str, number: int) -> HttpResponse:
    """Promote a version (models_registry.services.promotion.promote_version; the gate applies)."""
    caller, tenant = _tenant(request, slug)
    model = _model(tenant, name)
    try:
        version = selectors.version_for_model(model=model, number=number)
        promote_version(version=version, actor=caller.label)
    except DomainError as exc:
        messages.error(request, exc.message)
        return _after_action(request, tenant, refused=True)
    messages.success(request, f"{version} is now the active version.")
    return _after_action(request, tenant)


@login_required
@require_POST
def rollback(request: HttpRequest, slug: str, name: str) -> HttpResponse:
    """Roll the deployment back (deployments.services.rollouts.rollback_deployment)."""
    caller, tenant = _tenant(request, slug)
    model = _model(tenant, name)
    try:
        deployment = rollouts.rollback_deployment(model=model, actor=caller.label)
    except DomainError as exc:
        messages.error(request, exc.message)
        return _after_action(request, tenant, refused=True)
    target = deployment.target_version or deployment.live_version
    messages.success(
        request,
        f"{model}: rolling back to v{target.number}." if target else f"{model}: rolled back.",
    )
    return _after_action(request, tenant)


@login_required
@require_POST
def retire(request: HttpRequest, slug: str, name: str) -> HttpResponse:
    """Retire the deployment (deployments.services.retirement.retire_deployment)."""
    caller, tenant = _tenant(request, slug)
    model = _model(tenant, name)
    try:
        retirement.retire_deployment(model=model, actor=caller.label)
    except DomainError as exc:
        messages.error(request, exc.message)
        return _after_action(request, tenant, refused=True)
    messages.success(request, f"{model}: retired; its copies are being unloaded.")
    return _after_action(request, tenant)
