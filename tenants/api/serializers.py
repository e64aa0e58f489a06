from django.db import models
from rest_framework import serializers

from config.fields import TextField
from tenants.models import SLUG_VALIDATOR, ApiToken, Tenant


class TenantSerializer(serializers.ModelSerializer):
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: TextField,
    }

    class Meta:
        model = Tenant
        fields = ["slug", "name", "tier", "status", "created_at"]
        read_only_fields = ["status", "created_at"]
        # Uniqueness is the service's to report (409); the slug's shape is checked here too, so
        # the schema states it.
        extra_kwargs = {"slug": {"validators": [SLUG_VALIDATOR]}}


class TokenCreateSerializer(serializers.Serializer):
    name = TextField(max_length=100)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class TokenSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "scope",
            "tenant",
            "prefix",
            "access_key_id",
            "created_at",
            "last_used_at",
            "expires_at",
            "revoked_at",
        ]
        read_only_fields = fields


class IssuedTokenSerializer(TokenSerializer):
    token = serializers.CharField(help_text="The secret; shown only in this response.")
    aws_access_key_id = serializers.CharField(
        help_text="Access key id for SigV4 clients (boto3 sagemaker-runtime); not secret."
    )
    aws_secret_access_key = serializers.CharField(
        help_text="Secret access key for SigV4 clients; shown only in this response."
    )

    class Meta(TokenSerializer.Meta):
        fields = [
            *TokenSerializer.Meta.fields,
            "token",
            "aws_access_key_id",
            "aws_secret_access_key",
        ]
        read_only_fields = fields
