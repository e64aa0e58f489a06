"""Fixtures for the SageMaker backend's tests on moto: AWS faked in-process, the platform
configured for SageMaker, and a packaged version whose image package exists."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws
from moto.sagemaker.responses import SageMakerResponse

from config.celery import app
from config.env import ArtifactStore
from deployments.backends.sagemaker.deploy import serving_image
from models_registry.models import ModelVersion
from tests.deployments.backends.sagemaker.support import BUCKET, REGION, ROLE
from tests.factories import ModelVersionFactory, TenantFactory, TenantModelFactory


@pytest.fixture
def aws(settings, monkeypatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    settings.ARTIFACT_STORE = ArtifactStore(kind="s3", root=f"{BUCKET}/platform")
    settings.TENANTML_SAGEMAKER_ROLE_ARN = ROLE
    settings.TENANTML_AWS_REGION = REGION
    settings.TENANTML_DEPLOY_BACKEND = "sagemaker"
    monkeypatch.setattr("deployments.backends.sagemaker.deploy.WAIT_DELAY_S", 0)
    # moto has no inference components; an account these tests never give one lists none
    # (the SageMaker stand-in implements them for real).
    monkeypatch.setattr(
        SageMakerResponse,
        "list_inference_components",
        lambda self: json.dumps({"InferenceComponents": []}),
        raising=False,
    )
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        yield
    app.conf.task_always_eager = previous


@pytest.fixture
def deployed_version(aws):
    model = TenantModelFactory(tenant=TenantFactory(slug="acme"), name="intents")
    key = "platform/packages/acme/intents/1/model.tar.gz"
    boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key=key, Body=b"package")
    # Its package for the serving image was built already (the stand-in tests build real ones).
    version = ModelVersionFactory(
        model=model,
        number=1,
        status=ModelVersion.Status.READY,
        package_uri=f"s3://{BUCKET}/{key}",
        sha256="0" * 64,
        host_memory_mb=114.0,
        image_package_uri=f"s3://{BUCKET}/{key}",
        image_uri=serving_image(),
        image_python="3.10",
    )
    model.active_version = version
    model.save()
    return version
