"""A real webhook receiver for the tests: a threaded HTTP server on 127.0.0.1 that checks each
request with the verification snippet of docs/webhooks.md, run as it stands there."""

from __future__ import annotations

import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
SNIPPET = re.compile(r"<!-- verification snippet[^>]*-->\s*```python\n(.*?)```", re.DOTALL)


def documented_verifier():
    """``verify_webhook`` exactly as docs/webhooks.md shows it."""
    match = SNIPPET.search(DOC.read_text())
    assert match, "docs/webhooks.md lost its verification snippet"
    namespace: dict = {}
    exec(compile(match.group(1), str(DOC), "exec"), namespace)
    return namespace["verify_webhook"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Receiver:
    """Answers 200 to requests whose signature the documented snippet accepts, 400 to others;
    keeps every request it got (verified events in ``events``, in arrival order).

    ``hold_first``: the first request is recorded, then held without an answer until
    ``release()`` (a delivery in flight, for killing its worker).
    """

    def __init__(self, *, port: int = 0, hold_first: bool = False) -> None:
        self.secrets: dict[str, str] = {}  # path -> the secret its webhook signs with
        self.events: list[tuple[str, dict]] = []  # (path, verified event)
        self.rejected: list[tuple[str, str]] = []  # (path, why)
        self.headers: list[dict[str, str]] = []
        self.first_arrived = threading.Event()
        self._release = threading.Event()
        if not hold_first:
            self._release.set()
        self._lock = threading.Lock()
        self._verify = documented_verifier()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.receive(self, body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def receive(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        path = handler.path
        headers = {name: value for name, value in handler.headers.items()}
        with self._lock:
            self.headers.append(headers)
            try:
                event = self._verify(self.secrets.get(path, ""), handler.headers, body)
            except (ValueError, KeyError, AttributeError, TypeError) as error:
                self.rejected.append((path, str(error)))
                event = None
            else:
                self.events.append((path, event))
        self.first_arrived.set()
        self._release.wait(30)
        handler.send_response(200 if event is not None else 400)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def release(self) -> None:
        self._release.set()

    def event_ids(self, path: str | None = None) -> list[str]:
        return [event["id"] for at, event in self.events if path is None or at == path]

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
