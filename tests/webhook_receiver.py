"""A webhook receiver on loopback for tests: records every request, answers as told.

    with Receiver() as rx:
        rx.answers = [500, 200]          # then 200 for every later request
        rx.delay = 0.5                   # seconds before answering
        ... rx.url("/hooks") ... rx.wait_for(2) ... rx.received[0].headers["webhook-id"]
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


class Receiver:
    """A threaded HTTP server; `answers` are status codes used in order (then `default`)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: list[int] = []
        self.default = 200
        self.delay = 0.0
        self.body = b"ok"
        self.location: str | None = None  # sent with a 3xx
        self.in_flight = 0
        self.peak = 0
        self.hold = threading.Event()  # cleared: requests wait until it is set
        self.hold.set()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"received {len(self.received)} of {count} webhooks")
            time.sleep(0.02)
        return self.received

    def _answer(self) -> tuple[int, bytes]:
        with self._lock:
            code = self.answers.pop(0) if self.answers else self.default
        return code, self.body

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender died mid-request (a test kills the worker): a real server never
                    # sees a cut-off request as one, so neither does this one (CI: a killed
                    # worker's last request was recorded with an empty body, unsigned).
                    self.close_connection = True
                    return
                with receiver._lock:
                    receiver.in_flight += 1
                    receiver.peak = max(receiver.peak, receiver.in_flight)
                try:
                    receiver.hold.wait(60)
                    if receiver.delay:
                        time.sleep(receiver.delay)
                    code, answer = receiver._answer()
                    with receiver._lock:
                        receiver.received.append(Received(
                            self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                            time.monotonic()))
                    self.send_response(code)
                    if receiver.location:
                        self.send_header("Location", receiver.location)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    with contextlib.suppress(OSError):
                        self.wfile.write(answer)
                finally:
                    with receiver._lock:
                        receiver.in_flight -= 1

            def log_message(self, *_args: Any) -> None:
                pass

        return Handler


@contextlib.contextmanager
def receiving() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver
