"""Invocation gates: no request may be in flight on a model while Triton unloads it.

Triton's SageMaker front end holds its model-list mutex for the whole of an unload, and the
unload waits until the model's in-flight requests are released. Those requests are answered on
the server's HTTP threads, which block on the same mutex as soon as another request arrives.
An unload sent while the model still has requests in flight therefore stalls the whole server
for up to Triton's own unload limit (350 s): every request to it, for any model, waits. Measured
here: a ``DELETE /models/<name>`` under four threads invoking that model did not return in 30 s,
and every other call to the server hung with it.

So every process that invokes a model on a local instance passes through its gate, and an
unload drains the gate first:

- an invoker *enters* (``enter``) before sending a request and *leaves* after the answer: it
  holds a shared ``flock`` on the model's lock file while it has requests in flight (one lock per
  process, counted in process, so entering is a dict update and, for the first request in
  flight, one system call);
- an unloader writes the model's *draining* marker, so no new request enters, then takes the
  exclusive lock, which it gets once the last request in flight (in any process) has left, and
  only then unloads; the marker goes when the unload returns.

A request refused at the gate is told the model is being unloaded: the proxy then waits for the
eviction and loads the model again (a cold start), as it would after any eviction. A marker left
by an unloader that died (its process is gone, or it is older than any unload can take) is
ignored and removed; the kernel releases a dead process's locks by itself.

The gates of one instance live in one directory, keyed by the instance's address, shared by the
web processes and the workers on the machine (local instances run on the platform's machine).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
from pathlib import Path

# A marker older than this belongs to a dead unloader whatever its process says: a drain waits
# at most DRAIN_TIMEOUT_S and an unload answers within the client's timeout.
STALE_MARKER_S = 300.0
DRAIN_POLL_S = 0.005

_HOST = socket.gethostname()


class GateClosed(Exception):
    """The model is being unloaded: no request may enter."""


class DrainTimedOut(Exception):
    """Requests were still in flight when the drain's time ran out."""


class ControlBusy(Exception):
    """Another load or unload on the instance did not finish in time."""


class _Held:
    """This process's shared lock on one model's gate: its file and requests in flight."""

    __slots__ = ("fd", "count")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.count = 0


class ModelGates:
    """The gates of the models on one instance (one directory of lock and marker files)."""

    def __init__(self, directory: Path) -> None:
        # One object per directory and process (``gates_in``), so a fork can reset them all.
        self.directory = Path(directory)
        self._held: dict[str, _Held] = {}
        self._path_cache: dict[str, tuple[Path, Path]] = {}
        self._lock = threading.Lock()

    def _paths(self, name: str) -> tuple[Path, Path]:
        paths = self._path_cache.get(name)
        if paths is None:
            safe = name.replace("/", "_")
            paths = self.directory / f"{safe}.lock", self.directory / f"{safe}.draining"
            self._path_cache[name] = paths
        return paths

    def _open(self, lock_path: Path) -> int:
        try:
            return os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            self.directory.mkdir(parents=True, exist_ok=True)
            return os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    # -- invokers --

    def enter(self, name: str) -> None:
        """Let one request for ``name`` in, or raise GateClosed while it is being unloaded."""
        lock_path, marker = self._paths(name)
        with self._lock:
            if _draining(marker):
                raise GateClosed(name)
            held = self._held.get(name)
            if held is None:
                held = self._held[name] = _Held(self._open(lock_path))
            if held.count == 0:
                try:
                    fcntl.flock(held.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise GateClosed(name) from None
            held.count += 1

    def leave(self, name: str) -> None:
        """One request for ``name`` has its answer."""
        with self._lock:
            held = self._held.get(name)
            if held is None or held.count == 0:
                return
            held.count -= 1
            if held.count == 0:
                fcntl.flock(held.fd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def passage(self, name: str):
        self.enter(name)
        try:
            yield
        finally:
            self.leave(name)

    def in_flight(self, name: str) -> int:
        """Requests for ``name`` this process has in flight."""
        held = self._held.get(name)
        return held.count if held is not None else 0

    # -- unloaders --

    @contextlib.contextmanager
    def drained(self, name: str, *, timeout_s: float):
        """Close the gate of ``name`` and wait until no request is in flight, in any process.

        Raises DrainTimedOut (the gate opens again) when requests are still in flight after
        ``timeout_s``. Requests this very process has in flight count too: a caller must not
        unload a model while it is itself waiting on an answer from it.
        """
        lock_path, marker = self._paths(name)
        self.directory.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{_HOST}:{os.getpid()}\n")
        try:
            with _exclusive(lock_path, timeout_s, DrainTimedOut):
                yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()

    @contextlib.contextmanager
    def control(self, *, timeout_s: float, shared: bool = False):
        """Hold the instance's control lock, in any process: exclusive for an unload through
        the SageMaker front end's ``DELETE``, shared for loads and for unloads through Triton's
        own model-control API.

        Triton 2.51's SageMaker front end can lose track of a ``DELETE`` that overlaps a load on
        the same server (measured here under sustained eviction: the model is unloaded, but the
        ``DELETE`` never returns and the server stops answering), so such an unload runs alone.
        Loads of different models run in parallel in Triton's core (three 1 s loads together
        took 1.5 s), and so do unloads through the model-control API beside them (four threads
        loading and unloading for 40 s, none stuck): those share the lock. Raises ControlBusy
        after ``timeout_s`` of waiting.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        with _locked(self.directory / ".control.lock", timeout_s, ControlBusy, shared=shared):
            yield


@contextlib.contextmanager
def _exclusive(path: Path, timeout_s: float, error: type[Exception]):
    """Hold an exclusive flock on ``path`` (its own open file), waiting up to ``timeout_s``."""
    with _locked(path, timeout_s, error, shared=False):
        yield


@contextlib.contextmanager
def _locked(path: Path, timeout_s: float, error: type[Exception], *, shared: bool):
    """Hold a shared or exclusive flock on ``path`` (its own open file), waiting up to
    ``timeout_s``."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        _lock(fd, timeout_s, error, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _lock(fd: int, timeout_s: float, error: type[Exception], mode: int) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise error() from None
            time.sleep(DRAIN_POLL_S)


def _draining(marker: Path) -> bool:
    """Whether an unload holds the gate: its marker exists and its writer is alive."""
    try:
        stat = os.stat(marker)
    except FileNotFoundError:
        return False
    if time.time() - stat.st_mtime > STALE_MARKER_S:
        _remove_stale(marker)
        return False
    with contextlib.suppress(OSError, ValueError):
        host, _, pid = marker.read_text().strip().rpartition(":")
        if host == _HOST and not _alive(int(pid)):
            _remove_stale(marker)
            return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(marker: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        marker.unlink()


_REGISTRY: dict[Path, ModelGates] = {}
_REGISTRY_LOCK = threading.Lock()


def gates_in(directory: Path) -> ModelGates:
    """The process-wide gates of one directory (one per instance address)."""
    directory = Path(directory)
    with _REGISTRY_LOCK:
        gates = _REGISTRY.get(directory)
        if gates is None:
            gates = _REGISTRY[directory] = ModelGates(directory)
        return gates


def _forget_after_fork() -> None:
    # A forked child shares its parent's open lock files: unlocking one there would unlock it
    # for the parent. The child starts with no requests in flight and opens its own files.
    global _REGISTRY_LOCK
    _REGISTRY_LOCK = threading.Lock()
    for gates in _REGISTRY.values():
        gates._held = {}
        gates._lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)

__all__ = ["ControlBusy", "DrainTimedOut", "GateClosed", "ModelGates", "gates_in"]
