"""Where one Skycore callback spends its time: the real view under Flask's test client.

Builds a throwaway database exactly like bench/ingest.py (migrated, N 'accepted' messages),
then posts the same postback mix sequentially, in one process, with no HTTP server and no
contention. Prints the mean cost per request split into phases (write transaction, each SQL
statement, COMMIT, XML parse, the rest), the same for bench/bare_app.py, and optionally a
cProfile of the measured loop. Nothing in tracker/ is changed; the timers wrap objects at run
time.

    .venv/bin/python bench/profile_callback.py --db sqlite --requests 3000 --cprofile
    .venv/bin/python bench/profile_callback.py --db sqlite --pragma synchronous=1   # what-if
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ingest import (
    PG_ADMIN_URL,
    ROOT,
    PostgresTarget,
    SqliteTarget,
    Target,
    clean_env,
    tracker_command,
    wait_quiet,
    write_config,
)

POSTBACK = """<?xml version='1.0'?>
<POSTBACK xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
xsi:noNamespaceSchemaLocation ="http://www.skycore.com/schema/postback.xsd">
  <ORIGIN>SMS_MT</ORIGIN>
  <CODE>{code}</CODE>
  <STATUS>{text}</STATUS>
  <TO>15551230000</TO>
  <TRACKINGID>SMS_{n}</TRACKINGID>
  <SPID>0001470</SPID>
  <TIMESTAMP>2025-06-01T{h:02d}:{m:02d}:{s:02d}-05:00</TIMESTAMP>
  <AGGREGATORID>11529-64807-97508-73852-97658</AGGREGATORID>
</POSTBACK>
"""


def bodies(count: int, messages: int, sent_pct: int, size: int) -> list[bytes]:
    """The mix bench/wrk/skycore_postback.lua sends (postback form)."""
    rng = random.Random(1)
    out = []
    for _ in range(count):
        sent = rng.randrange(100) < sent_pct
        body = POSTBACK.format(code="N201" if sent else "N202",
                               text="Message Sent" if sent else "Message Sent/Delivered",
                               n=rng.randint(1, messages), h=rng.randrange(24),
                               m=rng.randrange(60), s=rng.randrange(60))
        out.append(body.ljust(size).encode())
    return out


class Timers:
    """Accumulated wall time and CPU time (this thread) per label, in seconds."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)

    @contextlib.contextmanager
    def timed(self, label: str) -> Iterator[None]:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.total[label] += time.perf_counter() - t0
            self.cpu[label] += time.thread_time() - c0
            self.count[label] += 1

    def wrap(self, label: str | Callable[..., str], func: Callable[..., Any]
             ) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            name = label(*args, **kwargs) if callable(label) else label
            with self.timed(name):
                return func(*args, **kwargs)
        return wrapper

    def reset(self) -> None:
        self.total.clear()
        self.cpu.clear()
        self.count.clear()


def statement_label(sql: str, *_args: Any, **_kwargs: Any) -> str:
    words = sql.split()
    head = " ".join(words[:3]) if words[0].upper() in ("INSERT", "DELETE") else " ".join(
        words[:2])
    if words[0].upper() == "SELECT":
        head = "SELECT message " + ("by pmid" if "provider_message_id = " in sql else
                                    "by id" if "WHERE id" in sql else "other")
    if words[0].upper() == "UPDATE":
        head = " ".join(words[:2]) + (" verdict" if "verdict" in sql else
                                      " status" if "status_rank" in sql else "")
    return "  sql " + head


def instrument(app: Any, timers: Timers) -> None:
    """Wrap the write transaction, every SQL statement, COMMIT and the XML parse."""
    from tracker import db as dbmod
    from tracker import groupcommit

    database = dbmod.db.obj
    database.execute_sql = timers.wrap(statement_label, database.execute_sql)
    database.commit = timers.wrap("  COMMIT", database.commit)
    database.begin = timers.wrap("  BEGIN", database.begin)
    if hasattr(database, "writer_lock"):
        database.writer_lock = _timed_cm(timers, "  writer lock acquire", database.writer_lock)
    original_tx = groupcommit.write_tx

    @contextlib.contextmanager
    def write_tx(durable: bool = True) -> Iterator[None]:
        with timers.timed("write_tx (lock + BEGIN .. COMMIT)"), original_tx(durable):
            yield

    groupcommit.write_tx = write_tx
    provider = app.extensions["providers"]["skycore"]
    provider.parse_callback = timers.wrap("parse_callback (XML)", provider.parse_callback)


def _timed_cm(timers: Timers, label: str, cm: Callable[[], Any]) -> Callable[[], Any]:
    @contextlib.contextmanager
    def wrapped() -> Iterator[None]:
        t0, c0 = time.perf_counter(), time.thread_time()
        with cm():
            timers.total[label] += time.perf_counter() - t0
            timers.cpu[label] += time.thread_time() - c0
            timers.count[label] += 1
            yield
    return wrapped


def run(client: Any, path: str, payload: list[bytes], timers: Timers, expect: int = 200
        ) -> float:
    t0 = time.perf_counter()
    for body in payload:
        with timers.timed("request (test client)"):
            response = client.post(path, data=body, content_type="text/xml; charset=utf-8")
        if response.status_code != expect:
            raise RuntimeError(f"HTTP {response.status_code}: {response.data[:200]!r}")
    return time.perf_counter() - t0


def report(title: str, timers: Timers, requests: int) -> None:
    print(f"\n{title}: mean per request (µs)\n  {'wall':>7} {'CPU':>7}  phase")
    for label, total in sorted(timers.total.items(), key=lambda kv: -kv[1]):
        calls = timers.count[label] / requests
        print(f"  {total / requests * 1e6:7.0f} {timers.cpu[label] / requests * 1e6:7.0f}  "
              f"{label}  ({calls:.2f} calls/request)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--sent-pct", type=int, default=30)
    parser.add_argument("--body-bytes", type=int, default=500)
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL)
    parser.add_argument("--pragma", action="append", default=[], metavar="NAME=VALUE",
                        help="what-if: override a tracker.db.SQLITE_PRAGMAS entry (this run)")
    parser.add_argument("--cprofile", action="store_true", help="cProfile the measured loop")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--pstats", type=Path, help="with --cprofile: also dump the raw stats")
    parser.add_argument("--quiet-wait", type=float, default=20.0,
                        help="max seconds to wait for an idle machine before measuring")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="dlr-profile-"))
    target: Target = SqliteTarget(tmp) if args.db == "sqlite" else PostgresTarget(
        args.pg_admin_url)
    target.create()
    try:
        token = secrets.token_urlsafe(24)
        config = write_config(tmp, target, 8000, token)
        env = clean_env(TRACKER_CONFIG=str(config))
        subprocess.run([*tracker_command(), "db", "upgrade"], env=env, cwd=ROOT, check=True,
                       capture_output=True)
        target.seed(args.messages)
        for name in [k for k in os.environ if k.startswith("TRACKER_")]:
            del os.environ[name]
        os.environ["TRACKER_CONFIG"] = str(config)

        from tracker import create_app
        from tracker import db as dbmod

        for item in args.pragma:
            name, _, value = item.partition("=")
            if name == "synchronous":  # the tracker sets this one from its own setting
                level = {"1": "normal", "2": "full"}.get(value, value.lower())
                os.environ["TRACKER_SQLITE_SYNCHRONOUS"] = level
                continue
            dbmod.SQLITE_PRAGMAS[name] = int(value) if value.lstrip("-").isdigit() else value
        app = create_app()
        client = app.test_client()
        path = f"/callbacks/skycore/{token}"
        payload = bodies(args.requests + 300, args.messages, args.sent_pct, args.body_bytes)
        timers = Timers()
        instrument(app, timers)
        run(client, path, payload[:300], timers)  # warm-up: connection, caches
        timers.reset()
        sqlite = args.db == "sqlite"
        if sqlite:
            dbmod.db.obj.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        busy = wait_quiet(args.quiet_wait)
        if busy >= 0.08:
            print(f"note: machine {busy * 100:.0f} % busy before the run; timings are noisy")
        profiler = cProfile.Profile() if args.cprofile else None
        if profiler:
            profiler.enable()
        cpu0 = time.process_time()
        elapsed = run(client, path, payload[300:], timers)
        cpu = time.process_time() - cpu0
        if profiler:
            profiler.disable()
        if sqlite:
            frames = dbmod.db.obj.execute_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        pragmas = ", ".join(args.pragma) or "tracker defaults"
        print(f"tracker, {args.db} ({pragmas}), {args.requests} sequential callbacks: "
              f"{args.requests / elapsed:.0f}/s, {elapsed / args.requests * 1e6:.0f} µs each"
              + (" (under cProfile: inflated)" if profiler else ""))
        print(f"process CPU {cpu / args.requests * 1e6:.0f} µs/request; the rest of the wall "
              "time is waiting (fsync, I/O, Postgres round trips)")
        if sqlite and "wal_autocheckpoint=0" in args.pragma:
            print(f"WAL frames (pages) written per commit: {frames / args.requests:.1f}")
        report("tracker", timers, args.requests)
        print()

        wrong = Timers()
        wrong_path = path.rsplit("/", 1)[0] + "/not-the-token"
        n_wrong = min(args.requests, 2000)
        c0 = time.process_time()
        run(client, wrong_path, payload[:n_wrong], wrong, expect=404)
        print(f"tracker app, wrong token (404 after routing, hooks, session, token check; "
              f"no body read, parse or DB): "
              f"{(time.process_time() - c0) / n_wrong * 1e6:.0f} µs CPU each")

        sys.path.insert(0, str(ROOT / "bench"))
        from bare_app import app as bare

        bare_timers = Timers()
        bare_client = bare.test_client()
        run(bare_client, path, payload[:300], bare_timers)
        bare_timers.reset()
        c0 = time.process_time()
        bare_elapsed = run(bare_client, path, payload[300:], bare_timers)
        bare_cpu = time.process_time() - c0
        print(f"bare_app, same bodies: {args.requests / bare_elapsed:.0f}/s, "
              f"{bare_elapsed / args.requests * 1e6:.0f} µs each, "
              f"{bare_cpu / args.requests * 1e6:.0f} µs CPU each")
        if profiler:
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("tottime").print_stats(args.top)
            stats.sort_stats("cumulative").print_stats(args.top)
            print(out.getvalue())
            if args.pstats:
                profiler.dump_stats(args.pstats)
                print(f"cProfile data written to {args.pstats} (python -m pstats)")
    finally:
        target.drop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
