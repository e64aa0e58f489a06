"""``Client``: the product team's workflow over the REST API — datasets, models, training jobs,
versions, deployments, inference — with typed answers, typed errors, retries and wait helpers."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx

from tenantml_client import errors
from tenantml_client.pagination import Pages
from tenantml_client.progress import ProgressDisplay
from tenantml_client.retries import (
    IDEMPOTENT_METHODS,
    RETRIED_STATUSES,
    RetryPolicy,
    parse_retry_after,
)
from tenantml_client.types import (
    Dataset,
    Deployment,
    Invocation,
    IssuedToken,
    Model,
    Tenant,
    TrainingJob,
    Version,
    build,
)

__version__ = "0.1.0"

logger = logging.getLogger("tenantml_client")

API_PREFIX = "/api/v1"
DEFAULT_PAGE_SIZE = 100
# Connection failures that happen before a byte of the request is sent: safe to retry for any
# request, whatever its method.
_NOTHING_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

JobProgress = bool | Callable[[TrainingJob], None]
DeploymentProgress = bool | Callable[[Deployment], None]


def _segment(value: str | int) -> str:
    return quote(str(value), safe="")


class Client:
    """A TenantML API client.

    ``base_url`` is the platform's address (``https://ml.example.com``; a trailing ``/api/v1``
    is accepted); ``token`` an API token (a tenant's, or a platform token for every tenant).
    Refusals raise subclasses of ``TenantMLError``; 429 and 503 answers are retried as their
    Retry-After asks, within ``retry`` (a ``RetryPolicy``).
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_url:
            raise ValueError("base_url is required (e.g. https://ml.example.com).")
        if not token:
            raise ValueError("token is required (an API token, tml_...).")
        root = base_url.rstrip("/")
        if root.endswith(API_PREFIX):
            root = root[: -len(API_PREFIX)]
        self.base_url = root
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=root + API_PREFIX,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "User-Agent": f"tenantml-client/{__version__}",
            },
            timeout=timeout_s,
            transport=transport,
        )

    @classmethod
    def from_env(cls, **options: Any) -> Client:
        """A client configured by ``TENANTML_URL`` and ``TENANTML_TOKEN``."""
        return cls(
            os.environ.get("TENANTML_URL", ""), os.environ.get("TENANTML_TOKEN", ""), **options
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- Tenants and tokens ----------------------------------------------------------------

    def list_tenants(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> Pages[Tenant]:
        """The tenants this token may see, by slug."""
        return self._pages("/tenants/", Tenant, page_size=page_size)

    def get_tenant(self, tenant: str) -> Tenant:
        return build(Tenant, self._json("GET", f"/tenants/{_segment(tenant)}/"))

    def create_tenant(self, slug: str, name: str, *, tier: str | None = None) -> Tenant:
        """A new tenant (platform tokens only)."""
        body: dict[str, Any] = {"slug": slug, "name": name}
        if tier is not None:
            body["tier"] = tier
        return build(Tenant, self._json("POST", "/tenants/", json=body))

    def issue_token(self, tenant: str, name: str) -> IssuedToken:
        """A new API token for ``tenant``; its secret is in this answer only."""
        data = self._json("POST", f"/tenants/{_segment(tenant)}/tokens/", json={"name": name})
        return build(IssuedToken, data)

    # --- Datasets --------------------------------------------------------------------------

    def upload_dataset(
        self,
        tenant: str,
        file: str | os.PathLike[str] | bytes | BinaryIO,
        *,
        name: str | None = None,
        filename: str | None = None,
    ) -> Dataset:
        """Upload a CSV or JSON Lines file of ``text,label`` rows; ``name`` defaults to the file's
        name, and is what ``start_training`` is given as its dataset."""
        if isinstance(file, bytes):
            content, default_name = file, "dataset.csv"
        elif isinstance(file, str | os.PathLike):
            path = Path(file)
            content, default_name = path.read_bytes(), path.name
        else:
            content = file.read()
            default_name = Path(getattr(file, "name", "dataset.csv")).name
        upload_name = filename or default_name
        data = {"name": name} if name else None
        answer = self._json(
            "POST",
            f"/tenants/{_segment(tenant)}/datasets/",
            files={"file": (upload_name, content, "application/octet-stream")},
            data=data,
        )
        return build(Dataset, answer)

    def list_datasets(self, tenant: str, *, page_size: int = DEFAULT_PAGE_SIZE) -> Pages[Dataset]:
        """The tenant's datasets, newest first."""
        return self._pages(f"/tenants/{_segment(tenant)}/datasets/", Dataset, page_size=page_size)

    # --- Models and versions ---------------------------------------------------------------

    def create_model(self, tenant: str, name: str, kind: str, *, description: str = "") -> Model:
        """A new model of ``kind`` (``intent-classifier``, ``embedding``) for ``tenant``."""
        body = {"name": name, "kind": kind, "description": description}
        return build(Model, self._json("POST", f"/tenants/{_segment(tenant)}/models/", json=body))

    def get_model(self, tenant: str, model: str) -> Model:
        return build(Model, self._json("GET", self._model_path(tenant, model) + "/"))

    def list_models(self, tenant: str, *, page_size: int = DEFAULT_PAGE_SIZE) -> Pages[Model]:
        """The tenant's models, by name."""
        return self._pages(f"/tenants/{_segment(tenant)}/models/", Model, page_size=page_size)

    def list_versions(
        self,
        tenant: str,
        model: str,
        *,
        status: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Pages[Version]:
        """The model's versions, newest first (only those in ``status``, if given)."""
        return self._pages(
            self._model_path(tenant, model) + "/versions/",
            Version,
            page_size=page_size,
            status=status,
        )

    def promote_version(
        self, tenant: str, model: str, number: int, *, force: bool = False
    ) -> Version:
        """Make version ``number`` the active one (``force`` skips the quality gate; platform
        tokens only)."""
        path = self._model_path(tenant, model) + f"/versions/{int(number)}/promote"
        return build(Version, self._json("POST", path, json={"force": force}))

    def rollback_model(self, tenant: str, model: str) -> Version:
        """Make the previously active version the active one again."""
        return build(Version, self._json("POST", self._model_path(tenant, model) + "/rollback"))

    # --- Training jobs ---------------------------------------------------------------------

    def start_training(
        self,
        tenant: str,
        model: str,
        dataset: str | int,
        *,
        hyperparameters: dict[str, Any] | None = None,
        backend: str | None = None,
        idempotency_key: str | None = None,
    ) -> TrainingJob:
        """Queue a training job on ``dataset`` (its name or id).

        The request carries an Idempotency-Key (a new one unless given), so a retry after a broken
        connection gets the same job back instead of starting a second one; pass your own key to
        make a whole script safe to run again.
        """
        body: dict[str, Any] = {"dataset": str(dataset)}
        if hyperparameters is not None:
            body["hyperparameters"] = hyperparameters
        if backend is not None:
            body["backend"] = backend
        key = idempotency_key or str(uuid.uuid4())
        answer = self._json(
            "POST",
            self._model_path(tenant, model) + "/training-jobs/",
            json=body,
            headers={"Idempotency-Key": key},
        )
        return build(TrainingJob, answer)

    def get_training_job(self, job_id: int | TrainingJob) -> TrainingJob:
        return build(TrainingJob, self._json("GET", f"/training-jobs/{_job_id(job_id)}/"))

    def list_training_jobs(
        self,
        tenant: str,
        model: str,
        *,
        status: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Pages[TrainingJob]:
        """The model's training jobs, newest first (only those in ``status``, if given)."""
        return self._pages(
            self._model_path(tenant, model) + "/training-jobs/",
            TrainingJob,
            page_size=page_size,
            status=status,
        )

    def cancel_training_job(self, job_id: int | TrainingJob) -> TrainingJob:
        """Ask a queued or running job to stop (a queued one is cancelled at once)."""
        return build(TrainingJob, self._json("POST", f"/training-jobs/{_job_id(job_id)}/cancel"))

    def wait_for_training(
        self,
        job_id: int | TrainingJob,
        *,
        progress: JobProgress = False,
        poll_interval_s: float = 1.0,
        timeout_s: float = 3600.0,
    ) -> TrainingJob:
        """Poll the job until it ends; return it when it succeeded.

        Raises ``TrainingFailed`` (with the job) when it failed or was cancelled, ``WaitTimeout``
        after ``timeout_s``. ``progress=True`` draws a bar of the job's progress on stderr; a
        callable gets each polled job instead.
        """
        number = _job_id(job_id)
        display = ProgressDisplay(f"training job {number}") if progress is True else None
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                job = self.get_training_job(number)
                if display is not None:
                    display.update(job.status, job.progress_pct)
                elif callable(progress):
                    progress(job)
                if job.status == "succeeded":
                    return job
                if job.status in ("failed", "cancelled"):
                    reason = f": {job.failure_reason}" if job.failure_reason else "."
                    raise errors.TrainingFailed(
                        f"Training job {number} {job.status}{reason}", job=job
                    )
                if time.monotonic() >= deadline:
                    raise errors.WaitTimeout(
                        f"Training job {number} is still {job.status} ({job.progress_pct}%) "
                        f"after {timeout_s:g} s.",
                        code="wait_timeout",
                    )
                self._sleep(poll_interval_s)
        finally:
            if display is not None:
                display.close()

    # --- Deployments and inference ---------------------------------------------------------

    def get_deployment(self, tenant: str, model: str) -> Deployment:
        return build(
            Deployment, self._json("GET", self._model_path(tenant, model) + "/deployments/")
        )

    def deploy(
        self,
        tenant: str,
        model: str,
        *,
        version: int | None = None,
        mode: str | None = None,
        replicas: int | None = None,
        wait: bool = False,
        progress: DeploymentProgress = False,
    ) -> Deployment:
        """Roll out ``version`` (default: the model's active version). The answer is the
        deployment as queued; with ``wait`` it is the deployment once it serves (see
        ``wait_for_deployment``, which ``progress`` is passed to)."""
        body: dict[str, Any] = {}
        if version is not None:
            body["version"] = version
        if mode is not None:
            body["mode"] = mode
        if replicas is not None:
            body["replicas"] = replicas
        path = self._model_path(tenant, model) + "/deployments/"
        deployment = build(Deployment, self._json("POST", path, json=body))
        if not wait:
            return deployment
        return self.wait_for_deployment(tenant, model, version=version, progress=progress)

    def undeploy(self, tenant: str, model: str) -> Deployment:
        """Retire the deployment: the model stops answering and its copies are unloaded."""
        path = self._model_path(tenant, model) + "/deployments/"
        return build(Deployment, self._json("DELETE", path))

    def rollback_deployment(self, tenant: str, model: str) -> Deployment:
        """Serve the previously live version again."""
        path = self._model_path(tenant, model) + "/deployments/rollback"
        return build(Deployment, self._json("POST", path))

    def wait_for_deployment(
        self,
        tenant: str,
        model: str,
        *,
        version: int | None = None,
        progress: DeploymentProgress = False,
        poll_interval_s: float = 1.0,
        timeout_s: float = 1800.0,
    ) -> Deployment:
        """Poll the deployment until it is live with no rollout pending (serving ``version``,
        if given) and return it.

        Raises ``DeploymentFailed`` when it failed or was retired, ``WaitTimeout`` after
        ``timeout_s``. ``progress`` as in ``wait_for_training``.
        """
        label = f"deployment of {tenant}/{model}"
        display = ProgressDisplay(label) if progress is True else None
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                deployment = self.get_deployment(tenant, model)
                if display is not None:
                    display.update(deployment.status)
                elif callable(progress):
                    progress(deployment)
                if (
                    deployment.status == "live"
                    and deployment.target_version is None
                    and (version is None or deployment.live_version == version)
                ):
                    return deployment
                if deployment.status in ("failed", "retired"):
                    reason = f": {deployment.status_reason}" if deployment.status_reason else "."
                    raise errors.DeploymentFailed(
                        f"The {label} is {deployment.status}{reason}", deployment=deployment
                    )
                if time.monotonic() >= deadline:
                    raise errors.WaitTimeout(
                        f"The {label} is still {deployment.status} after {timeout_s:g} s.",
                        code="wait_timeout",
                    )
                self._sleep(poll_interval_s)
        finally:
            if display is not None:
                display.close()

    def invoke(self, tenant: str, model: str, inputs: Sequence[Any]) -> Invocation:
        """Run the model's live version on ``inputs`` (a list: texts for the text kinds); one
        output per input, in order."""
        if isinstance(inputs, str | bytes) or not isinstance(inputs, Sequence):
            raise TypeError("inputs must be a list of inputs, e.g. ['Where is my refund?'].")
        path = self._model_path(tenant, model) + "/invoke"
        return build(Invocation, self._json("POST", path, json={"inputs": list(inputs)}))

    # --- Requests ----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        files: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send a request to ``/api/v1`` + ``path`` with the retry policy; a 4xx or 5xx raises
        its ``TenantMLError``. For routes this client has no method for."""
        method = method.upper()
        headers = dict(headers or {})
        repeatable = method in IDEMPOTENT_METHODS or "Idempotency-Key" in headers
        policy = self.retry
        attempt, waited_s = 0, 0.0
        while True:
            attempt += 1
            try:
                response = self._http.request(
                    method, path, params=params, json=json, files=files, data=data, headers=headers
                )
            except httpx.TransportError as exc:
                failure = errors.ConnectionFailed(
                    f"{method} {path}: no answer from {self.base_url} ({type(exc).__name__}: "
                    f"{exc or 'connection failed'})."
                )
                safe = isinstance(exc, _NOTHING_SENT) or repeatable
                delay = policy.backoff(attempt)
                if (
                    policy.only_when_asked
                    or not safe
                    or not self._may_wait(attempt, waited_s, delay)
                ):
                    raise failure from exc
                self._log_retry(method, path, type(exc).__name__, delay, attempt)
                self._sleep(delay)
                waited_s += delay
                continue
            if response.status_code < 400:
                return response
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if response.status_code in RETRIED_STATUSES:
                delay = retry_after
                if delay is None and not policy.only_when_asked:
                    delay = policy.backoff(attempt)
                if delay is not None and self._may_wait(attempt, waited_s, delay):
                    self._log_retry(method, path, str(response.status_code), delay, attempt)
                    response.close()
                    self._sleep(delay)
                    waited_s += delay
                    continue
            raise errors.error_from_response(response, retry_after_s=retry_after)

    def _may_wait(self, attempt: int, waited_s: float, delay_s: float) -> bool:
        return (
            attempt < self.retry.max_attempts and waited_s + delay_s <= self.retry.max_total_wait_s
        )

    def _log_retry(self, method: str, path: str, why: str, delay_s: float, attempt: int) -> None:
        logger.info(
            "%s %s: %s; trying again in %g s (attempt %d of %d)",
            method,
            path,
            why,
            delay_s,
            attempt + 1,
            self.retry.max_attempts,
        )

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def _pages(
        self,
        path: str,
        record: type,
        *,
        page_size: int,
        status: str | None = None,
    ) -> Pages:
        params: dict[str, Any] = {"limit": page_size}
        if status is not None:
            params["status"] = status

        def fetch(query: dict[str, Any]) -> dict[str, Any]:
            return self._json("GET", path, params=query)

        # The status is also checked here, so the answer is right on a platform that does not
        # filter this list yet.
        keep = (lambda item: item.status == status) if status is not None else None
        return Pages(fetch, lambda item: build(record, item), params=params, keep=keep)

    @staticmethod
    def _model_path(tenant: str, model: str) -> str:
        return f"/tenants/{_segment(tenant)}/models/{_segment(model)}"


def _job_id(job: int | TrainingJob) -> int:
    return job.id if isinstance(job, TrainingJob) else int(job)
