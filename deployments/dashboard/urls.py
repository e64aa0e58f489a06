"""The dashboard's pages (each also answers htmx with its refreshing partial)."""

from django.urls import path

from deployments.dashboard import tenants as registry
from deployments.dashboard import views as fleet

app_name = "dashboard"

TENANT = "tenants/<slug:slug>"
MODEL = f"{TENANT}/models/<slug:name>"

urlpatterns = [
    path("", fleet.overview, name="overview"),
    path("endpoints/", fleet.endpoint_list, name="endpoints"),
    path("endpoints/<str:name>/", fleet.endpoint_detail, name="endpoint"),
    path("costs/tenants/", fleet.tenant_costs, name="tenant-costs"),
    path("what-if/", fleet.what_if, name="what-if"),
    path("what-if/rebalance", fleet.rebalance, name="rebalance"),
    path("events/", fleet.event_list, name="events"),
    path("tenants/", registry.tenant_list, name="tenants"),
    path(f"{TENANT}/", registry.tenant_detail, name="tenant"),
    path(f"{TENANT}/training-jobs/<int:job_id>/", registry.training_job, name="training-job"),
    path(f"{MODEL}/deploy", registry.deploy, name="deploy"),
    path(f"{MODEL}/rollback", registry.rollback, name="rollback"),
    path(f"{MODEL}/retire", registry.retire, name="retire"),
    path(f"{MODEL}/versions/<int:number>/promote", registry.promote, name="promote"),
]
