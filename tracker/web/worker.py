"""The gunicorn worker of `tracker serve`: requests are read whole before a thread runs them.

gunicorn's sync worker gives each connection the whole process until its request is read, and
its gthread worker a whole thread once the first byte is in: a client that sends its headers
(or half its body) and then stalls holds that slot until it gives up. A few dozen such
connections, from a careless provider or anyone on the internet, took the service down.

Here the worker's event loop (gunicorn's gthread poller) reads every request, without
blocking, until its framing says it is complete: header block, then Content-Length bytes or a
chunked body up to its last chunk. Only then does a thread parse and answer it, from memory, so
a stalled client costs a socket and a buffer, never a thread. A request not complete within
`request_timeout_seconds` of its first byte (of the connection, for a new one) is dropped with
its connection; nothing of it reaches the application, so nothing of it can be stored. The
same holds for a body cut off by the client: the application never sees an incomplete request.

gunicorn's own parser, limits, WSGI environ and response code still serve every request; this
class only decides when a request is ready. TLS is not read here (terminate it in a proxy).

With `web_threads = 1` the loop's own thread runs each request as soon as it is whole: no
thread hand-offs, and the SQLite writer lock is waited for in the main thread (measured: 1,139
callbacks/s against 828 with 8 threads, 2 workers, SQLite). But then one long answer (a big
export) holds every other request of that worker; the default keeps threads.
"""

from __future__ import annotations

import contextlib
import errno
import resource
import selectors
import socket
import sys
import time
from concurrent import futures
from functools import partial
from typing import Any

from gunicorn import http
from gunicorn.workers.gthread import TConn, ThreadWorker

DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_MAX_BODY = 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024  # the whole header block; gunicorn checks each line and field
RECV_BYTES = 64 * 1024
_HEX_DIGITS = b"0123456789abcdefABCDEF"
SWITCH_INTERVAL = 0.0005  # seconds; Python's default is 0.005


class Refused(Exception):
    """A request the front answers itself, before any thread: 413, 431, 400."""

    def __init__(self, status: str, text: str) -> None:
        super().__init__(text)
        self.status, self.text = status, text


def request_end(buf: bytes | bytearray, max_body: int) -> int | None:
    """Where the first request in `buf` ends, or None while it is incomplete.

    Only the framing is read here; gunicorn's parser judges the request itself. A framing
    this function cannot read (a malformed length or chunk size) ends the request where it
    stands, so the parser sees it and answers 400 at once instead of the client waiting.
    """
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        if len(buf) > MAX_HEADER_BYTES:
            raise Refused("431 Request Header Fields Too Large", "request headers too large")
        return None
    body_start = head_end + 4
    length, chunked = _framing(bytes(buf[:head_end]))
    if chunked:
        return _chunked_end(buf, body_start, max_body)
    if length is None:
        return body_start
    if length > max_body:
        raise Refused("413 Content Too Large", "request body too large")
    end = body_start + length
    return end if len(buf) >= end else None


def _framing(head: bytes) -> tuple[int | None, bool]:
    """(Content-Length or None, chunked?) from a header block."""
    length: int | None = None
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            chunked = chunked or b"chunked" in value.lower()
        elif name == b"content-length":
            value = value.strip()
            length = int(value) if value.isdigit() and len(value) < 19 else 0  # parser: 400
    return length, chunked


def _chunked_end(buf: bytes | bytearray, pos: int, max_body: int) -> int | None:
    size_total = 0
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None if len(buf) - pos < 1024 else pos  # a size line is short: parser's 400
        size_text = bytes(buf[pos:line_end]).split(b";", 1)[0].strip()
        if not 0 < len(size_text) <= 16 or size_text.strip(_HEX_DIGITS):
            return line_end + 2  # not a chunk size: the parser refuses it
        size = int(size_text, 16)
        if size == 0:  # the last chunk; then trailer fields, each ending in CRLF, and CRLF
            trailers = line_end + 2
            if buf[trailers:trailers + 2] == b"\r\n":
                return trailers + 2
            end = buf.find(b"\r\n\r\n", trailers)
            if end < 0 and len(buf) - trailers > MAX_HEADER_BYTES:
                raise Refused("431 Request Header Fields Too Large", "trailer fields too large")
            return None if end < 0 else end + 4
        size_total += size
        if size_total > max_body:
            raise Refused("413 Content Too Large", "request body too large")
        pos = line_end + 2 + size + 2
        if pos > len(buf):
            return None


class _Conn(TConn):
    """A connection, the bytes read from it so far and the deadline of its current request."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.received = bytearray()
        self.request = b""
        self.deadline = 0.0
        self.idle = False  # kept alive, waiting for the first byte of its next request
        self.continued = False  # a "100 Continue" went out for the current request
        self.initialized = True  # no socket parser: ours is made per request, from memory


class BufferingWorker(ThreadWorker):
    """gunicorn's threaded worker, with requests read whole by its event loop."""

    def init_process(self) -> None:
        self.reading: dict[_Conn, None] = {}  # connections reading a request; swept for deadlines
        # A thread holding the database's writer lock gives up the GIL at every SQLite call
        # and, at the default 5 ms switch interval, waits up to that long to get it back from
        # threads parsing other requests: a convoy in which the lock is held mostly idle.
        sys.setswitchinterval(SWITCH_INTERVAL)
        super().init_process()

    def run(self) -> None:
        config = getattr(self.wsgi, "config", None) or {}
        self.request_timeout = float((config.get("TRACKER") or {}).get(
            "request_timeout_seconds", DEFAULT_REQUEST_TIMEOUT))
        self.max_body = int(config.get("MAX_CONTENT_LENGTH") or DEFAULT_MAX_BODY)
        if self.cfg.is_ssl:
            self.log.error("tracker's worker does not read TLS: terminate it in a proxy")
            return
        # Stalled connections now cost a descriptor each, not a thread: allow as many as the
        # process may open, and never accept past that (accept() would fail with EMFILE).
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
        self.worker_connections = min(self.worker_connections, max(soft - 64, 16))
        super().run()

    # -- reading ------------------------------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = _Conn(self.cfg, client_sock, client_addr, listener.getsockname())
        conn.deadline = time.monotonic() + self.request_timeout
        self._read_on(conn)

    def _read_on(self, conn: _Conn) -> None:
        if conn not in self.reading:
            conn.sock.setblocking(False)
            self.reading[conn] = None
            self.poller.register(conn.sock, selectors.EVENT_READ,
                                 partial(self._on_readable, conn))

    def _on_readable(self, conn: _Conn, _sock: socket.socket) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client left: whatever it sent of a request is dropped
            self._forget(conn)
            self._close(conn)
            return
        if conn.idle:  # the first byte of a request on a kept-alive connection
            conn.idle = False
            conn.deadline = time.monotonic() + self.request_timeout
        conn.received += data
        self._advance(conn)

    def _advance(self, conn: _Conn) -> None:
        """Hand the connection to a thread if its request is whole, else read on."""
        try:
            end = request_end(conn.received, self.max_body)
        except Refused as refused:
            self._forget(conn)
            self._refuse(conn, refused)
            return
        if end is None:
            self._read_on(conn)
            if not conn.continued and _expects_continue(conn.received):
                conn.continued = True
                _send_quietly(conn.sock, b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        self._forget(conn)
        conn.request = bytes(conn.received[:end])
        del conn.received[:end]
        self.enqueue_req(conn)

    def _forget(self, conn: _Conn) -> None:
        if self.reading.pop(conn, False) is None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock)

    def _close(self, conn: _Conn) -> None:
        self.nr_conns -= 1
        conn.close()

    def _refuse(self, conn: _Conn, refused: Refused) -> None:
        body = refused.text.encode() + b"\n"
        _send_quietly(conn.sock, (
            f"HTTP/1.1 {refused.status}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body)
        self._close(conn)

    def murder_pending(self) -> None:
        """Close connections whose request did not arrive in time (and idle ones at stop)."""
        now = time.monotonic()
        for conn in list(self.reading):
            if conn.deadline <= now or (not self.alive and not conn.received):
                self._forget(conn)
                self._close(conn)

    # -- answering ----------------------------------------------------------------------

    def enqueue_req(self, conn: _Conn) -> None:
        """A whole request: to a thread, or, with one thread configured, run here and now."""
        if self.cfg.threads > 1:
            super().enqueue_req(conn)
            return
        done: futures.Future[Any] = futures.Future()
        try:
            done.set_result(self.handle(conn))
        except BaseException as exc:
            done.set_exception(exc)
        self.finish_request(conn, done)

    def handle(self, conn: _Conn) -> Any:
        conn.parser = http.get_parser(self.cfg, iter([conn.request]), conn.client)
        conn.data_ready = True
        return super().handle(conn)

    def handle_request(self, req: Any, conn: _Conn) -> Any:
        # A client that does not read its answer must not hold the thread either.
        conn.sock.settimeout(self.request_timeout)
        req._expected_100_continue = False  # the body is here already
        return super().handle_request(req, conn)

    def finish_request(self, conn: _Conn, fs: Any) -> None:
        try:
            keep = bool(fs.result()) if not fs.cancelled() else False
        except Exception:
            keep = False
        if not keep or not self.alive:
            self._close(conn)
            return
        conn.request, conn.continued = b"", False
        now = time.monotonic()
        if conn.received:  # a pipelined request, whole or in part, came with the last one
            conn.deadline = now + self.request_timeout
            self._advance(conn)
        else:
            conn.idle, conn.deadline = True, now + self.cfg.keepalive
            self._read_on(conn)


def _expects_continue(received: bytearray) -> bool:
    """Headers complete, and the client waits for "100 Continue" before sending its body."""
    head_end = received.find(b"\r\n\r\n")
    head = bytes(received[:head_end]).lower().replace(b" ", b"") if head_end >= 0 else b""
    return b"\r\nexpect:100-continue" in head


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.send(data)
