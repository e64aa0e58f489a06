"""Server-sent event streams from a local Triton's generate extension (``POST
/v2/models/<name>/generate_stream`` on the instance's own HTTP port).

One connection per stream, never pooled: the stream ends when the model's last response has come
or when the caller goes away, and closing the connection is what tells Triton to stop (see
``docs/proxy.md``, "Generating kinds"). The answer's status and headers are read when the stream
is opened, so a refusal (an unknown model, a bad request) is an ordinary answer with a body; a
200 answer's body is read as it arrives, chunk by chunk, and handed on one ``data:`` event at a
time, parsed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from deployments.backends.local.upstream import LINE_LIMIT_BYTES, MAX_HEADER_LINES, UpstreamError

# The largest error answer read from a refused stream.
ERROR_BODY_LIMIT_BYTES = 64 * 1024
# The longest event accepted (one generated piece of text is a few bytes).
EVENT_LIMIT_BYTES = 1024 * 1024


class EventStream:
    """An open generate stream: ``status``, ``headers``, and for a 200 its events; anything else
    carries its (small) ``body``."""

    def __init__(
        self,
        *,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        status: int,
        headers: dict[str, str],
        body: bytes = b"",
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.status = status
        self.headers = headers
        self.body = body

    async def events(self, *, idle_timeout_s: float) -> AsyncIterator[dict]:
        """Each ``data:`` event of the answer as a JSON object, as it arrives; UpstreamError when
        the answer is cut short or nothing arrives for ``idle_timeout_s``."""
        chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        pending = b""
        try:
            while True:
                # The timeout covers one read only: never the time the caller spends on an event.
                async with asyncio.timeout(idle_timeout_s):
                    piece = await (
                        _next_chunk(self._reader) if chunked else self._reader.read(65536)
                    )
                if not piece:
                    break
                pending += piece
                *complete, pending = pending.split(b"\n\n")
                if len(pending) > EVENT_LIMIT_BYTES:
                    raise ValueError(f"an event is longer than {EVENT_LIMIT_BYTES} bytes")
                for block in complete:
                    event = _parse_event(block)
                    if event is not None:
                        yield event
        except TimeoutError:
            raise UpstreamError(f"no event for {idle_timeout_s:g} s") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise UpstreamError(f"the stream was cut short ({exc!s:.80})") from exc
        event = _parse_event(pending)
        if event is not None:
            yield event

    def close(self) -> None:
        """Close the connection (mid-stream, this is how the server learns the caller left)."""
        self._writer.close()


async def open_event_stream(
    *, host: str, port: int, path: str, body: bytes, timeout_s: float
) -> EventStream:
    """POST ``body`` (JSON) to ``path`` and return once the answer's headers have come."""
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1") + body
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port, limit=LINE_LIMIT_BYTES)
            writer.write(request)
            await writer.drain()
            status, headers = await _read_head(reader)
            if status == 200:
                return EventStream(reader=reader, writer=writer, status=status, headers=headers)
            data = await _read_body(reader, headers)
    except TimeoutError:
        if writer is not None:
            writer.close()
        raise UpstreamError(f"no answer within {timeout_s:g} s") from None
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        if writer is not None:
            writer.close()
        raise UpstreamError(str(exc) or type(exc).__name__) from exc
    writer.close()
    return EventStream(reader=reader, writer=writer, status=status, headers=headers, body=data)


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await reader.readuntil(b"\r\n")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP answer: {status_line[:40]!r}")
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADER_LINES + 1):
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            return int(parts[1]), headers
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon:
            raise ValueError(f"not a header line: {line[:40]!r}")
        headers[name.strip().lower()] = value.strip()
    raise ValueError(f"more than {MAX_HEADER_LINES} header lines")


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks, size = [], 0
        while (chunk := await _next_chunk(reader)) and size < ERROR_BODY_LIMIT_BYTES:
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)[:ERROR_BODY_LIMIT_BYTES]
    length = headers.get("content-length", "")
    if length.isdigit():
        return await reader.readexactly(min(int(length), ERROR_BODY_LIMIT_BYTES))
    return await reader.read(ERROR_BODY_LIMIT_BYTES)


async def _next_chunk(reader: asyncio.StreamReader) -> bytes:
    """The next chunk of a chunked body (empty at its end)."""
    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
    if size == 0:
        return b""
    chunk = await reader.readexactly(size)
    if await reader.readexactly(2) != b"\r\n":
        raise ValueError("a chunk does not end with CRLF")
    return chunk


def _parse_event(block: bytes) -> dict | None:
    """The JSON of one event's ``data:`` lines (None for an event without data)."""
    data = [
        line[5:].strip()
        for line in block.replace(b"\r\n", b"\n").split(b"\n")
        if line.startswith(b"data:")
    ]
    if not data:
        return None
    try:
        event = json.loads(b"\n".join(data))
    except ValueError as exc:
        raise ValueError(f"an event is not JSON ({exc})") from exc
    if not isinstance(event, dict):
        raise ValueError("an event is not a JSON object")
    return event
