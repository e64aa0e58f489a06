"""Forwarding proxied request bodies to local Triton instances (the proxy's hot path).

The body goes to the chosen instance over a pooled keep-alive connection as it came. A copy that
answers 404 does not hold the model (evicted, restarted): it is loaded through the runtime — one
load however many requests wait for it — and the request is sent again, answered with
``cold_start: true``. Every request passes its model's gate (``gates``): a model being unloaded
lets none in, which is treated as the 404 it is about to become.

A generating model's request goes the same way to the instance's own HTTP port (Triton's
generate extension, ``generate``) and is answered as a stream of events: the request stays in
the model's gate until the stream is closed, so the model is not unloaded under it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from deployments.backends.base import Copy, Forwarded, in_thread
from deployments.backends.local import runtime
from deployments.backends.local.client import is_unloading_answer
from deployments.backends.local.gates import GateClosed, ModelGates
from deployments.backends.local.process import read_http_port
from deployments.backends.local.streaming import EventStream, open_event_stream
from deployments.backends.local.upstream import UpstreamError, UpstreamPool
from deployments.exceptions import ForwardFailed
from deployments.models import Instance, Placement

# How long a request waits for its model's eviction to finish before loading it again: an
# eviction drains for up to 30 s, then Triton takes about 2 s to unload.
GATE_WAIT_S = 45.0

_LOADS: dict[int, asyncio.Future] = {}
_POOLS: dict[int, UpstreamPool] = {}
_GATES: dict[tuple[str, int], ModelGates] = {}


def upstream_pool() -> UpstreamPool:
    """One keep-alive connection pool per event loop (connections belong to their loop), shared
    by every request this process forwards to a local instance."""
    loop = asyncio.get_running_loop()
    pool = _POOLS.get(id(loop))
    if pool is None:
        pool = _POOLS[id(loop)] = UpstreamPool(
            max_connections=settings.TENANTML_PROXY_UPSTREAM_CONNECTIONS
        )
    return pool


def close_pools() -> None:
    """Close every pooled connection to the instances."""
    for pool in list(_POOLS.values()):
        pool.close()
    _POOLS.clear()


def _gates(copy: Copy) -> ModelGates:
    """The invocation gates of the copy's instance (see ``deployments.backends.local.gates``)."""
    key = (copy.host, copy.port)
    gates = _GATES.get(key)
    if gates is None:
        gates = _GATES[key] = runtime.gates_for(copy.host, copy.port)
    return gates


async def _enter_when_open(gates: ModelGates, name: str, public_name: str) -> None:
    """Enter the model's gate once the eviction that holds it closed is over."""
    deadline = time.monotonic() + GATE_WAIT_S
    while True:
        try:
            gates.enter(name)
            return
        except GateClosed:
            if time.monotonic() >= deadline:
                raise ForwardFailed(
                    f"{public_name} is still being unloaded to make room for another "
                    "model; retry shortly.",
                    retry_after_s=1,
                ) from None
            await asyncio.sleep(0.05)


def _being_evicted(placement_id: int) -> bool:
    return Placement.objects.filter(
        pk=placement_id, actual_state=Placement.ActualState.EVICTING
    ).exists()


def _prepare_copy(placement_id: int) -> bool:
    """Load the placement's model where it is placed (the record may say loaded: it is not)."""
    Placement.objects.filter(pk=placement_id, actual_state=Placement.ActualState.LOADED).update(
        actual_state=Placement.ActualState.EVICTED
    )
    placement = Placement.objects.select_related(
        "version__model__tenant", "instance", "endpoint"
    ).get(pk=placement_id)
    return runtime.ensure_loaded(placement=placement, actor="proxy").cold_start


async def _load(copy: Copy) -> bool:
    """Single-flight load of one copy: concurrent requests share the first one's load."""
    waiting = _LOADS.get(copy.placement_id)
    if waiting is not None:
        return await asyncio.shield(waiting)
    future = asyncio.get_running_loop().create_future()
    _LOADS[copy.placement_id] = future
    try:
        cold = await in_thread(_prepare_copy)(copy.placement_id)
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
        raise
    finally:
        _LOADS.pop(copy.placement_id, None)
    future.set_result(cold)
    return cold


def _instance_down(instance_id: int) -> None:
    instance = Instance.objects.filter(pk=instance_id).select_related("endpoint").first()
    if instance is not None:
        runtime.check_instance_health(instance=instance, actor="proxy")


def triton_error(data: bytes) -> str:
    """Triton's reason in an error answer's body."""
    try:
        return str(json.loads(data).get("error", ""))[:500]
    except (ValueError, AttributeError):
        return data[:200].decode("utf-8", "replace")


@dataclass
class _Sent:
    """What one attempt got back: an answer's status, type and body, and for a stream that
    answered 200 the open stream."""

    status: int
    content_type: str
    body: bytes
    stream: EventStream | None = None


async def _send_when_loaded(
    *,
    copy: Copy,
    model_name: str,
    public_name: str,
    send: Callable[[], Awaitable[_Sent]],
    hold_gate: bool = False,
) -> tuple[_Sent, bool]:
    """``send()`` inside the model's gate; a copy that turns out not to hold its model (404, or
    Triton's "unknown model" while it is being unloaded) is loaded — one load however many
    requests wait for it — and asked again. Returns the answer and whether it needed a load.

    With ``hold_gate`` a 200 answer leaves the request inside the gate (a stream that is still
    being read: the caller leaves it when the stream ends), so an eviction waits for it.
    """
    if copy.instance_id is not None:
        runtime.access_history(copy.instance_id).record(str(copy.placement_id))
    gates = _gates(copy)
    cold = False
    inside = False  # whether this request holds its place in the model's gate
    try:
        for attempt in range(2):
            if not inside:
                try:
                    gates.enter(model_name)
                    inside = True
                except GateClosed:
                    pass
            if inside:
                try:
                    sent = await send()
                except UpstreamError as exc:
                    await in_thread(_instance_down)(copy.instance_id)
                    raise ForwardFailed(
                        f"The instance serving {public_name} is not answering "
                        f"({exc!s:.80}); retry shortly while it is restored.",
                        retry_after_s=5,
                        metric="connection",
                        stale_route=True,
                    ) from exc
            else:
                sent = _Sent(404, "application/json", b"")  # being unloaded
            if sent.status != 404 and not (
                sent.status == 400 and is_unloading_answer(sent.status, triton_error(sent.body))
            ):
                break  # only a 400 is read for Triton's reason: the hot path parses nothing
            if attempt == 1:
                # Loaded for this request and taken away again before it ran: memory is
                # contended right now, so the caller retries shortly.
                raise ForwardFailed(
                    f"{public_name} was unloaded again to make room for another "
                    "model before it could answer; retry shortly.",
                    retry_after_s=1,
                )
            # Not loaded: load it, from inside the gate, so that the model loaded for this
            # request cannot be evicted before the request has run on it. A model being
            # evicted is waited out first (its gate opens once it is unloaded); a request
            # inside steps out for that, since the eviction waits for it.
            if inside and await in_thread(_being_evicted)(copy.placement_id):
                gates.leave(model_name)
                inside = False
            if not inside:
                await _enter_when_open(gates, model_name, public_name)
                inside = True
            cold = await _load(copy) or cold
        if hold_gate and sent.status == 200:
            inside = False  # the stream's reader leaves the gate when it ends
    finally:
        if inside:
            gates.leave(model_name)
    if sent.status == 200:
        runtime.touch(copy.placement_id)
    return sent, cold


def _refusal(status: int, data: bytes) -> ForwardFailed:
    """The error a caller gets for an answer other than 200."""
    message = triton_error(data) or f"status {status}"
    if status == 400:
        return ForwardFailed(
            f"The model refused the request: {message}", status=400, code="invalid"
        )
    return ForwardFailed(
        f"The model's server failed the request ({status}): {message}",
        status=502,
        code="upstream",
        metric=f"status_{status}",
    )


async def forward(
    *, copy: Copy, model_name: str, public_name: str, body: bytes, content_type: str
) -> Forwarded:
    """Send a Triton request body to a local copy of ``model_name`` and return its answer."""
    path = f"/models/{model_name}/invoke"

    async def send() -> _Sent:
        response = await upstream_pool().post(
            copy.host,
            copy.port,
            path,
            body,
            content_type,
            settings.TENANTML_PROXY_UPSTREAM_TIMEOUT_S,
        )
        answer_type = response.headers.get("content-type", "application/json")
        return _Sent(response.status, answer_type, response.body)

    sent, cold = await _send_when_loaded(
        copy=copy, model_name=model_name, public_name=public_name, send=send
    )
    if sent.status == 200:
        return Forwarded(
            status=sent.status, content_type=sent.content_type, body=sent.body, cold_start=cold
        )
    raise _refusal(sent.status, sent.body)


# --- Generation --------------------------------------------------------------------------------

# Triton's own HTTP port of each instance (its generate extension), by instance and address.
_HTTP_PORTS: dict[tuple[int, str, int], int] = {}


def _http_port_of(instance_id: int) -> int | None:
    instance = Instance.objects.filter(pk=instance_id).only("external_id").first()
    if instance is None or not instance.external_id:
        return None
    return read_http_port(Path(instance.external_id))


async def _http_port(copy: Copy, public_name: str) -> int:
    """The port of the copy's instance's own HTTP API (where the generate extension is)."""
    key = (copy.instance_id or 0, copy.host, copy.port or 0)
    port = _HTTP_PORTS.get(key)
    if port is None:
        port = await in_thread(_http_port_of)(copy.instance_id) if copy.instance_id else None
        if port is None:
            raise ForwardFailed(
                f"The instance serving {public_name} does not serve generation (its server "
                "was started without its HTTP API); retry once it has been restarted.",
                retry_after_s=5,
                stale_route=True,
            )
        _HTTP_PORTS[key] = port
    return port


class GenerationStream:
    """A local copy's open generate stream: its events as they come, then ``close``."""

    def __init__(
        self, *, stream: EventStream, gates: ModelGates, model_name: str, cold_start: bool
    ) -> None:
        self._stream = stream
        self._gates = gates
        self._model_name = model_name
        self._inside = True
        self.cold_start = cold_start

    async def events(self) -> AsyncIterator[dict]:
        """Each response of the model (Triton's generate event, parsed) as it arrives."""
        try:
            async for event in self._stream.events(
                idle_timeout_s=settings.TENANTML_PROXY_UPSTREAM_TIMEOUT_S
            ):
                yield event
        except UpstreamError as exc:
            raise ForwardFailed(
                f"The model's stream broke off ({exc!s:.80}).",
                status=502,
                code="upstream",
                metric="stream",
            ) from exc

    def close(self) -> None:
        """End the stream (Triton stops generating) and leave the model's gate."""
        self._stream.close()
        if self._inside:
            self._inside = False
            self._gates.leave(self._model_name)


async def generate(
    *, copy: Copy, model_name: str, public_name: str, body: bytes
) -> GenerationStream:
    """Open a generate stream (``body``: Triton's generate request) on a local copy of
    ``model_name``, loading it first where it is not loaded; the stream holds the model's gate
    until it is closed."""
    http_port = await _http_port(copy, public_name)
    path = f"/v2/models/{model_name}/generate_stream"

    async def send() -> _Sent:
        stream = await open_event_stream(
            host=copy.host,
            port=http_port,
            path=path,
            body=body,
            timeout_s=settings.TENANTML_PROXY_UPSTREAM_TIMEOUT_S,
        )
        if stream.status != 200:
            return _Sent(stream.status, stream.headers.get("content-type", ""), stream.body)
        return _Sent(200, "text/event-stream", b"", stream)

    try:
        sent, cold = await _send_when_loaded(
            copy=copy, model_name=model_name, public_name=public_name, send=send, hold_gate=True
        )
    except ForwardFailed as exc:
        if exc.stale_route:
            _HTTP_PORTS.pop((copy.instance_id or 0, copy.host, copy.port or 0), None)
        raise
    if sent.status != 200:
        raise _refusal(sent.status, sent.body)
    assert sent.stream is not None
    return GenerationStream(
        stream=sent.stream, gates=_gates(copy), model_name=model_name, cold_start=cold
    )
