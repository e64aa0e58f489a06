"""The stand-in's one HTTP port: moto's services behind the stand-in's own WSGI middleware.

Requests are taken in this order:

1. ``POST /endpoints/<name>/invocations`` is the runtime (``invocations``), answered before
   moto's own sagemaker-runtime fake sees it;
2. a SageMaker operation (``X-Amz-Target: SageMaker.<Op>``) the control plane handles
   (``control``);
3. ``/_standin/...``: the stand-in's own admin calls (reset, the processes it runs, and
   ``GET``/``POST /_standin/clock`` for the scaling period: ``{"period_s": 0.5,
   "scale_in_periods": 3}``, see ``autoscaling``; ``GET /_standin/training`` and ``POST
   /_standin/training/settings`` for training jobs, see ``training``);
4. Application Auto Scaling's ``DescribeScalingActivities`` (moto lacks it) from the stand-in's
   autoscaler; everything else is moto's (SageMaker, S3, Application Auto Scaling, CloudWatch,
   ...).

The scaling loop (``autoscaling.ScalingLoop``) starts and stops with the server: once a period
it publishes SageMaker's CloudWatch metrics, evaluates the scaling alarms and applies the
scaling policies to what the fleet runs.

An exception in the stand-in's own code answers a 500 JSON error and is logged; the server
keeps serving.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.exceptions import JsonRESTError, ServiceException
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

from deployments.sagemaker_standin.autoscaling import (
    DEFAULT_PERIOD_S,
    DEFAULT_SCALE_IN_PERIODS,
    InvalidClock,
    ScalingLoop,
)
from deployments.sagemaker_standin.control import ControlPlane
from deployments.sagemaker_standin.errors import StandinError
from deployments.sagemaker_standin.fleet import Fleet, MmeLimits
from deployments.sagemaker_standin.invocations import Invocation, invoke
from deployments.sagemaker_standin.moto_state import (
    MotoState,
    teach_moto_component_scaling,
    teach_moto_dimension_order,
)
from deployments.sagemaker_standin.training import TrainingJobs, TrainingSettings
from deployments.sagemaker_standin.triton_image import TritonImage

__all__ = ["StandinServer", "environment_for"]

logger = logging.getLogger(__name__)

_INVOCATIONS = re.compile(r"^/endpoints/(?P<name>[^/]+)/invocations$")
_JSON_11 = "application/x-amz-json-1.1"
_AUTOSCALING_PREFIX = "AnyScaleFrontendService."


def environment_for(base_url: str, region: str) -> dict[str, str]:
    """The variables that point boto3 (and so the unchanged platform) at the stand-in."""
    return {
        "AWS_ENDPOINT_URL_SAGEMAKER": base_url,
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": base_url,
        "AWS_ENDPOINT_URL_S3": base_url,
        "AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING": base_url,
        "AWS_ENDPOINT_URL_CLOUDWATCH": base_url,
        "AWS_ACCESS_KEY_ID": "standin",
        "AWS_SECRET_ACCESS_KEY": "standin",
        "AWS_DEFAULT_REGION": region,
        # The Python its Triton's python backend runs: what packages for it must be built for.
        "SAGEMAKER_IMAGE_PYTHON": f"{sys.version_info.major}.{sys.version_info.minor}",
    }


@dataclass
class _Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 424: "Failed Dependency"}
_SCALING_ACTIVITIES = f"{_AUTOSCALING_PREFIX}DescribeScalingActivities"


def _respond(start_response: Any, answer: _Answer) -> Iterable[bytes]:
    reason = _REASONS.get(answer.status, "Internal Server Error" if answer.status >= 500 else "")
    headers = [*answer.headers, ("Content-Length", str(len(answer.body)))]
    start_response(f"{answer.status} {reason}".strip(), headers)
    return [answer.body]


def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length else b""
    # moto may still need it when the request falls through.
    environ["wsgi.input"] = io.BytesIO(body)
    return body


class StandinApp:
    """The WSGI application: the stand-in's parts in front of moto's dispatcher."""

    def __init__(
        self,
        *,
        fleet: Fleet,
        control: ControlPlane,
        scaling: ScalingLoop,
        region: str,
        training: TrainingJobs | None = None,
    ) -> None:
        self.fleet = fleet
        self.control = control
        self.scaling = scaling
        self.training = training
        self.region = region
        self.moto_app = DomainDispatcherApplication(create_backend_app)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        try:
            match = _INVOCATIONS.match(path)
            if match and method == "POST":
                return _respond(start_response, self._invoke(unquote(match["name"]), environ))
            if target.startswith("SageMaker."):
                operation = target.split(".", 1)[1]
                if self.control.handles(operation):
                    return _respond(start_response, self._control(operation, environ))
            if path.startswith("/_standin/"):
                return _respond(start_response, self._admin(path, method, environ))
            if target == _SCALING_ACTIVITIES:
                return _respond(start_response, self._scaling_activities(environ))
            if target.startswith(_AUTOSCALING_PREFIX):
                return _respond(start_response, self._autoscaling(environ))
        except Exception:
            logger.exception("stand-in: %s %s %s failed", method, path, target)
            body = json.dumps(
                {"__type": "InternalFailure", "message": "The stand-in failed; see its log."}
            ).encode()
            return _respond(
                start_response,
                _Answer(
                    500,
                    [("Content-Type", _JSON_11), ("x-amzn-ErrorType", "InternalFailure")],
                    body,
                ),
            )
        return self.moto_app(environ, start_response)

    # -- runtime -----------------------------------------------------------------------------

    def _invoke(self, endpoint_name: str, environ: dict[str, Any]) -> _Answer:
        request = Invocation(
            endpoint_name=endpoint_name,
            body=_read_body(environ),
            content_type=environ.get("CONTENT_TYPE") or "application/octet-stream",
            accept=environ.get("HTTP_ACCEPT"),
            target_model=environ.get("HTTP_X_AMZN_SAGEMAKER_TARGET_MODEL"),
            inference_component=environ.get("HTTP_X_AMZN_SAGEMAKER_INFERENCE_COMPONENT"),
        )
        try:
            answer = invoke(self.fleet, request)
        except StandinError as error:
            return _Answer(
                error.status,
                [("Content-Type", "application/json"), ("x-amzn-ErrorType", error.code)],
                json.dumps(error.body()).encode(),
            )
        return _Answer(
            200,
            [
                ("Content-Type", answer.content_type),
                ("x-Amzn-Invoked-Production-Variant", answer.variant_name),
            ],
            answer.body,
        )

    # -- control plane -----------------------------------------------------------------------

    def _control(self, operation: str, environ: dict[str, Any]) -> _Answer:
        body = _read_body(environ)
        try:
            params = json.loads(body or b"{}")
            serialized = self.control.answer(operation, params)
        except StandinError as error:
            return self._control_error(error.code, error.message, error.status)
        except (ServiceException, JsonRESTError) as error:
            code = getattr(error, "error_type", None) or getattr(error, "code", "")
            status = error.code if isinstance(getattr(error, "code", None), int) else 400
            return self._control_error(str(code), str(error.message), status)
        except (KeyError, ValueError, TypeError) as error:
            return self._control_error(
                "ValidationException", f"Invalid request for {operation}: {error!r}", 400
            )
        body_text = serialized["body"]
        return _Answer(
            int(serialized["status_code"]),
            list(serialized["headers"].items()),
            body_text.encode() if isinstance(body_text, str) else body_text,
        )

    def _control_error(self, code: str, message: str, status: int) -> _Answer:
        return _Answer(
            status,
            [("Content-Type", _JSON_11), ("x-amzn-ErrorType", code)],
            json.dumps({"__type": code, "message": message}).encode(),
        )

    def _autoscaling(self, environ: dict[str, Any]) -> _Answer:
        """moto's Application Auto Scaling, with AWS's error code for a missing target.

        AWS answers ObjectNotFoundException for a scalable target that is not registered;
        moto answers ValidationException, which callers rightly do not take for "gone".
        """
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
            captured["status"], captured["headers"] = int(status.split()[0]), headers

        chunks = self.moto_app(environ, capture)
        body = b"".join(chunks)
        if hasattr(chunks, "close"):
            chunks.close()
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        if captured["status"] == 400 and b"No scalable target found" in body:
            error = json.loads(body)
            error["__type"] = "ObjectNotFoundException"
            body = json.dumps(error).encode()
            headers = [
                (k, "ObjectNotFoundException" if k.lower() == "x-amzn-errortype" else v)
                for k, v in headers
            ]
        return _Answer(captured["status"], headers, body)

    def _scaling_activities(self, environ: dict[str, Any]) -> _Answer:
        """DescribeScalingActivities, from what the stand-in's autoscaler did."""
        from moto.core.serialize import JSONSerializer
        from moto.core.utils import get_service_model

        params = json.loads(_read_body(environ) or b"{}")
        result = self.scaling.autoscaler.describe_activities(params)
        operation = get_service_model("application-autoscaling").operation_model(
            "DescribeScalingActivities"
        )
        serialized = JSONSerializer(operation).serialize(result)
        return _Answer(
            int(serialized["status_code"]),
            list(serialized["headers"].items()),
            serialized["body"].encode(),
        )

    # -- admin -------------------------------------------------------------------------------

    def _admin(self, path: str, method: str, environ: dict[str, Any]) -> _Answer:
        if path == "/_standin/reset" and method == "POST":
            self.reset()
            return _Answer(200, [("Content-Type", "application/json")], b"{}")
        if path == "/_standin/processes":
            return _Answer(
                200, [("Content-Type", "application/json")], json.dumps(self.processes()).encode()
            )
        if path == "/_standin/clock":
            return self._clock(method, environ)
        if path.startswith("/_standin/training") and self.training is not None:
            return self._training(path, method, environ)
        return _Answer(404, [("Content-Type", "application/json")], b'{"message": "not found"}')

    def _clock(self, method: str, environ: dict[str, Any]) -> _Answer:
        """The scaling clock: GET shows it, POST changes ``period_s``/``scale_in_periods``."""
        headers = [("Content-Type", "application/json")]
        clock = self.scaling.clock
        if method == "POST":
            try:
                params = json.loads(_read_body(environ) or b"{}")
                if not isinstance(params, dict):
                    raise InvalidClock("The clock is set with a JSON object.")
                clock = self.scaling.set_clock(params)
            except (InvalidClock, ValueError) as error:
                return _Answer(400, headers, json.dumps({"message": str(error)}).encode())
        return _Answer(200, headers, json.dumps(clock.describe()).encode())

    def _training(self, path: str, method: str, environ: dict[str, Any]) -> _Answer:
        """``GET /_standin/training``: jobs, hosts, logs and settings; ``POST
        /_standin/training/settings`` changes the settings until the next reset."""
        assert self.training is not None
        headers = [("Content-Type", "application/json")]
        if path == "/_standin/training/settings" and method == "POST":
            try:
                changes = json.loads(_read_body(environ) or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("Training settings are set with a JSON object.")
                settings = self.training.configure(changes)
            except ValueError as error:
                return _Answer(400, headers, json.dumps({"message": str(error)}).encode())
            return _Answer(200, headers, json.dumps(settings).encode())
        if path == "/_standin/training":
            return _Answer(200, headers, json.dumps(self.training.snapshot()).encode())
        return _Answer(404, headers, b'{"message": "not found"}')

    def processes(self) -> list[dict[str, Any]]:
        """Every Triton the stand-in runs, by endpoint, instance and component."""
        found = []
        with self.fleet.lock:
            for endpoint in self.fleet.endpoints.values():
                deployment = endpoint.deployment
                for instance in deployment.instances if deployment else []:
                    base = {"endpoint": endpoint.name, "instance": instance.instance_id}
                    if instance.process is not None:
                        found.append(
                            {
                                **base,
                                "pid": instance.process.pid,
                                "port": instance.process.port,
                                "component": None,
                                "models": list(instance.models),
                            }
                        )
                    for copy in instance.copies:
                        if copy.process is not None:
                            found.append(
                                {
                                    **base,
                                    "pid": copy.process.pid,
                                    "port": copy.process.port,
                                    "component": self.fleet.component_of(copy).name,
                                    "models": [],
                                }
                            )
        return found

    def reset(self) -> None:
        """Stop every Triton and forget every AWS resource (moto's reset), the scaling clock
        back to its defaults."""
        from moto.moto_api._internal.models import moto_api_backend

        with self.scaling.paused():
            if self.training is not None:
                # First, so no training job writes to S3 after moto forgot it.
                self.training.reset()
            # Everything is forgotten: no model needs an orderly unload.
            self.fleet.stop_everything(kill=True)
            moto_api_backend.reset()
            self.scaling.forget()


class StandinServer:
    """The stand-in on one host and port, serving from a background thread until ``stop``."""

    def __init__(
        self,
        *,
        workdir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = "us-east-1",
        account_id: str = DEFAULT_ACCOUNT_ID,
        mme_limits: MmeLimits | None = None,
        scaling_period_s: float = DEFAULT_PERIOD_S,
        scale_in_periods: int = DEFAULT_SCALE_IN_PERIODS,
        training_settings: TrainingSettings | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.region = region
        self.fleet = Fleet(
            workdir=self.workdir,
            image=TritonImage(self.workdir),
            moto=MotoState(account_id=account_id, region=region),
            mme_limits=mme_limits,
        )
        self.scaling = ScalingLoop(
            self.fleet, period_s=scaling_period_s, scale_in_periods=scale_in_periods
        )
        self.training = TrainingJobs(
            workdir=self.workdir / "training",
            moto=self.fleet.moto,
            settings=training_settings,
        )
        self.app = StandinApp(
            fleet=self.fleet,
            control=ControlPlane(self.fleet, training=self.training),
            scaling=self.scaling,
            region=region,
            training=self.training,
        )
        self._server: BaseWSGIServer = make_server(
            host, port, self.app, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        teach_moto_component_scaling()
        teach_moto_dimension_order()
        # Built now, not on the first request: the numpy-only Python and Triton's backends.
        self.fleet.image.prepare()
        self.training.attach(base_url=self.base_url)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="standin-http", daemon=True
        )
        self._thread.start()
        self.scaling.start()

    def stop(self) -> None:
        """Stop scaling, training and serving, then every Triton the stand-in started."""
        self.scaling.stop()
        self.training.shutdown()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        self.fleet.stop_everything()
