"""Latency of genuine requests while N clients hold connections with stalled requests.

Starts the service as a user would: `tracker serve` (gunicorn web + the job worker) with a TOML
config (TRACKER_CONFIG, `[providers.skycore]`, default_provider = "skycore") on a fresh SQLite
file in a temp folder, seeded with --messages 'accepted' Skycore messages (SMS_1..SMS_N, as
bench/ingest.py seeds them). Then, in the same run:

1. reference: 0 stalled connections; for --duration seconds, --clients threads send genuine
   requests at --rate per second in all, each on a fresh connection, in turn: a Skycore
   postback (the flat <POSTBACK>, N201 or N202 for a random SMS_i, padded to 500 bytes, POSTed
   as text/xml as Skycore does) and GET /auth/login (the dashboard's login page);
2. stalled: N connections opened first and left stalled, half in their request line or
   headers, half in their body (whole headers declaring Content-Length: 500, then a complete
   postback of about 450 bytes, or its first 100 bytes, and nothing more); the same genuine
   load for --duration seconds. A stalled connection the server closes (it must, after
   `request_timeout_seconds`) is replaced at once by a new one of its kind, so N stay open.

Printed per phase: p50 / p99 / max latency of each kind (connect to last byte of the answer),
failures (no answer within --client-timeout, or not HTTP 200), the web processes' CPU, and how
many stalled connections the server closed and at what age. Checks: every callback answered
200 is stored, and nothing from a stalled connection is (no event for a STALLED_ TRACKINGID).

    .venv/bin/python bench/slow_clients.py                        # 200 stalled, 5 s per phase
    .venv/bin/python bench/slow_clients.py --stalled 1000 --duration 15
    .venv/bin/python bench/slow_clients.py --setting request_timeout_seconds=3 \
        --setting web_threads=2
    .venv/bin/python bench/slow_clients.py --smoke                # 20 stalled, ~1.5 s per phase

Exit status 1 when a genuine request failed or a check did not hold; the latency figures are
reported, not enforced. Results are appended to bench/results/slow_clients-<time>.jsonl.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import random
import secrets
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from dispatch import (  # noqa: E402  (bench/dispatch.py: the service, CPU, settings)
    Service,
    cpu_snapshot,
    cpu_split,
    percentile,
    start_service,
    toml_value,
)
from ingest import (  # noqa: E402  (bench/ingest.py: processes, seeding)
    Processes,
    SqliteTarget,
    _raise_interrupt,
    clean_env,
    free_port,
    git_state,
)

RESULTS = BENCH / "results"
LOGIN = "/auth/login"
DECLARED_LENGTH = 500  # Content-Length of every stalled body; fewer bytes ever come
KNOBS = ("web_workers", "web_threads", "request_timeout_seconds")

POSTBACK = """<?xml version='1.0'?>
<POSTBACK xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
xsi:noNamespaceSchemaLocation ="http://www.skycore.com/schema/postback.xsd">
  <ORIGIN>SMS_MT</ORIGIN>
  <CODE>{code}</CODE>
  <STATUS>{status}</STATUS>
  <TO>15551230000</TO>
  <TRACKINGID>{tracking_id}</TRACKINGID>
  <SPID>0001470</SPID>
  <TIMESTAMP>2025-06-01T{clock}-05:00</TIMESTAMP>
  <AGGREGATORID>11529-64807-97508-73852-97658</AGGREGATORID>
</POSTBACK>
"""
STATUS = {"N201": "Message Sent", "N202": "Message Sent/Delivered"}


def postback(tracking_id: str, rng: random.Random, pad_to: int = 0) -> bytes:
    """A flat <POSTBACK> as Skycore posts it (skycore-postback-n20x-1.xml), padded with spaces."""
    code = rng.choice(("N201", "N202"))
    clock = f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}"
    body = POSTBACK.format(code=code, status=STATUS[code], tracking_id=tracking_id,
                           clock=clock).encode()
    return body + b" " * max(0, pad_to - len(body))


# -- stalled connections ----------------------------------------------------------------------


def stall_payload(kind: str, n: int, path: str) -> bytes:
    """What a stalled client sends before it stops: a request cut off in its request line or
    headers (three places in turn), or whole headers and part of a 500-byte body."""
    line = f"POST {path} HTTP/1.1\r\n"
    if kind == "headers":
        return [line[: len(line) // 2], line + "Host: x\r\n",
                line + f"Host: x\r\nContent-Type: text/xml\r\nContent-Length: {DECLARED_LENGTH}"
                "\r\n"][n % 3].encode()
    document = postback(f"STALLED_{n}", random.Random(n))
    head = (f"{line}Host: x\r\nContent-Type: text/xml\r\nContent-Length: {DECLARED_LENGTH}"
            "\r\n\r\n").encode()
    return head + (document if n % 2 == 0 else document[:100])


@dataclass
class Stall:
    sock: socket.socket
    kind: str
    opened: float
    received: bytes = b""


@dataclass
class Staller:
    """Keeps `count` stalled connections open (half "headers", half "body") from a thread of its
    own; one the server closes is replaced at once by a new one of its kind."""

    port: int
    path: str
    count: int
    closed_ages: list[float] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    open_errors: Counter[str] = field(default_factory=Counter)
    opened_total: int = 0
    _selector: selectors.DefaultSelector = field(default_factory=selectors.DefaultSelector)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        for n in range(self.count):
            self._open("headers" if n < self.count // 2 else "body")
        self._thread = threading.Thread(target=self._run, name="staller", daemon=True)
        self._thread.start()

    def _open(self, kind: str) -> None:
        self.opened_total += 1
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError as exc:
            self.open_errors[type(exc).__name__] += 1
            return
        try:
            sock.sendall(stall_payload(kind, self.opened_total, self.path))
        except OSError as exc:
            self.open_errors[type(exc).__name__] += 1
            sock.close()
            return
        sock.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ, Stall(sock, kind, time.monotonic()))

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.1):
                stall: Stall = key.data
                try:
                    data = stall.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:  # an answer before the close (408?): kept to be reported
                    stall.received += data
                    continue
                self.closed_ages.append(time.monotonic() - stall.opened)
                first_line = stall.received.split(b"\r\n", 1)[0].decode("latin-1")
                self.answers[first_line or "closed without an answer"] += 1
                self._selector.unregister(stall.sock)
                stall.sock.close()
                if not self._stop.is_set():
                    self._open(stall.kind)

    @property
    def open_now(self) -> int:
        return len(self._selector.get_map())

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for key in list(self._selector.get_map().values()):
            key.data.sock.close()
        self._selector.close()


# -- genuine requests ------------------------------------------------------------------------


def one_request(port: int, method: str, path: str, body: bytes | None, timeout: float
                ) -> tuple[float, str | None]:
    """(seconds, None) for an HTTP 200 on a fresh connection, from the connect to the last byte
    of the answer; (seconds, what went wrong) otherwise."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body,
                     headers={"Content-Type": "text/xml"} if body is not None else {})
        response = conn.getresponse()
        response.read()
        problem = None if response.status == 200 else f"HTTP {response.status}"
    except (OSError, http.client.HTTPException) as exc:
        problem = type(exc).__name__
    finally:
        conn.close()
    return time.monotonic() - started, problem


def genuine_load(port: int, callback_path: str, args: argparse.Namespace, seed: int
                 ) -> dict[str, dict[str, list[Any]]]:
    """--clients threads, --rate requests/s in all, for --duration s: a callback and the login
    page in turn. Returns, per kind, the latencies of the successes and the failures."""
    results: dict[str, dict[str, list[Any]]] = {
        kind: {"ok": [], "failed": []} for kind in ("callback", "login")}
    lock = threading.Lock()
    interval = args.clients / args.rate
    end = time.monotonic() + args.duration

    def client(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        next_at = time.monotonic() + rng.random() * interval
        turn = number
        while next_at < end:
            time.sleep(max(0.0, next_at - time.monotonic()))
            if turn % 2 == 0:
                kind, method, path = "callback", "POST", callback_path
                body: bytes | None = postback(f"SMS_{rng.randint(1, args.messages)}", rng,
                                              pad_to=500)
            else:
                kind, method, path, body = "login", "GET", LOGIN, None
            took, problem = one_request(port, method, path, body, args.client_timeout)
            with lock:
                if problem is None:
                    results[kind]["ok"].append(took)
                else:
                    results[kind]["failed"].append(problem)
            turn += 1
            next_at = max(next_at + interval, time.monotonic())  # late: go on, no burst

    threads = [threading.Thread(target=client, args=(n,), daemon=True)
               for n in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def latency(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"p50_ms": round(percentile(values, 0.5) * 1000, 1),
            "p99_ms": round(percentile(values, 0.99) * 1000, 1),
            "max_ms": round(max(values) * 1000, 1)}


def ages(values: list[float]) -> dict[str, float | None]:
    """Seconds from open to the server's close of the stalled connections (min/p50/max)."""
    if not values:
        return {"min": None, "p50": None, "max": None}
    return {"min": round(min(values), 2), "p50": round(percentile(values, 0.5), 2),
            "max": round(max(values), 2)}


# -- one phase ---------------------------------------------------------------------------------


def measure_phase(service: Service, port: int, callback_path: str, stalled: int,
                  args: argparse.Namespace, seed: int) -> dict[str, Any]:
    label = "reference" if stalled == 0 else f"{stalled} stalled"
    print(f"phase: {label}, {args.duration:g} s", flush=True)
    staller = Staller(port, callback_path, stalled)
    try:
        if stalled:
            staller.start()
            time.sleep(0.5)  # the server has taken every stalled connection in by now
        roots = service.roots()
        cpu0 = cpu_snapshot()
        results = genuine_load(port, callback_path, args, seed)
        cpu1 = cpu_snapshot()
        open_at_end = staller.open_now if stalled else 0
    finally:
        staller.stop()
    row: dict[str, Any] = {"phase": label, "stalled": stalled, "stalled_open_at_end": open_at_end,
                           "stalled_opened": staller.opened_total,
                           "stalled_closed_by_server": len(staller.closed_ages),
                           "stalled_close_age_s": ages(staller.closed_ages),
                           "stalled_answers": dict(staller.answers),
                           "stalled_open_errors": dict(staller.open_errors),
                           "cpu_cores": cpu_split(cpu0, cpu1, roots)}
    for kind, got in results.items():
        row[kind] = {"ok": len(got["ok"]), "failed": len(got["failed"]),
                     "failures": dict(Counter(got["failed"])), **latency(got["ok"])}
    return row


# -- output -------------------------------------------------------------------------------------


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (f"{'phase':<14} {'kind':<9} {'ok':>6} {'failed':>6} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'max ms':>8} {'p99 vs ref':>10}   stalled: open at end / closed by server "
            "(age p50 s); web CPU")
    print("\n" + head)
    print("-" * len(head))
    reference = rows[0]
    for row in rows:
        for kind in ("callback", "login"):
            got, ref = row[kind], reference[kind]
            ratio = (f"{got['p99_ms'] / ref['p99_ms']:.1f}x" if row is not reference
                     and got["p99_ms"] and ref["p99_ms"] else "-")
            tail = ""
            if kind == "callback":
                age = row["stalled_close_age_s"]["p50"]
                tail = (f"   {row['stalled_open_at_end']} / {row['stalled_closed_by_server']}"
                        + (f" ({age:.1f})" if age is not None else "")
                        + f"; {row['cpu_cores']['web']:.2f} cores")
            print(f"{row['phase'] if kind == 'callback' else '':<14} "
                  f"{'callback' if kind == 'callback' else 'login':<9} {got['ok']:>6} "
                  f"{got['failed']:>6} {fmt_ms(got['p50_ms']):>8} {fmt_ms(got['p99_ms']):>8} "
                  f"{fmt_ms(got['max_ms']):>8} {ratio:>10}{tail}")
    for row in rows:
        failures = {k: row[k]["failures"] for k in ("callback", "login") if row[k]["failures"]}
        if failures:
            print(f"  {row['phase']}: failures {failures}")
        if row["stalled_answers"]:
            print(f"  {row['phase']}: stalled connections closed by the server, first line of "
                  f"what each got: {row['stalled_answers']}")
        if row["stalled_open_errors"]:
            print(f"  {row['phase']}: stalled connections that could not be opened: "
                  f"{row['stalled_open_errors']}")


# -- main ------------------------------------------------------------------------------------------


def effective_knobs(settings: list[str]) -> dict[str, Any]:
    """web_workers, web_threads, request_timeout_seconds as this run sets them (None: this
    tracker has no such setting)."""
    try:
        from tracker.settings import DEFAULTS as defaults
    except ImportError:
        defaults = {}
    knobs = {key: defaults.get(key) for key in KNOBS}
    for item in settings:
        key, _, value = item.partition("=")
        if key.strip() in knobs:
            knobs[key.strip()] = value.strip()
    return knobs


def write_config(path: Path, database_url: str, port: int, token: str,
                 settings: list[str]) -> Path:
    lines = [f"database_url = {json.dumps(database_url)}",
             f'public_base_url = "http://127.0.0.1:{port}"',
             f"secret_key = {json.dumps(secrets.token_urlsafe(32))}",
             'default_provider = "skycore"']
    for item in settings:
        key, _, value = item.partition("=")
        lines.append(f"{key.strip()} = {toml_value(value.strip())}")
    lines += ["", "[providers.skycore]",
              'base_url = "http://127.0.0.1:9/"',  # never called: nothing is sent
              'api_key = "bench-api-key"', 'shortcode = "60856"',
              f"callback_token = {json.dumps(token)}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--stalled", type=int, default=200,
                        help="stalled connections in the second phase (half headers, half body)")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of genuine load before the reference (not measured)")
    parser.add_argument("--rate", type=float, default=50.0, help="genuine requests/s in all")
    parser.add_argument("--clients", type=int, default=4, help="genuine client threads")
    parser.add_argument("--client-timeout", type=float, default=5.0,
                        help="seconds a genuine request may wait for its answer")
    parser.add_argument("--messages", type=int, default=10_000, help="messages seeded")
    parser.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                        help="a top-level tracker setting, e.g. request_timeout_seconds=3 "
                             "(repeatable)")
    parser.add_argument("--smoke", action="store_true",
                        help="20 stalled, 1.5 s per phase, 0.5 s warm-up, 500 messages, "
                             "request_timeout_seconds=1 (unless set): a check that it runs")
    parser.add_argument("--results", type=Path, default=None, help="JSON lines file")
    args = parser.parse_args(argv)
    if args.smoke:
        args.stalled, args.duration, args.warmup, args.messages = 20, 1.5, 0.5, 500
        if not any(s.partition("=")[0].strip() == "request_timeout_seconds"
                   for s in args.setting):
            args.setting.append("request_timeout_seconds=1")  # closes and replaces happen
    if args.clients < 1 or args.rate <= 0 or args.duration <= 0:
        parser.error("--clients, --rate and --duration must be positive")
    return args


def run(args: argparse.Namespace, procs: Processes, tmp: Path) -> tuple[list[dict[str, Any]],
                                                                        list[str]]:
    """Start the service, measure both phases, check the database; (rows, problems)."""
    target = SqliteTarget(tmp)
    token = secrets.token_urlsafe(24)
    callback_path = f"/callbacks/skycore/{token}"
    port = free_port()
    config = write_config(target.dir / "tracker.toml", target.url, port, token, args.setting)
    env = clean_env(TRACKER_CONFIG=str(config), PYTHONUNBUFFERED="1")
    service = start_service(procs, target.dir, env, port, 1)
    problems: list[str] = []
    try:
        target.seed(args.messages)
        warm = one_request(port, "POST", callback_path,
                           postback("SMS_1", random.Random(0), pad_to=500), args.client_timeout)
        if warm[1] is not None:
            raise RuntimeError(f"the warm-up callback failed: {warm[1]}\n{service.tail()}")
        if args.warmup > 0:  # every worker has imported, connected, compiled its templates
            warm_args = argparse.Namespace(**{**vars(args), "duration": args.warmup})
            genuine_load(port, callback_path, warm_args, seed=99)
        before = target.query("SELECT count(*) FROM callback")[0][0]
        rows = [measure_phase(service, port, callback_path, n, args, seed)
                for seed, n in enumerate([0, args.stalled])]
        time.sleep(0.5)  # a stalled body the app was (wrongly) handed would be stored by now
        stored = target.query("SELECT count(*) FROM callback")[0][0] - before
        stalled_events = target.query(
            "SELECT count(*) FROM event WHERE provider_message_id LIKE 'STALLED_%'")[0][0]
    finally:
        print(f"tracker {service.stop()}", flush=True)
    answered = sum(row["callback"]["ok"] for row in rows)
    failed = sum(row[kind]["failed"] for row in rows for kind in ("callback", "login"))
    print_table(rows)
    print(f"\ncheck: callbacks stored {stored:,}, answered 200 {answered:,}"
          f"{' (a request that timed out may still have been stored)' if failed else ''}; "
          f"events from stalled bodies {stalled_events}")
    if failed:
        problems.append(f"{failed} genuine requests failed")
    if stored != answered and not failed:
        problems.append(f"stored {stored} callbacks for {answered} answered 200")
    if stalled_events:
        problems.append(f"{stalled_events} events from stalled (incomplete) requests")
    for row in rows:
        row.update(stored_callbacks=stored, stalled_events=stalled_events)
    return rows, problems


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    results_path = args.results or RESULTS / f"slow_clients-{stamp}.jsonl"
    results_path.parent.mkdir(parents=True, exist_ok=True)
    knobs = effective_knobs(args.setting)
    print(f"dlr-tracker with stalled clients: {os.cpu_count()} CPUs, tracker serve on SQLite; "
          + ", ".join(f"{k} {'(no such setting)' if v is None else v}" for k, v in knobs.items())
          + f"; genuine load {args.rate:g}/s from {args.clients} clients (callback and "
          f"{LOGIN} in turn, a fresh connection each), {args.duration:g} s per phase; "
          f"reference 0 stalled, then {args.stalled} stalled", flush=True)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="dlr-slow-"))
    meta = {"time": stamp, "host": platform.node(), "cpus": os.cpu_count(), **knobs,
            "settings": args.setting, "rate": args.rate, "clients": args.clients,
            "duration": args.duration, "messages": args.messages,
            "client_timeout": args.client_timeout, "smoke": args.smoke, **git_state()}
    try:
        rows, problems = run(args, procs, tmp)
        with open(results_path, "a") as fh:
            for row in rows:
                fh.write(json.dumps({**meta, **row, "problems": problems}) + "\n")
        print(f"results appended to {results_path}")
        for problem in problems:
            print(f"FAILED: {problem}")
        return 1 if problems else 0
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        procs.stop_all()
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    sys.exit(main())
