"""A lean Skycore stand-in for bench/dispatch.py: answers every sendSMS after a fixed delay.

    .venv/bin/python bench/skycore_standin.py --delay-ms 50            # prints its URL, runs
    .venv/bin/python bench/skycore_standin.py --selftest                # its own ceiling

tests/standins/skycore.py speaks the whole API for the test suite (HTTP/1.0, one connection
per request, every request parsed with tracker.safexml, scripted failures); it is too slow to
stand in for a provider under load. This one does only what a throughput benchmark needs:

- `POST /API/wxml/1.3/index.php` with the form field `xml` holding
  `<REQUEST><ACTION>sendSMS</ACTION>…<TO>…</TO>…<TEXT>…</TEXT></REQUEST>` is answered, after
  `--delay-ms`, with `<RESPONSE><STATUS>Success</STATUS><TRACKINGID>SMS_n</TRACKINGID>
  <TO>…</TO></RESPONSE>` (text/xml). TEXT and TO are read with a regular expression, not an
  XML parser: this is a bench tool, and the tracker's own XML goes out well-formed.
- HTTP/1.1 keep-alive, one thread per connection (ThreadingHTTPServer), Nagle off, and each
  answer written in one `send`, so a pooled client pays no reconnect or delayed-ACK penalty.
- Every TEXT is recorded with its arrival time and the time it was answered (time.monotonic:
  CLOCK_MONOTONIC, the same clock in every process on the machine, so a benchmark in another
  process can subtract its own readings). A TEXT seen more than once is a double send.
- Two request headers for load probes: `X-Bench-Probe: 1` (answered, not recorded) and
  `X-Bench-Delay-Ms: N` (this request's delay instead of the default).
- Control endpoints (JSON): `GET /_bench/stats`, `GET /_bench/wait?text=T&timeout=S` (blocks
  until T has been answered; its arrival and answer times), `GET /_bench/arrivals` (every
  recorded TEXT: first arrival, first answer, times seen).

`measure_ceiling()` is the client side: N threads, each with one keep-alive
`http.client.HTTPConnection`, posting probe sendSMS requests for a number of seconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote_plus, unquote_plus, urlsplit
from xml.sax.saxutils import escape, unescape

SEND_PATH = "/API/wxml/1.3/index.php"
_TEXT = re.compile(r"<TEXT>(.*?)</TEXT>", re.DOTALL)
_TO = re.compile(r"<TO>(.*?)</TO>", re.DOTALL)


class Record:
    """What the stand-in saw: TEXT -> [first arrival, first answer, times seen]."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.texts: dict[str, list[Any]] = {}
        self.requests = 0
        self.probes = 0
        self.ids = 0

    def arrived(self, text: str, now: float) -> int:
        with self.lock:
            self.requests += 1
            self.ids += 1
            seen = self.texts.get(text)
            if seen is None:
                self.texts[text] = [now, None, 1]
            else:
                seen[2] += 1
            return self.ids

    def answered(self, text: str, now: float) -> None:
        with self.lock:
            seen = self.texts[text]
            if seen[1] is None:
                seen[1] = now
            self.lock.notify_all()

    def probe(self) -> int:
        with self.lock:
            self.probes += 1
            self.ids += 1
            return self.ids

    def stats(self) -> dict[str, Any]:
        with self.lock:
            doubles = [c for _a, _d, c in self.texts.values() if c > 1]
            answered = [d for _a, d, _c in self.texts.values() if d is not None]
            return {"requests": self.requests, "probes": self.probes,
                    "distinct": len(self.texts), "answered": len(answered),
                    "doubled_texts": len(doubles), "extra_sends": sum(c - 1 for c in doubles),
                    "last_answered": max(answered, default=None)}

    def wait(self, text: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                seen = self.texts.get(text)
                if seen is not None and seen[1] is not None:
                    return {"text": text, "arrival": seen[0], "answered": seen[1],
                            "seen": seen[2]}
                left = deadline - time.monotonic()
                if left <= 0:
                    return {"text": text, "arrival": seen[0] if seen else None,
                            "answered": None, "seen": seen[2] if seen else 0}
                self.lock.wait(left)

    def arrivals(self) -> list[list[Any]]:
        with self.lock:
            return [[text, *values] for text, values in self.texts.items()]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the client says Connection: close
    disable_nagle_algorithm = True
    server: StandInServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: bytes, content_type: str = "text/xml") -> None:
        head = (f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n")
        self.wfile.write(head.encode("latin-1") + body)  # one send: header and body together

    def do_POST(self) -> None:
        arrival = time.monotonic()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if urlsplit(self.path).path != SEND_PATH:
            self.reply(404, b"not found", "text/plain")
            return
        xml = unquote_plus(body.decode("utf-8", "replace"))
        text_match, to_match = _TEXT.search(xml), _TO.search(xml)
        to = to_match.group(1) if to_match else ""
        if text_match is None:
            self.reply(200, _response("Failure", "<ERRORCODE>E712</ERRORCODE>"
                                      "<ERRORINFO>'text' is required</ERRORINFO>", to))
            return
        text = unescape(text_match.group(1))
        record = self.server.record
        probe = self.headers.get("X-Bench-Probe") == "1"
        number = record.probe() if probe else record.arrived(text, arrival)
        delay = self.headers.get("X-Bench-Delay-Ms")
        seconds = float(delay) / 1000 if delay is not None else self.server.delay
        if seconds > 0:
            time.sleep(max(0.0, arrival + seconds - time.monotonic()))
        if not probe:
            record.answered(text, time.monotonic())
        self.reply(200, _response("Success", f"<TRACKINGID>SMS_{number}</TRACKINGID>", to))

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        record = self.server.record
        if parts.path == "/_bench/stats":
            payload: Any = record.stats()
        elif parts.path == "/_bench/wait":
            payload = record.wait(query.get("text", ""), float(query.get("timeout", "30")))
        elif parts.path == "/_bench/arrivals":
            payload = record.arrivals()
        else:
            self.reply(404, b"not found", "text/plain")
            return
        self.reply(200, json.dumps(payload).encode(), "application/json")


def _response(status: str, inner: str, to: str) -> bytes:
    return (f"<RESPONSE><STATUS>{status}</STATUS>{inner}<TO>{escape(to)}</TO>"
            "</RESPONSE>").encode()


class StandInServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # 64 clients connecting at once must not see a refused SYN

    def __init__(self, port: int, delay: float) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.delay = delay
        self.record = Record()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{SEND_PATH}"


# -- the client side: a ceiling measurement -----------------------------------------------------


def probe_body(n: int) -> bytes:
    xml = ("<REQUEST><ACTION>sendSMS</ACTION><API_KEY>bench</API_KEY><TO>15551234888</TO>"
           f"<FROM>60856</FROM><CAMPAIGNREF></CAMPAIGNREF><TEXT>probe {n}</TEXT></REQUEST>")
    return f"xml={quote_plus(xml)}".encode()


def measure_ceiling(url: str, clients: int, seconds: float, delay_ms: float | None = None
                    ) -> dict[str, Any]:
    """Probe sendSMS requests from `clients` threads, each on one keep-alive connection, for
    `seconds`: answers per second (after a short warm-up in which every connection is opened).
    `delay_ms` overrides the stand-in's delay for these requests."""
    parts = urlsplit(url)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Bench-Probe": "1"}
    if delay_ms is not None:
        headers["X-Bench-Delay-Ms"] = f"{delay_ms:g}"
    start = threading.Barrier(clients + 1)
    window: dict[str, float] = {}
    counts = [0] * clients
    errors = [0] * clients
    last = [0.0] * clients  # each client's last answer inside the window

    def run(k: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        body = probe_body(k)
        try:
            conn.request("POST", parts.path, body, headers)  # warm-up: connect
            conn.getresponse().read()
        except OSError:
            errors[k] += 1
        start.wait()
        while time.monotonic() < window["end"]:
            try:
                conn.request("POST", parts.path, body, headers)
                response = conn.getresponse()
                response.read()
                now = time.monotonic()
                if response.status == 200 and now <= window["end"]:
                    counts[k] += 1
                    last[k] = now
            except OSError:
                errors[k] += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        conn.close()

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(clients)]
    for thread in threads:
        thread.start()
    window["end"] = float("inf")
    start.wait()
    began = time.monotonic()
    window["end"] = began + seconds
    for thread in threads:
        thread.join(seconds + 60)
    # Each client's answers over its own span up to its last answer: a round trip cut off by
    # the end of the window would otherwise count as lost time (10 % at 0.5 s and 50 ms).
    per_s = sum(count / (end - began) for count, end in zip(counts, last, strict=True)
                if count and end > began)
    return {"clients": clients, "seconds": seconds, "delay_ms": delay_ms,
            "answers": sum(counts), "errors": sum(errors), "per_s": per_s}


# -- running it ---------------------------------------------------------------------------------


def serve(port: int, delay_ms: float) -> None:
    server = StandInServer(port, delay_ms / 1000)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(server.url, flush=True)  # the first line: what to point base_url at
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def selftest(delay_ms: float, seconds: float) -> int:
    """Start a stand-in in a child process and measure it from this one."""
    import subprocess

    child = subprocess.Popen([sys.executable, __file__, "--port", "0", "--delay-ms",
                              f"{delay_ms:g}"], stdout=subprocess.PIPE, text=True)
    try:
        url = (child.stdout.readline() if child.stdout else "").strip()
        for clients, delay in ((64, 0.0), (64, delay_ms), (16, delay_ms)):
            result = measure_ceiling(url, clients, seconds, delay)
            best = f"{clients / (delay / 1000):.0f}" if delay else "-"
            print(f"{clients:3d} keep-alive clients, delay {delay:g} ms: "
                  f"{result['per_s']:7.0f} answers/s (best possible {best}), "
                  f"errors {result['errors']}", flush=True)
    finally:
        child.terminate()
        child.wait(10)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="answer after this long")
    parser.add_argument("--selftest", action="store_true",
                        help="measure a stand-in's ceiling (64 and 16 clients) and exit")
    parser.add_argument("--seconds", type=float, default=3.0, help="with --selftest")
    args = parser.parse_args(argv)
    if args.selftest:
        return selftest(args.delay_ms, args.seconds)
    serve(args.port, args.delay_ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
