"""The local backend against a real tritonserver: processes, the SageMaker MME protocol, packages,
memory. The models are tiny python-backend models the tests write themselves (triton_support).
"""

from __future__ import annotations

import os
import signal
import socket
import tarfile
import time
from pathlib import Path

import psutil
import pytest

from deployments.backends.local.client import TritonMultiModelClient, triton_memory_metrics
from deployments.backends.local.instances import InstanceHandle, LoadedModel, TritonInstances
from deployments.backends.local.memory import model_memory_mb
from deployments.backends.local.packages import prepare_model_dir
from deployments.backends.local.process import (
    TritonProcess,
    prepare_triton_home,
    shm_prefix_for,
    start_triton,
    stop_triton,
    tritonserver_path,
)
from deployments.backends.local.triton import LocalTritonBackend
from deployments.exceptions import (
    InstanceUnavailable,
    InvalidInferenceInput,
    InvalidPackage,
    ModelLoadConflict,
    ModelLoadFailed,
    ModelLoadTimedOut,
    ModelNotLoaded,
    UpstreamError,
)
from models_registry.exceptions import PackageChecksumMismatch
from tests.triton_support import (
    BROKEN_INITIALIZE_MESSAGE,
    RAISES_IN_EXECUTE,
    RAISES_IN_INITIALIZE,
    UPPER_CASE_ECHO,
    build_package,
    build_raw_package,
    output_data,
    sleeps_in_initialize,
    text_request,
    write_model,
)

needs_triton = pytest.mark.skipif(
    tritonserver_path() is None,
    reason="tritonserver not found: nvidia-pytriton (which ships it) is not installed here",
)

# Short timeouts keep a hung server from stalling the suite; a healthy load takes ~1.5 s here.
# Tests on the shared server use unique model names and leave their models loaded unless
# unloading is what they check: an unload takes about 2 s (Triton polls the model's state).
LOAD_TIMEOUT_S = 30.0


@pytest.fixture(scope="session")
def backend_directory(tmp_path_factory) -> Path:
    if tritonserver_path() is None:
        pytest.skip("tritonserver not found: nvidia-pytriton is not installed here")
    return prepare_triton_home(tmp_path_factory.mktemp("var"))


@pytest.fixture(scope="session")
def triton(tmp_path_factory, backend_directory):
    """One Triton server shared by the tests that do not need a fresh one."""
    process = start_triton(
        workdir=tmp_path_factory.mktemp("instance"),
        backend_directory=backend_directory,
        startup_timeout_s=30,
    )
    yield process
    stop_triton(process)


@pytest.fixture(scope="session")
def client(triton) -> TritonMultiModelClient:
    client = TritonMultiModelClient.for_process(triton, timeout_s=LOAD_TIMEOUT_S)
    yield client
    client.close()


@pytest.fixture
def fresh_triton(tmp_path, backend_directory):
    """A server of the test's own, for tests that stop or kill it."""
    process = start_triton(
        workdir=tmp_path / "instance", backend_directory=backend_directory, startup_timeout_s=30
    )
    yield process
    stop_triton(process, timeout_s=5)


def _unique(name: str) -> str:
    return f"{name}-{time.monotonic_ns()}"


def _stub_pids(triton_pid: int) -> list[int]:
    try:
        children = psutil.Process(triton_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [c.pid for c in children if "triton_python_backend_stub" in " ".join(c.cmdline())]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --- Processes -------------------------------------------------------------------------------


@needs_triton
def test_prepared_backend_directory_holds_the_stub_for_this_python_and_is_reused(
    tmp_path, backend_directory
):
    stub = backend_directory / "python" / "triton_python_backend_stub"
    assert os.access(stub, os.X_OK)
    assert (backend_directory / "python" / "libtriton_python.so").is_file()

    first = prepare_triton_home(tmp_path)
    assert prepare_triton_home(tmp_path) == first
    # Built in a scratch directory and renamed: nothing half-made is left beside it.
    assert [p.name for p in first.parent.iterdir()] == [first.name]


@needs_triton
def test_started_server_answers_ping_and_stop_leaves_no_process_behind(tmp_path, backend_directory):
    process = start_triton(
        workdir=tmp_path / "instance", backend_directory=backend_directory, startup_timeout_s=30
    )
    client = TritonMultiModelClient.for_process(process, timeout_s=LOAD_TIMEOUT_S)
    assert process.startup_s is not None and process.startup_s < 30
    assert client.ping()
    assert client.list_models() == []
    repository = write_model(tmp_path / "echo", "echo", UPPER_CASE_ECHO)
    client.load_model("echo", str(repository))
    stubs = _stub_pids(process.pid)
    assert stubs, "a loaded python model runs in a stub process"
    assert list(Path("/dev/shm").glob(f"{process.shm_prefix}*"))

    # Stopped the way another worker would: from the values recorded on the instance row.
    recorded = TritonProcess.from_record(
        pid=process.pid,
        host=process.host,
        port=process.port,
        metrics_port=process.metrics_port,
        workdir=process.workdir,
    )
    stop_triton(recorded, timeout_s=10)
    process.popen.wait(timeout=5)  # reap our child; the stop itself did not need to

    assert not _alive(process.pid)
    assert not any(_alive(pid) for pid in stubs)
    assert not list(Path("/dev/shm").glob(f"{process.shm_prefix}*"))
    assert not client.ping()
    stop_triton(recorded)  # stopping a stopped server is a no-op
    assert "Started Sagemaker HTTPService" in (tmp_path / "instance" / "triton.log").read_text()


@needs_triton
def test_server_that_cannot_bind_its_port_fails_with_the_reason_from_its_log(
    tmp_path, backend_directory
):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InstanceUnavailable) as caught:
            start_triton(
                workdir=tmp_path / "instance",
                port=port,
                metrics_port=port + 1 if port < 65535 else port - 1,
                backend_directory=backend_directory,
                startup_timeout_s=15,
            )
    assert "exited" in caught.value.message
    assert "already in use" in caught.value.message


@needs_triton
def test_killed_server_is_unhealthy_and_calls_fail_fast_without_hanging(tmp_path, fresh_triton):
    client = TritonMultiModelClient.for_process(fresh_triton, timeout_s=LOAD_TIMEOUT_S)
    repository = write_model(tmp_path / "echo", "echo", UPPER_CASE_ECHO)
    client.load_model("echo", str(repository))
    assert output_data(client.invoke("echo", text_request("hi"))) == ["HI"]
    stubs = _stub_pids(fresh_triton.pid)

    os.kill(fresh_triton.pid, signal.SIGKILL)
    fresh_triton.popen.wait(timeout=5)

    started = time.monotonic()
    assert not client.ping()
    assert not LocalTritonBackend().is_healthy(fresh_triton)
    with pytest.raises(InstanceUnavailable):
        client.list_models()
    with pytest.raises(InstanceUnavailable):
        client.invoke("echo", text_request("hi"))
    with pytest.raises(InstanceUnavailable):
        client.load_model("echo", str(repository), timeout_s=5)
    assert time.monotonic() - started < 5

    # The stubs it orphaned and its shared memory are cleaned up by stopping it.
    stop_triton(fresh_triton)
    assert not any(_alive(pid) for pid in stubs)
    assert not list(Path("/dev/shm").glob(f"{fresh_triton.shm_prefix}*"))


# --- The multi-model protocol ----------------------------------------------------------------


@needs_triton
def test_loaded_model_is_listed_answers_and_is_gone_after_unload(tmp_path, triton, client):
    name = _unique("acme.echo.v1")
    repository = str(write_model(tmp_path / "repo", "echo", UPPER_CASE_ECHO))

    result = client.load_model(name, repository, timeout_s=LOAD_TIMEOUT_S)

    assert not result.already_loaded
    assert LoadedModel(name=name, url=repository) in client.list_models()
    assert client.get_model(name) == LoadedModel(name=name, url=repository)
    answer = client.invoke(name, text_request("hello", "World"))
    assert output_data(answer) == ["HELLO", "WORLD"]

    assert client.unload_model(name) is True
    assert name not in [m.name for m in client.list_models()]
    assert client.get_model(name) is None
    with pytest.raises(ModelNotLoaded):
        client.invoke(name, text_request("hello"))
    assert client.unload_model(name) is False


@needs_triton
def test_loading_a_loaded_model_again_reports_it_as_already_loaded(tmp_path, client):
    name = _unique("acme.echo.v2")
    repository = str(write_model(tmp_path / "repo", "echo", UPPER_CASE_ECHO))
    client.load_model(name, repository)

    again = client.load_model(name, repository)

    assert again.already_loaded
    assert again.load_time_ms < 1000


@needs_triton
def test_a_name_or_directory_already_in_use_is_a_conflict(tmp_path, client):
    name = _unique("acme.echo.v3")
    first = str(write_model(tmp_path / "first", "echo", UPPER_CASE_ECHO))
    second = str(write_model(tmp_path / "second", "echo", UPPER_CASE_ECHO))
    client.load_model(name, first)

    with pytest.raises(ModelLoadConflict, match="already loaded .* from"):
        client.load_model(name, second)
    with pytest.raises(ModelLoadConflict, match=f"already loaded .* as '{name}'"):
        client.load_model(_unique("other"), first)


@needs_triton
def test_model_whose_initialize_raises_fails_cleanly_and_the_server_keeps_serving(tmp_path, client):
    broken = str(write_model(tmp_path / "broken", "broken", RAISES_IN_INITIALIZE))

    with pytest.raises(ModelLoadFailed) as caught:
        client.load_model(_unique("acme.broken.v1"), broken)

    assert BROKEN_INITIALIZE_MESSAGE in caught.value.message
    assert "RuntimeError" in caught.value.triton_message
    assert "initialize" in caught.value.message  # the traceback's frame
    assert client.ping()
    # Triton forgot the failed repository: the same load fails the same way, not as a conflict.
    with pytest.raises(ModelLoadFailed, match="tokenizer file is missing"):
        client.load_model(_unique("acme.broken.v1"), broken)
    healthy = _unique("acme.echo.v4")
    client.load_model(healthy, str(write_model(tmp_path / "ok", "echo", UPPER_CASE_ECHO)))
    assert output_data(client.invoke(healthy, text_request("still up"))) == ["STILL UP"]


@needs_triton
def test_slow_load_is_bounded_by_the_timeout_and_can_be_awaited_later(tmp_path, client):
    name = _unique("acme.slow.v1")
    repository = str(write_model(tmp_path / "slow", "slow", sleeps_in_initialize(4)))

    started = time.monotonic()
    with pytest.raises(ModelLoadTimedOut):
        client.load_model(name, repository, timeout_s=1)
    assert time.monotonic() - started < 2.5

    # Triton goes on loading it; asking again waits for that load instead of failing on 409.
    result = client.load_model(name, repository, timeout_s=LOAD_TIMEOUT_S)
    assert result.already_loaded
    assert output_data(client.invoke(name, text_request("late"))) == ["LATE"]


@needs_triton
def test_a_missing_package_directory_is_reported_as_such(tmp_path, client):
    with pytest.raises(ModelLoadFailed, match="does not exist"):
        client.load_model(_unique("ghost"), str(tmp_path / "nowhere"))


@needs_triton
def test_bad_requests_and_model_errors_are_told_apart(tmp_path, client):
    echo = _unique("acme.echo.v5")
    failing = _unique("acme.failing.v1")
    client.load_model(echo, str(write_model(tmp_path / "echo", "echo", UPPER_CASE_ECHO)))
    client.load_model(failing, str(write_model(tmp_path / "fail", "fail", RAISES_IN_EXECUTE)))
    wrong_name = {"name": "WRONG", "shape": [1, 1], "datatype": "BYTES", "data": ["x"]}

    with pytest.raises(InvalidInferenceInput, match="unexpected inference input 'WRONG'"):
        client.invoke(echo, {"inputs": [wrong_name]})
    with pytest.raises(InvalidInferenceInput, match="batch-size must be <= 8"):
        client.invoke(echo, text_request(*["x"] * 9))
    with pytest.raises(InvalidInferenceInput, match="data-type is 'FP32'"):
        client.invoke(
            echo, {"inputs": [{**wrong_name, "name": "TEXT", "datatype": "FP32", "data": [1.0]}]}
        )
    with pytest.raises(UpstreamError, match="label map is empty"):
        client.invoke(failing, text_request("x"))


# --- Memory and metrics ----------------------------------------------------------------------


@needs_triton
def test_memory_of_a_loaded_model_is_measured_and_gone_after_unload(tmp_path, triton, client):
    name = _unique("acme.echo.v6")
    repository = write_model(tmp_path / "repo", "echo", UPPER_CASE_ECHO)
    assert model_memory_mb(triton.pid, name) is None
    client.load_model(name, str(repository))

    by_name = model_memory_mb(triton.pid, name)
    by_directory = model_memory_mb(triton.pid, repository)

    assert by_name is not None and by_name.processes == 1
    # A python stub with NumPy imported holds tens of MB; anything near zero is a wrong process.
    assert 5 < by_name.rss_mb < 500
    assert by_name.pss_mb is not None and 0 < by_name.pss_mb <= by_name.rss_mb + 1
    assert by_directory is not None and by_directory.processes == 1
    assert LocalTritonBackend().model_memory_mb(triton, name).processes == 1
    # A prefix of the name is another model, not this one.
    assert model_memory_mb(triton.pid, name[:-1]) is None

    client.unload_model(name)
    assert model_memory_mb(triton.pid, name) is None


@needs_triton
def test_metrics_count_each_models_inferences(tmp_path, client):
    name = _unique("acme.echo.v7")
    client.load_model(name, str(write_model(tmp_path / "repo", "echo", UPPER_CASE_ECHO)))
    client.invoke(name, text_request("a", "b", "c"))
    client.invoke(name, text_request("d"))

    metrics = client.metrics()

    assert metrics["models"][name]["request_success"] == 2
    assert metrics["models"][name]["inference_count"] == 4
    assert metrics["cpu_memory_used_mb"] > 0


def test_metrics_parser_reads_memory_gpus_and_per_model_counters():
    text = """\
# HELP nv_cpu_memory_used_bytes CPU used memory (RAM), in bytes
# TYPE nv_cpu_memory_used_bytes gauge
nv_cpu_memory_used_bytes 1073741824
nv_cpu_memory_total_bytes 17179869184
nv_gpu_memory_used_bytes{gpu_uuid="GPU-1"} 2147483648
nv_gpu_memory_total_bytes{gpu_uuid="GPU-1"} 16106127360
nv_gpu_utilization{gpu_uuid="GPU-1"} 0.5
nv_inference_request_success{model="acme.intent.v3",version="1"} 7
nv_inference_request_failure{model="acme.intent.v3",reason="BACKEND",version="1"} 1
nv_inference_request_failure{model="acme.intent.v3",reason="REJECTED",version="1"} 2
nv_inference_count{model="acme.intent.v3",version="1"} 12
"""
    metrics = triton_memory_metrics(text)

    assert metrics["cpu_memory_used_mb"] == 1024
    assert metrics["cpu_memory_total_mb"] == 16384
    assert metrics["gpu_memory_used_mb"] == 2048
    assert metrics["gpus"]["GPU-1"]["utilization"] == 0.5
    assert metrics["models"]["acme.intent.v3"] == {
        "request_success": 7,
        "request_failure": 3,
        "inference_count": 12,
    }
    assert triton_memory_metrics("")["gpu_memory_used_mb"] is None


# --- Packages --------------------------------------------------------------------------------


@needs_triton
def test_a_verified_package_is_unpacked_once_and_serves(tmp_path, client):
    package = build_package(tmp_path, "acme.echo.v8", UPPER_CASE_ECHO)
    models_root = tmp_path / "models"

    url = prepare_model_dir(
        package_path=package.path, expected_sha256=package.sha256, models_root=models_root
    )

    assert url == models_root / package.sha256
    assert (url / "acme.echo.v8" / "config.pbtxt").is_file()
    # Already unpacked: the tarball is not needed (nor read) again.
    package.path.unlink()
    again = prepare_model_dir(
        package_path=package.path, expected_sha256=package.sha256, models_root=models_root
    )
    assert again == url
    assert [p.name for p in models_root.iterdir()] == [package.sha256]

    client.load_model("acme.echo.v8", str(url))
    assert output_data(client.invoke("acme.echo.v8", text_request("pkg"))) == ["PKG"]


def test_package_with_the_wrong_checksum_is_refused_before_extraction(tmp_path):
    package = build_package(tmp_path, "acme.echo.v9", UPPER_CASE_ECHO)
    recorded = "0" * 64
    models_root = tmp_path / "models"

    with pytest.raises(PackageChecksumMismatch) as caught:
        prepare_model_dir(
            package_path=package.path, expected_sha256=recorded, models_root=models_root
        )

    assert package.sha256 in caught.value.message
    assert recorded in caught.value.message
    assert not models_root.exists() or not any(models_root.iterdir())


@pytest.mark.parametrize(
    "member",
    [
        ("../escaped.txt", b"outside"),
        ("model/../../escaped.txt", b"outside"),
        ("/tmp/absolute-escape.txt", b"outside"),
    ],
    ids=["parent", "nested-parent", "absolute"],
)
def test_package_with_members_outside_its_directory_is_refused(tmp_path, member):
    package = build_raw_package(
        tmp_path / "evil.tar.gz", [("m/config.pbtxt", b'backend: "python"'), member]
    )
    models_root = tmp_path / "models"

    with pytest.raises(InvalidPackage, match="outside"):
        prepare_model_dir(
            package_path=package.path, expected_sha256=package.sha256, models_root=models_root
        )

    assert not (tmp_path / "escaped.txt").exists()
    assert not (models_root / package.sha256).exists()
    assert not [p for p in models_root.iterdir() if not p.name.startswith(".")]


def test_package_with_a_link_leading_outside_is_refused(tmp_path):
    link = tarfile.TarInfo("m/1/secrets")
    link.type = tarfile.SYMTYPE
    link.linkname = "../../../../etc"
    package = build_raw_package(
        tmp_path / "link.tar.gz", [("m/config.pbtxt", b'backend: "python"'), link]
    )

    with pytest.raises(InvalidPackage, match="points outside"):
        prepare_model_dir(
            package_path=package.path,
            expected_sha256=package.sha256,
            models_root=tmp_path / "models",
        )


def test_package_without_a_triton_model_is_refused(tmp_path):
    package = build_raw_package(tmp_path / "empty.tar.gz", [("README", b"no model here")])

    with pytest.raises(InvalidPackage, match="config.pbtxt"):
        prepare_model_dir(
            package_path=package.path,
            expected_sha256=package.sha256,
            models_root=tmp_path / "models",
        )
    assert not (tmp_path / "models" / package.sha256).exists()


# --- The protocol the platform codes against -------------------------------------------------


@needs_triton
def test_local_backend_is_a_serving_backend_end_to_end(tmp_path, backend_directory):
    backend = LocalTritonBackend(backend_directory=backend_directory, timeout_s=LOAD_TIMEOUT_S)
    assert isinstance(backend, TritonInstances)
    started = backend.start_instance(workdir=tmp_path / "instance")
    # What the platform records, handed back in later calls.
    handle = InstanceHandle(
        host=started.host,
        port=started.port,
        metrics_port=started.metrics_port,
        pid=started.pid,
        workdir=started.workdir,
    )
    try:
        assert backend.is_healthy(handle)
        url = str(write_model(tmp_path / "repo", "echo", UPPER_CASE_ECHO))
        backend.load_model(handle, "acme.echo.v10", url, timeout_s=LOAD_TIMEOUT_S)
        assert [m.name for m in backend.list_models(handle)] == ["acme.echo.v10"]
        answer = backend.invoke(handle, "acme.echo.v10", text_request("protocol"))
        assert output_data(answer) == ["PROTOCOL"]
        assert backend.model_memory_mb(handle, "acme.echo.v10").rss_mb > 0
        assert backend.unload_model(handle, "acme.echo.v10")
    finally:
        backend.stop_instance(handle)
        started.popen.wait(timeout=5)
    assert not backend.is_healthy(handle)
    assert not _alive(started.pid)
    assert shm_prefix_for(handle.workdir, handle.port) == started.shm_prefix


@pytest.mark.parametrize(
    ("platform_value", "triton_value"),
    [(None, "1048576"), ("131072", "131072"), ("", None)],
    ids=["default-1MiB", "operator-choice", "empty-means-glibc-default"],
)
def test_triton_returns_large_freed_allocations_unless_told_otherwise(
    tmp_path, backend_directory, monkeypatch, platform_value, triton_value
):
    if platform_value is None:
        monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    else:
        monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", platform_value)
    process = start_triton(
        workdir=tmp_path / "instance", backend_directory=backend_directory, startup_timeout_s=30
    )
    try:
        environment = psutil.Process(process.pid).environ()
    finally:
        stop_triton(process)

    assert environment.get("MALLOC_MMAP_THRESHOLD_") == triton_value
