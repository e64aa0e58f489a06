"""API permissions shared by every app's views."""

from rest_framework.permissions import BasePermission

from tenants.access import caller_for_request


class IsPlatformCaller(BasePermission):
    """Operators only: a platform token or a staff user."""

    message = "This operation needs a platform token."
    # Read by the OpenAPI schema, which documents a 403 for every operation this guards.
    platform_only = True

    def has_permission(self, request, view) -> bool:
        return (
            bool(request.user and request.user.is_authenticated)
            and caller_for_request(request).is_platform
        )
