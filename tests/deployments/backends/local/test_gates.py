"""Invocation gates: an unload waits for the model's requests in flight, in every process, and
lets none in meanwhile; and against a real Triton, unloading a model under load stays prompt."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deployments.backends.local.client import TritonMultiModelClient
from deployments.backends.local.gates import ControlBusy, DrainTimedOut, GateClosed, ModelGates
from deployments.backends.local.process import (
    prepare_triton_home,
    start_triton,
    stop_triton,
    tritonserver_path,
)
from deployments.exceptions import ModelBusy, ModelLoadTimedOut, ModelNotLoaded
from tests.triton_support import UPPER_CASE_ECHO, output_data, text_request, write_model

REPO = Path(__file__).resolve().parents[4]

HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from deployments.backends.local.gates import ModelGates
gates = ModelGates({directory!r})
gates.enter("m")
print("in", flush=True)
time.sleep({seconds!r})
gates.leave("m")
"""


def hold_in_another_process(directory: Path, seconds: float) -> subprocess.Popen:
    """A process with one request in flight on model "m" for ``seconds``."""
    code = HOLDER.format(repo=str(REPO), directory=str(directory), seconds=seconds)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "in"
    return process


def test_requests_enter_and_leave_and_an_unload_shuts_the_gate(tmp_path):
    gates = ModelGates(tmp_path)
    gates.enter("m")
    gates.enter("m")
    assert gates.in_flight("m") == 2
    gates.leave("m")
    gates.leave("m")
    assert gates.in_flight("m") == 0

    with gates.drained("m", timeout_s=1):
        with pytest.raises(GateClosed):
            gates.enter("m")
        gates.enter("other")  # other models' gates stay open
        gates.leave("other")

    with gates.passage("m"):  # open again once the unload is done
        assert gates.in_flight("m") == 1
    assert not (tmp_path / "m.draining").exists()


def test_an_unload_waits_for_a_request_in_flight_in_another_process(tmp_path):
    holder = hold_in_another_process(tmp_path, seconds=1.0)
    started = time.monotonic()
    with ModelGates(tmp_path).drained("m", timeout_s=10):
        waited = time.monotonic() - started
        assert holder.poll() is not None or holder.wait(timeout=1) == 0  # it had left first
    assert 0.5 < waited < 5


def test_an_unload_waits_for_this_processs_own_requests_on_other_threads(tmp_path):
    gates = ModelGates(tmp_path)
    gates.enter("m")
    released = []

    def finish_later():
        time.sleep(0.5)
        released.append(time.monotonic())
        gates.leave("m")

    thread = threading.Thread(target=finish_later)
    thread.start()
    with ModelGates(tmp_path).drained("m", timeout_s=5):
        drained_at = time.monotonic()
    thread.join()
    assert released and drained_at >= released[0]


def test_a_drain_that_times_out_reopens_the_gate(tmp_path):
    holder = hold_in_another_process(tmp_path, seconds=3.0)
    gates = ModelGates(tmp_path)
    try:
        with pytest.raises(DrainTimedOut), gates.drained("m", timeout_s=0.3):
            pytest.fail("the drain must not complete while a request is in flight")
        with gates.passage("m"):  # not left closed
            pass
    finally:
        holder.kill()
        holder.wait()


def test_a_marker_left_by_a_dead_unloader_does_not_close_the_gate(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    (tmp_path / "m.draining").write_text(f"{socket.gethostname()}:{dead.pid}\n")
    gates = ModelGates(tmp_path)
    with gates.passage("m"):
        pass
    assert not (tmp_path / "m.draining").exists()

    (tmp_path / "m.draining").write_text(f"{socket.gethostname()}:{os.getpid()}\n")  # alive
    with pytest.raises(GateClosed):
        gates.enter("m")


def test_loads_and_unloads_of_one_instance_run_one_at_a_time(tmp_path):
    gates = ModelGates(tmp_path)
    spans = []

    def operation(seconds):
        with gates.control(timeout_s=10):
            started = time.monotonic()
            time.sleep(seconds)
            spans.append((started, time.monotonic()))

    threads = [threading.Thread(target=operation, args=(0.3,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    spans.sort()
    assert len(spans) == 3
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))
    other = ModelGates(tmp_path)
    with gates.control(timeout_s=1), pytest.raises(ControlBusy), other.control(timeout_s=0.2):
        pytest.fail("a second holder got the lock")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_a_forked_child_does_not_release_its_parents_requests(tmp_path):
    from deployments.backends.local.gates import gates_in

    gates = gates_in(tmp_path)
    gates.enter("m")
    try:
        pid = os.fork()
        if pid == 0:  # the child: a request of its own, in and out
            try:
                child = gates_in(tmp_path)
                child.enter("m")
                child.leave("m")
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        # The parent's request is still in flight: an unload elsewhere must still wait.
        with pytest.raises(DrainTimedOut), ModelGates(tmp_path).drained("m", timeout_s=0.3):
            pass
    finally:
        gates.leave("m")


# --- Against a real Triton -------------------------------------------------------------------

needs_triton = pytest.mark.skipif(
    tritonserver_path() is None, reason="tritonserver not found: nvidia-pytriton is not installed"
)


@pytest.fixture
def gated_triton(tmp_path):
    process = start_triton(
        workdir=tmp_path / "instance",
        backend_directory=prepare_triton_home(tmp_path / "var"),
        startup_timeout_s=30,
    )
    client = TritonMultiModelClient.for_process(process, timeout_s=30)
    client.gates = ModelGates(tmp_path / "gates")
    yield process, client
    client.close()
    stop_triton(process, timeout_s=5)


@needs_triton
def test_unloading_a_model_that_is_answering_requests_is_prompt_and_the_server_stays_up(
    tmp_path, gated_triton
):
    # Without the gate, an unload under this load stalls Triton (every call waits up to its
    # own 350 s unload limit): its front end holds one lock while the model's requests drain.
    _, client = gated_triton
    client.load_model("echo", str(write_model(tmp_path / "repo", "echo", UPPER_CASE_ECHO)))
    stop = threading.Event()
    outcomes: dict[str, int] = {}

    def hammer():
        while not stop.is_set():
            try:
                answer = client.invoke("echo", text_request("hi"), timeout_s=20)
                key = "answered" if output_data(answer) == ["HI"] else "wrong"
            except ModelNotLoaded:
                key = "not loaded"
            except Exception as exc:  # anything else is a failure, counted and asserted
                key = type(exc).__name__
            outcomes[key] = outcomes.get(key, 0) + 1

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        started = time.monotonic()
        assert client.unload_model("echo") is True
        unload_s = time.monotonic() - started
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    assert unload_s < 10
    assert set(outcomes) <= {"answered", "not loaded"}, outcomes
    assert outcomes.get("answered", 0) > 0 and outcomes.get("not loaded", 0) > 0
    started = time.monotonic()
    assert client.list_models() == []
    assert client.ping() and time.monotonic() - started < 2


@needs_triton
def test_a_load_waits_while_another_load_or_unload_holds_the_instance(tmp_path, gated_triton):
    _, client = gated_triton
    repository = str(write_model(tmp_path / "repo", "echo", UPPER_CASE_ECHO))
    with (
        client.gates.control(timeout_s=1),
        pytest.raises(ModelLoadTimedOut, match="other loads and unloads"),
    ):
        client.load_model("echo", repository, timeout_s=0.3)
    assert client.list_models() == []
    assert client.load_model("echo", repository).already_loaded is False


@needs_triton
def test_a_model_whose_requests_do_not_finish_is_not_unloaded(tmp_path, gated_triton):
    _, client = gated_triton
    client.load_model("echo", str(write_model(tmp_path / "repo", "echo", UPPER_CASE_ECHO)))
    client.drain_timeout_s = 0.3
    client.gates.enter("echo")  # a request in flight that outlasts the drain
    try:
        with pytest.raises(ModelBusy, match="still had requests in flight"):
            client.unload_model("echo")
    finally:
        client.gates.leave("echo")
    assert [m.name for m in client.list_models()] == ["echo"]
    assert output_data(client.invoke("echo", text_request("ok"))) == ["OK"]
