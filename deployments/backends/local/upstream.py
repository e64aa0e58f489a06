"""A lean HTTP/1.1 client for the proxy's calls to Triton: keep-alive connections per instance.

The proxy sends one kind of request (a POST with a known length) to one kind of server, so a
general client's per-request work (header multidicts, cookie jars, tracing hooks) is cost without
use; at high concurrency it is CPU the Triton processes on the same host would otherwise have.
This client writes the request in one buffer (waiting for the socket to take it), and reads the
status line, the headers and a ``Content-Length``, chunked or read-until-close body.

- At most ``max_connections`` connections are open to one server at a time; a request beyond
  that waits for one to be free (within its timeout). Idle ones are kept for reuse.
- A reused connection that turns out to be closed is replaced and the request sent once more,
  but only when not a single byte of an answer came back on it: a request the server may have
  acted on (a partial answer) is never sent twice.
- Anything that is not a well-framed answer (a header line over the reader's limit, a bad status
  line or length, an answer cut short) is an ``UpstreamError`` naming what was wrong.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

# A header line (or chunk-size line) longer than this is not an answer Triton would send.
LINE_LIMIT_BYTES = 64 * 1024
MAX_HEADER_LINES = 100


class UpstreamError(Exception):
    """The instance could not be reached or answered something that is not HTTP."""


class _NothingAnswered(UpstreamError):
    """The connection failed before a single byte of the answer arrived."""


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class _Progress:
    """How far one request got, for the message of a timeout."""

    __slots__ = ("stage",)
    CONNECTING = "could not connect"
    SENDING = "the server did not take the whole request"
    WAITING = "no answer"

    def __init__(self) -> None:
        self.stage = self.WAITING


class _AnswerReader(asyncio.StreamReader):
    """A stream reader that remembers whether any byte arrived since the request was sent."""

    received = False

    def feed_data(self, data: bytes) -> None:
        if data:
            self.received = True
        super().feed_data(data)


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: _AnswerReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @property
    def usable(self) -> bool:
        """Still open, and nothing unread on it (an idle connection has nothing to say)."""
        return not (self.writer.is_closing() or self.reader.at_eof() or self.reader.received)

    def close(self) -> None:
        self.writer.close()


class UpstreamPool:
    """Keep-alive connections per (host, port): at most ``max_connections`` open to each."""

    def __init__(self, *, max_connections: int = 256) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._slots: dict[tuple[str, int], asyncio.Semaphore] = {}
        self._open_count: dict[tuple[str, int], int] = {}

    def open_connections(self, host: str, port: int) -> int:
        """How many connections to the server are open now (busy and idle)."""
        return self._open_count.get((host, port), 0)

    async def post(
        self, host: str, port: int, path: str, body: bytes, content_type: str, timeout_s: float
    ) -> UpstreamResponse:
        """POST ``body`` and return the answer; UpstreamError if no answer came in ``timeout_s``
        (waiting for a free connection included) or the answer was not HTTP."""
        key = (host, port)
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1") + body
        slots = self._slots.get(key)
        if slots is None:
            slots = self._slots[key] = asyncio.Semaphore(self.max_connections)
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            if slots.locked():  # every connection busy: wait for one, within the timeout
                async with asyncio.timeout_at(deadline):
                    await slots.acquire()
            else:
                await slots.acquire()
        except TimeoutError:
            raise UpstreamError(
                f"all {self.max_connections} connections to {host}:{port} stayed busy for "
                f"{timeout_s:g} s"
            ) from None
        progress = _Progress()
        try:
            async with asyncio.timeout_at(deadline):
                return await self._send(key, request, progress)
        except TimeoutError:
            raise UpstreamError(f"{progress.stage} within {timeout_s:g} s") from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise UpstreamError(str(exc) or type(exc).__name__) from exc
        finally:
            slots.release()

    async def _send(
        self, key: tuple[str, int], request: bytes, progress: _Progress
    ) -> UpstreamResponse:
        connection = self._idle_connection(key)
        if connection is not None:
            try:
                return await self._exchange_and_keep(key, connection, request, progress)
            except _NothingAnswered:
                pass  # the server had closed the kept connection unread: send it on a new one
        progress.stage = _Progress.CONNECTING
        connection = await self._open(key)
        return await self._exchange_and_keep(key, connection, request, progress)

    def _idle_connection(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.usable:
                return connection
            self._close(key, connection)  # closed by the server while it sat idle
        return None

    async def _open(self, key: tuple[str, int]) -> _Connection:
        loop = asyncio.get_running_loop()
        reader = _AnswerReader(limit=LINE_LIMIT_BYTES, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await loop.create_connection(lambda: protocol, *key)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        self._open_count[key] = self._open_count.get(key, 0) + 1
        return _Connection(reader, writer)

    def _close(self, key: tuple[str, int], connection: _Connection) -> None:
        connection.close()
        left = self._open_count.get(key, 1) - 1
        if left > 0:
            self._open_count[key] = left
        else:
            self._open_count.pop(key, None)

    async def _exchange_and_keep(
        self, key: tuple[str, int], connection: _Connection, request: bytes, progress: _Progress
    ) -> UpstreamResponse:
        try:
            response, keep = await self._exchange(connection, request, progress)
        except BaseException:  # failed, timed out or cancelled: its state is unknown
            self._close(key, connection)
            raise
        if keep:
            connection.reader.received = False  # anything arriving while idle is unasked for
            self._idle.setdefault(key, []).append(connection)
        else:
            self._close(key, connection)
        return response

    async def _exchange(
        self, connection: _Connection, request: bytes, progress: _Progress
    ) -> tuple[UpstreamResponse, bool]:
        reader = connection.reader
        reader.received = False
        try:
            progress.stage = _Progress.SENDING
            connection.writer.write(request)
            # Wait until the socket has taken the request: a server that stops reading is
            # told apart from one that is slow to answer, and write errors surface here.
            await connection.writer.drain()
            progress.stage = _Progress.WAITING
            status_line = await reader.readuntil(b"\r\n")
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            if not reader.received:
                raise _NothingAnswered("the server closed the connection") from exc
            raise UpstreamError(f"the answer was cut short ({exc})") from exc
        except asyncio.LimitOverrunError:
            raise UpstreamError("the status line is too long to be HTTP") from None
        try:
            return await self._read_answer(reader, status_line)
        except asyncio.IncompleteReadError as exc:
            raise UpstreamError(
                f"the answer was cut short after {len(exc.partial)} bytes of a part"
            ) from exc
        except asyncio.LimitOverrunError:
            raise UpstreamError(
                f"a header or chunk-size line is longer than {LINE_LIMIT_BYTES} bytes"
            ) from None
        except ConnectionError as exc:
            raise UpstreamError(f"the answer was cut short ({exc})") from exc
        except ValueError as exc:  # unparsable numbers, undecodable header text
            raise UpstreamError(f"the answer is not well-formed HTTP: {exc}") from exc

    async def _read_answer(
        self, reader: _AnswerReader, status_line: bytes
    ) -> tuple[UpstreamResponse, bool]:
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise UpstreamError(f"not an HTTP answer: {status_line[:40]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADER_LINES + 1):
            line = await reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon:
                raise UpstreamError(f"not a header line: {line[:40]!r}")
            headers[name.strip().lower()] = value.strip()
        else:
            raise UpstreamError(f"more than {MAX_HEADER_LINES} header lines")
        keep = headers.get("connection", "").lower() != "close" and parts[0] != b"HTTP/1.0"
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunked(reader)
        elif "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit():
                raise UpstreamError(f"Content-Length {length[:20]!r} is not a size")
            body = await reader.readexactly(int(length))
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:  # no length: the body runs to the end of the connection
            body = await reader.read()
            keep = False
        return UpstreamResponse(status, headers, body), keep

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size < 0:
                raise ValueError("negative chunk size")
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailer fields, which the proxy does not use
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise ValueError("a chunk does not end with CRLF")

    def close(self) -> None:
        for key, connections in self._idle.items():
            for connection in connections:
                self._close(key, connection)
        self._idle.clear()
