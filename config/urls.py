"""Top-level URL map: dashboard, login, admin, API v1, OpenAPI schema and docs, probes."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config import health, views

admin.site.site_header = "TenantML operations"
admin.site.site_title = "TenantML"
admin.site.index_title = "Fleet, tenants and models"

urlpatterns = [
    path("", views.home, name="home"),
    path("dashboard/", include("deployments.dashboard.urls")),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("tenants.api.urls")),
    # Tenant-scoped registry routes and the top-level /api/v1/training-jobs/{id}/ ones.
    path("api/v1/", include("models_registry.api.urls")),
    path("api/v1/", include("deployments.api.urls")),
    path("api/v1/", include("webhooks.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
]

# Under /api/, a path no route matches and a request Django refuses before any view (a body too
# large, too many fields) answer the JSON error envelope, like every API error.
handler400 = "config.exceptions.bad_request"
handler404 = "config.exceptions.not_found"
