"""SageMaker's Triton container, emulated: how the stand-in starts, calls and stops Triton.

It starts ``tritonserver`` the way the image's ``serve`` script does (Triton's repository,
``docker/sagemaker/serve``): multi-model mode with ``SAGEMAKER_MULTI_MODEL=true``, explicit model
control and an empty repository; single-model mode on the unpacked ``model.tar.gz`` with
``--load-model`` of ``SAGEMAKER_TRITON_DEFAULT_MODEL_NAME`` or of the only directory, where a
model that fails to load ends the server. Model code runs on the numpy-only Python of
``python_env``, with no PYTHONPATH into this machine's packages.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import urllib3

from deployments.backends.local.process import (
    TritonProcess,
    kill_triton,
    prepare_triton_home,
    read_log_tail,
    start_triton,
    stop_triton,
)
from deployments.exceptions import InstanceUnavailable
from deployments.sagemaker_standin.python_env import numpy_only_python

__all__ = ["TritonAnswer", "TritonImage", "TritonStartFailed", "failure_lines"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ENV = "SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"
_ERROR_LINE = re.compile(r"^(E\d{4} |error:|\S*Error: |Traceback|  File )")


class TritonStartFailed(Exception):
    """A Triton server did not come up; ``reason`` holds the log lines that say why."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TritonAnswer:
    """One HTTP answer from a Triton server."""

    status: int
    content_type: str
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def failure_lines(log_tail: str, *, limit: int = 12) -> str:
    """The lines of a Triton log tail that carry its errors (Python exceptions included)."""
    picked = [line.rstrip() for line in log_tail.splitlines() if _ERROR_LINE.match(line)]
    return "\n".join(picked[-limit:]) or log_tail[-1500:]


class TritonImage:
    """Starts Triton servers as SageMaker's Triton image does, under one work directory."""

    def __init__(self, workdir: Path, *, startup_timeout_s: float = 60.0) -> None:
        self.workdir = Path(workdir).resolve()
        self.startup_timeout_s = startup_timeout_s
        self._prepared: tuple[Path, Path] | None = None
        self._prepare_lock = threading.Lock()
        self._http = urllib3.PoolManager(maxsize=32, retries=False)

    def prepare(self) -> tuple[Path, Path]:
        """Build (once) Triton's backend directory and the numpy-only Python; both paths."""
        with self._prepare_lock:
            if self._prepared is None:
                self._prepared = (
                    prepare_triton_home(self.workdir),
                    numpy_only_python(self.workdir),
                )
            return self._prepared

    def _environment(self, container_env: Mapping[str, str]) -> dict[str, str | None]:
        _, python = self.prepare()
        return {
            **dict(container_env),
            # The stub takes its sys.prefix from the first python3 on PATH: the image's Python.
            "PATH": os.pathsep.join([str(python / "bin"), os.environ.get("PATH", "")]),
            # The host's site-packages must not leak into model code that honours PYTHONPATH.
            "PYTHONPATH": None,
            "PYTHONHOME": None,
            "VIRTUAL_ENV": None,
        }

    def start_multi_model(self, workdir: Path, container_env: Mapping[str, str]) -> TritonProcess:
        """A multi-model (MME) server with an empty repository; models come by ``load``."""
        backends, _ = self.prepare()
        return self._start(
            workdir=workdir,
            backend_directory=backends,
            extra_env=self._environment(container_env),
            multi_model=True,
        )

    def start_single_model(
        self, workdir: Path, repository: Path, container_env: Mapping[str, str]
    ) -> TritonProcess:
        """A single-model server on an unpacked archive, as a dedicated endpoint or a copy."""
        backends, _ = self.prepare()
        name = container_env.get(DEFAULT_MODEL_ENV)
        directories = sorted(entry.name for entry in Path(repository).iterdir() if entry.is_dir())
        if (Path(repository) / "config.pbtxt").is_file():
            raise TritonStartFailed(
                "ERROR: Incorrect directory structure.",
                reason="ERROR: Incorrect directory structure. Model directory needs to contain "
                "the top level folder",
            )
        if name:
            if name not in directories:
                reason = f"ERROR: Directory with provided {DEFAULT_MODEL_ENV} {name} does not exist"
                raise TritonStartFailed(reason, reason=reason)
        elif len(directories) == 1:
            name = directories[0]
        else:
            reason = (
                "ERROR: No model found in model repository"
                if not directories
                else "ERROR: More than 1 model directory found in model repository. "
                f"Directories found in model repository: {' '.join(directories)}"
            )
            raise TritonStartFailed(reason, reason=reason)
        env = self._environment(container_env)
        # Triton's /invocations serves the model this variable names.
        env[DEFAULT_MODEL_ENV] = name
        return self._start(
            workdir=workdir,
            backend_directory=backends,
            extra_env=env,
            multi_model=False,
            model_repository=Path(repository),
            load_models=(name,),
        )

    def _start(self, *, workdir: Path, **options) -> TritonProcess:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        try:
            return start_triton(
                workdir=workdir, startup_timeout_s=self.startup_timeout_s, **options
            )
        except InstanceUnavailable as error:
            tail = error.log_tail or read_log_tail(Path(workdir) / "triton.log", lines=80)
            raise TritonStartFailed(str(error), reason=failure_lines(tail)) from error

    def stop(self, process: TritonProcess | None) -> None:
        """Stop a server and its python stubs, removing its shared memory; None is a no-op."""
        if process is not None:
            stop_triton(process, timeout_s=10.0)

    def kill(self, process: TritonProcess | None) -> None:
        """Kill a server and its python stubs at once, removing its shared memory."""
        if process is not None:
            kill_triton(process)

    def request(
        self,
        process: TritonProcess,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        content_type: str = "application/json",
        accept: str | None = None,
        timeout_s: float = 60.0,
    ) -> TritonAnswer:
        """One HTTP call to a server's SageMaker port; connection failures answer status 0."""
        headers = {"Content-Type": content_type}
        if accept:
            headers["Accept"] = accept
        try:
            answer = self._http.request(
                method,
                f"http://{process.host}:{process.port}{path}",
                body=body,
                headers=headers,
                timeout=urllib3.Timeout(connect=5.0, read=timeout_s),
            )
        except urllib3.exceptions.HTTPError as error:
            return TritonAnswer(status=0, content_type="text/plain", body=str(error).encode())
        return TritonAnswer(
            status=answer.status,
            content_type=answer.headers.get("Content-Type", "application/json"),
            body=answer.data,
        )
