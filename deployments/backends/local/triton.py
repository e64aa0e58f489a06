"""The local serving backend: real Triton server processes in SageMaker multi-model mode.

Each endpoint instance is one ``tritonserver`` (shipped inside nvidia-pytriton) speaking the
SageMaker MME protocol on its own port, with metrics on another. This module owns

- preparing Triton's backend directory (the python backend plus the stub built for the running
  Python) and starting and stopping servers without leaving processes or shared memory behind;
- ``TritonMultiModelClient``, a pooled keep-alive HTTP client for that protocol, mapping Triton's
  answers to the domain errors in ``deployments.exceptions``;
- unpacking verified model packages into the directory layout an MME load expects;
- measuring the host memory of one loaded model and parsing Triton's Prometheus metrics.

Facts about Triton 2.51 in SageMaker mode this code relies on (measured, see the tests):

- ``POST /models`` answers 200 with an empty body once the model is loaded (the call blocks for
  the whole load), 400 ``{"error": ...}`` with Triton's text (including the Python traceback of
  a model whose ``initialize`` raised) when the load fails, after which the repository is
  unregistered again and the server keeps serving; 409 when the ``url`` is already registered
  (under any name, also while its load is still running) or the name is mapped to another url.
- ``GET /models`` answers ``{"models": [{"modelName": ..., "modelUrl": ...}]}`` and
  ``GET /models/<name>`` one such object; a model appears only once its load has finished, and
  an unknown name is a 404 with an empty body (also for ``DELETE`` and ``invoke``).
- ``DELETE /models/<name>`` blocks until the model is unloaded (one to two seconds for a python
  backend model: Triton polls its state once a second).
- ``GET /ping`` asks Triton whether the server is ready; under the default strict readiness a
  model whose load failed leaves the server "not ready" (400) for good, so servers are started
  with ``--strict-readiness=false`` and /ping means "the server is up".
- The SageMaker listener always binds 0.0.0.0; only the metrics listener takes an address.
- The python backend's stub embeds an *isolated* interpreter: it ignores PYTHONPATH and finds
  its ``sys.prefix`` from the first ``python3`` on PATH. Without this environment's ``bin``
  first on PATH it imports the base interpreter's site-packages (here NumPy 2, which the stub's
  pybind11 cannot read), and tensors arrive corrupted: every input holds its first element
  repeated, outputs come back empty and BYTES inputs crash the stub.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import psutil
import urllib3
from urllib3.exceptions import HTTPError as Urllib3HTTPError
from urllib3.exceptions import NewConnectionError, ProtocolError, ReadTimeoutError

from deployments.backends.local.gates import ControlBusy, DrainTimedOut, GateClosed, ModelGates
from deployments.backends.local.instances import (
    InstanceHandle,
    LoadedModel,
    LoadResult,
    MemoryReading,
)
from deployments.exceptions import (
    InstanceUnavailable,
    InvalidInferenceInput,
    InvalidPackage,
    ModelBusy,
    ModelLoadConflict,
    ModelLoadFailed,
    ModelLoadTimedOut,
    ModelNotLoaded,
    UnloadTimedOut,
    UpstreamError,
)
from models_registry import artifacts
from models_registry.exceptions import PackageChecksumMismatch

logger = logging.getLogger(__name__)

STUB_NAME = "triton_python_backend_stub"
TRITONSERVER_NAME = "tritonserver"
LOG_FILE = "triton.log"
MODEL_REPOSITORY_DIR = "model-repository"
MB = 1024 * 1024
# How long Triton waits for in-flight work and model unloads after SIGTERM (its default is 30 s,
# far longer than a platform stop should take).
EXIT_TIMEOUT_S = 5
_LOG_TAIL_LINES = 40
_LOG_TAIL_BYTES = 64 * 1024
_PORT_ATTEMPTS = 3
_CHUNK = 1 << 20
_SHM_DIR = Path("/dev/shm")


# --- Where Triton is -------------------------------------------------------------------------


def pytriton_dir() -> Path | None:
    """The installed ``pytriton`` package directory, or None where nvidia-pytriton is missing."""
    # find_spec locates the package without importing it (pytriton's import pulls in a lot).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def tritonserver_path() -> Path | None:
    """The ``tritonserver`` binary nvidia-pytriton ships, or None where it is not installed."""
    package = pytriton_dir()
    if package is None:
        return None
    binary = package / "tritonserver" / "bin" / TRITONSERVER_NAME
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


def _require_tritonserver() -> Path:
    binary = tritonserver_path()
    if binary is None:
        raise InstanceUnavailable(
            "Triton is not installed for this Python: the local backend needs nvidia-pytriton "
            f"(pip install 'nvidia-pytriton>=0.7,<0.8') in {sys.prefix}."
        )
    return binary


def _python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def default_var_dir() -> Path:
    """The platform's var directory: Django's VAR_DIR when configured, else TENANTML_VAR_DIR."""
    with contextlib.suppress(ImportError):
        from django.conf import settings

        if settings.configured and getattr(settings, "VAR_DIR", None):
            return Path(settings.VAR_DIR)
    return Path(os.environ.get("TENANTML_VAR_DIR", "var")).resolve()


# --- The backend directory -------------------------------------------------------------------

_PREPARE_LOCK = threading.Lock()


def prepare_triton_home(var_dir: Path) -> Path:
    """Build (once) Triton's backend directory under ``var_dir/triton/backends`` and return it.

    The python backend is copied from nvidia-pytriton together with the stub built for the
    running Python (the wheel ships one per Python version beside, not inside, the backend). The
    directory is named after the pytriton and Python versions so an upgrade builds a new one
    instead of changing files under running servers, and it appears atomically (built in a
    temporary directory, then renamed), so concurrent callers never see half a copy.
    """
    package = pytriton_dir()
    _require_tritonserver()
    assert package is not None
    source_backends = package / "tritonserver" / "backends"
    stubs = package / "tritonserver" / "python_backend_stubs"
    stub = stubs / _python_tag() / STUB_NAME
    if not stub.is_file():
        shipped = sorted(p.name for p in stubs.iterdir() if (p / STUB_NAME).is_file())
        raise InstanceUnavailable(
            f"nvidia-pytriton ships no python backend stub for Python {_python_tag()} "
            f"(it has {', '.join(shipped) or 'none'}); run the platform on one of those."
        )
    try:
        version = importlib.metadata.version("nvidia-pytriton")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    tag = f"pytriton-{version}-py{_python_tag()}"
    root = Path(var_dir) / "triton" / "backends"
    target = root / tag
    if (target / "python" / STUB_NAME).is_file():
        return target
    with _PREPARE_LOCK:
        if (target / "python" / STUB_NAME).is_file():
            return target
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{tag}-", dir=root))
        try:
            building = scratch / "backends"
            shutil.copytree(source_backends, building, ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy2(stub, building / "python" / STUB_NAME)
            os.chmod(building / "python" / STUB_NAME, 0o755)
            try:
                os.rename(building, target)
            except OSError as exc:
                # Another process finished first; its copy is as good as ours.
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


# --- Processes -------------------------------------------------------------------------------


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel's choice of an ephemeral port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class TritonProcess(InstanceHandle):
    """A Triton server this machine runs: where it listens, its pid, log and working directory.

    Built by ``start_triton`` (which keeps the ``Popen`` to reap it) or, for a server started by
    another process, from the values recorded on the instance row with ``from_record``.
    """

    log_path: Path | None = None
    startup_s: float | None = None
    popen: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_record(
        cls,
        *,
        pid: int,
        host: str,
        port: int | None,
        metrics_port: int | None = None,
        workdir: Path | None = None,
    ) -> TritonProcess:
        """A handle on a server started elsewhere, from what was recorded about it."""
        return cls(
            host=host,
            port=port or 0,
            metrics_port=metrics_port,
            pid=pid,
            workdir=Path(workdir) if workdir else None,
            log_path=Path(workdir) / LOG_FILE if workdir else None,
        )

    @property
    def shm_prefix(self) -> str:
        return shm_prefix_for(self.workdir, self.port)

    def is_running(self) -> bool:
        """Whether the server process is alive (a zombie counts as gone)."""
        if self.popen is not None:
            return self.popen.poll() is None
        return _find_server(self) is not None

    def log_tail(self, *, since: int = 0) -> str:
        return read_log_tail(self.log_path, since=since) if self.log_path else ""


def shm_prefix_for(workdir: Path | None, port: int) -> str:
    """The name prefix of the python backend's /dev/shm regions for one instance.

    Triton names the regions after a random uuid by default, so a killed server's regions could
    not be told apart from another server's; a prefix per instance lets ``stop_triton`` remove
    exactly its own.
    """
    key = f"{Path(workdir).resolve() if workdir else ''}:{port}"
    return f"tenantml_{hashlib.sha256(key.encode()).hexdigest()[:12]}_"


def read_log_tail(log_path: Path | None, *, since: int = 0, lines: int = _LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines written to ``log_path`` after byte offset ``since``."""
    if log_path is None:
        return ""
    try:
        with open(log_path, "rb") as log:
            size = log.seek(0, os.SEEK_END)
            start = max(since, size - _LOG_TAIL_BYTES)
            log.seek(start)
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    # Triton pads its option table with long runs of spaces; they only cost room in a message.
    text = re.sub(r" {3,}", "  ", text.replace("\x00", ""))
    return "\n".join(text.splitlines()[-lines:])


def _log_size(log_path: Path | None) -> int:
    try:
        return log_path.stat().st_size if log_path else 0
    except OSError:
        return 0


def _server_env(extra_env: dict[str, str] | None) -> dict[str, str]:
    package = pytriton_dir()
    assert package is not None
    site_packages = package.parent
    env = dict(os.environ)
    python_dir = Path(sys.executable).parent
    if not (python_dir / "python3").exists():
        logger.warning(
            "%s has no python3: Triton's python stub will run on whichever python3 comes first "
            "on PATH, and may import packages (NumPy) it cannot use.",
            python_dir,
        )
    # The stub's embedded interpreter ignores PYTHONPATH and takes its prefix from the first
    # python3 on PATH: this environment's bin must come first, or the stub runs on the base
    # interpreter's site-packages (whose NumPy it cannot read) instead of this environment's.
    env["PATH"] = os.pathsep.join([str(python_dir), *filter(None, [env.get("PATH")])])
    # The running Python's libdir must precede the wheel's bundled libraries, or the stub links
    # another libpython and fails with "undefined symbol: _PyModule_Add".
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        [
            str(sysconfig.get_config_var("LIBDIR") or ""),
            str(site_packages / "nvidia_pytriton.libs"),
            *filter(None, [os.environ.get("LD_LIBRARY_PATH")]),
        ]
    )
    # tritonserver itself does not need it; model code that spawns ordinary Python processes does.
    env["PYTHONPATH"] = str(site_packages)
    env["SAGEMAKER_MULTI_MODEL"] = "true"
    # Model code must never reach the Hugging Face hub at run time; the base model ships as a
    # package.
    env["HF_HUB_OFFLINE"] = "1"
    # glibc keeps freed ONNX Runtime buffers of a large batch in its heap, so a model's stub grew
    # from ~113 MB at load to ~185-213 MB after serving 32-text batches, past the figure placement
    # packs by. Allocations over 1 MiB served by mmap go back to the system when freed: measured,
    # at most 121 MB after the same traffic, for +1 ms on one text and +65 % on a batch of 32
    # (docs/benchmarks.md). Set the variable in the platform's environment to choose another
    # threshold, or set it empty for glibc's own dynamic default.
    if env.get("MALLOC_MMAP_THRESHOLD_") == "":
        del env["MALLOC_MMAP_THRESHOLD_"]
    else:
        env.setdefault("MALLOC_MMAP_THRESHOLD_", "1048576")
    env.update(extra_env or {})
    return env


def _server_argv(
    *,
    binary: Path,
    host: str,
    port: int,
    metrics_port: int,
    repository: Path,
    backend_directory: Path,
    shm_prefix: str,
) -> list[str]:
    return [
        str(binary),
        "--allow-sagemaker=true",
        f"--sagemaker-port={port}",
        "--allow-http=false",
        "--allow-grpc=false",
        "--model-control-mode=explicit",
        f"--model-repository={repository}",
        "--allow-metrics=true",
        f"--metrics-address={host}",
        f"--metrics-port={metrics_port}",
        f"--backend-directory={backend_directory}",
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
        f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
        # With strict readiness a single model that failed to load makes /ping answer 400 for
        # good, which would get a server that serves everything else restarted.
        "--strict-readiness=false",
        # Our packages carry complete configs; auto-completion would start a throwaway python
        # stub per load just to fill them in (measured: 1.70 s → 0.35 s per cold load).
        "--disable-auto-complete-config",
        # Model loads, unloads and failures (with their reasons) are what the log is read for.
        "--log-info=true",
        "--log-warning=true",
        "--log-error=true",
    ]


def start_triton(
    *,
    workdir: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    metrics_port: int | None = None,
    startup_timeout_s: float = 60.0,
    extra_env: dict[str, str] | None = None,
    backend_directory: Path | None = None,
) -> TritonProcess:
    """Start one Triton server in SageMaker multi-model mode and return once ``/ping`` is 200.

    Free ports are picked when none are given. The server runs in its own session (so stopping
    it reaches the python stubs it forks), with ``workdir`` as its working directory, an empty
    model repository under it and its output appended to ``workdir/triton.log``. Raises
    InstanceUnavailable, with the end of the log, if it exits or does not answer in time.
    """
    binary = _require_tritonserver()
    workdir = Path(workdir).resolve()
    repository = workdir / MODEL_REPOSITORY_DIR
    repository.mkdir(parents=True, exist_ok=True)
    backend_directory = Path(backend_directory or prepare_triton_home(default_var_dir()))
    env = _server_env(extra_env)
    log_path = workdir / LOG_FILE
    fixed_ports = port is not None and metrics_port is not None
    last_error: InstanceUnavailable | None = None
    for _attempt in range(1 if fixed_ports else _PORT_ATTEMPTS):
        chosen_port = port or find_free_port(host)
        chosen_metrics = metrics_port or find_free_port(host)
        while chosen_metrics == chosen_port and metrics_port is None:
            chosen_metrics = find_free_port(host)
        try:
            return _start_once(
                binary=binary,
                workdir=workdir,
                repository=repository,
                backend_directory=backend_directory,
                host=host,
                port=chosen_port,
                metrics_port=chosen_metrics,
                env=env,
                log_path=log_path,
                startup_timeout_s=startup_timeout_s,
            )
        except InstanceUnavailable as exc:
            last_error = exc
            # Another process took a port between our probe and Triton's bind: try new ones.
            if "already in use" not in exc.log_tail:
                raise
    assert last_error is not None
    raise last_error


def _start_once(
    *,
    binary: Path,
    workdir: Path,
    repository: Path,
    backend_directory: Path,
    host: str,
    port: int,
    metrics_port: int,
    env: dict[str, str],
    log_path: Path,
    startup_timeout_s: float,
) -> TritonProcess:
    shm_prefix = shm_prefix_for(workdir, port)
    argv = _server_argv(
        binary=binary,
        host=host,
        port=port,
        metrics_port=metrics_port,
        repository=repository,
        backend_directory=backend_directory,
        shm_prefix=shm_prefix,
    )
    with open(log_path, "ab") as log:
        log_offset = log.tell()
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"=== tenantml {stamp}: {' '.join(argv)}\n".encode())
        log.flush()
        started = time.monotonic()
        popen = subprocess.Popen(
            argv,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    process = TritonProcess(
        host=host,
        port=port,
        metrics_port=metrics_port,
        pid=popen.pid,
        workdir=workdir,
        log_path=log_path,
        popen=popen,
    )
    deadline = started + startup_timeout_s
    while True:
        code = popen.poll()
        if code is not None:
            _cleanup_after_exit(process)
            tail = read_log_tail(log_path, since=log_offset)
            raise InstanceUnavailable(
                f"Triton exited with code {code} while starting on port {port} (log: {log_path}).",
                log_tail=tail,
            )
        if _ping(host, port, timeout_s=1.0):
            break
        if time.monotonic() >= deadline:
            stop_triton(process, timeout_s=2.0)
            raise InstanceUnavailable(
                f"Triton did not answer /ping on port {port} within {startup_timeout_s:g} s; "
                f"it was stopped (log: {log_path}).",
                log_tail=read_log_tail(log_path, since=log_offset),
            )
        time.sleep(0.05)
    startup_s = time.monotonic() - started
    logger.info("Triton pid %s ready on port %s in %.2f s", popen.pid, port, startup_s)
    return TritonProcess(
        host=host,
        port=port,
        metrics_port=metrics_port,
        pid=popen.pid,
        workdir=workdir,
        log_path=log_path,
        startup_s=startup_s,
        popen=popen,
    )


def _ping(host: str, port: int, *, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as conn:
            conn.settimeout(timeout_s)
            conn.sendall(
                f"GET /ping HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            return conn.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _find_server(process: InstanceHandle) -> psutil.Process | None:
    """The live tritonserver behind ``process``; None if gone or the pid now names another."""
    if not process.pid:
        return None
    try:
        found = psutil.Process(process.pid)
        if found.status() == psutil.STATUS_ZOMBIE:
            return None
        argv = found.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    # A recorded pid may have been reused since: only a tritonserver on the recorded port is ours.
    if not argv or Path(argv[0]).name != TRITONSERVER_NAME:
        return None
    if process.port and f"--sagemaker-port={process.port}" not in argv:
        return None
    return found


def _group_members(pgid: int) -> list[psutil.Process]:
    """Triton processes (server and stubs) still alive in the process group ``pgid``."""
    members = []
    for candidate in psutil.process_iter(["pid", "name"]):
        try:
            if os.getpgid(candidate.pid) != pgid:
                continue
            if candidate.status() == psutil.STATUS_ZOMBIE:
                continue
            name = candidate.info["name"] or ""
            argv0 = Path((candidate.cmdline() or [""])[0]).name
        except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
            continue
        # The group id is the server's pid, which the kernel may hand out again once the whole
        # group is gone: only processes that are Triton's own are taken for members.
        if argv0 in (TRITONSERVER_NAME, STUB_NAME) or name.startswith(("tritonserver", "triton_")):
            members.append(candidate)
    return members


def stop_triton(process: TritonProcess, timeout_s: float = 10.0) -> None:
    """Stop a Triton server and every process it started; no-op if it is already gone.

    SIGTERM goes to the server alone so it can unload its models and let its python stubs exit
    in order (a signal to the whole group would kill the stubs under it); after ``timeout_s``
    the group gets SIGKILL. Either way the group is then swept for stubs left behind and the
    instance's shared-memory regions are removed.
    """
    if not process.pid:
        return
    pgid = process.pid  # start_new_session made the server its group's leader
    server = _find_server(process) if process.popen is None else None
    alive = process.popen.poll() is None if process.popen is not None else server is not None
    if alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        if not _wait_gone(process, server, timeout_s):
            logger.warning("Triton pid %s ignored SIGTERM for %.0f s; killing", pgid, timeout_s)
            _kill_group(pgid)
            _wait_gone(process, server, 5.0)
    _cleanup_after_exit(process)


def _wait_gone(process: TritonProcess, server: psutil.Process | None, timeout_s: float) -> bool:
    if process.popen is not None:
        try:
            process.popen.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    # Not our child: it cannot be waited for, and once dead it stays a zombie until its parent
    # reaps it, so poll for "gone or zombie" instead.
    deadline = time.monotonic() + timeout_s
    while server is not None and _find_server(process) is not None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _kill_group(pgid: int) -> None:
    """SIGKILL what is left of a server's group, and wait until it is gone."""
    members = _group_members(pgid)
    for member in members:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    if members:
        psutil.wait_procs(members, timeout=5.0)


def _cleanup_after_exit(process: TritonProcess) -> None:
    if process.popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.popen.wait(timeout=5.0)
    if process.pid:
        _kill_group(process.pid)
    # A server that exits cleanly removes its regions; a killed one leaves them in RAM.
    if process.port:
        for region in _SHM_DIR.glob(f"{process.shm_prefix}*"):
            with contextlib.suppress(OSError):
                region.unlink()


# --- The SageMaker multi-model protocol ------------------------------------------------------

# Triton's core prefixes its checks of a request's tensors with "[request id: ...]" and reports
# unreadable JSON as "Unable to parse ..."/"failed to parse ..."; a model's own error (raised in
# execute) also comes back as a 400, but bare, and is the model's fault, not the caller's.
_INPUT_ERROR_PREFIXES = ("[request id:", "unable to parse", "failed to parse")
_INPUT_ERROR_PHRASES = ("unexpected inference input",)
# Pause between draining a model's requests and asking Triton to unload it (see unload_model).
UNLOAD_GRACE_S = 0.25
# A request that passed the front end's model check just before an unload took the model away
# gets a 400 from Triton's core rather than a 404.
_UNLOADING_PHRASES = ("has no available versions", "request for unknown model")


def is_unloading_answer(status: int, reason: str) -> bool:
    """Whether Triton's answer means the model went away under the request (unloaded)."""
    lowered = reason.lower()
    return status == 400 and any(phrase in lowered for phrase in _UNLOADING_PHRASES)


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes

    @property
    def error(self) -> str:
        """Triton's error text (``{"error": ...}``), or the raw body."""
        text = self.body.decode("utf-8", errors="replace").strip()
        with contextlib.suppress(ValueError, AttributeError):
            return str(json.loads(text)["error"]).strip()
        return text


class TritonMultiModelClient:
    """A keep-alive client for one Triton server's SageMaker multi-model protocol.

    Thread-safe (one connection pool shared by all threads). Every failure becomes a domain
    error: InstanceUnavailable when the server does not answer, ModelLoadFailed and friends for
    loads, ModelNotLoaded / InvalidInferenceInput / UpstreamError for inference.
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics_port: int | None = None,
        timeout_s: float = 30.0,
        *,
        log_path: Path | None = None,
        pool_size: int = 8,
        gates: ModelGates | None = None,
        drain_timeout_s: float = 30.0,
    ) -> None:
        self.host = host
        # Every invocation passes the model's gate and every unload drains it first (see
        # deployments.backends.local.gates: Triton stalls when a model is unloaded mid-request).
        self.gates = gates
        self.drain_timeout_s = drain_timeout_s
        self.port = port
        self.metrics_port = metrics_port
        self.timeout_s = timeout_s
        self.log_path = Path(log_path) if log_path else None
        self._pool = urllib3.HTTPConnectionPool(
            host,
            port,
            maxsize=pool_size,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=min(timeout_s, 5.0), read=timeout_s),
        )
        self._metrics_pool = (
            urllib3.HTTPConnectionPool(host, metrics_port, maxsize=1, retries=False)
            if metrics_port
            else None
        )

    @classmethod
    def for_process(cls, process: TritonProcess, timeout_s: float = 30.0) -> TritonMultiModelClient:
        """A client for a server this module started (its log feeds the error messages)."""
        return cls(
            process.host,
            process.port,
            process.metrics_port,
            timeout_s,
            log_path=process.log_path,
        )

    def __repr__(self) -> str:
        return f"TritonMultiModelClient({self.host}:{self.port})"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        self._pool.close()
        if self._metrics_pool is not None:
            self._metrics_pool.close()

    # -- transport --

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        timeout_s: float | None = None,
        idempotent: bool = False,
    ) -> _Answer:
        read_timeout = self.timeout_s if timeout_s is None else timeout_s
        headers = {"Content-Type": "application/json"} if body is not None else None
        timeout = urllib3.Timeout(connect=min(read_timeout, 5.0), read=read_timeout)
        # A pooled keep-alive connection the server closed while idle fails on first use with a
        # protocol error; one retry is safe for reads, never for a load or an inference.
        attempts = 2 if idempotent else 1
        for attempt in range(attempts):
            try:
                response = self._pool.request(
                    method, path, body=body, headers=headers, timeout=timeout, retries=False
                )
                break
            except ReadTimeoutError:
                raise
            except ProtocolError as exc:
                if attempt + 1 < attempts:
                    continue
                raise self._unreachable(exc) from exc
            except (Urllib3HTTPError, OSError) as exc:
                raise self._unreachable(exc) from exc
        return _Answer(status=response.status, body=response.data)

    def _unreachable(self, exc: Exception) -> InstanceUnavailable:
        reason = exc
        while isinstance(getattr(reason, "reason", None), Exception):
            reason = reason.reason
        if isinstance(reason, NewConnectionError):
            detail = "connection refused" if "refused" in str(reason) else str(reason)
        else:
            detail = f"{type(reason).__name__}: {reason}"
        return InstanceUnavailable(
            f"Triton at {self.address} does not answer ({detail}); the instance is down or "
            "restarting."
        )

    def _timed_out(self, what: str, timeout_s: float) -> InstanceUnavailable:
        return InstanceUnavailable(
            f"Triton at {self.address} did not answer {what} within {timeout_s:g} s."
        )

    # -- health --

    def ping(self, timeout_s: float = 2.0) -> bool:
        """Whether the server answers ``GET /ping`` with 200 now; never raises."""
        try:
            return self._request("GET", "/ping", timeout_s=timeout_s, idempotent=True).status == 200
        except (InstanceUnavailable, ReadTimeoutError):
            return False

    is_healthy = ping

    # -- listing --

    def list_models(self) -> list[LoadedModel]:
        """The models loaded now (``GET /models``; a model still loading is not listed)."""
        try:
            answer = self._request("GET", "/models", idempotent=True)
        except ReadTimeoutError as exc:
            raise self._timed_out("GET /models", self.timeout_s) from exc
        if answer.status != 200:
            raise UpstreamError(
                f"Triton at {self.address} answered {answer.status} to GET /models: "
                f"{answer.error or 'no details'}"
            )
        try:
            entries = json.loads(answer.body)["models"]
            # A model registered but not ready (loading, or being unloaded) is listed as {}.
            return [LoadedModel(name=e["modelName"], url=e["modelUrl"]) for e in entries if e]
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamError(
                f"Triton at {self.address} sent a model listing this client cannot read: "
                f"{answer.body[:200]!r}"
            ) from exc

    def get_model(self, name: str) -> LoadedModel | None:
        """The loaded model called ``name`` (``GET /models/<name>``), or None."""
        try:
            answer = self._request("GET", _model_path(name), idempotent=True)
        except ReadTimeoutError as exc:
            raise self._timed_out(f"GET /models/{name}", self.timeout_s) from exc
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise UpstreamError(
                f"Triton at {self.address} answered {answer.status} about model '{name}': "
                f"{answer.error or 'no details'}"
            )
        try:
            entry = json.loads(answer.body)
            return LoadedModel(name=entry["modelName"], url=entry["modelUrl"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamError(
                f"Triton at {self.address} described model '{name}' unreadably: "
                f"{answer.body[:200]!r}"
            ) from exc

    # -- load / unload --

    def load_model(
        self, name: str, model_url: str | Path, timeout_s: float | None = None
    ) -> LoadResult:
        """Load the repository at ``model_url`` as ``name`` (``POST /models``).

        ``model_url`` is a directory holding ``<triton_model>/config.pbtxt``. Loading what is
        already loaded under the same name and url succeeds with ``already_loaded``; if the url
        is still being loaded (by another caller, or after an earlier call timed out) this waits
        for that load. Raises ModelLoadFailed with Triton's reason, ModelLoadTimedOut after
        ``timeout_s``, ModelLoadConflict when the name or url is taken by something else. With
        gates, loads and unloads on the server run one at a time (``ModelGates.control``).
        """
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        if self.gates is None:
            return self._load(name, str(model_url), timeout_s)
        started = time.monotonic()
        try:
            with self.gates.control(timeout_s=timeout_s):
                waited = time.monotonic() - started
                return self._load(name, str(model_url), max(timeout_s - waited, 1.0))
        except ControlBusy as exc:
            raise ModelLoadTimedOut(
                f"Model '{name}' could not start loading on {self.address} within "
                f"{timeout_s:g} s: other loads and unloads on the instance held it.",
                model_name=name,
            ) from exc

    def _load(self, name: str, url: str, timeout_s: float) -> LoadResult:
        started = time.monotonic()
        deadline = started + timeout_s
        payload = json.dumps({"model_name": name, "url": url}).encode()
        while True:
            remaining = max(deadline - time.monotonic(), 0.1)
            log_offset = _log_size(self.log_path)
            try:
                answer = self._request("POST", "/models", body=payload, timeout_s=remaining)
            except ReadTimeoutError as exc:
                raise ModelLoadTimedOut(
                    f"Model '{name}' did not finish loading on {self.address} within "
                    f"{timeout_s:g} s. Triton goes on loading it; it is listed once loaded "
                    "(call load_model again to wait for it) or the load fails.",
                    model_name=name,
                ) from exc
            elapsed_ms = (time.monotonic() - started) * 1000
            if answer.status == 200:
                return LoadResult(name=name, url=url, already_loaded=False, load_time_ms=elapsed_ms)
            if answer.status != 409:
                raise self._load_error(name, url, answer, log_offset)
            # 409: the url is registered (loaded or loading) or the name maps elsewhere.
            current = self.get_model(name)
            if current is not None:
                if _same_url(current.url, url):
                    return LoadResult(
                        name=name, url=url, already_loaded=True, load_time_ms=elapsed_ms
                    )
                raise ModelLoadConflict(
                    f"Model '{name}' is already loaded on {self.address} from {current.url}, "
                    f"not {url}; unload it before loading another package under that name."
                )
            holder = next((m for m in self.list_models() if _same_url(m.url, url)), None)
            if holder is not None:
                raise ModelLoadConflict(
                    f"The package directory {url} is already loaded on {self.address} as "
                    f"'{holder.name}'; Triton serves one directory under one name only."
                )
            # Registered but not listed: its load is still running. Poll until it ends.
            if time.monotonic() >= deadline:
                raise ModelLoadTimedOut(
                    f"Model '{name}' from {url} was still loading on {self.address} after "
                    f"{timeout_s:g} s (started by an earlier call).",
                    model_name=name,
                    triton_message=answer.error,
                )
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))

    def _load_error(self, name: str, url: str, answer: _Answer, log_offset: int) -> Exception:
        reason = answer.error or f"HTTP {answer.status} without details"
        # Triton's text carries the Python traceback when model code raised; when it does not
        # (a stub that crashed, a library that failed to link), the log says what happened.
        explained = "\nAt:" in reason or "Traceback" in reason
        tail = "" if explained else read_log_tail(self.log_path, since=log_offset, lines=25)
        if answer.status == 507:
            message = (
                f"Instance {self.address} has no memory left to load model '{name}' "
                f"(Triton: {reason}); unload a model or use a larger instance."
            )
        elif "repository not found" in reason:
            message = (
                f"Model '{name}' cannot be loaded: the package directory {url} does not exist "
                f"on the instance's machine (Triton: {reason})."
            )
        else:
            message = f"Model '{name}' failed to load on {self.address}: {reason}"
        return ModelLoadFailed(message, model_name=name, triton_message=reason, log_tail=tail)

    def unload_model(self, name: str, timeout_s: float | None = None) -> bool:
        """Unload ``name`` (``DELETE /models/<name>``, which returns once it is unloaded).

        False when it was not loaded (a model whose load is still running is not yet loaded).
        With gates, the model's requests in flight are drained first (ModelBusy when they do
        not finish within ``drain_timeout_s``; the model then stays loaded).
        """
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        if self.gates is None:
            return self._unload(name, timeout_s)
        try:
            # Drained first, then the control lock: no load waits behind a drain.
            with (
                self.gates.drained(name, timeout_s=self.drain_timeout_s),
                self.gates.control(timeout_s=timeout_s),
            ):
                # Triton releases a request it has answered on the thread that sent the answer,
                # a moment after the client has it; an unload arriving on that thread first
                # waits for a release that can no longer happen (measured: about one unload in
                # a hundred under sustained eviction). A short pause lets those releases land.
                time.sleep(UNLOAD_GRACE_S)
                return self._unload(name, timeout_s)
        except DrainTimedOut as exc:
            raise ModelBusy(
                f"Model '{name}' on {self.address} still had requests in flight after "
                f"{self.drain_timeout_s:g} s, so it was not unloaded; retry shortly."
            ) from exc
        except ControlBusy as exc:
            raise ModelBusy(
                f"Model '{name}' was not unloaded from {self.address}: other loads and unloads "
                f"on the instance held it for {timeout_s:g} s; retry shortly."
            ) from exc

    def _unload(self, name: str, timeout_s: float) -> bool:
        try:
            answer = self._request("DELETE", _model_path(name), timeout_s=timeout_s)
        except ReadTimeoutError as exc:
            raise UnloadTimedOut(
                f"Triton at {self.address} did not confirm unloading '{name}' within "
                f"{timeout_s:g} s; it may still be unloading."
            ) from exc
        if answer.status == 200:
            return True
        if answer.status == 404:
            return False
        raise UpstreamError(
            f"Triton at {self.address} could not unload '{name}' "
            f"(HTTP {answer.status}): {answer.error or 'no details'}"
        )

    # -- inference --

    def invoke(self, name: str, body: dict, timeout_s: float | None = None) -> dict:
        """Run a KServe v2 JSON inference request on ``name`` and return Triton's JSON answer."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            payload = json.dumps(body).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidInferenceInput(f"The inference request is not JSON: {exc}") from exc
        try:
            if self.gates is not None:
                self.gates.enter(name)
        except GateClosed:
            raise ModelNotLoaded(
                f"Model '{name}' is being unloaded from {self.address}; load it again to invoke it."
            ) from None
        try:
            answer = self._request(
                "POST", f"{_model_path(name)}/invoke", body=payload, timeout_s=timeout_s
            )
        except ReadTimeoutError as exc:
            raise UpstreamError(
                f"Model '{name}' on {self.address} did not answer within {timeout_s:g} s."
            ) from exc
        finally:
            if self.gates is not None:
                self.gates.leave(name)
        if answer.status == 200:
            try:
                return json.loads(answer.body)
            except ValueError as exc:
                raise UpstreamError(
                    f"Model '{name}' on {self.address} answered with invalid JSON: "
                    f"{answer.body[:200]!r}"
                ) from exc
        reason = answer.error
        if answer.status == 404 or is_unloading_answer(answer.status, reason):
            raise ModelNotLoaded(
                f"Model '{name}' is not loaded on {self.address}; load it before invoking it."
            )
        if "stub process" in reason.lower() and "not healthy" in reason.lower():
            raise UpstreamError(
                f"Model '{name}' on {self.address} crashed: its Python process is gone "
                f"(Triton: {reason}). Unload and load it again; the Triton log says why."
            )
        lowered = reason.lower()
        if answer.status == 400 and (
            lowered.startswith(_INPUT_ERROR_PREFIXES)
            or any(phrase in lowered for phrase in _INPUT_ERROR_PHRASES)
        ):
            raise InvalidInferenceInput(f"Model '{name}' rejected the request: {reason}")
        raise UpstreamError(
            f"Model '{name}' on {self.address} failed (HTTP {answer.status}): "
            f"{reason or 'no details'}"
        )

    # -- metrics --

    def metrics_text(self) -> str:
        """Triton's Prometheus metrics page, as text."""
        if self._metrics_pool is None:
            raise InstanceUnavailable(f"No metrics port is known for Triton at {self.address}.")
        try:
            response = self._metrics_pool.request("GET", "/metrics", timeout=self.timeout_s)
        except (Urllib3HTTPError, OSError) as exc:
            raise InstanceUnavailable(
                f"Triton's metrics at {self.host}:{self.metrics_port} do not answer: {exc}"
            ) from exc
        if response.status != 200:
            raise UpstreamError(f"Triton's metrics answered HTTP {response.status}.")
        return response.data.decode("utf-8", errors="replace")

    def metrics(self) -> dict:
        """Memory and per-model counters parsed from the metrics page."""
        return triton_memory_metrics(self.metrics_text())


def _model_path(name: str) -> str:
    return f"/models/{quote(name, safe='')}"


def _same_url(left: str, right: str) -> bool:
    return os.path.normpath(left) == os.path.normpath(right)


# --- The backend as the platform sees it -----------------------------------------------------


class LocalTritonBackend:
    """``TritonInstances`` over local Triton processes (one client per instance address)."""

    def __init__(
        self,
        *,
        backend_directory: Path | None = None,
        timeout_s: float = 30.0,
        startup_timeout_s: float = 60.0,
    ) -> None:
        self.backend_directory = backend_directory
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self._clients: dict[tuple[str, int], TritonMultiModelClient] = {}
        self._lock = threading.Lock()

    def client(self, instance: InstanceHandle) -> TritonMultiModelClient:
        key = (instance.host, instance.port)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                log_path = Path(instance.workdir) / LOG_FILE if instance.workdir else None
                client = TritonMultiModelClient(
                    instance.host,
                    instance.port,
                    instance.metrics_port,
                    self.timeout_s,
                    log_path=log_path,
                )
                self._clients[key] = client
            return client

    def start_instance(self, *, workdir: Path, host: str = "127.0.0.1") -> TritonProcess:
        return start_triton(
            workdir=workdir,
            host=host,
            startup_timeout_s=self.startup_timeout_s,
            backend_directory=self.backend_directory,
        )

    def stop_instance(self, instance: InstanceHandle, *, timeout_s: float = 10.0) -> None:
        process = instance if isinstance(instance, TritonProcess) else _as_process(instance)
        stop_triton(process, timeout_s=timeout_s)
        with self._lock:
            client = self._clients.pop((instance.host, instance.port), None)
        if client is not None:
            client.close()

    def is_healthy(self, instance: InstanceHandle) -> bool:
        return self.client(instance).ping()

    def load_model(
        self, instance: InstanceHandle, name: str, model_url: str, *, timeout_s: float
    ) -> LoadResult:
        return self.client(instance).load_model(name, model_url, timeout_s=timeout_s)

    def unload_model(
        self, instance: InstanceHandle, name: str, *, timeout_s: float | None = None
    ) -> bool:
        return self.client(instance).unload_model(name, timeout_s=timeout_s)

    def list_models(self, instance: InstanceHandle) -> list[LoadedModel]:
        return self.client(instance).list_models()

    def invoke(self, instance: InstanceHandle, name: str, body: dict) -> dict:
        return self.client(instance).invoke(name, body)

    def model_memory_mb(self, instance: InstanceHandle, name: str) -> MemoryReading | None:
        if not instance.pid:
            return None
        return model_memory_mb(instance.pid, name)


def _as_process(instance: InstanceHandle) -> TritonProcess:
    return TritonProcess.from_record(
        pid=instance.pid or 0,
        host=instance.host,
        port=instance.port,
        metrics_port=instance.metrics_port,
        workdir=instance.workdir,
    )


# --- Model packages --------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def prepare_model_dir(*, package_path: Path, expected_sha256: str, models_root: Path) -> Path:
    """Verify and unpack a ``model.tar.gz`` once; return the MME ``url`` directory.

    The tarball's sha256 is checked before anything is extracted (PackageChecksumMismatch names
    both digests); members with absolute paths, ``..``, links leading outside or device files
    are refused (InvalidPackage), and so is a package over ``PACKAGE_MAX_MEMBERS`` members or
    ``PACKAGE_MAX_UNPACKED_BYTES`` unpacked (a decompression bomb). The package is unpacked
    into a temporary directory and renamed to ``models_root/<sha256>/``, so a directory under
    that name is always complete and a second call returns it without reading the tarball
    again. The returned directory is the one holding ``<triton_model>/config.pbtxt``.
    """
    expected = expected_sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise InvalidPackage(
            f"{expected_sha256!r} is not a sha256 hex digest; the version's recorded checksum "
            "is missing or damaged."
        )
    models_root = Path(models_root).resolve()
    target = models_root / expected
    if target.is_dir():
        return _repository_dir(target)
    package_path = Path(package_path)
    try:
        actual = sha256_file(package_path)
    except FileNotFoundError as exc:
        raise InvalidPackage(f"The model package {package_path} does not exist.") from exc
    if actual != expected:
        raise PackageChecksumMismatch(
            f"Triton package {package_path} has sha256 {actual}, but {expected} was recorded "
            "when it was built; it is corrupt or was replaced, so it was not unpacked. Rebuild "
            "the package for this version."
        )
    models_root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{expected[:16]}-", dir=models_root))
    try:
        unpacked = scratch / "package"
        unpacked.mkdir()
        _extract_safely(package_path, unpacked)
        repository = _repository_dir(unpacked)
        relative = repository.relative_to(unpacked)
        try:
            os.rename(unpacked, target)
        except OSError as exc:
            # A concurrent call unpacked the same digest first; the contents are identical.
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        return target / relative
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _extract_safely(package_path: Path, destination: Path) -> None:
    # Our own member checks first (their messages name the escape precisely), then the bounded
    # extraction: member count and unpacked size within PACKAGE_MAX_MEMBERS and
    # PACKAGE_MAX_UNPACKED_BYTES, with the data filter as a second line of defence.
    artifacts.extract_tarball(
        package_path,
        destination,
        error=InvalidPackage,
        label="Model package",
        check_member=lambda member: _check_member(member, package_path),
    )


def _check_member(member: tarfile.TarInfo, package_path: Path) -> None:
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or ".." in parts:
        raise InvalidPackage(
            f"Model package {package_path} is unsafe: member {name!r} would be written outside "
            "the package directory; it was refused before anything was unpacked."
        )
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise InvalidPackage(
            f"Model package {package_path} is unsafe: member {name!r} is a device, FIFO or "
            "other special file."
        )
    if member.issym() or member.islnk():
        link = PurePosixPath(member.linkname)
        base = PurePosixPath(name).parent if member.issym() else PurePosixPath()
        depth = 0
        for part in (base / link).parts if not link.is_absolute() else ["/"]:
            if part == "/":
                depth = -1
                break
            depth += -1 if part == ".." else (0 if part == "." else 1)
            if depth < 0:
                break
        if depth < 0:
            raise InvalidPackage(
                f"Model package {package_path} is unsafe: link {name!r} -> "
                f"{member.linkname!r} points outside the package."
            )


def _repository_dir(root: Path) -> Path:
    """The directory under ``root`` whose subdirectories hold ``config.pbtxt``."""
    candidates = [root]
    children = [c for c in root.iterdir() if c.is_dir()] if root.is_dir() else []
    if len(children) == 1:
        # Also accept a package wrapped in one extra top-level directory.
        candidates.append(children[0])
    for candidate in candidates:
        if any(
            (model / "config.pbtxt").is_file() for model in candidate.iterdir() if model.is_dir()
        ):
            return candidate
    raise InvalidPackage(
        f"The model package unpacked in {root} holds no <model>/config.pbtxt; a Triton package "
        "must contain <triton_model_name>/config.pbtxt and <triton_model_name>/1/model.py."
    )


# --- Memory and metrics ----------------------------------------------------------------------


def _stub_processes(triton_pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(triton_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    stubs = []
    for child in children:
        try:
            argv = child.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if argv and Path(argv[0]).name == STUB_NAME:
            stubs.append(child)
    return stubs


def _stub_belongs_to(argv: list[str], model_name_or_dir: str) -> bool:
    """Whether a stub's argv serves the model named (or unpacked at) ``model_name_or_dir``.

    The stub's argv holds the path of the model's ``model.py`` and the instance name, which is
    the model name followed by ``_<group>[_<index>]``.
    """
    if os.sep in model_name_or_dir:
        directory = os.path.normpath(os.path.abspath(model_name_or_dir))
        return any(
            arg.endswith(".py") and os.path.normpath(arg).startswith(directory + os.sep)
            for arg in argv[1:]
        )
    pattern = re.compile(rf"{re.escape(model_name_or_dir)}(_\d+)+")
    return any(pattern.fullmatch(arg) for arg in argv[1:])


def _pss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def model_memory_mb(triton_pid: int, model_name_or_dir: str | Path) -> MemoryReading | None:
    """Host memory of one loaded python-backend model: the sum over its stub processes.

    ``model_name_or_dir`` is the name the model was loaded under, or the directory it was
    loaded from. None when the server has no stub for it (not loaded, still loading, or a model
    served inside the server process by another backend, whose memory cannot be told apart).
    """
    target = str(model_name_or_dir)
    rss = 0
    pss: int | None = 0
    count = 0
    for stub in _stub_processes(triton_pid):
        try:
            if not _stub_belongs_to(stub.cmdline(), target):
                continue
            rss += stub.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        count += 1
        stub_pss = _pss_bytes(stub.pid)
        pss = None if stub_pss is None or pss is None else pss + stub_pss
    if count == 0:
        return None
    return MemoryReading(
        rss_mb=round(rss / MB, 2),
        pss_mb=round(pss / MB, 2) if pss is not None else None,
        processes=count,
    )


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_MODEL_COUNTERS = {
    "nv_inference_request_success": "request_success",
    "nv_inference_request_failure": "request_failure",
    "nv_inference_count": "inference_count",
    "nv_inference_exec_count": "exec_count",
    "nv_inference_pending_request_count": "pending_request_count",
    "nv_inference_request_duration_us": "request_duration_us",
    "nv_inference_queue_duration_us": "queue_duration_us",
    "nv_inference_compute_input_duration_us": "compute_input_duration_us",
    "nv_inference_compute_infer_duration_us": "compute_infer_duration_us",
    "nv_inference_compute_output_duration_us": "compute_output_duration_us",
}


def parse_prometheus_text(text: str) -> list[tuple[str, dict[str, str], float]]:
    """The samples of a Prometheus text page as (name, labels, value) triples."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, raw_labels, raw_value = match.groups()
        try:
            value = float(raw_value)
        except ValueError:
            continue
        labels = {
            key: value_.replace('\\"', '"') for key, value_ in _LABEL.findall(raw_labels or "")
        }
        samples.append((name, labels, value))
    return samples


def triton_memory_metrics(metrics_text: str) -> dict:
    """Memory, GPU and per-model inference figures from Triton's Prometheus text.

    Returns ``{"cpu_memory_used_mb", "cpu_memory_total_mb", "cpu_utilization",
    "gpu_memory_used_mb", "gpu_memory_total_mb", "gpu_utilization", "gpus": {uuid: {...}},
    "models": {name: {"request_success", "request_failure", "inference_count", "exec_count",
    "pending_request_count", "request_duration_us", "queue_duration_us", ...}}}``; figures
    Triton does not report are None (GPU ones on a CPU-only machine). Note that Triton's
    ``nv_cpu_memory_used_bytes`` is the whole machine's used RAM, not the server's own.
    Counters are summed over model versions (and over failure reasons).
    """
    result: dict = {
        "cpu_memory_used_mb": None,
        "cpu_memory_total_mb": None,
        "cpu_utilization": None,
        "gpu_memory_used_mb": None,
        "gpu_memory_total_mb": None,
        "gpu_utilization": None,
        "gpus": {},
        "models": {},
    }
    gpu_fields = {
        "nv_gpu_memory_used_bytes": ("memory_used_mb", MB),
        "nv_gpu_memory_total_bytes": ("memory_total_mb", MB),
        "nv_gpu_utilization": ("utilization", 1),
    }
    for name, labels, value in parse_prometheus_text(metrics_text):
        if name == "nv_cpu_memory_used_bytes":
            result["cpu_memory_used_mb"] = value / MB
        elif name == "nv_cpu_memory_total_bytes":
            result["cpu_memory_total_mb"] = value / MB
        elif name == "nv_cpu_utilization":
            result["cpu_utilization"] = value
        elif name in gpu_fields:
            key, scale = gpu_fields[name]
            gpu = result["gpus"].setdefault(labels.get("gpu_uuid", "gpu"), {})
            gpu[key] = value / scale
        elif name in _MODEL_COUNTERS and "model" in labels:
            counters = result["models"].setdefault(labels["model"], {})
            key = _MODEL_COUNTERS[name]
            counters[key] = counters.get(key, 0) + value
    if result["gpus"]:
        gpus = result["gpus"].values()
        result["gpu_memory_used_mb"] = sum(g.get("memory_used_mb", 0) for g in gpus)
        result["gpu_memory_total_mb"] = sum(g.get("memory_total_mb", 0) for g in gpus)
        result["gpu_utilization"] = max(g.get("utilization", 0) for g in gpus)
    return result
