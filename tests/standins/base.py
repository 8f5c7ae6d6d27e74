"""What every provider stand-in shares: a real HTTP server on loopback, served from a background
thread, that records the requests it receives.

A stand-in subclasses `StandIn` (naming its handler, thread and URL path) and a handler
subclasses `StandInHandler`; the provider's formats, scripting and answers stay in its module.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, Self, TypeVar

R = TypeVar("R")  # what a stand-in records for each request
T = TypeVar("T")


class StandInServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads
    block_on_close = True
    # The dispatcher opens up to max_in_flight connections at once; with the default backlog
    # of 5 the kernel drops the extra SYNs and the client retries a second later.
    request_queue_size = 128
    stand_in: Any  # the StandIn serving, for the handler

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """One connection (one request: HTTP/1.0), counted while it is being served."""
        self.stand_in._connection_opened()
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.stand_in._connection_closed()


class StandInHandler(BaseHTTPRequestHandler):
    server: StandInServer
    timeout = 10  # a client that connects and sends nothing cannot hold a thread for long
    protocol_version = "HTTP/1.0"  # one request per connection, closed after the answer
    content_type = "text/html"  # of send_bytes() answers unless given

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_bytes(self, status: int, body: bytes, content_type: str | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type or self.content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. its read timeout beat a slow answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet


class StandIn(Generic[R]):
    """A stand-in server; use as a context manager (or start()/stop())."""

    handler_class: type[StandInHandler]
    thread_name = "stand-in"
    url_path = ""  # appended to http://127.0.0.1:<port> to make `url`
    request_noun = "requests"  # what wait_for_requests() says it waited for

    def __init__(self) -> None:
        self.hook_errors: list[BaseException] = []  # what the test's hooks raised
        self._lock = threading.Lock()
        self._requests: list[R] = []
        self._serving = 0
        # The most connections this stand-in served at once. A connection's thread outlives
        # its answer by a moment, so this may exceed what the client had in flight.
        self.peak_concurrency = 0
        self._stopping = threading.Event()  # set by stop(): cuts slow answers short
        self._server: StandInServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> Self:
        """Listen on 127.0.0.1, a free port, in a background thread."""
        server = StandInServer(("127.0.0.1", 0), self.handler_class)
        server.stand_in = self
        self._server = server
        self._stopping.clear()
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut slow answers short, close the socket, join every thread."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "stand-in not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """What to point the provider's base_url at."""
        return f"http://127.0.0.1:{self.port}{self.url_path}"

    # inspection

    @property
    def requests(self) -> list[R]:
        """Every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[R]:
        """Block until at least `count` requests arrived; fail after `timeout` seconds."""
        return self._wait_for(lambda: self.requests, count, timeout, lambda: (
            f"stand-in saw {len(self.requests)} {self.request_noun}, "
            f"expected {count} within {timeout} s"))

    @staticmethod
    def _wait_for(seen: Callable[[], list[T]], count: int, timeout: float,
                  failure: Callable[[], str]) -> list[T]:
        """Poll `seen()` until it holds `count` items; else AssertionError(failure())."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items = seen()
            if len(items) >= count:
                return items
            time.sleep(0.02)
        raise AssertionError(failure())

    # request handling (handler threads)

    def _connection_opened(self) -> None:
        with self._lock:
            self._serving += 1
            self.peak_concurrency = max(self.peak_concurrency, self._serving)

    def _connection_closed(self) -> None:
        with self._lock:
            self._serving -= 1

    def _record(self, request: R) -> None:
        with self._lock:
            self._requests.append(request)

    def _hook_failed(self, handler: StandInHandler, hook: Callable[[T], object] | None,
                     arg: T, content_type: str = "text/plain") -> bool:
        """Call a test's hook; if it raises, keep the error in hook_errors and answer 500."""
        if hook is None:
            return False
        try:
            hook(arg)
        except Exception as exc:  # reported to the test through hook_errors
            self.hook_errors.append(exc)
            handler.send_bytes(500, b"stand-in hook failed", content_type)
            return True
        return False
