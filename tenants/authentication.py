"""DRF authentication by ``Authorization: Bearer <token>``."""

from __future__ import annotations

from dataclasses import dataclass

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from tenants.exceptions import InvalidToken
from tenants.models import ApiToken
from tenants.services import authenticate_token


@dataclass(frozen=True)
class TokenPrincipal:
    """The caller behind a token; stands in for ``request.user`` on API requests."""

    token: ApiToken

    is_authenticated = True
    is_anonymous = False
    is_staff = False

    @property
    def is_platform(self) -> bool:
        return self.token.is_platform

    @property
    def tenant(self):
        return self.token.tenant

    def __str__(self) -> str:
        return f"token:{self.token.prefix}"


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        parts = header.split()
        if parts[0].lower() != self.keyword.lower():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <token>'.")
        try:
            token = authenticate_token(secret=parts[1])
        except InvalidToken as exc:
            raise exceptions.AuthenticationFailed(exc.message) from exc
        return TokenPrincipal(token=token), token

    def authenticate_header(self, request) -> str:
        return self.keyword


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """Describes the bearer token in the OpenAPI schema."""

    target_class = "tenants.authentication.BearerTokenAuthentication"
    name = "BearerToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A tenant token (one tenant's resources) or a platform token (all).",
        }
