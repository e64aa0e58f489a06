"""Registry endpoints: datasets, models, versions, training jobs, promotion. Thin: parse, call a
service or selector, render."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from models_registry import selectors
from models_registry.api.serializers import (
    DatasetSerializer,
    DatasetUploadSerializer,
    ModelVersionSerializer,
    PromoteSerializer,
    TenantModelCreateSerializer,
    TenantModelSerializer,
    TrainingJobCreateSerializer,
    TrainingJobSerializer,
)
from models_registry.dataset_files import MAX_FILE_BYTES, file_too_big_message
from models_registry.exceptions import DatasetTooLarge, ForceNotAllowed
from models_registry.services.datasets import create_dataset
from models_registry.services.promotion import promote_version, rollback_model
from models_registry.services.registry import create_model
from models_registry.services.training import request_training_cancel, start_training_job
from tenants.access import caller_for_request
from tenants.selectors import tenant_for_caller

IDEMPOTENCY_KEY = OpenApiParameter(
    name="Idempotency-Key",
    location=OpenApiParameter.HEADER,
    required=False,
    description="Repeat a request with the same key to get the same job back (max 128 chars).",
)


class DatasetListView(GenericAPIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(responses=DatasetSerializer(many=True))
    def get(self, request, slug: str):
        """The tenant's datasets, newest first; one page of them."""
        tenant = tenant_for_caller(caller=caller_for_request(request), slug=slug)
        page = self.paginate_queryset(selectors.datasets_for_tenant(tenant=tenant))
        return self.get_paginated_response(DatasetSerializer(page, many=True).data)

    @extend_schema(
        request={"multipart/form-data": DatasetUploadSerializer},
        responses={201: DatasetSerializer},
    )
    def post(self, request, slug: str):
        caller = caller_for_request(request)
        tenant = tenant_for_caller(caller=caller, slug=slug)
        serializer = DatasetUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        upload = serializer.validated_data["file"]
        # Refused before the file is read into memory.
        if upload.size > MAX_FILE_BYTES:
            raise DatasetTooLarge(file_too_big_message(upload.size), field="file")
        dataset = create_dataset(
            tenant=tenant,
            name=serializer.validated_data.get("name") or upload.name,
            content=upload.read(),
            filename=upload.name,
            actor=caller.label,
            conflicting_labels=serializer.validated_data.get("conflicting_labels"),
        )
        return Response(DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)


class ModelListView(GenericAPIView):
    @extend_schema(responses=TenantModelSerializer(many=True))
    def get(self, request, slug: str):
        """The tenant's models, by name; one page of them."""
        tenant = tenant_for_caller(caller=caller_for_request(request), slug=slug)
        page = self.paginate_queryset(selectors.models_for_tenant(tenant=tenant))
        return self.get_paginated_response(TenantModelSerializer(page, many=True).data)

    @extend_schema(request=TenantModelCreateSerializer, responses={201: TenantModelSerializer})
    def post(self, request, slug: str):
        caller = caller_for_request(request)
        tenant = tenant_for_caller(caller=caller, slug=slug)
        serializer = TenantModelCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        model = create_model(tenant=tenant, **serializer.validated_data, actor=caller.label)
        return Response(TenantModelSerializer(model).data, status=status.HTTP_201_CREATED)


def _model(request, slug: str, name: str):
    tenant = tenant_for_caller(caller=caller_for_request(request), slug=slug)
    return selectors.model_for_tenant(tenant=tenant, name=name)


class ModelDetailView(APIView):
    @extend_schema(responses=TenantModelSerializer)
    def get(self, request, slug: str, name: str):
        return Response(TenantModelSerializer(_model(request, slug, name)).data)


class VersionListView(GenericAPIView):
    @extend_schema(responses=ModelVersionSerializer(many=True))
    def get(self, request, slug: str, name: str):
        """The model's versions, newest number first; one page of them."""
        versions = selectors.versions_for_model(model=_model(request, slug, name))
        page = self.paginate_queryset(versions)
        return self.get_paginated_response(ModelVersionSerializer(page, many=True).data)


class VersionPromoteView(APIView):
    @extend_schema(request=PromoteSerializer, responses=ModelVersionSerializer)
    def post(self, request, slug: str, name: str, number: int):
        caller = caller_for_request(request)
        version = selectors.version_for_model(model=_model(request, slug, name), number=number)
        serializer = PromoteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        force = serializer.validated_data["force"]
        if force and not caller.is_platform:
            raise ForceNotAllowed(
                "force skips the quality gate and needs a platform token.", field="force"
            )
        version = promote_version(version=version, actor=caller.label, force=force)
        return Response(ModelVersionSerializer(version).data)


class ModelRollbackView(APIView):
    @extend_schema(request=None, responses=ModelVersionSerializer)
    def post(self, request, slug: str, name: str):
        model = _model(request, slug, name)
        version = rollback_model(model=model, actor=caller_for_request(request).label)
        return Response(ModelVersionSerializer(version).data)


class TrainingJobListView(GenericAPIView):
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(responses=TrainingJobSerializer(many=True))
    def get(self, request, slug: str, name: str):
        """The model's training jobs, newest first; one page of them."""
        jobs = selectors.training_jobs_for_model(model=_model(request, slug, name))
        page = self.paginate_queryset(jobs)
        return self.get_paginated_response(TrainingJobSerializer(page, many=True).data)

    @extend_schema(
        request=TrainingJobCreateSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={202: TrainingJobSerializer},
    )
    def post(self, request, slug: str, name: str):
        caller = caller_for_request(request)
        model = _model(request, slug, name)
        serializer = TrainingJobCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        dataset = selectors.dataset_for_training(tenant=model.tenant, reference=data["dataset"])
        job, _created = start_training_job(
            model=model,
            dataset=dataset,
            actor=caller.label,
            hyperparameters=data["hyperparameters"],
            idempotency_key=request.headers.get("Idempotency-Key"),
            backend=data["backend"],
        )
        job = selectors.training_job_for_caller(caller=caller, job_id=job.pk)
        return Response(TrainingJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class TrainingJobDetailView(APIView):
    @extend_schema(responses=TrainingJobSerializer)
    def get(self, request, job_id: int):
        job = selectors.training_job_for_caller(caller=caller_for_request(request), job_id=job_id)
        return Response(TrainingJobSerializer(job).data)


class TrainingJobCancelView(APIView):
    @extend_schema(request=None, responses={202: TrainingJobSerializer})
    def post(self, request, job_id: int):
        caller = caller_for_request(request)
        job = selectors.training_job_for_caller(caller=caller, job_id=job_id)
        request_training_cancel(job=job, actor=caller.label)
        job = selectors.training_job_for_caller(caller=caller, job_id=job_id)
        return Response(TrainingJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)
