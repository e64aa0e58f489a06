"""A stand-in for a fleet of local Triton servers: one process answering every instance's port.

The control-plane benchmark (``bench/control_plane.py``) seeds hundreds of local instances; the
reconciler checks each one the way it checks a real ``tritonserver``: the recorded pid must be a
process whose ``argv[0]`` is named ``tritonserver`` with ``--sagemaker-port=<port>`` among its
arguments, ``GET /ping`` must answer 200, and ``GET /models`` must list what the database says is
loaded there. This script is that process. It only answers reads (``/ping``, ``/models``,
``/models/<name>``, and an empty ``/metrics`` on the metrics ports); it loads nothing.

    exec -a tritonserver python bench/triton_standin.py --models-file=FILE \\
        --sagemaker-port=P1 --metrics-port=M1 --sagemaker-port=P2 ...

FILE holds ``{"<port>": [{"modelName": ..., "modelUrl": ...}, ...]}``. Once every port listens
it prints ``ready <ports>`` on stdout; SIGTERM or SIGINT stops it, after it prints
``requests {"<port>": {"GET /ping": n, ...}}``: what each instance port answered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys
from urllib.parse import unquote

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request"}
_MAX_HEADER_BYTES = 64 * 1024


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Triton's own spelling of the ports (``--sagemaker-port=P``), repeated once per instance."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-file", required=True)
    parser.add_argument("--sagemaker-port", type=int, action="append", default=[])
    parser.add_argument("--metrics-port", type=int, action="append", default=[])
    parser.add_argument("--host", default="127.0.0.1")
    return parser.parse_args(argv)


def _response(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


class Server:
    """The precomputed answers of one port: its model listing and each model's description."""

    def __init__(self, models: list[dict]) -> None:
        self.listing = _response(200, json.dumps({"models": models}).encode())
        self.by_name = {m["modelName"]: _response(200, json.dumps(m).encode()) for m in models}
        self.requests: dict[str, int] = {}  # "GET /ping" -> how many were answered

    def answer(self, method: str, path: str) -> bytes:
        """The bytes to send back for one request."""
        path = path.split("?", 1)[0]
        key = f"{method} {'/models/<name>' if path.startswith('/models/') else path}"
        self.requests[key] = self.requests.get(key, 0) + 1
        if method != "GET":
            return _response(405, b'{"error": "the stand-in only answers reads"}')
        if path == "/ping":
            return _response(200, b"")
        if path == "/models":
            return self.listing
        if path.startswith("/models/"):
            found = self.by_name.get(unquote(path[len("/models/") :]))
            return found if found is not None else _response(404, b"")
        return _response(404, b"")


class MetricsServer:
    """An empty Prometheus page (the stand-in measures nothing)."""

    def answer(self, method: str, path: str) -> bytes:
        """The bytes to send back for one request."""
        if method == "GET" and path.split("?", 1)[0] == "/metrics":
            return _response(200, b"", "text/plain; version=0.0.4")
        return _response(404, b"")


async def _serve_connection(
    server: Server | MetricsServer,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    open_connections: set[asyncio.StreamWriter],
) -> None:
    open_connections.add(writer)
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) < 2:
                writer.write(_response(400, b""))
                return
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip() or 0)
            if length:
                await reader.readexactly(length)
            writer.write(server.answer(parts[0], parts[1]))
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        open_connections.discard(writer)
        writer.close()


async def serve(args: argparse.Namespace, models_by_port: dict[str, list[dict]]) -> None:
    """Listen on every port, say so on stdout, and answer until told to stop."""
    listeners = []
    open_connections: set[asyncio.StreamWriter] = set()
    servers = {port: Server(models_by_port.get(str(port), [])) for port in args.sagemaker_port}
    handlers: list[tuple[int, Server | MetricsServer]] = list(servers.items())
    handlers += [(port, MetricsServer()) for port in args.metrics_port]
    for port, handler in handlers:

        async def on_connection(reader, writer, handler=handler) -> None:
            await _serve_connection(handler, reader, writer, open_connections)

        listeners.append(
            await asyncio.start_server(
                on_connection, args.host, port, reuse_address=True, limit=_MAX_HEADER_BYTES
            )
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"ready {len(args.sagemaker_port)} instance ports", flush=True)
    await stop.wait()
    for listener in listeners:
        listener.close()
    # Clients keep connections alive: end them, so each handler sees the end of its stream
    # and returns before the loop closes.
    for writer in list(open_connections):
        writer.close()
    for _ in range(200):
        if not open_connections:
            break
        await asyncio.sleep(0.01)
    # What each instance port was asked, so the caller can tell that every one was reached.
    requests = {str(port): server.requests for port, server in servers.items()}
    print("requests " + json.dumps(requests), flush=True)


def main(argv: list[str] | None = None) -> None:
    """Read the listing file and serve."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a listener per port, and clients
    with open(args.models_file) as listing:
        models_by_port = json.load(listing)
    asyncio.run(serve(args, models_by_port))


if __name__ == "__main__":
    main()
