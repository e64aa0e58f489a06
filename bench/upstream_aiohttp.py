"""The platform's ASGI application with the proxy's requests to Triton sent by aiohttp's client.

``bench/proxy.py --upstream-clients`` serves this module (``uvicorn --app-dir bench
upstream_aiohttp:application``) next to the platform's own application to measure what the
proxy's HTTP client (``deployments/backends/local/upstream.py``) is worth: everything else — the
routing, the validation, the gates, the counting — is the same code. The pool below takes the
place of ``UpstreamPool`` with the same ``post`` contract: one ``ClientSession`` per event loop,
at most ``max_connections`` connections per instance, errors as ``UpstreamError``.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from config.asgi import application
from deployments.backends.local import forward
from deployments.backends.local.upstream import UpstreamError, UpstreamResponse

__all__ = ["application"]


class AiohttpUpstreamPool:
    """``UpstreamPool``'s contract over an aiohttp ``ClientSession``."""

    def __init__(self, *, max_connections: int = 256) -> None:
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def post(
        self, host: str, port: int, path: str, body: bytes, content_type: str, timeout_s: float
    ) -> UpstreamResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=self.max_connections)
            )
        try:
            async with self._session.post(
                f"http://{host}:{port}{path}",
                data=body,
                headers={"Content-Type": content_type},
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                data = await response.read()
                headers = {name.lower(): value for name, value in response.headers.items()}
                return UpstreamResponse(response.status, headers, data)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(str(exc) or type(exc).__name__) from exc

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            # The web server's shutdown calls this on its running loop; with no loop left the
            # process is ending, and its sockets with it.
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(session.close())


forward.UpstreamPool = AiohttpUpstreamPool
