"""Tenant and token endpoints; thin: parse, call a service or selector, render."""

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import DomainError, NotFound
from config.openapi import error_responses
from tenants import selectors, services
from tenants.access import caller_for_request
from tenants.api.permissions import IsPlatformCaller
from tenants.api.serializers import (
    IssuedTokenSerializer,
    TenantSerializer,
    TokenCreateSerializer,
    TokenSerializer,
)


class TenantListView(GenericAPIView):
    @extend_schema(
        operation_id="listTenants",
        tags=["Tenants"],
        summary="List tenants",
        description="The tenants the caller may see, by slug: every tenant for a platform "
        "token, its own tenant for a tenant token.",
        responses=TenantSerializer(many=True),
    )
    def get(self, request):
        """The tenants the caller may see, by slug; one page of them."""
        tenants = selectors.visible_tenants(caller=caller_for_request(request))
        page = self.paginate_queryset(tenants)
        return self.get_paginated_response(TenantSerializer(page, many=True).data)

    @extend_schema(
        operation_id="createTenant",
        tags=["Tenants"],
        summary="Create a tenant",
        description="Registers a new tenant under a unique slug; it can then be given tokens, "
        "datasets and models. Platform tokens only.",
        request=TenantSerializer,
        responses={
            201: TenantSerializer,
            **error_responses(
                {403: "Creating tenants needs a platform token.", 409: "The slug is taken."}
            ),
        },
    )
    def post(self, request):
        if not IsPlatformCaller().has_permission(request, self):
            self.permission_denied(request, message=IsPlatformCaller.message)
        serializer = TenantSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        tenant = services.create_tenant(
            **serializer.validated_data, actor=caller_for_request(request).label
        )
        return Response(TenantSerializer(tenant).data, status=status.HTTP_201_CREATED)


class TenantDetailView(APIView):
    @extend_schema(
        operation_id="getTenant",
        tags=["Tenants"],
        summary="Get a tenant",
        description="One tenant's name, tier and status.",
        responses=TenantSerializer,
    )
    def get(self, request, slug: str):
        tenant = selectors.tenant_for_caller(caller=caller_for_request(request), slug=slug)
        return Response(TenantSerializer(tenant).data)


class TenantTokenListView(GenericAPIView):
    @extend_schema(
        operation_id="listTokens",
        tags=["Tokens"],
        summary="List a tenant's tokens",
        description="The tenant's tokens, revoked ones too, newest first: name, prefix, access "
        "key id, last use and expiry. Never their secrets.",
        responses=TokenSerializer(many=True),
    )
    def get(self, request, slug: str):
        """The tenant's tokens (revoked ones too, never their secrets), newest first; one page."""
        tenant = selectors.tenant_for_caller(caller=caller_for_request(request), slug=slug)
        page = self.paginate_queryset(selectors.tokens_for_tenant(tenant=tenant))
        return self.get_paginated_response(TokenSerializer(page, many=True).data)

    @extend_schema(
        operation_id="issueToken",
        tags=["Tokens"],
        summary="Issue a token",
        description="A new token for the tenant. The answer carries its secret and its SigV4 "
        "secret access key, which are shown only here: store them now.",
        request=TokenCreateSerializer,
        responses={201: IssuedTokenSerializer},
    )
    def post(self, request, slug: str):
        caller = caller_for_request(request)
        tenant = selectors.tenant_for_caller(caller=caller, slug=slug)
        serializer = TokenCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        expires_at = serializer.validated_data.get("expires_at")
        if expires_at is not None and expires_at <= timezone.now():
            raise DomainError("expires_at must be in the future.", field="expires_at")
        issued = services.issue_token(
            name=serializer.validated_data["name"],
            tenant=tenant,
            expires_at=expires_at,
            actor=caller.label,
        )
        data = TokenSerializer(issued.token).data | {
            "token": issued.secret,
            "aws_access_key_id": issued.access_key_id,
            "aws_secret_access_key": issued.secret_access_key,
        }
        return Response(data, status=status.HTTP_201_CREATED)


class TenantTokenDetailView(APIView):
    @extend_schema(
        operation_id="revokeToken",
        tags=["Tokens"],
        summary="Revoke a token",
        description="The token stops authenticating at once (the inference proxy's cache of "
        "checked tokens forgets it within PROXY_AUTH_TTL_S). Revoking a revoked token changes "
        "nothing.",
        responses={200: TokenSerializer},
    )
    def delete(self, request, slug: str, token_id: int):
        caller = caller_for_request(request)
        tenant = selectors.tenant_for_caller(caller=caller, slug=slug)
        token = selectors.tokens_for_tenant(tenant=tenant).filter(pk=token_id).first()
        if token is None:
            raise NotFound(f"No token {token_id} for tenant {slug!r}.")
        token = services.revoke_token(token=token, actor=caller.label)
        return Response(TokenSerializer(token).data)
