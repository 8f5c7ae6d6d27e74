"""Status webhooks: throughput, change-to-delivery latency and catch-up, through `tracker worker`.

Each run starts a receiver on loopback (this script with --receiver, its own process: a
threaded HTTP/1.1 server answering 200 after --delay-ms, default 50, recording every
webhook-id with its arrival time) and one `tracker worker` (TRACKER_CONFIG, a fresh database,
webhooks_allow_private = true). This process then makes --changes status changes (default
10,000) at --rate per second (default 300): messages with a status_callback at the receiver,
each moved queued -> accepted -> delivered through the same guarded UPDATE receipts use
(correlation.set_status), in a transaction per tick; the trigger writes each change to the
outbox, the worker fans it out and delivers.

Two rounds: "up" (the receiver answers from the start) and "down half" (the receiver starts
only once half the changes are made: the first half is refused, retried with backoff and full
jitter, and delivered once it is up). Per round: deliveries/s (from the first change to the last
delivery), p50/p99 from a change's commit to its delivery, catch-up (deliveries/s from the
receiver's start until every event is in), and the checks: every event delivered (each
webhook-id seen, every delivery row `delivered`).

Reference, measured in the same run: the receiver's own capacity with a plain keep-alive
client, as many threads as the worker may send to one endpoint (24), at the same delay.
Goals: >= 300 deliveries/s, every event delivered, p99 change -> delivery <= 1 s when up;
catch-up after recovery at the same rate.

    .venv/bin/python bench/webhooks.py                      # SQLite, both rounds
    .venv/bin/python bench/webhooks.py --db postgres        # needs --pg-url's server
    .venv/bin/python bench/webhooks.py --smoke              # 400 changes, seconds

Exit status 1 when an event was not delivered (performance goals are reported, not enforced).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PER_ENDPOINT = 24


# -- the receiver (its own process) --------------------------------------------------------


def serve_receiver(port: int, delay: float, out: Path) -> None:
    """Answer every POST with 200 after `delay`; append "<webhook-id> <arrival>" per request.

    An asyncio server, not a thread per connection: the receiver shares the two cores with
    the worker it measures, and a threaded Python server spends more CPU per request than the
    sender does (it topped out at ~240/s here). This one parses only what a keep-alive
    HTTP/1.1 POST needs (the request line, Content-Length, webhook-id)."""
    import asyncio

    sink = out.open("a", buffering=1)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived = time.time()
                length, webhook_id = 0, "-"
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"webhook-id":
                        webhook_id = value.strip().decode("ascii", "replace")
                if length:
                    await reader.readexactly(length)
                await asyncio.sleep(delay)
                writer.write(answer)
                sink.write(f"{webhook_id} {arrived:.6f}\n")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(connection, "127.0.0.1", port, backlog=256)
        stopped = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
        async with server:
            await stopped.wait()
        sink.close()

    asyncio.run(main())


def start_receiver(port: int, delay: float, out: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, __file__, "--receiver", str(port), str(delay),
                             str(out)], stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the receiver did not start")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def receiver_capacity(delay: float, seconds: float, tmp: Path) -> float:
    """Requests/s the receiver answers to PER_ENDPOINT keep-alive clients (the reference)."""
    import httpx

    port = free_port()
    proc = start_receiver(port, delay, tmp / "reference.log")
    clients = [httpx.Client(trust_env=False) for _ in range(PER_ENDPOINT)]  # TLS set-up: now
    counts = [0] * PER_ENDPOINT
    started = time.monotonic()
    stop_at = started + seconds

    def run(i: int) -> None:
        while time.monotonic() < stop_at:
            try:
                clients[i].post(f"http://127.0.0.1:{port}/", content=b"{}")
            except httpx.HTTPError:  # a loaded machine drops a connection now and then
                continue
            counts[i] += 1

    try:
        with ThreadPoolExecutor(PER_ENDPOINT) as pool:
            list(pool.map(run, range(PER_ENDPOINT)))
        took = time.monotonic() - started
    finally:
        for c in clients:
            c.close()
        stop(proc)
    return sum(counts) / took


# -- the service ---------------------------------------------------------------------------


def database(kind: str, tmp: Path, pg_url: str) -> tuple[str, Any]:
    """A fresh database URL, and how to drop it."""
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'tracker.sqlite3'}", lambda: None
    import psycopg2

    name = f"bench_webhooks_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = %s", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()

    return pg_url.rstrip("/").rsplit("/", 1)[0] + "/" + name, drop


def write_config(path: Path, url: str) -> Path:
    path.write_text(
        f'database_url = "{url}"\nsecret_key = "bench"\nwebhooks_allow_private = true\n'
        "webhook_backoff_seconds = 1.0\nwebhook_backoff_max_seconds = 4.0\n"
        f"webhook_max_in_flight_per_endpoint = {PER_ENDPOINT}\n"
        "expire_interval_seconds = 3600.0\n\n[providers.fake]\n", encoding="utf-8")
    return path


def start_worker(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env["TRACKER_CONFIG"] = str(config)
    script = Path(sys.executable).with_name("tracker")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "tracker.cli"]
    with log.open("ab") as out:
        return subprocess.Popen([*command, "worker"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


# -- one round -----------------------------------------------------------------------------


def make_changes(app: Any, url: str, changes: int, rate: float,
                 at_half: Any = None) -> None:
    """`changes` status changes at `rate` per second: messages held (scheduled far ahead, so
    the dispatcher leaves them alone) moved to accepted, then delivered."""
    from tracker import correlation, sending
    from tracker.db import write_tx
    from tracker.status import Status

    count = (changes + 1) // 2
    later = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(days=30)
    news = [sending.NewMessage(to="+15551234567", text=f"bench {i}", provider="fake",
                               status_callback=url, send_at=later) for i in range(count)]
    ids = [m.id for m in sending.enqueue_many(news, source="bench")]
    steps = [(i, Status.ACCEPTED) for i in ids] + [(i, Status.DELIVERED) for i in ids]
    steps = steps[:changes]
    tick = 0.05
    per_tick = max(1, round(rate * tick))
    started = time.monotonic()
    for n in range(0, len(steps), per_tick):
        if at_half and n >= len(steps) // 2:
            at_half()
            at_half = None
        with write_tx():
            for message_id, status in steps[n:n + per_tick]:
                correlation.set_status(message_id, status)
        wait = started + (n + per_tick) / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)


def outcome(url: str, arrivals: Path, expected: int, timeout: float) -> dict[str, Any]:
    """Wait until every event is in (or `timeout`); the figures."""
    from tracker.db import execute

    deadline = time.monotonic() + timeout
    delivered = 0
    while time.monotonic() < deadline:
        delivered = execute("SELECT COUNT(*) FROM webhook_delivery WHERE state = 'delivered'"
                            ).fetchone()[0]
        if delivered >= expected:
            break
        time.sleep(0.2)
    rows = execute("SELECT d.webhook_id, o.changed_at FROM outbox o"
                   " JOIN webhook_delivery d ON d.outbox_id = o.id").fetchall()
    changed = {wid: _epoch(at) for wid, at in rows}
    seen: dict[str, float] = {}
    for line in arrivals.read_text().splitlines():
        wid, arrived = line.split()
        seen.setdefault(wid, float(arrived))
    latencies = sorted(seen[w] - changed[w] for w in changed if w in seen)
    return {"events": len(rows), "delivered_rows": delivered,
            "seen": sum(1 for w in changed if w in seen), "latencies": latencies,
            "first_change": min(changed.values(), default=0.0),
            "last_arrival": max(seen.values(), default=0.0), "arrivals": sorted(seen.values())}


def _epoch(value: Any) -> float:
    if not isinstance(value, dt.datetime):
        value = dt.datetime.fromisoformat(str(value))
    return value.replace(tzinfo=dt.UTC).timestamp()


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_round(kind: str, down_half: bool, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from tracker import create_app, migrations
    from tracker.db import db

    folder = tmp / f"{kind}-{'down' if down_half else 'up'}"
    folder.mkdir()
    url, drop = database(kind, folder, args.pg_url)
    config = write_config(folder / "tracker.toml", url)
    os.environ["TRACKER_CONFIG"] = str(config)
    app = create_app()
    port = free_port()
    arrivals = folder / "arrivals.log"
    arrivals.touch()
    receiver = None if down_half else start_receiver(port, args.delay_ms / 1000, arrivals)
    worker = None
    up_at: list[float] = []

    def receiver_up() -> None:
        nonlocal receiver
        receiver = start_receiver(port, args.delay_ms / 1000, arrivals)
        up_at.append(time.time())

    try:
        with app.app_context(), db.connection_context():
            migrations.upgrade(db.obj, log=lambda _line: None)
            worker = start_worker(config, folder / "worker.log")
            time.sleep(2.0)  # the worker is up before the clock starts
            started_cpu = cpu_seconds(worker.pid)  # its start-up (imports) is not counted
            make_changes(app, f"http://127.0.0.1:{port}/hook", args.changes, args.rate,
                         receiver_up if down_half else None)
            result = outcome(url, arrivals, args.changes, args.timeout)
            result["worker_cpu"] = cpu_seconds(worker.pid) - started_cpu
    finally:
        stop(worker)
        stop(receiver)
        db.close() if not db.is_closed() else None
        if hasattr(db.obj, "close_all"):
            db.obj.close_all()
        drop()
    result["up_at"] = up_at[0] if up_at else 0.0
    return result


def report(label: str, r: dict[str, Any], reference: float) -> bool:
    lat = r["latencies"]
    span = max(1e-9, r["last_arrival"] - r["first_change"])
    rate = r["seen"] / span
    after = [a for a in r["arrivals"] if a >= r["up_at"]]
    catch = (len(after) / max(1e-9, r["last_arrival"] - r["up_at"])
             if after and r["up_at"] else float("nan"))
    p50 = statistics.median(lat) if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    complete = r["seen"] == r["events"] == r["delivered_rows"]
    cpu_ms = 1000 * r["worker_cpu"] / max(1, r["seen"])
    print(f"{label:<16} {r['events']:>7} {r['seen']:>7} {rate:>8.0f} {catch:>8.0f}"
          f" {p50:>7.3f} {p99:>7.3f} {cpu_ms:>7.2f} {reference:>8.0f}"
          f"  {'OK' if complete else 'LOST'}")
    return complete


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--receiver":
        serve_receiver(int(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a Postgres server whose role may CREATE DATABASE")
    parser.add_argument("--changes", type=int, default=10_000, help="status changes per round")
    parser.add_argument("--rate", type=float, default=300.0, help="changes per second")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="the receiver's answer")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the last deliveries after the last change")
    parser.add_argument("--smoke", action="store_true", help="400 changes, a 1 s reference")
    args = parser.parse_args()
    # SIGTERM (the smoke test's timeout) unwinds: the worker and the receiver are stopped and
    # the database dropped by the `finally` blocks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    if args.smoke:
        args.changes, args.rate = 400, 200.0
    tmp = Path(tempfile.mkdtemp(prefix="dlr-webhooks-"))
    try:
        reference = receiver_capacity(args.delay_ms / 1000, 1.0 if args.smoke else 3.0, tmp)
        print(f"dlr-tracker status webhooks: {args.changes} changes at {args.rate:g}/s,"
              f" receiver answering in {args.delay_ms:g} ms, {args.db}, one worker,"
              f" {os.cpu_count()} CPUs")
        print("goals: >= 300 deliveries/s, every event delivered, p99 change->delivery <= 1 s"
              " when up; catch-up at the same rate")
        print(f"{'round':<16} {'events':>7} {'seen':>7} {'deliv/s':>8} {'catch/s':>8}"
              f" {'p50 s':>7} {'p99 s':>7} {'cpu ms':>7} {'ref/s':>8}  check")
        ok = report("up", run_round(args.db, False, args, tmp), reference)
        ok = report("down half", run_round(args.db, True, args, tmp), reference) and ok
        print("ref/s: the receiver's own capacity, 24 keep-alive clients; catch/s: from the"
              " receiver's start to the last delivery; cpu ms: the worker's CPU per delivery"
              " (fan-out, signing, HTTP, recording; the machine's load does not change it much)")
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
