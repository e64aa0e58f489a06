"""Triton server processes on this machine, in SageMaker multi-model mode.

Each endpoint instance is one ``tritonserver`` (shipped inside nvidia-pytriton) speaking the
SageMaker MME protocol on its own port, with metrics on another. This module prepares Triton's
backend directory (the python backend plus the stub built for the running Python) and starts and
stops servers without leaving processes or shared memory behind.

Facts about Triton 2.51 this code relies on (measured, see the tests):

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
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

from deployments.backends.local.instances import (
    InstanceHandle,
)
from deployments.exceptions import (
    InstanceUnavailable,
)

logger = logging.getLogger(__name__)

STUB_NAME = "triton_python_backend_stub"
TRITONSERVER_NAME = "tritonserver"
LOG_FILE = "triton.log"
MODEL_REPOSITORY_DIR = "model-repository"
# Where a multi-model server's loopback model-control port (Triton's own HTTP API) is written,
# in its working directory: every process that unloads models on the instance reads it there.
HTTP_PORT_FILE = "http.port"
MB = 1024 * 1024
# How long Triton waits for in-flight work and model unloads after SIGTERM (its default is 30 s,
# far longer than a platform stop should take).
EXIT_TIMEOUT_S = 5
_LOG_TAIL_LINES = 40
_LOG_TAIL_BYTES = 64 * 1024
_PORT_ATTEMPTS = 3
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
    # Triton's own HTTP API on the loopback (model control: fast unloads); None where not served.
    http_port: int | None = None
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
            http_port=read_http_port(Path(workdir)) if workdir else None,
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


def read_http_port(workdir: Path | None) -> int | None:
    """The model-control port the server in ``workdir`` was started with, or None."""
    if workdir is None:
        return None
    try:
        return int((Path(workdir) / HTTP_PORT_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


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


def log_size(log_path: Path | None) -> int:
    """The size of a server's log now (where a later tail starts); 0 without one."""
    try:
        return log_path.stat().st_size if log_path else 0
    except OSError:
        return 0


def _server_env(
    extra_env: Mapping[str, str | None] | None, *, multi_model: bool = True
) -> dict[str, str]:
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
    if multi_model:
        env["SAGEMAKER_MULTI_MODEL"] = "true"
    else:
        env.pop("SAGEMAKER_MULTI_MODEL", None)
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
    # None removes a variable: a caller emulating another image must be able to take away what
    # this host's environment would otherwise leak into model code (PYTHONPATH).
    for name, value in (extra_env or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
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
    load_models: Sequence[str] = (),
    http_port: int | None = None,
) -> list[str]:
    # Triton's own HTTP API, on the loopback only, serves model control: its unload returns at
    # once and the platform polls for the end (about 1.2 s for a python-backend model), where
    # the SageMaker front end's DELETE always takes 2 s (it sleeps a second between checks and
    # once more after the last). See docs/benchmarks.md, "Churn".
    http = (
        ["--allow-http=true", f"--http-address={host}", f"--http-port={http_port}"]
        if http_port
        else ["--allow-http=false"]
    )
    return [
        str(binary),
        "--allow-sagemaker=true",
        f"--sagemaker-port={port}",
        *http,
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
        *(f"--load-model={name}" for name in load_models),
    ]


def start_triton(
    *,
    workdir: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    metrics_port: int | None = None,
    startup_timeout_s: float = 60.0,
    extra_env: Mapping[str, str | None] | None = None,
    backend_directory: Path | None = None,
    model_repository: Path | None = None,
    load_models: Sequence[str] = (),
    multi_model: bool = True,
) -> TritonProcess:
    """Start one Triton server in SageMaker mode and return once ``/ping`` is 200.

    Free ports are picked when none are given. The server runs in its own session (so stopping
    it reaches the python stubs it forks), with ``workdir`` as its working directory, an empty
    model repository under it and its output appended to ``workdir/triton.log``. Raises
    InstanceUnavailable, with the end of the log, if it exits or does not answer in time.

    By default it is a multi-model (MME) server. ``multi_model=False`` with a
    ``model_repository`` and ``load_models`` starts it as SageMaker's Triton image starts a
    single-model endpoint: those models loaded at startup, and a failed load ends the server.
    ``extra_env`` values override the environment; a None value removes the variable.
    """
    binary = _require_tritonserver()
    workdir = Path(workdir).resolve()
    if model_repository is None:
        repository = workdir / MODEL_REPOSITORY_DIR
        repository.mkdir(parents=True, exist_ok=True)
    else:
        repository = Path(model_repository).resolve()
    backend_directory = Path(backend_directory or prepare_triton_home(default_var_dir()))
    env = _server_env(extra_env, multi_model=multi_model)
    log_path = workdir / LOG_FILE
    fixed_ports = port is not None and metrics_port is not None
    last_error: InstanceUnavailable | None = None
    for _attempt in range(1 if fixed_ports else _PORT_ATTEMPTS):
        chosen_port = port or find_free_port(host)
        chosen_metrics = metrics_port or find_free_port(host)
        while chosen_metrics == chosen_port and metrics_port is None:
            chosen_metrics = find_free_port(host)
        chosen_http = None
        if multi_model:
            chosen_http = find_free_port(host)
            while chosen_http in (chosen_port, chosen_metrics):
                chosen_http = find_free_port(host)
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
                load_models=load_models,
                http_port=chosen_http,
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
    load_models: Sequence[str] = (),
    http_port: int | None = None,
) -> TritonProcess:
    shm_prefix = shm_prefix_for(workdir, port)
    with contextlib.suppress(FileNotFoundError):
        (workdir / HTTP_PORT_FILE).unlink()  # a previous server's; written again once up
    argv = _server_argv(
        binary=binary,
        host=host,
        port=port,
        metrics_port=metrics_port,
        repository=repository,
        backend_directory=backend_directory,
        shm_prefix=shm_prefix,
        load_models=load_models,
        http_port=http_port,
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
    if http_port:
        scratch = workdir / f".{HTTP_PORT_FILE}.{popen.pid}"
        scratch.write_text(f"{http_port}\n")
        scratch.replace(workdir / HTTP_PORT_FILE)
    return TritonProcess(
        host=host,
        port=port,
        metrics_port=metrics_port,
        pid=popen.pid,
        workdir=workdir,
        log_path=log_path,
        startup_s=startup_s,
        popen=popen,
        http_port=http_port,
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


def kill_triton(process: TritonProcess) -> None:
    """Kill a Triton server and everything it started at once (SIGKILL to its group), then
    sweep its shared memory: for a server whose models need no orderly unload, such as one
    being thrown away with everything it held."""
    if process.pid:
        _kill_group(process.pid)
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
