"""The proxy's HTTP client against small servers that misbehave as a broken or overloaded
upstream would: answers cut short, header lines past any limit, bad framing, kept connections
closed under it, a server that stops reading, and more concurrent requests than connections."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from deployments.backends.local.upstream import UpstreamError, UpstreamPool

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class Server:
    """An asyncio server whose ``answer(number, reader, writer)`` decides each request's fate;
    it counts requests (by their full header block) and connections, and the most open at once."""

    def __init__(self, answer: Callable[..., Awaitable[bool]]) -> None:
        self.answer = answer
        self.requests = 0
        self.connections = 0
        self.open_now = 0
        self.most_open = 0

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _serve(self, reader, writer) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                self.requests += 1
                if not await self.answer(self.requests, reader, writer, length):
                    return
        finally:
            self.open_now -= 1
            writer.close()


async def read_body(reader, length: int) -> None:
    await reader.readexactly(length)


async def post(pool: UpstreamPool, port: int, body: bytes = b"{}", timeout_s: float = 5.0):
    return await pool.post(
        "127.0.0.1", port, "/models/m/invoke", body, "application/json", timeout_s
    )


def test_a_kept_connection_is_reused_for_the_next_request():
    async def answer(number, reader, writer, length):
        await read_body(reader, length)
        writer.write(OK)
        return True

    async def scenario():
        async with Server(answer) as server:
            pool = UpstreamPool()
            first = await post(pool, server.port)
            second = await post(pool, server.port)
            pool.close()
            return first, second, server.connections

    first, second, connections = asyncio.run(scenario())

    assert first.status == second.status == 200 and second.body == b"{}"
    assert connections == 1


def test_a_header_line_past_the_limit_is_an_upstream_error_not_a_crash():
    async def answer(number, reader, writer, length):
        await read_body(reader, length)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Junk: " + b"a" * 200_000 + b"\r\n\r\n")
        return True

    async def scenario():
        async with Server(answer) as server:
            with pytest.raises(UpstreamError, match="longer than"):
                await post(UpstreamPool(), server.port)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("answer_bytes", "message"),
    [
        (b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"short', "cut short"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n{}", "not a size"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -4\r\n\r\n{}", "not a size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", "HTTP"),
        (b"HTTP/1.1 OK 200\r\n\r\n", "not an HTTP answer"),
        (b"SSH-2.0-OpenSSH_9.6\r\n", "not an HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "not a header line"),
    ],
)
def test_a_badly_framed_answer_is_an_upstream_error_naming_what_was_wrong(answer_bytes, message):
    async def answer(number, reader, writer, length):
        await read_body(reader, length)
        writer.write(answer_bytes)
        await writer.drain()
        return False  # and close

    async def scenario():
        async with Server(answer) as server:
            with pytest.raises(UpstreamError, match=message):
                await post(UpstreamPool(), server.port)

    asyncio.run(scenario())


def test_a_chunked_answer_is_read_whole():
    async def answer(number, reader, writer, length):
        await read_body(reader, length)
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'3\r\n{"a\r\n5;ext=1\r\n": 1}\r\n0\r\n\r\n'
        )
        return True

    async def scenario():
        async with Server(answer) as server:
            return await post(UpstreamPool(), server.port)

    assert asyncio.run(scenario()).body == b'{"a": 1}'


def test_a_request_answered_in_part_is_never_sent_again():
    async def answer(number, reader, writer, length):
        await read_body(reader, length)
        if number == 1:
            writer.write(OK)
            return True
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"par')
        await writer.drain()
        return False  # closes the kept connection mid-answer

    async def scenario():
        async with Server(answer) as server:
            pool = UpstreamPool()
            await post(pool, server.port)
            with pytest.raises(UpstreamError, match="cut short"):
                await post(pool, server.port)
            await asyncio.sleep(0.1)
            return server.requests

    assert asyncio.run(scenario()) == 2  # the second request reached the server once


def test_a_kept_connection_closed_before_any_answer_is_replaced_and_the_request_sent_again():
    async def answer(number, reader, writer, length):
        await read_body(reader, length)
        if number == 2:
            return False  # read the request, then closed the connection without a byte
        writer.write(OK)
        return True

    async def scenario():
        async with Server(answer) as server:
            pool = UpstreamPool()
            await post(pool, server.port)
            second = await post(pool, server.port)
            return second, server.requests, server.connections

    second, requests, connections = asyncio.run(scenario())

    assert second.status == 200
    assert (requests, connections) == (3, 2)


def test_a_fresh_connection_closed_without_an_answer_is_not_retried():
    async def answer(number, reader, writer, length):
        await read_body(reader, length)
        return False

    async def scenario():
        async with Server(answer) as server:
            with pytest.raises(UpstreamError, match="closed the connection"):
                await post(UpstreamPool(), server.port)
            return server.requests

    assert asyncio.run(scenario()) == 1


def test_a_server_that_stops_reading_times_out_saying_the_request_was_not_taken():
    stalled = asyncio.Event()

    async def answer(number, reader, writer, length):
        await stalled.wait()  # never reads the body: the socket buffers fill up
        return False

    async def scenario():
        async with Server(answer) as server:
            with pytest.raises(UpstreamError, match="did not take the whole request within 1 s"):
                await post(UpstreamPool(), server.port, body=b"x" * (64 * 1024 * 1024), timeout_s=1)
            stalled.set()

    asyncio.run(scenario())


def test_a_slow_answer_times_out_saying_no_answer_came():
    async def answer(number, reader, writer, length):
        await read_body(reader, length)
        await asyncio.sleep(5)
        return False

    async def scenario():
        async with Server(answer) as server:
            with pytest.raises(UpstreamError, match="no answer within 0.3 s"):
                await post(UpstreamPool(), server.port, timeout_s=0.3)

    asyncio.run(scenario())


def test_concurrent_requests_beyond_the_cap_wait_for_a_connection_and_are_all_answered():
    async def answer(number, reader, writer, length):
        await read_body(reader, length)
        await asyncio.sleep(0.1)
        writer.write(OK)
        return True

    async def scenario():
        async with Server(answer) as server:
            pool = UpstreamPool(max_connections=2)
            answers = await asyncio.gather(*(post(pool, server.port) for _ in range(8)))
            opened = pool.open_connections("127.0.0.1", server.port)
            pool.close()
            return answers, server.most_open, server.connections, opened

    answers, most_open, connections, opened = asyncio.run(scenario())

    assert [a.status for a in answers] == [200] * 8
    assert most_open == 2 and connections == 2 and opened == 2


def test_a_request_that_finds_every_connection_busy_past_its_timeout_says_so():
    async def answer(number, reader, writer, length):
        await read_body(reader, length)
        await asyncio.sleep(1)
        writer.write(OK)
        return True

    async def scenario():
        async with Server(answer) as server:
            pool = UpstreamPool(max_connections=1)
            slow = asyncio.ensure_future(post(pool, server.port))
            await asyncio.sleep(0.1)
            with pytest.raises(UpstreamError, match="all 1 connections .* stayed busy"):
                await post(pool, server.port, timeout_s=0.3)
            assert (await slow).status == 200
            return server.requests

    assert asyncio.run(scenario()) == 1


def test_a_cancelled_request_frees_its_connection_slot():
    async def answer(number, reader, writer, length):
        await read_body(reader, length)
        if number == 1:
            await asyncio.sleep(5)
            return False
        writer.write(OK)
        return True

    async def scenario():
        async with Server(answer) as server:
            pool = UpstreamPool(max_connections=1)
            first = asyncio.ensure_future(post(pool, server.port))
            await asyncio.sleep(0.1)
            first.cancel()
            second = await post(pool, server.port, timeout_s=2)
            return second, pool.open_connections("127.0.0.1", server.port)

    second, opened = asyncio.run(scenario())

    assert second.status == 200 and opened == 1


def test_an_unreachable_server_is_an_upstream_error():
    async def scenario():
        async with Server(lambda *a: None) as server:
            port = server.port
        with pytest.raises(UpstreamError):
            await post(UpstreamPool(), port)

    asyncio.run(scenario())
