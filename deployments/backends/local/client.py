"""``TritonMultiModelClient``: a pooled keep-alive HTTP client for Triton's SageMaker
multi-model protocol, mapping its answers to the domain errors in ``deployments.exceptions``,
and the parsing of Triton's Prometheus metrics.

Facts about Triton 2.51 in SageMaker mode this code relies on (measured, see the tests):

- ``POST /models`` answers 200 with an empty body once the model is loaded (the call blocks for
  the whole load), 400 ``{"error": ...}`` with Triton's text (including the Python traceback of
  a model whose ``initialize`` raised) when the load fails, after which the repository is
  unregistered again and the server keeps serving; 409 when the ``url`` is already registered
  (under any name, also while its load is still running) or the name is mapped to another url.
- ``GET /models`` answers ``{"models": [{"modelName": ..., "modelUrl": ...}]}`` and
  ``GET /models/<name>`` one such object; a model appears only once its load has finished, and
  an unknown name is a 404 with an empty body (also for ``DELETE`` and ``invoke``).
- ``DELETE /models/<name>`` blocks until the model is unloaded and always takes about 2 s: the
  front end asks Triton's core to unload, then checks the model's state, sleeping one second
  after each check, the last included (measured: 2.0 s for every unload).

Where the server also serves Triton's own HTTP API on the loopback (``process.HTTP_PORT_FILE``
names its port), unloads go through its model control instead: ``POST
/v2/repository/models/<name>/unload`` returns at once, and the client polls the repository index
(every 20 ms) until the model is ``UNAVAILABLE``, which Triton's core reports only once the
model's python stub has exited and its memory is back (measured: 1.1 to 1.3 s). The model's
repository stays registered with the front end then, so loading it again is a 409 from ``POST
/models`` followed by ``POST /v2/repository/models/<name>/load``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import urllib3
from prometheus_client.parser import text_string_to_metric_families
from urllib3.exceptions import HTTPError as Urllib3HTTPError
from urllib3.exceptions import NewConnectionError, ProtocolError, ReadTimeoutError

from deployments.backends.local.gates import ControlBusy, DrainTimedOut, GateClosed, ModelGates
from deployments.backends.local.instances import (
    LoadedModel,
    LoadResult,
)
from deployments.backends.local.process import (
    MB,
    TritonProcess,
    log_size,
    read_http_port,
    read_log_tail,
)
from deployments.exceptions import (
    InstanceUnavailable,
    InvalidInferenceInput,
    ModelBusy,
    ModelLoadConflict,
    ModelLoadFailed,
    ModelLoadTimedOut,
    ModelNotLoaded,
    UnloadTimedOut,
    UpstreamError,
)

logger = logging.getLogger(__name__)

# --- The SageMaker multi-model protocol ------------------------------------------------------

# Triton's core prefixes its checks of a request's tensors with "[request id: ...]" and reports
# unreadable JSON as "Unable to parse ..."/"failed to parse ..."; a model's own error (raised in
# execute) also comes back as a 400, but bare, and is the model's fault, not the caller's.
_INPUT_ERROR_PREFIXES = ("[request id:", "unable to parse", "failed to parse")
_INPUT_ERROR_PHRASES = ("unexpected inference input",)
# Pause between draining a model's requests and asking the SageMaker front end to unload it
# (see unload_model; an unload through model control needs none).
UNLOAD_GRACE_S = 0.25
# How often an unload through model control asks whether the model is gone.
UNLOAD_POLL_S = 0.02
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
        http_port: int | None = None,
    ) -> None:
        self.host = host
        # Triton's own HTTP API (model control) on the loopback; found in the server's working
        # directory (beside its log) when not given. None: unloads use the front end's DELETE.
        self.http_port = http_port or (read_http_port(Path(log_path).parent) if log_path else None)
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
        self._control_pool = (
            urllib3.HTTPConnectionPool(
                host,
                self.http_port,
                maxsize=pool_size,
                block=False,
                retries=False,
                timeout=urllib3.Timeout(connect=min(timeout_s, 5.0), read=timeout_s),
            )
            if self.http_port
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
            http_port=process.http_port,
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
        if self._control_pool is not None:
            self._control_pool.close()

    # -- transport --

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        timeout_s: float | None = None,
        idempotent: bool = False,
        pool: urllib3.HTTPConnectionPool | None = None,
    ) -> _Answer:
        pool = self._pool if pool is None else pool
        read_timeout = self.timeout_s if timeout_s is None else timeout_s
        headers = {"Content-Type": "application/json"} if body is not None else None
        timeout = urllib3.Timeout(connect=min(read_timeout, 5.0), read=read_timeout)
        # A pooled keep-alive connection the server closed while idle fails on first use with a
        # protocol error; one retry is safe for reads, never for a load or an inference.
        attempts = 2 if idempotent else 1
        for attempt in range(attempts):
            try:
                response = pool.request(
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
        entry = self._registration(name)
        if entry is not None and self._control_pool is not None:
            # Unloaded through model control, a model stays registered with the front end.
            return entry if self.model_state(name) == "READY" else None
        return entry

    def _registration(self, name: str) -> LoadedModel | None:
        """The front end's record of ``name`` (``GET /models/<name>``): loaded, or registered
        and unloaded through model control."""
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
        gates, loads run in parallel with each other but never beside an unload through the
        front end's ``DELETE`` (``ModelGates.control``).
        """
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        if self.gates is None:
            return self._load(name, str(model_url), timeout_s)
        started = time.monotonic()
        try:
            with self.gates.control(timeout_s=timeout_s, shared=True):
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
            log_offset = log_size(self.log_path)
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
            current = self._registration(name)
            if current is not None:
                if _same_url(current.url, url):
                    if self._control_pool is not None:
                        # Registered with the front end; after an unload through model control
                        # that does not mean loaded.
                        state = self.model_state(name)
                        if state == "LOADING":
                            time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
                            continue
                        if state != "READY":
                            return self._reload(name, url, started, deadline, log_offset)
                    return LoadResult(
                        name=name, url=url, already_loaded=True, load_time_ms=elapsed_ms
                    )
                if self._control_pool is not None and self.model_state(name) not in (
                    "READY",
                    "LOADING",
                ):
                    # Unloaded through model control, still registered from another package
                    # (the GPU one of the same version, say): the front end's DELETE
                    # unregisters it (2 s, on this rare path only), then the load is retried.
                    self._unload(name, max(deadline - time.monotonic(), 5.0))
                    continue
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

    def _reload(
        self, name: str, url: str, started: float, deadline: float, log_offset: int
    ) -> LoadResult:
        """Load again a model still registered with the front end (unloaded through model
        control), through model control."""
        try:
            answer = self._control(
                "POST",
                f"/v2/repository/models/{quote(name, safe='')}/load",
                timeout_s=max(deadline - time.monotonic(), 0.1),
            )
        except ReadTimeoutError as exc:
            raise ModelLoadTimedOut(
                f"Model '{name}' did not finish loading on {self.address} within "
                f"{deadline - started:g} s.",
                model_name=name,
            ) from exc
        if answer.status != 200:
            raise self._load_error(name, url, answer, log_offset)
        elapsed_ms = (time.monotonic() - started) * 1000
        return LoadResult(name=name, url=url, already_loaded=False, load_time_ms=elapsed_ms)

    def _control(self, method: str, path: str, *, timeout_s: float | None = None) -> _Answer:
        """A request to Triton's own HTTP API (model control, on the loopback)."""
        assert self._control_pool is not None
        return self._request(method, path, body=b"{}", timeout_s=timeout_s, pool=self._control_pool)

    def model_state(self, name: str) -> str | None:
        """The model's state in Triton's core (``READY``, ``LOADING``, ``UNLOADING``,
        ``UNAVAILABLE``), None when its repository is not registered; needs model control."""
        try:
            answer = self._control("POST", "/v2/repository/index")
        except ReadTimeoutError as exc:
            raise self._timed_out("POST /v2/repository/index", self.timeout_s) from exc
        if answer.status != 200:
            raise UpstreamError(
                f"Triton at {self.address} answered {answer.status} to its repository index: "
                f"{answer.error or 'no details'}"
            )
        try:
            entries = json.loads(answer.body)
            states = [entry.get("state") for entry in entries if entry.get("name") == name]
        except (ValueError, AttributeError, TypeError) as exc:
            raise UpstreamError(
                f"Triton at {self.address} sent a repository index this client cannot read: "
                f"{answer.body[:200]!r}"
            ) from exc
        if not states:
            return None
        return "READY" if "READY" in states else (states[0] or "UNAVAILABLE")

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
        """Unload ``name`` and return once it is gone and its memory is back: through model
        control where the server serves it, else ``DELETE /models/<name>``.

        False when it was not loaded (a model whose load is still running is not yet loaded).
        With gates, the model's requests in flight are drained first (ModelBusy when they do
        not finish within ``drain_timeout_s``; the model then stays loaded).
        """
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        if self.gates is None:
            return self._unload_now(name, timeout_s)
        try:
            # Drained first, then the control lock: no load waits behind a drain.
            with (
                self.gates.drained(name, timeout_s=self.drain_timeout_s),
                self.gates.control(timeout_s=timeout_s, shared=self._control_pool is not None),
            ):
                if self._control_pool is None:
                    # Triton releases a request it has answered on the thread that sent the
                    # answer, a moment after the client has it; a DELETE arriving on that thread
                    # first waits for a release that can no longer happen (measured: about one
                    # unload in a hundred under sustained eviction). A short pause lets those
                    # releases land. Model control answers on other threads and never waits.
                    time.sleep(UNLOAD_GRACE_S)
                return self._unload_now(name, timeout_s)
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

    def _unload_now(self, name: str, timeout_s: float) -> bool:
        if self._control_pool is not None:
            return self._unload_by_model_control(name, timeout_s)
        return self._unload(name, timeout_s)

    def _unload_by_model_control(self, name: str, timeout_s: float) -> bool:
        """Unload through Triton's model control and poll until the model is unavailable (its
        stub has exited): the unload itself answers at once."""
        deadline = time.monotonic() + timeout_s
        if self.model_state(name) not in ("READY", "LOADING"):
            return False
        try:
            answer = self._control(
                "POST", f"/v2/repository/models/{quote(name, safe='')}/unload", timeout_s=timeout_s
            )
        except ReadTimeoutError as exc:
            raise UnloadTimedOut(
                f"Triton at {self.address} did not accept unloading '{name}' within "
                f"{timeout_s:g} s."
            ) from exc
        if answer.status != 200:
            raise UpstreamError(
                f"Triton at {self.address} could not unload '{name}' "
                f"(HTTP {answer.status}): {answer.error or 'no details'}"
            )
        while True:
            state = self.model_state(name)
            if state not in ("READY", "UNLOADING", "LOADING"):
                return True
            if time.monotonic() >= deadline:
                raise UnloadTimedOut(
                    f"Triton at {self.address} had not finished unloading '{name}' after "
                    f"{timeout_s:g} s (state {state}); it may still be unloading."
                )
            time.sleep(UNLOAD_POLL_S)

    def unload_through_front_end(self, name: str, timeout_s: float) -> bool:
        """Unload ``name`` with the SageMaker front end's ``DELETE /models/<name>`` (which also
        unregisters its repository), without draining its gate: the way unloads went before
        model control, kept for servers without it and for measuring both ways."""
        return self._unload(name, timeout_s)

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

    def generate(self, name: str, body: dict, timeout_s: float | None = None) -> list[dict]:
        """Run a generation request (Triton's generate extension, on the server's own HTTP port)
        on the decoupled model ``name`` to its end; every event of the answer, in order."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        if self._control_pool is None:
            raise InstanceUnavailable(
                f"Triton at {self.address} was started without its HTTP API, where generation "
                "is served; restart the instance."
            )
        try:
            if self.gates is not None:
                self.gates.enter(name)
        except GateClosed:
            raise ModelNotLoaded(
                f"Model '{name}' is being unloaded from {self.address}; load it again to invoke it."
            ) from None
        try:
            answer = self._request(
                "POST",
                f"/v2/models/{quote(name, safe='')}/generate_stream",
                body=json.dumps(body).encode(),
                timeout_s=timeout_s,
                pool=self._control_pool,
            )
        except ReadTimeoutError as exc:
            raise UpstreamError(
                f"Model '{name}' on {self.address} did not answer within {timeout_s:g} s."
            ) from exc
        finally:
            if self.gates is not None:
                self.gates.leave(name)
        if answer.status != 200:
            if answer.status == 404 or is_unloading_answer(answer.status, answer.error):
                raise ModelNotLoaded(
                    f"Model '{name}' is not loaded on {self.address}; load it before invoking it."
                )
            raise UpstreamError(
                f"Model '{name}' on {self.address} failed (HTTP {answer.status}): "
                f"{answer.error or 'no details'}"
            )
        events = []
        for block in answer.body.replace(b"\r\n", b"\n").split(b"\n\n"):
            data = b"\n".join(
                line[5:].strip() for line in block.split(b"\n") if line.startswith(b"data:")
            )
            if not data:
                continue
            try:
                event = json.loads(data)
            except ValueError as exc:
                raise UpstreamError(
                    f"Model '{name}' on {self.address} streamed an event that is not JSON: "
                    f"{data[:200]!r}"
                ) from exc
            if isinstance(event, dict) and "error" in event:
                raise UpstreamError(f"Model '{name}' on {self.address} failed: {event['error']}")
            events.append(event)
        return events

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
    """The samples of a Prometheus text page as (name, labels, value) triples, read with
    ``prometheus_client``'s parser. A counter's samples are named as its family (the parser
    adds ``_total``; Triton's counters have none); a malformed line ends the reading there
    (with a warning), keeping the metric families read before it."""
    samples = []
    try:
        for family in text_string_to_metric_families(text):
            total = f"{family.name}_total" if family.type == "counter" else None
            samples += [
                (family.name if sample.name == total else sample.name, sample.labels, sample.value)
                for sample in family.samples
            ]
    except ValueError as exc:
        logger.warning("Triton's metrics are malformed past %d samples: %s", len(samples), exc)
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
