"""AWS plumbing shared by training (``models_registry``) and serving (``deployments``).

This module owns how the platform builds boto3 clients, how it reads an AWS error (its code, its
message, whether it is throttling), the full-jitter backoff its own retry loops sleep by, and the
ECR accounts that publish the SageMaker images it launches (PyTorch training, Triton inference).

Retries come in two layers:
- botocore's ``standard`` retry mode, on every client built here, retries what is transient: 5xx
  answers, connection errors and timeouts, and throttling, up to ``MAX_ATTEMPTS`` attempts in all,
  with exponential backoff, full jitter and a per-client retry quota (so an outage does not turn
  into a retry storm).
- Throttling that outlasts those attempts is retried by the callers' own loops on a longer backoff
  (``full_jitter`` below the doubling ceiling; AWS Architecture Blog, "Exponential Backoff And
  Jitter"), and CreateTrainingJob calls stay spaced a second apart by the training client's
  limiter. A call throttled for good is therefore tried ``MAX_ATTEMPTS`` times per loop attempt.
"""

from __future__ import annotations

import random
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

__all__ = [
    "DLC_ACCOUNTS",
    "MAX_ATTEMPTS",
    "PYTORCH_TRAINING_ACCOUNTS",
    "THROTTLING_CODES",
    "TRITON_INFERENCE_ACCOUNTS",
    "client",
    "ecr_image_uri",
    "error_code",
    "error_message",
    "full_jitter",
    "is_throttling",
]

# Attempts in all, the first call included (botocore's standard-mode default).
MAX_ATTEMPTS = 3


def client(service: str, *, region: str | None = None) -> Any:
    """A boto3 client for ``service`` whose transient errors botocore retries (standard mode)."""
    return boto3.client(
        service,
        region_name=region,
        config=Config(retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS}),
    )


# ---------------------------------------------------------------------------------------------
# Reading errors
# ---------------------------------------------------------------------------------------------

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "ProvisionedThroughputExceededException",
        "ProvisionedThroughputExceeded",
        "SlowDown",
    }
)


def error_code(error: ClientError) -> str:
    """The AWS error code of a refused call (``ValidationException``), or ""."""
    return error.response.get("Error", {}).get("Code", "")


def error_message(error: ClientError) -> str:
    """AWS's own message for a refused call, or the exception's text when it sent none."""
    return error.response.get("Error", {}).get("Message", "") or str(error)


def is_throttling(error: ClientError) -> bool:
    """Whether AWS refused the call for its request rate (a throttling code or HTTP 429)."""
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error_code(error) in THROTTLING_CODES or status == 429


def full_jitter(ceiling_s: float) -> float:
    """A pause drawn uniformly from 0 to ``ceiling_s`` (the "full jitter" backoff)."""
    return random.uniform(0.0, ceiling_s)


# ---------------------------------------------------------------------------------------------
# SageMaker's images
# ---------------------------------------------------------------------------------------------

# The AWS Deep Learning Containers accounts by region, as the sagemaker python SDK's
# ``image_uri_config`` "registries" maps list them; they publish both the PyTorch training images
# (``pytorch.json``) and, from Triton 23.12 on, the Triton inference images
# (``sagemaker-tritonserver.json``).
DLC_ACCOUNTS = {
    "af-south-1": "626614931356",
    "ap-east-1": "871362719292",
    "ap-northeast-1": "763104351884",
    "ap-northeast-2": "763104351884",
    "ap-northeast-3": "364406365360",
    "ap-south-1": "763104351884",
    "ap-southeast-1": "763104351884",
    "ap-southeast-2": "763104351884",
    "ap-southeast-3": "907027046896",
    "ca-central-1": "763104351884",
    "ca-west-1": "204538143572",
    "cn-north-1": "727897471807",
    "cn-northwest-1": "727897471807",
    "eu-central-1": "763104351884",
    "eu-north-1": "763104351884",
    "eu-south-1": "692866216735",
    "eu-west-1": "763104351884",
    "eu-west-2": "763104351884",
    "eu-west-3": "763104351884",
    "il-central-1": "780543022126",
    "me-south-1": "217643126080",
    "sa-east-1": "763104351884",
    "us-east-1": "763104351884",
    "us-east-2": "763104351884",
    "us-gov-west-1": "442386744353",
    "us-west-1": "763104351884",
    "us-west-2": "763104351884",
}
# Each image only where the SDK's table for it lists the region.
PYTORCH_TRAINING_ACCOUNTS = {
    region: account for region, account in DLC_ACCOUNTS.items() if region != "ca-west-1"
}
TRITON_INFERENCE_ACCOUNTS = {
    region: account for region, account in DLC_ACCOUNTS.items() if region != "us-gov-west-1"
}


def ecr_image_uri(*, account: str, region: str, repository: str, tag: str) -> str:
    """An ECR image URI; China regions live under ``amazonaws.com.cn``."""
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{domain}/{repository}:{tag}"
