"""TenantML's Python client: typed calls to the REST API, its errors as exceptions, retries as
the platform asks, and helpers that wait for a training job or a deployment."""

from tenantml_client.client import Client, __version__
from tenantml_client.errors import (
    AuthenticationError,
    ClientError,
    Conflict,
    ConnectionFailed,
    DeploymentFailed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ServerError,
    TenantMLError,
    TrainingFailed,
    Unavailable,
    UpstreamError,
    ValidationError,
    WaitTimeout,
)
from tenantml_client.pagination import Pages
from tenantml_client.retries import RetryPolicy
from tenantml_client.types import (
    Dataset,
    Deployment,
    Invocation,
    IssuedToken,
    Model,
    Tenant,
    TrainingJob,
    Version,
)

__all__ = [
    "AuthenticationError",
    "Client",
    "ClientError",
    "Conflict",
    "ConnectionFailed",
    "Dataset",
    "Deployment",
    "DeploymentFailed",
    "Invocation",
    "IssuedToken",
    "Model",
    "NotFound",
    "Pages",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "Tenant",
    "TenantMLError",
    "TrainingFailed",
    "TrainingJob",
    "Unavailable",
    "UpstreamError",
    "ValidationError",
    "Version",
    "WaitTimeout",
    "__version__",
]
