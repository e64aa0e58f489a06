from django.urls import path

from tenants.api import views

urlpatterns = [
    path("tenants/", views.TenantListView.as_view(), name="tenant-list"),
    path("tenants/<slug:slug>/", views.TenantDetailView.as_view(), name="tenant-detail"),
    path("tenants/<slug:slug>/tokens/", views.TenantTokenListView.as_view(), name="tenant-tokens"),
    path(
        "tenants/<slug:slug>/tokens/<int:token_id>/",
        views.TenantTokenDetailView.as_view(),
        name="tenant-token-detail",
    ),
]
