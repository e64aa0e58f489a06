"""A lean HTTP/1.1 client for the proxy's calls to Triton: keep-alive connections per instance.

The proxy sends one kind of request (a POST with a known length) to one kind of server, so a
general client's per-request work (header multidicts, cookie jars, tracing hooks) is cost without
use; at high concurrency it is CPU the Triton processes on the same host would otherwise have.
This client writes the request in one buffer and reads the status line, the headers and a
``Content-Length`` (or chunked) body. Idle connections are reused; a reused connection that turns
out to be closed is replaced once, since nothing was answered on it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


class UpstreamError(Exception):
    """The instance could not be reached or answered something that is not HTTP."""


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class UpstreamPool:
    """Keep-alive connections per (host, port), at most ``max_idle`` kept idle per server."""

    def __init__(self, *, max_idle: int = 64) -> None:
        self.max_idle = max_idle
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def post(
        self, host: str, port: int, path: str, body: bytes, content_type: str, timeout_s: float
    ) -> UpstreamResponse:
        """POST ``body`` and return the answer; UpstreamError if the server cannot be reached."""
        key = (host, port)
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1") + body
        idle = self._idle.get(key)
        connection = idle.pop() if idle else None
        reused = connection is not None
        try:
            if connection is None:
                connection = await self._open(host, port, timeout_s)
            try:
                response, keep = await asyncio.wait_for(
                    self._exchange(connection, request), timeout_s
                )
            except (ConnectionError, asyncio.IncompleteReadError, EOFError):
                connection.close()
                if not reused:
                    raise
                # A kept connection the server had closed: nothing was answered, send again.
                connection = await self._open(host, port, timeout_s)
                response, keep = await asyncio.wait_for(
                    self._exchange(connection, request), timeout_s
                )
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            if connection is not None:
                connection.close()
            raise UpstreamError(str(exc) or type(exc).__name__) from exc
        if keep and len(self._idle.setdefault(key, [])) < self.max_idle:
            self._idle[key].append(connection)
        else:
            connection.close()
        return response

    async def _open(self, host: str, port: int, timeout_s: float) -> _Connection:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
        return _Connection(reader, writer)

    async def _exchange(
        self, connection: _Connection, request: bytes
    ) -> tuple[UpstreamResponse, bool]:
        connection.writer.write(request)
        reader = connection.reader
        status_line = await reader.readuntil(b"\r\n")
        if not status_line:
            raise EOFError("the server closed the connection")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise ValueError(f"not an HTTP answer: {status_line[:40]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        while True:
            line = await reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunked(reader)
        else:
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        keep = headers.get("connection", "").lower() != "close" and parts[0] != b"HTTP/1.0"
        return UpstreamResponse(status, headers, body), keep

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
