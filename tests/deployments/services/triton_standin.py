"""A stand-in for a fleet of Triton instances: one small process that the platform takes for
``tritonserver`` (its process name and its ``--sagemaker-port=`` arguments, which is what the
liveness check reads) and that answers the SageMaker multi-model protocol on many ports at once.

Background passes over a fleet of hundreds of instances are tested against it: starting that many
real Triton servers on a test machine is out of reach, and what a pass asks of an instance is
plain HTTP (``/ping``, ``GET /models``, ``DELETE /models/<name>``, a warm-up request). Each port
keeps the models it was told are loaded (``POST /models`` or ``configure``), can be slowed down
or made to fail its listing, and the process counts the requests it is answering at once — in
all and per port — so a test can see calls overlap and their bound hold.

Run as a program (``TritonStandIn.start`` does it): the listening sockets are inherited from the
test process, so no port can be taken by someone else between choosing it and serving it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

CONTROL = "/__standin__/"

# A warm-up answer an intent classifier's decoder reads (one ticket, one label).
INTENT_ANSWER = {
    "outputs": [
        {"name": "LABEL", "shape": [1], "datatype": "BYTES", "data": ["refund"]},
        {"name": "SCORES", "shape": [1, 1], "datatype": "FP32", "data": [1.0]},
        {"name": "LABELS", "shape": [1, 1], "datatype": "BYTES", "data": ["refund"]},
    ]
}


# --- The server (runs in the stand-in process) ------------------------------------------------


class _Port:
    def __init__(self) -> None:
        self.loaded: dict[str, str] = {}
        self.models_delay_s = 0.0
        self.invoke_delay_s = 0.0
        self.listing_status = 200


class _Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.in_flight = 0
        self.max_in_flight = 0
        self.per_port: dict[int, int] = {}
        self.max_per_port: dict[int, int] = {}
        self.requests: dict[str, int] = {}

    def enter(self, port: int, what: str) -> None:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.per_port[port] = self.per_port.get(port, 0) + 1
            self.max_per_port[port] = max(self.max_per_port.get(port, 0), self.per_port[port])
            self.requests[what] = self.requests.get(what, 0) + 1

    def leave(self, port: int) -> None:
        with self.lock:
            self.in_flight -= 1
            self.per_port[port] -= 1

    def as_dict(self) -> dict:
        with self.lock:
            return {
                "max_in_flight": self.max_in_flight,
                "max_in_flight_per_port": max(self.max_per_port.values(), default=0),
                "requests": dict(self.requests),
            }


COUNTS = _Counts()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format, *args) -> None:  # quiet, like Triton at its default level
        return None

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as two writes: without this, delayed ACKs add 40 ms to each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _answer(self, status: int, body: object = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _counted(self, what: str, handle) -> None:
        """Answer what ``handle`` returns, counted in flight while it works. The count is left
        before the answer is written: once the caller has read it, the request is over here
        too (else the caller's next request could overlap this one's last bytes)."""
        port = self.server.port
        COUNTS.enter(port, what)
        try:
            status, body = handle()
        finally:
            COUNTS.leave(port)
        self._answer(status, body)

    def do_GET(self) -> None:
        state = self.server.state
        if self.path == "/ping":
            self._counted("ping", lambda: (200, None))
        elif self.path == "/models":
            self._counted("list", self._list)
        elif self.path.startswith("/models/"):
            name = unquote(self.path[len("/models/") :])
            url = state.loaded.get(name)
            if url is None:
                self._answer(404, {"error": f"model {name} is not loaded"})
            else:
                self._answer(200, {"modelName": name, "modelUrl": url})
        elif self.path == CONTROL + "stats":
            self._answer(200, COUNTS.as_dict())
        else:
            self._answer(404, {"error": "no such route"})

    def _list(self) -> tuple[int, dict]:
        state = self.server.state
        time.sleep(state.models_delay_s)
        if state.listing_status != 200:
            return state.listing_status, {"error": "model repository is unavailable"}
        models = [{"modelName": name, "modelUrl": url} for name, url in state.loaded.items()]
        return 200, {"models": models}

    def do_POST(self) -> None:
        state = self.server.state
        body = self._body()
        if self.path == "/models":
            state.loaded[body["model_name"]] = body["url"]
            self._answer(200, {})
        elif self.path.startswith("/models/") and self.path.endswith("/invoke"):
            name = unquote(self.path[len("/models/") : -len("/invoke")])
            self._counted("invoke", lambda: self._invoke(name))
        elif self.path == CONTROL + "configure":
            if "loaded" in body:
                state.loaded = {name: f"/stand-in/{name}" for name in body["loaded"]}
            state.models_delay_s = body.get("models_delay_s", state.models_delay_s)
            state.invoke_delay_s = body.get("invoke_delay_s", state.invoke_delay_s)
            state.listing_status = body.get("listing_status", state.listing_status)
            self._answer(200, {})
        elif self.path == CONTROL + "reset":
            COUNTS.reset()
            self._answer(200, {})
        else:
            self._answer(404, {"error": "no such route"})

    def _invoke(self, name: str) -> tuple[int, object]:
        time.sleep(self.server.state.invoke_delay_s)
        if name not in self.server.state.loaded:
            return 404, {"error": f"Request for unknown model: '{name}' is not found"}
        return 200, INTENT_ANSWER

    def do_DELETE(self) -> None:
        name = unquote(self.path[len("/models/") :])
        if self.server.state.loaded.pop(name, None) is None:
            self._answer(404, {"error": f"model {name} is not loaded"})
        else:
            self._answer(200, {})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, listening: socket.socket) -> None:
        super().__init__(listening.getsockname(), _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = listening
        self.port = listening.getsockname()[1]
        self.state = _Port()


def serve(fds: list[int]) -> None:
    """Serve every inherited listening socket until the process is stopped."""
    servers = [_Server(socket.socket(fileno=fd)) for fd in fds]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    threading.Event().wait()


# --- The controller (used by tests) -----------------------------------------------------------


class TritonStandIn:
    """One stand-in process serving ``ports`` instances' ports (and claiming ``refusing`` more
    in its arguments that nothing listens on: an instance whose Triton refuses connections)."""

    def __init__(self, *, ports: int, refusing: int = 0) -> None:
        self._sockets = [_listening() for _ in range(ports)]
        self.ports = [sock.getsockname()[1] for sock in self._sockets]
        self.refusing_ports = [_unused_port() for _ in range(refusing)]
        fds = [sock.fileno() for sock in self._sockets]
        argv = [
            # The process name the liveness check looks for; the interpreter is this one.
            str(Path(sys.executable).parent / "tritonserver"),
            __file__,
            f"--listen-fds={','.join(map(str, fds))}",
            *(f"--sagemaker-port={port}" for port in self.ports + self.refusing_ports),
        ]
        self.process = subprocess.Popen(
            argv, executable=sys.executable, pass_fds=fds, start_new_session=True
        )
        for sock in self._sockets:
            sock.close()  # the stand-in holds them now
        if self.ports:
            self._wait_until_answering()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.stats()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("The Triton stand-in did not answer within 20 s.")

    def _call(self, port: int, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}",
            data=None if body is None else json.dumps(body).encode(),
            method="GET" if body is None else "POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"{}")

    def configure(self, port: int, **settings) -> None:
        """Set one port's loaded models (``loaded=[names]``), its ``models_delay_s``,
        ``invoke_delay_s`` or ``listing_status``."""
        self._call(port, CONTROL + "configure", settings)

    def loaded(self, port: int) -> set[str]:
        """The models the port lists now."""
        return {model["modelName"] for model in self._call(port, "/models")["models"]}

    def stats(self) -> dict:
        """Requests answered at once at most (in all and on one port), and by route."""
        return self._call(self.ports[0], CONTROL + "stats")

    def reset_stats(self) -> None:
        self._call(self.ports[0], CONTROL + "reset", {})

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=10)


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    listen = next(arg for arg in sys.argv[1:] if arg.startswith("--listen-fds="))
    serve([int(fd) for fd in listen.split("=", 1)[1].split(",") if fd])
