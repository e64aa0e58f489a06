from django.urls import path

from deployments.api import candidates, rebalance, views

MODEL = "tenants/<slug:slug>/models/<slug:name>"

urlpatterns = [
    path(f"{MODEL}/deployments/", views.DeploymentView.as_view(), name="deployment"),
    path(
        f"{MODEL}/deployments/rollback",
        views.DeploymentRollbackView.as_view(),
        name="deployment-rollback",
    ),
    path(f"{MODEL}/captures/", views.CapturedDaysView.as_view(), name="captured-days"),
    path(
        f"{MODEL}/captures/<str:day>/dataset",
        views.CapturedDayDatasetView.as_view(),
        name="captured-day-dataset",
    ),
    path(f"{MODEL}/rollouts/current", candidates.CandidateRolloutView.as_view(), name="rollout"),
    path(
        f"{MODEL}/rollouts/strategy",
        candidates.RolloutStrategyView.as_view(),
        name="rollout-strategy",
    ),
    path(
        f"{MODEL}/rollouts/current/promote",
        candidates.PromoteCandidateView.as_view(),
        name="rollout-promote",
    ),
    path(
        f"{MODEL}/rollouts/current/abort",
        candidates.AbortCandidateView.as_view(),
        name="rollout-abort",
    ),
    path(f"{MODEL}/invoke", views.InvokeView.as_view(), name="model-invoke"),
    path("instances/<int:instance_id>/drain", views.InstanceDrainView.as_view(), name="drain"),
    path("events/", views.EventListView.as_view(), name="event-list"),
    path("tenants/<slug:slug>/events/", views.TenantEventListView.as_view(), name="tenant-events"),
    path("fleet/utilization", views.FleetUtilizationView.as_view(), name="fleet-utilization"),
    path("fleet/costs", views.FleetCostsView.as_view(), name="fleet-costs"),
    path("fleet/rebalance", rebalance.RebalanceView.as_view(), name="fleet-rebalance"),
    path("fleet/costs/tenants", views.FleetTenantCostsView.as_view(), name="fleet-tenant-costs"),
    path(
        "fleet/costs/endpoints",
        views.FleetEndpointCostsView.as_view(),
        name="fleet-endpoint-costs",
    ),
]
