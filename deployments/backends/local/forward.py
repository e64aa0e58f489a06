"""Forwarding proxied request bodies to local Triton instances (the proxy's hot path).

The body goes to the chosen instance over a pooled keep-alive connection as it came. A copy that
answers 404 does not hold the model (evicted, restarted): it is loaded through the runtime — one
load however many requests wait for it — and the request is sent again, answered with
``cold_start: true``. Every request passes its model's gate (``gates``): a model being unloaded
lets none in, which is treated as the 404 it is about to become.
"""

from __future__ import annotations

import asyncio
import json
import time

from django.conf import settings

from deployments.backends.base import Copy, Forwarded, in_thread
from deployments.backends.local import runtime
from deployments.backends.local.client import is_unloading_answer
from deployments.backends.local.gates import GateClosed, ModelGates
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


async def forward(
    *, copy: Copy, model_name: str, public_name: str, body: bytes, content_type: str
) -> Forwarded:
    """Send a Triton request body to a local copy of ``model_name`` and return its answer."""
    if copy.instance_id is not None:
        runtime.access_history(copy.instance_id).record(str(copy.placement_id))
    path = f"/models/{model_name}/invoke"
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
                    response = await upstream_pool().post(
                        copy.host,
                        copy.port,
                        path,
                        body,
                        content_type,
                        settings.TENANTML_PROXY_UPSTREAM_TIMEOUT_S,
                    )
                except UpstreamError as exc:
                    await in_thread(_instance_down)(copy.instance_id)
                    raise ForwardFailed(
                        f"The instance serving {public_name} is not answering "
                        f"({exc!s:.80}); retry shortly while it is restored.",
                        retry_after_s=5,
                        metric="connection",
                        stale_route=True,
                    ) from exc
                status = response.status
                answer_type = response.headers.get("content-type", "application/json")
                data = response.body
            else:
                status, answer_type, data = 404, "application/json", b""  # being unloaded
            if status != 404 and not (
                status == 400 and is_unloading_answer(status, triton_error(data))
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
    finally:
        if inside:
            gates.leave(model_name)
    if status == 200:
        runtime.touch(copy.placement_id)
        return Forwarded(status=status, content_type=answer_type, body=data, cold_start=cold)
    message = triton_error(data) or f"status {status}"
    if status == 400:
        raise ForwardFailed(f"The model refused the request: {message}", status=400, code="invalid")
    raise ForwardFailed(
        f"The model's server failed the request ({status}): {message}",
        status=502,
        code="upstream",
        metric=f"status_{status}",
    )
