"""Registry endpoints: datasets, models, versions, training jobs, promotion. Thin: parse, call a
service or selector, render."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from config.filters import query_filters
from config.openapi import error_responses
from models_registry import selectors
from models_registry.api.serializers import (
    DatasetSerializer,
    DatasetUploadSerializer,
    ModelVersionSerializer,
    PromoteSerializer,
    TenantModelCreateSerializer,
    TenantModelSerializer,
    TrainingJobCreateSerializer,
    TrainingJobFilterSerializer,
    TrainingJobSerializer,
    VersionFilterSerializer,
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
    # What start_training_job accepts: 1 to 128 characters, not all of them blank.
    type={"type": "string", "minLength": 1, "maxLength": 128, "pattern": r"\S"},
)


class DatasetListView(GenericAPIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        operation_id="listDatasets",
        tags=["Datasets"],
        summary="List a tenant's datasets",
        description="The tenant's datasets, newest first, with their rows, labels and the "
        "train/validation split.",
        responses=DatasetSerializer(many=True),
    )
    def get(self, request, slug: str):
        """The tenant's datasets, newest first; one page of them."""
        tenant = tenant_for_caller(caller=caller_for_request(request), slug=slug)
        page = self.paginate_queryset(selectors.datasets_for_tenant(tenant=tenant))
        return self.get_paginated_response(DatasetSerializer(page, many=True).data)

    @extend_schema(
        operation_id="uploadDataset",
        tags=["Datasets"],
        summary="Upload a dataset",
        description="A CSV or JSON Lines file of text,label rows (and group, for embedding "
        "models) or text,reply rows (for reply autocomplete models), as multipart/form-data. "
        "A training job checks that its model's kind trains on the dataset's columns. Every "
        "row is checked and the file is split into train and validation rows; a file with "
        "problems is refused whole, naming the rows.",
        request={"multipart/form-data": DatasetUploadSerializer},
        responses={
            201: DatasetSerializer,
            **error_responses(
                {
                    400: "The file is not a valid dataset; the message names the rows and "
                    "fields at fault.",
                    413: "The file is larger than the upload limit.",
                    409: "The tenant already has a dataset of this name.",
                }
            ),
        },
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
    @extend_schema(
        operation_id="listModels",
        tags=["Models"],
        summary="List a tenant's models",
        description="The tenant's models by name, each with its kind and active version.",
        responses=TenantModelSerializer(many=True),
    )
    def get(self, request, slug: str):
        """The tenant's models, by name; one page of them."""
        tenant = tenant_for_caller(caller=caller_for_request(request), slug=slug)
        page = self.paginate_queryset(selectors.models_for_tenant(tenant=tenant))
        return self.get_paginated_response(TenantModelSerializer(page, many=True).data)

    @extend_schema(
        operation_id="createModel",
        tags=["Models"],
        summary="Create a model",
        description="A named model of one of the platform's kinds; train versions of it next.",
        request=TenantModelCreateSerializer,
        responses={
            201: TenantModelSerializer,
            **error_responses({409: "The tenant already has a model of this name."}),
        },
    )
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
    @extend_schema(
        operation_id="getModel",
        tags=["Models"],
        summary="Get a model",
        description="One model's kind, description and active version.",
        responses=TenantModelSerializer,
    )
    def get(self, request, slug: str, name: str):
        return Response(TenantModelSerializer(_model(request, slug, name)).data)


class VersionListView(GenericAPIView):
    @extend_schema(
        operation_id="listVersions",
        tags=["Versions"],
        summary="List a model's versions",
        description="The model's versions, newest number first, with their metrics, sizes and "
        "status; `?status=` keeps only those in one status.",
        parameters=[VersionFilterSerializer],
        responses=ModelVersionSerializer(many=True),
    )
    def get(self, request, slug: str, name: str):
        filters = VersionFilterSerializer(data=query_filters(request))
        filters.is_valid(raise_exception=True)
        versions = selectors.versions_for_model(
            model=_model(request, slug, name), status=filters.validated_data.get("status", "")
        )
        page = self.paginate_queryset(versions)
        return self.get_paginated_response(ModelVersionSerializer(page, many=True).data)


class VersionPromoteView(APIView):
    @extend_schema(
        operation_id="promoteVersion",
        tags=["Versions"],
        summary="Promote a version",
        description="Make a ready version the model's active one, if it passes the quality gate "
        "against the current active version. `force` skips the gate (platform tokens only). "
        "Deployments keep serving what they serve until redeployed.",
        request=PromoteSerializer,
        responses={
            200: ModelVersionSerializer,
            **error_responses(
                {
                    403: "force needs a platform token.",
                    409: "The version is not ready, or it scored worse than the active version "
                    "(the quality gate).",
                }
            ),
        },
    )
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
    @extend_schema(
        operation_id="rollbackModel",
        tags=["Models"],
        summary="Roll back the active version",
        description="Make the version that was active before the current one active again; "
        "answers the version now active.",
        request=None,
        responses={
            200: ModelVersionSerializer,
            **error_responses({409: "There is no earlier version to roll back to."}),
        },
    )
    def post(self, request, slug: str, name: str):
        model = _model(request, slug, name)
        version = rollback_model(model=model, actor=caller_for_request(request).label)
        return Response(ModelVersionSerializer(version).data)


class TrainingJobListView(GenericAPIView):
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(
        operation_id="listTrainingJobs",
        tags=["Training jobs"],
        summary="List a model's training jobs",
        description="The model's training jobs, newest first, with their progress and outcome; "
        "`?status=` keeps only those in one status.",
        parameters=[TrainingJobFilterSerializer],
        responses=TrainingJobSerializer(many=True),
    )
    def get(self, request, slug: str, name: str):
        filters = TrainingJobFilterSerializer(data=query_filters(request))
        filters.is_valid(raise_exception=True)
        jobs = selectors.training_jobs_for_model(
            model=_model(request, slug, name), status=filters.validated_data.get("status", "")
        )
        page = self.paginate_queryset(jobs)
        return self.get_paginated_response(TrainingJobSerializer(page, many=True).data)

    @extend_schema(
        operation_id="createTrainingJob",
        tags=["Training jobs"],
        summary="Train a new version",
        description="Queue a training job of the model on one of the tenant's datasets. Follow "
        "it at /api/v1/training-jobs/{id}/. The same request again (or the same "
        "Idempotency-Key) answers the same job instead of starting another.",
        request=TrainingJobCreateSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={
            202: TrainingJobSerializer,
            **error_responses({409: "The Idempotency-Key was used for a different request."}),
        },
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
    @extend_schema(
        operation_id="getTrainingJob",
        tags=["Training jobs"],
        summary="Get a training job",
        description="The job's status and progress, its metrics and log tail, and the version "
        "it produced with the quality gate's outcome.",
        responses=TrainingJobSerializer,
    )
    def get(self, request, job_id: int):
        job = selectors.training_job_for_caller(caller=caller_for_request(request), job_id=job_id)
        return Response(TrainingJobSerializer(job).data)


class TrainingJobCancelView(APIView):
    @extend_schema(
        operation_id="cancelTrainingJob",
        tags=["Training jobs"],
        summary="Cancel a training job",
        description="Ask a queued or running job to stop; it reaches `cancelled` once its "
        "local worker has stopped or, for a SageMaker job, once SageMaker reports it `Stopped` "
        "(the platform calls StopTrainingJob). A cancelled job's artifacts are never registered "
        "or promoted, even if it finished before the stop took hold.",
        request=None,
        responses={
            202: TrainingJobSerializer,
            **error_responses({409: "The job has already finished."}),
        },
    )
    def post(self, request, job_id: int):
        caller = caller_for_request(request)
        job = selectors.training_job_for_caller(caller=caller, job_id=job_id)
        request_training_cancel(job=job, actor=caller.label)
        job = selectors.training_job_for_caller(caller=caller, job_id=job_id)
        return Response(TrainingJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)
