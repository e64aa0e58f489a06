"""Who is calling: one shape for API tokens and dashboard users, so every read is scoped alike."""

from __future__ import annotations

from dataclasses import dataclass

from tenants.models import ApiToken, Membership


@dataclass(frozen=True)
class Caller:
    """A platform caller sees every tenant; any other caller sees only ``tenant_ids``."""

    label: str
    is_platform: bool
    tenant_ids: frozenset[int]

    def can_see(self, tenant_id: int) -> bool:
        return self.is_platform or tenant_id in self.tenant_ids


def caller_for_token(token: ApiToken) -> Caller:
    return Caller(
        label=f"token:{token.prefix}",
        is_platform=token.is_platform,
        tenant_ids=frozenset() if token.is_platform else frozenset({token.tenant_id}),
    )


def caller_for_user(user) -> Caller:
    if user.is_staff:
        return Caller(label=f"user:{user.get_username()}", is_platform=True, tenant_ids=frozenset())
    ids = Membership.objects.filter(user=user, tenant__status="active").values_list(
        "tenant_id", flat=True
    )
    return Caller(label=f"user:{user.get_username()}", is_platform=False, tenant_ids=frozenset(ids))


def caller_for_request(request) -> Caller:
    """The caller of an authenticated DRF or Django request."""
    token = getattr(request, "auth", None)
    if isinstance(token, ApiToken):
        return caller_for_token(token)
    return caller_for_user(request.user)
