"""Sending throughput and latency through the real service, against a Skycore stand-in.

Each run starts a Skycore stand-in (bench/skycore_standin.py: HTTP/1.1 keep-alive, every
sendSMS answered Success after a fixed delay, every TEXT recorded with its arrival time) and the
service as a user would: `tracker serve` (gunicorn web + one `tracker worker`) with a TOML
config (TRACKER_CONFIG) naming `[providers.skycore]` at the stand-in, default_provider =
"skycore", on a fresh database (a SQLite file in a temp folder, or a Postgres database created
for the run and dropped after it). "2 workers" starts a second `tracker worker` beside it. An API
key comes from `tracker keys create bench` (last line).

Then, through `POST /api/v1/messages` (Bearer key, JSON {"to", "text"}, every text unique):

1. a warm-up message (not counted), waited for at the stand-in;
2. lone latency: M single messages, one at a time with nothing else queued: from just before
   the POST to the text's arrival at the stand-in (p50/p99), each then read back through
   `GET /api/v1/messages/<id>` until it is `accepted`. A random pause (0 to --lone-gap s,
   default 1, fixed seed) comes before each, so the messages do not fall into step with a
   periodic job (with a 1 s dispatch interval, back-to-back messages measure ~0.95 s every
   time: each is posted just after the tick that sent the one before);
3. throughput: N messages queued from several client threads (httpx, keep-alive), timed from
   the first POST to the stand-in's answer to the last of them (messages/s), with the enqueue
   rate alone beside it;
4. checks: texts the stand-in saw more than once (double sends, must be 0), texts it never saw,
   and every message `accepted` in the database.

Reference, measured in the same run before the service starts: the stand-in's own ceiling with
as many keep-alive clients as the dispatcher may have requests in flight (max_in_flight,
default 16) at the run's delay (at best in_flight / delay: 320/s at 50 ms), and with 64 clients
and no delay (the stand-in must do well over 1,000/s so it never is the bottleneck).
Goals: >= 300 messages/s at 50 ms, 0 double sends, lone p99 <= 0.5 s.

    .venv/bin/python bench/dispatch.py                  # SQLite 1 worker @50 ms, Postgres 1 and
                                                        # 2 workers @50 ms, SQLite @200 ms
    .venv/bin/python bench/dispatch.py --db postgres --workers 2 --messages 2000
    .venv/bin/python bench/dispatch.py --delay-ms 200 --max-in-flight 32
    .venv/bin/python bench/dispatch.py --smoke          # SQLite, 100 messages, 5 lone; checks

Postgres runs need a server at --database-url (default postgresql://postgres@127.0.0.1:5432/)
whose role may CREATE DATABASE; without one they are skipped with a line saying so. Results
are appended to bench/results/dispatch-<time>.jsonl. Exit status 1 when a run double-sent, lost
or failed to accept a message (performance goals are reported, not enforced).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import random
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from ingest import (  # noqa: E402  (bench/ingest.py: process and CPU helpers)
    CLK_TCK,
    Processes,
    _raise_interrupt,
    clean_env,
    free_port,
    git_state,
    machine_ticks,
    process_ticks,
    tracker_command,
)
from skycore_standin import measure_ceiling  # noqa: E402

RESULTS = BENCH / "results"
PG_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/"
DEFAULT_RUNS = [("sqlite", 1, 50.0), ("postgres", 1, 50.0), ("postgres", 2, 50.0),
                ("sqlite", 1, 200.0)]
GOAL_RATE, GOAL_RATE_DELAY_MS = 300.0, 50.0  # messages/s, at this stand-in delay
GOAL_LONE_P99 = 0.5  # seconds
DEFAULT_IN_FLIGHT = 16  # the tracker's max_in_flight default


# -- databases --------------------------------------------------------------------------------


class Database:
    kind = ""
    url = ""

    def create(self) -> None: ...

    def drop(self) -> None: ...

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.url


class SqliteDatabase(Database):
    kind = "sqlite"

    def __init__(self, folder: Path) -> None:
        self.path = folder / "tracker.sqlite3"
        self.url = f"sqlite:///{self.path}"

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def describe(self) -> str:
        return "SQLite file in a temp folder"


def _pg_connect(url: str, dbname: str | None = None, timeout: int = 5) -> Any:
    import psycopg2

    parts = urlsplit(url)
    return psycopg2.connect(dbname=dbname or parts.path.lstrip("/") or "postgres",
                            user=parts.username, password=parts.password,
                            host=parts.hostname or "127.0.0.1", port=parts.port or 5432,
                            connect_timeout=timeout)


def postgres_problem(server_url: str) -> str | None:
    """Why Postgres runs cannot happen (None: a server answers and lets us in)."""
    try:
        import psycopg2
    except ImportError:
        return "psycopg2 is not installed"
    try:
        _pg_connect(server_url, timeout=3).close()
    except psycopg2.Error as exc:
        return f"no server answers at {server_url} ({str(exc).strip().splitlines()[0]})"
    return None


class PostgresDatabase(Database):
    kind = "postgres"

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.name = f"bench_dispatch_{secrets.token_hex(4)}"
        parts = urlsplit(server_url)
        self.url = urlunsplit(parts._replace(path="/" + self.name, query="", fragment=""))
        self.created = False

    def _admin(self, sql: str) -> None:
        conn = _pg_connect(self.server_url)
        conn.autocommit = True
        try:
            conn.cursor().execute(sql)
        finally:
            conn.close()

    def create(self) -> None:
        self._admin(f'CREATE DATABASE "{self.name}"')
        self.created = True

    def drop(self) -> None:
        if self.created:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self.created = False

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = _pg_connect(self.server_url, self.name)
        try:
            cur = conn.cursor()
            cur.execute(sql.replace("?", "%s"), params)
            return cur.fetchall()
        finally:
            conn.close()

    def describe(self) -> str:
        return f"Postgres database {self.name} (created for this run, dropped after it)"


# -- configuration ----------------------------------------------------------------------------


def toml_value(raw: str) -> str:
    """A --setting value as TOML: taken as written when it is a TOML value (1.5, true,
    "text"), else quoted as a string."""
    try:
        tomllib.loads(f"v = {raw}")
        return raw
    except tomllib.TOMLDecodeError:
        return json.dumps(raw)


def write_config(path: Path, database_url: str, port: int, standin_url: str,
                 args: argparse.Namespace) -> Path:
    lines = [
        f"database_url = {json.dumps(database_url)}",
        f'public_base_url = "http://127.0.0.1:{port}"',
        f"secret_key = {json.dumps(secrets.token_urlsafe(32))}",
        'default_provider = "skycore"',
    ]
    for item in args.setting:
        key, _, value = item.partition("=")
        lines.append(f"{key.strip()} = {toml_value(value.strip())}")
    lines += [
        "",
        "[providers.skycore]",
        f"base_url = {json.dumps(standin_url)}",
        'api_key = "bench-api-key"',
        'shortcode = "60856"',
        f"callback_token = {json.dumps(secrets.token_urlsafe(24))}",
    ]
    if args.max_in_flight is not None:  # only when asked: older trackers refuse the key
        lines.append(f"max_in_flight = {args.max_in_flight}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- processes --------------------------------------------------------------------------------


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def family(roots: list[int], parents: dict[int, int], stop: set[int] | None = None) -> set[int]:
    """`roots` and every process below them, except below (and at) the pids in `stop`."""
    found = set(roots)
    frontier = list(roots)
    while frontier:
        current = frontier.pop()
        children = [pid for pid, parent in parents.items()
                    if parent == current and pid not in (stop or ())]
        found.update(children)
        frontier += children
    return found


@dataclass
class StandIn:
    proc: subprocess.Popen[bytes]
    url: str  # the sendSMS endpoint (providers.skycore.base_url)
    control: httpx.Client

    def stats(self) -> dict[str, Any]:
        return self.control.get("/_bench/stats").json()

    def wait(self, text: str, timeout: float) -> dict[str, Any]:
        return self.control.get("/_bench/wait", params={"text": text, "timeout": timeout},
                                timeout=timeout + 30).json()

    def arrivals(self) -> dict[str, tuple[float, float | None, int]]:
        return {text: (arrival, answered, seen) for text, arrival, answered, seen
                in self.control.get("/_bench/arrivals", timeout=60).json()}


def start_standin(procs: Processes, delay_ms: float, log_dir: Path) -> StandIn:
    with open(log_dir / "standin.log", "wb") as log:
        proc = procs.start([sys.executable, str(BENCH / "skycore_standin.py"), "--port", "0",
                            "--delay-ms", f"{delay_ms:g}"], stdout=subprocess.PIPE, stderr=log)
    line = proc.stdout.readline().decode().strip() if proc.stdout else ""
    if not line.startswith("http://"):
        raise RuntimeError(f"the stand-in did not start: {line!r}")
    parts = urlsplit(line)
    control = httpx.Client(base_url=f"http://{parts.netloc}", timeout=30)
    return StandIn(proc, line, control)


@dataclass
class Service:
    """`tracker serve` and any extra `tracker worker` processes."""

    serve: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]]
    base_url: str
    log_path: Path
    logs: list[Any] = field(default_factory=list)

    def tail(self, lines: int = 40) -> str:
        text = "\n".join(p.read_text(errors="replace") for p in
                         sorted(self.log_path.parent.glob("*.log")) if p.name != "standin.log")
        return "\n".join(text.splitlines()[-lines:])

    def roots(self) -> dict[str, list[int]]:
        """pids to charge CPU to: web (serve + gunicorn) and worker(s)."""
        parents = {pid: ppid for pid, (_c, ppid, _t) in process_ticks().items()}
        children = [pid for pid, ppid in parents.items() if ppid == self.serve.pid]
        job_workers = [pid for pid in children if cmdline(pid).endswith("worker")]
        web = [self.serve.pid, *(pid for pid in children if pid not in job_workers)]
        return {"web": web, "worker": job_workers + [w.pid for w in self.workers]}

    def stop(self, grace: float = 45.0) -> str:
        """SIGTERM to everything we started (tracker serve stops its gunicorn and worker),
        then wait; what is still there after `grace` is killed. Returns how it went."""
        procs = [self.serve, *self.workers]
        started = time.monotonic()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(timeout=max(0.1, started + grace - time.monotonic())))
            except subprocess.TimeoutExpired:
                codes.append(None)
        took = time.monotonic() - started
        left = []
        for proc in procs:  # leftovers of each process group we started, and only those
            try:
                os.killpg(proc.pid, signal.SIGKILL)
                left.append(proc.pid)
            except (ProcessLookupError, PermissionError):
                pass
        for log in self.logs:
            log.close()
        clean = all(code == 0 for code in codes)
        return (f"stopped in {took:.1f} s, exit codes {codes}"
                + ("" if clean else " (NOT clean: see the logs)")
                + (f"; killed leftovers in groups {left}" if left and not clean else ""))


def start_service(procs: Processes, run_dir: Path, env: dict[str, str], port: int,
                  workers: int) -> Service:
    serve_log = open(run_dir / "serve.log", "wb")  # noqa: SIM115 - closed by Service.stop
    serve = procs.start([*tracker_command(), "serve", "--host", "127.0.0.1", "--port",
                         str(port)], env=env, cwd=run_dir, stdin=subprocess.DEVNULL,
                        stdout=serve_log, stderr=subprocess.STDOUT)
    service = Service(serve, [], f"http://127.0.0.1:{port}", run_dir / "serve.log", [serve_log])
    deadline = time.monotonic() + 90
    with httpx.Client(timeout=2.0) as client:
        while True:
            if serve.poll() is not None:
                raise RuntimeError(f"tracker serve exited with {serve.returncode}:\n"
                                   + service.tail())
            try:
                client.get(f"{service.base_url}/api/v1/messages/0")
                break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("tracker serve did not answer within 90 s:\n" + service.tail())
            time.sleep(0.1)
    for n in range(2, workers + 1):
        log = open(run_dir / f"worker-{n}.log", "wb")  # noqa: SIM115 - closed by Service.stop
        service.logs.append(log)
        service.workers.append(procs.start([*tracker_command(), "worker"], env=env,
                                           cwd=run_dir, stdin=subprocess.DEVNULL, stdout=log,
                                           stderr=subprocess.STDOUT))
    return service


def create_api_key(env: dict[str, str], run_dir: Path) -> str:
    """`tracker keys create bench | tail -n 1` (it migrates the database first)."""
    done = subprocess.run([*tracker_command(), "keys", "create", "bench"], env=env, cwd=run_dir,
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"tracker keys create failed:\n{done.stdout}{done.stderr}")
    return done.stdout.strip().splitlines()[-1].strip()


# -- CPU --------------------------------------------------------------------------------------


def cpu_snapshot() -> tuple[float, tuple[int, int, int, int], dict[int, tuple[str, int, int]]]:
    return time.monotonic(), machine_ticks(), process_ticks()


def cpu_split(before: Any, after: Any, roots: dict[str, list[int]]) -> dict[str, float]:
    """Cores used over the window: tracker web, tracker worker(s), Postgres, the stand-in, this
    process (the API clients), and the rest of the machine."""
    wall = after[0] - before[0]
    parents = {pid: ppid for pid, (_c, ppid, _t) in after[2].items()}
    every_root = {pid for pids in roots.values() for pid in pids}
    groups = {name: family(pids, parents, every_root - set(pids))
              for name, pids in roots.items()}
    used = dict.fromkeys([*roots, "postgres"], 0)
    for pid, (comm, ppid, ticks) in after[2].items():
        delta = ticks - before[2].get(pid, (comm, ppid, 0))[2]
        name = next((n for n, pids in groups.items() if pid in pids), None)
        if name is None and comm.startswith("postgres"):
            name = "postgres"
        if name is not None:
            used[name] += delta
    cores = {name: ticks / CLK_TCK / wall for name, ticks in used.items()}
    cores["busy"] = (after[1][0] - before[1][0]) / CLK_TCK / wall
    cores["other"] = max(0.0, cores["busy"] - sum(used.values()) / CLK_TCK / wall)
    return {k: round(v, 2) for k, v in cores.items()}


# -- one run ------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def phone(n: int) -> str:
    return f"+1555{n % 10_000_000:07d}"


class Failed(Exception):
    """A run could not complete (the service did not send, or stalled)."""


def send_one(client: httpx.Client, text: str, n: int) -> httpx.Response:
    return client.post("/api/v1/messages", json={"to": phone(n), "text": text})


def lone_latency(api: httpx.Client, standin: StandIn, count: int, numbers: itertools.count,
                 timeout: float, gap: float) -> dict[str, Any]:
    """`count` single messages, one at a time: enqueue-to-stand-in seconds, and each read back
    through the API until `accepted`. Before each, a random pause of up to `gap` seconds."""
    latencies: list[float] = []
    accepted_via_api = 0
    pauses = random.Random(20261203)
    for _ in range(count):
        time.sleep(pauses.uniform(0, gap))
        n = next(numbers)
        text = f"bench {n}"
        t0 = time.monotonic()
        response = send_one(api, text, n)
        if response.status_code != 202:
            raise Failed(f"lone message: HTTP {response.status_code} {response.text[:200]}")
        seen = standin.wait(text, timeout)
        if seen["arrival"] is None or seen["answered"] is None:
            raise Failed(f"lone message {text!r} did not reach the stand-in within {timeout} s")
        latencies.append(seen["arrival"] - t0)
        ident = response.json()["id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = api.get(f"/api/v1/messages/{ident}").json().get("status")
            if status == "accepted":
                accepted_via_api += 1
                break
            time.sleep(0.01)
    return {"count": count, "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
            "max": max(latencies), "mean": statistics.mean(latencies),
            "accepted_via_api": accepted_via_api, "latencies": [round(x, 4) for x in latencies]}


def enqueue_many(base_url: str, key: str, numbers: list[int], clients: int,
                 progress: dict[str, int], batch: int = 0) -> tuple[list[str], list[str]]:
    """POST every message from `clients` threads, one per request or, with `batch`, that many
    per `POST /api/v1/messages/batch`; returns (texts answered 202, errors)."""
    accepted: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def post(client: httpx.Client, group: list[int]) -> tuple[bool, str]:
        if not batch:
            response = send_one(client, f"bench {group[0]}", group[0])
        else:
            response = client.post("/api/v1/messages/batch", json={"messages": [
                {"to": phone(n), "text": f"bench {n}"} for n in group]})
        return response.status_code == 202, f"HTTP {response.status_code}"

    def run(chunk: list[int]) -> None:
        size = batch or 1
        with httpx.Client(base_url=base_url, timeout=60,
                          headers={"Authorization": f"Bearer {key}"}) as client:
            for i in range(0, len(chunk), size):
                group = chunk[i:i + size]
                try:
                    ok, error = post(client, group)
                except httpx.HTTPError as exc:
                    ok, error = False, repr(exc)
                with lock:
                    if ok:
                        accepted.extend(f"bench {n}" for n in group)
                    else:
                        errors.append(error)
                    progress["enqueued"] += len(group)

    threads = [threading.Thread(target=run, args=(numbers[k::clients],), daemon=True)
               for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return accepted, errors


def wait_drained(standin: StandIn, expected: int, progress: dict[str, int], total: int,
                 stall: float, quiet: bool) -> dict[str, Any]:
    """Until the stand-in has answered `expected` distinct texts; fails after `stall` seconds
    without a new one. Prints progress every 5 s."""
    last_count, last_change, last_print = -1, time.monotonic(), time.monotonic()
    printed_count = 0
    while True:
        stats = standin.stats()
        now = time.monotonic()
        if stats["answered"] != last_count:
            last_count, last_change = stats["answered"], now
        if stats["answered"] >= expected and progress["enqueued"] >= total:
            return stats
        if now - last_change > stall:
            raise Failed(f"stalled: the stand-in answered {stats['answered']:,} of {expected:,}"
                         f" texts, none new for {stall:.0f} s")
        if not quiet and now - last_print >= 5:
            rate = (stats["answered"] - printed_count) / (now - last_print)
            print(f"    {progress['enqueued']:,}/{total:,} enqueued, {stats['answered']:,} "
                  f"answered by the stand-in ({rate:.0f}/s over the last {now - last_print:.0f}"
                  " s)", flush=True)
            last_print, printed_count = now, stats["answered"]
        time.sleep(0.1)


def wait_accepted(database: Database, expected: int, timeout: float = 60.0
                  ) -> dict[str, int]:
    """Messages by status once all `expected` are accepted (or after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        counts = dict(database.rows("SELECT status, count(*) FROM message GROUP BY status"))
        if counts.get("accepted", 0) >= expected or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


@dataclass
class Run:
    db: str
    workers: int
    delay_ms: float

    @property
    def label(self) -> str:
        return (f"{self.db} {self.workers} worker{'s' if self.workers > 1 else ''} "
                f"@{self.delay_ms:g} ms")


def measure_run(run: Run, args: argparse.Namespace, procs: Processes, tmp: Path
                ) -> dict[str, Any]:
    in_flight = args.max_in_flight or DEFAULT_IN_FLIGHT
    run_dir = Path(tempfile.mkdtemp(prefix=f"{run.db}-{run.workers}w-", dir=tmp))
    row: dict[str, Any] = {"run": run.label, "db": run.db, "workers": run.workers,
                           "delay_ms": run.delay_ms, "messages": args.messages,
                           "lone_count": args.lone, "max_in_flight": args.max_in_flight,
                           "settings": args.setting, "ok": False}
    standin = start_standin(procs, run.delay_ms, run_dir)
    service: Service | None = None
    database: Database = (SqliteDatabase(run_dir) if run.db == "sqlite"
                          else PostgresDatabase(args.database_url))
    try:
        # The reference, on a quiet machine: the stand-in alone.
        raw = measure_ceiling(standin.url, 64, args.ceiling_seconds, 0)
        flight = measure_ceiling(standin.url, in_flight, args.ceiling_seconds)
        best = in_flight / (run.delay_ms / 1000)
        row.update(standin_64_no_delay=round(raw["per_s"], 1),
                   ceiling_theory=round(best, 1), ceiling_measured=round(flight["per_s"], 1))
        print(f"  stand-in alone: 64 keep-alive clients, no delay: {raw['per_s']:,.0f} req/s"
              f"{'' if raw['per_s'] > 1000 else '  (UNDER 1,000/s: the stand-in may limit)'};"
              f" {in_flight} clients at {run.delay_ms:g} ms: {flight['per_s']:,.0f} req/s "
              f"(at best {in_flight}/{run.delay_ms / 1000:g} s = {best:,.0f})", flush=True)

        database.create()
        port = free_port()
        config = write_config(run_dir / "tracker.toml", database.url, port, standin.url, args)
        env = clean_env(TRACKER_CONFIG=str(config), PYTHONUNBUFFERED="1")
        t0 = time.monotonic()
        key = create_api_key(env, run_dir)
        service = start_service(procs, run_dir, env, port, run.workers)
        print(f"  {database.describe()}; tracker serve"
              + (f" + {run.workers - 1} more tracker worker" if run.workers > 1 else "")
              + f" up in {time.monotonic() - t0:.1f} s", flush=True)
        api = httpx.Client(base_url=service.base_url, timeout=60,
                           headers={"Authorization": f"Bearer {key}"})
        numbers = itertools.count(1)

        # Warm-up: the whole path works (and connections are open) before anything is timed.
        n = next(numbers)
        response = send_one(api, f"bench {n}", n)
        if response.status_code != 202:
            raise Failed(f"POST /api/v1/messages: HTTP {response.status_code} "
                         f"{response.text[:300]}")
        if standin.wait(f"bench {n}", args.stall_seconds)["answered"] is None:
            raise Failed(f"the warm-up message did not reach the stand-in within "
                         f"{args.stall_seconds:g} s")

        lone = lone_latency(api, standin, args.lone, numbers, args.stall_seconds,
                            args.lone_gap)
        row["lone"] = lone
        print(f"  lone: {args.lone} messages one at a time, enqueue -> stand-in p50 "
              f"{lone['p50']:.3f} s, p99 {lone['p99']:.3f} s, max {lone['max']:.3f} s "
              f"(goal p99 <= {GOAL_LONE_P99} s); accepted via the API "
              f"{lone['accepted_via_api']}/{args.lone}", flush=True)

        first = next(numbers)
        bulk = list(range(first, first + args.messages))
        for _ in bulk:
            next(numbers)
        before_stats = standin.stats()
        progress = {"enqueued": 0}
        result: dict[str, Any] = {}

        def enqueue() -> None:
            result["texts"], result["errors"] = enqueue_many(service.base_url, key, bulk,
                                                             args.clients, progress, args.batch)
            result["end"] = time.monotonic()

        print(f"  throughput: {args.messages:,} messages from {args.clients} API clients",
              flush=True)
        roots = service.roots()
        roots["stand-in"] = [standin.proc.pid]
        roots["bench"] = [os.getpid()]
        cpu0 = cpu_snapshot()
        started = time.monotonic()
        enqueuer = threading.Thread(target=enqueue, daemon=True)
        enqueuer.start()
        wait_drained(standin, before_stats["answered"] + args.messages, progress,
                     args.messages, args.stall_seconds, args.smoke)
        enqueuer.join()
        cpu1 = cpu_snapshot()
        arrivals = standin.arrivals()
        texts = result["texts"]
        errors = result["errors"]
        missing = [t for t in texts if t not in arrivals or arrivals[t][1] is None]
        answered = [arrivals[t][1] for t in texts if t in arrivals and arrivals[t][1]]
        firsts = [arrivals[t][0] for t in texts if t in arrivals]
        last = max(answered) if answered else time.monotonic()
        enqueue_s = result["end"] - started
        total_s = last - started
        # Before the last POST the dispatcher shares the machine with the enqueue; after it,
        # the rest of the queue drains with nothing else running.
        during = sum(1 for t in answered if t <= result["end"])
        tail = len(answered) - during
        tail_s = last - result["end"]
        row.update(
            enqueue_seconds=round(enqueue_s, 3), enqueue_per_s=round(len(texts) / enqueue_s, 1),
            enqueue_errors=len(errors), enqueue_error_kinds=sorted(set(errors))[:5],
            seconds=round(total_s, 3), per_s=round(len(answered) / total_s, 1),
            dispatch_only_per_s=round(len(answered) / (last - min(firsts)), 1) if firsts
            else None, answered_while_enqueueing=during, drained_after=tail,
            drain_per_s=round(tail / tail_s, 1) if tail >= 20 and tail_s > 0 else None,
            missing=len(missing), cpu_cores=cpu_split(cpu0, cpu1, roots))
        cpu = row["cpu_cores"]
        print(f"    enqueue {len(texts):,} in {enqueue_s:.1f} s = {row['enqueue_per_s']:,.0f}/s"
              f" ({len(errors)} errors); first POST -> last answer {total_s:.1f} s = "
              f"{row['per_s']:,.1f} messages/s (goal >= {GOAL_RATE:.0f}/s at "
              f"{GOAL_RATE_DELAY_MS:g} ms; the {in_flight}-client ceiling measured "
              f"{flight['per_s']:,.0f}/s); from the first arrival at the stand-in: "
              f"{row['dispatch_only_per_s']}/s", flush=True)
        print(f"    answered while the POSTs went on: {during:,} ({during / enqueue_s:,.1f}/s); "
              f"the other {tail:,} after the last POST in {max(tail_s, 0):.1f} s"
              + (f" = {row['drain_per_s']:,.1f}/s (the queue draining alone)"
                 if row["drain_per_s"] else ""), flush=True)
        print(f"    CPU cores: web {cpu['web']:.2f}, worker {cpu['worker']:.2f}, postgres "
              f"{cpu['postgres']:.2f}, stand-in {cpu['stand-in']:.2f}, API clients "
              f"{cpu['bench']:.2f}, other {cpu['other']:.2f} = busy {cpu['busy']:.2f} of "
              f"{os.cpu_count()}", flush=True)

        stats = standin.stats()
        expected = 1 + args.lone + len(texts)
        statuses = wait_accepted(database, expected)
        row.update(doubled_texts=stats["doubled_texts"], extra_sends=stats["extra_sends"],
                   standin_requests=stats["requests"], statuses=statuses,
                   all_accepted=statuses.get("accepted", 0) == expected
                   and sum(statuses.values()) == expected)
        print(f"  checks: double sends {stats['doubled_texts']} (texts seen more than once; "
              f"{stats['requests']:,} sendSMS for {stats['distinct']:,} texts), never seen "
              f"{len(missing)}, messages by status {statuses} (expected {expected:,} accepted)",
              flush=True)
        row["ok"] = (row["doubled_texts"] == 0 and not missing and not errors
                     and row["all_accepted"] and lone["accepted_via_api"] == args.lone)
    except (Failed, RuntimeError, httpx.HTTPError) as exc:
        row["error"] = str(exc)
        print(f"  FAILED: {exc}", flush=True)
        if service is not None:
            print("  last lines of the service's logs:\n" + service.tail(), flush=True)
    finally:
        if service is not None:
            row["stop"] = service.stop()
            print(f"  tracker {row['stop']}", flush=True)
        procs.stop(standin.proc, grace=5)
        standin.control.close()
        database.drop()
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            print(f"  --keep: logs and config in {run_dir}")
    return row


# -- output -------------------------------------------------------------------------------------


def print_table(rows: list[dict[str, Any]], skipped: list[str]) -> None:
    print(f"\nsummary (goals: >= {GOAL_RATE:.0f} messages/s at {GOAL_RATE_DELAY_MS:g} ms, "
          f"0 double sends, lone p99 <= {GOAL_LONE_P99} s)")
    head = (f"{'run':<24} {'enqueue/s':>9} {'msgs/s':>7} {'drain/s':>7} {'ceiling':>13} "
            f"{'rate':>5} "
            f"{'lone p50/p99 s':>14} {'lone':>4} {'doubles':>7} {'accepted':>8}")
    print(head)
    print("-" * len(head))
    for row in rows:
        if "per_s" not in row:
            error = " ".join(str(row.get("error", "see above")).split())
            print(f"{row['run']:<24} FAILED: {error[:300]}")
            continue
        rate_goal = ("-" if row["delay_ms"] != GOAL_RATE_DELAY_MS
                     else "PASS" if row["per_s"] >= GOAL_RATE else "FAIL")
        lone = row["lone"]
        drain = f"{row['drain_per_s']:,.1f}" if row["drain_per_s"] else "-"
        print(f"{row['run']:<24} {row['enqueue_per_s']:>9,.0f} {row['per_s']:>7,.1f} "
              f"{drain:>7} {row['ceiling_measured']:>6,.0f}/{row['ceiling_theory']:<6,.0f} "
              f"{rate_goal:>5} "
              f"{lone['p50']:>6.3f}/{lone['p99']:<7.3f} "
              f"{'PASS' if lone['p99'] <= GOAL_LONE_P99 else 'FAIL':>4} "
              f"{row['doubled_texts']:>7} {'all' if row['all_accepted'] else 'NO':>8}")
    for line in skipped:
        print(f"{line}")
    print("msgs/s: first POST to the stand-in's last answer (the goal's figure); drain/s: the "
          "messages still queued after the last POST, sent with nothing else running (- when "
          "fewer than 20); ceiling: the stand-in alone with max_in_flight keep-alive clients at "
          "the run's delay, measured / at best (in_flight / delay); rate: the throughput goal, "
          "at 50 ms only")


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgres"],
                        help="one run on this database (default: the four runs above)")
    parser.add_argument("--workers", type=int, choices=[1, 2],
                        help="tracker workers (serve's own + 1 more) for a single run")
    parser.add_argument("--delay-ms", type=float, help="stand-in answer delay for a single run")
    parser.add_argument("--messages", type=int,
                        help="messages queued at once (default 10,000; --smoke: 100)")
    parser.add_argument("--lone", type=int,
                        help="single messages for latency (default 50; --smoke: 5)")
    parser.add_argument("--lone-gap", type=float, default=1.0,
                        help="random pause before each lone message: 0 to this many seconds "
                             "(at least the period of any periodic job it should not fall into"
                             " step with)")
    parser.add_argument("--clients", type=int, default=8, help="API client threads")
    parser.add_argument("--batch", type=int, default=0,
                        help="messages per POST /api/v1/messages/batch (default: one message "
                             "per POST /api/v1/messages)")
    parser.add_argument("--max-in-flight", type=int,
                        help="write [providers.skycore] max_in_flight (default: not written)")
    parser.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra top-level setting, e.g. dispatch_interval_seconds=0.2")
    parser.add_argument("--database-url", default=PG_SERVER_URL,
                        help="Postgres server (a role that may CREATE DATABASE)")
    parser.add_argument("--ceiling-seconds", type=float, default=3.0,
                        help="length of each stand-in ceiling measurement")
    parser.add_argument("--stall-seconds", type=float, default=120.0,
                        help="give up when the stand-in sees nothing new for this long")
    parser.add_argument("--smoke", action="store_true",
                        help="SQLite only, 100 messages, 5 lone, short references; exits 1 "
                             "unless 0 double sends and every message accepted")
    parser.add_argument("--keep", action="store_true", help="keep each run's logs and config")
    parser.add_argument("--results", type=Path, help="JSON lines file to append to")
    args = parser.parse_args(argv)
    if args.smoke:
        if args.db == "postgres":
            parser.error("--smoke runs on SQLite only")
        args.ceiling_seconds = min(args.ceiling_seconds, 0.5)
        args.stall_seconds = min(args.stall_seconds, 30.0)
    if args.messages is None:
        args.messages = 100 if args.smoke else 10_000
    if args.lone is None:
        args.lone = 5 if args.smoke else 50
    for item in args.setting:
        if "=" not in item:
            parser.error(f"--setting {item!r}: expected KEY=VALUE")
    if args.messages < 1 or args.lone < 1 or args.clients < 1:
        parser.error("--messages, --lone and --clients must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.smoke:
        runs = [Run("sqlite", args.workers or 1, args.delay_ms or 50.0)]
    elif args.db or args.workers or args.delay_ms:
        runs = [Run(args.db or "sqlite", args.workers or 1, args.delay_ms or 50.0)]
    else:
        runs = [Run(*spec) for spec in DEFAULT_RUNS]
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    results_path = args.results or RESULTS / f"dispatch-{stamp}.jsonl"
    results_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"dlr-tracker sending: {os.cpu_count()} CPUs; {args.messages:,} messages queued from "
          f"{args.clients} API clients"
          + (f" in batches of {args.batch}" if args.batch else ", one per request")
          + f", {args.lone} lone messages; max_in_flight "
          + (str(args.max_in_flight) if args.max_in_flight else "not set (tracker default)")
          + (f"; settings {', '.join(args.setting)}" if args.setting else ""), flush=True)
    pg_problem = (postgres_problem(args.database_url) if any(r.db == "postgres" for r in runs)
                  else None)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="dlr-dispatch-"))
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    meta = {"time": stamp, "cpus": os.cpu_count(), "clients": args.clients, "batch": args.batch,
            **git_state()}
    try:
        for run in runs:
            if run.db == "postgres" and pg_problem:
                skipped.append(f"{run.label:<24} skipped: {pg_problem}")
                print(f"\n{run.label}: skipped: {pg_problem}", flush=True)
                continue
            print(f"\n{run.label}", flush=True)
            row = measure_run(run, args, procs, tmp)
            rows.append(row)
            with open(results_path, "a") as fh:
                fh.write(json.dumps({**meta, **row}) + "\n")
        print_table(rows, skipped)
        print(f"results appended to {results_path.relative_to(ROOT)}"
              if results_path.is_relative_to(ROOT) else f"results: {results_path}")
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    bad = [row["run"] for row in rows if not row["ok"]]
    if bad:
        print(f"FAILED checks in: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
