"""Callback ingestion throughput: the real Skycore callback path under `tracker serve`'s gunicorn.

For each database (SQLite, Postgres) this starts gunicorn exactly as `tracker serve` does
(`python -m gunicorn --config python:tracker.gunicorn_conf --chdir <repo> --bind ... wsgi:app`,
TRACKER_WEB_WORKERS x TRACKER_WEB_THREADS) on a fresh, migrated database seeded with N 'accepted'
Skycore messages (SMS_1..SMS_N), and drives it with wrk: 2 threads, 32 connections, a warm-up,
then a measured run with --latency. The scheduled-jobs worker is NOT started: only the web app.

In the same run the reference ceiling is measured: bench/bare_app.py (one Flask POST route that
reads the body) under the same gunicorn command line and config, the same wrk script and body.
Goals (perf-baseline.md §6, raised for Postgres by the intake issue): tracker >= 45 % of bare on
SQLite, >= 35 % on Postgres, p99 <= 50 ms, 0 errors.
With --lean, bench/lean_app.py (the minimal two-statement shape those goals were set from) is
measured on the same database too, as a second reference: what this machine allows any callback
path that stores the raw body and moves the status, before events, dedupe and verdicts.

    .venv/bin/python bench/ingest.py                    # both databases, one round
    .venv/bin/python bench/ingest.py --db sqlite --repeat 3 --duration 10
    .venv/bin/python bench/ingest.py --lean                 # + the lean reference shape

Needs `wrk` (Debian: apt-get install -y wrk) and, for --db postgres, a server at
postgresql://postgres@127.0.0.1:5432 allowed to create databases (override with
--pg-admin-url). Results are appended to bench/results/ingest-<time>.jsonl.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LUA = BENCH / "wrk" / "skycore_postback.lua"
RESULTS = BENCH / "results"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

TARGETS = {"sqlite": 0.45, "postgres": 0.35}  # ratio of bare POST (see the docstring)
LATENCY_GOALS_MS = {"sqlite": (15, 50), "postgres": (30, 60)}  # p50 / p99, informational
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- processes --------------------------------------------------------------------------


class Processes:
    """Every child we start, each in its own session, so cleanup can reach its whole group."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        self.live.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 25.0) -> None:
        """SIGTERM (gunicorn: graceful), then SIGKILL to the process group."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of our own session only
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        if proc in self.live:
            self.live.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.live)):
            self.stop(proc, grace=10.0)


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(port: int, log_path: Path, workers: int, proc: subprocess.Popen[bytes],
               timeout: float = 60.0) -> None:
    """Until every worker has booted and one answers HTTP."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}; log:\n"
                               + log_path.read_text(errors="replace")[-3000:])
        booted = log_path.read_text(errors="replace").count("Booting worker")
        if booted >= workers:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/callbacks/skycore/not-the-token")
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                pass
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn on port {port} not ready after {timeout:.0f} s; log:\n"
                       + log_path.read_text(errors="replace")[-3000:])


def gunicorn_argv(chdir: Path, port: int, app: str) -> list[str]:
    """The command line of `tracker serve` (tracker/cli.py), with another --chdir/app."""
    return [sys.executable, "-m", "gunicorn", "--config", "python:tracker.gunicorn_conf",
            "--chdir", str(chdir), "--bind", f"127.0.0.1:{port}", app]


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without stray TRACKER_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env.update(extra)
    return env


def log_findings(log_path: Path) -> dict[str, int]:
    text = log_path.read_text(errors="replace")
    return {"worker_timeouts": text.count("WORKER TIMEOUT"),
            "tracebacks": text.count("Traceback"),
            "not_stored": text.count("not stored")}


# -- CPU accounting -----------------------------------------------------------------------


def machine_ticks() -> tuple[int, int, int, int]:
    """(busy, total, steal, irq+softirq) jiffies over all CPUs from /proc/stat."""
    with open("/proc/stat") as fh:
        parts = [int(x) for x in fh.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (parts + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return busy, sum(parts[:8]), steal, irq + softirq


def process_ticks() -> dict[int, tuple[str, int, int]]:
    """pid -> (comm, ppid, utime+stime+cutime+cstime) for every process we can read."""
    out: dict[int, tuple[str, int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                raw = fh.read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2 :].split()
        out[int(entry.name)] = (comm, int(rest[1]), sum(int(x) for x in rest[11:15]))
    return out


@dataclass
class CpuSnapshot:
    at: float
    machine: tuple[int, int, int, int]
    procs: dict[int, tuple[str, int, int]]

    @classmethod
    def take(cls) -> CpuSnapshot:
        return cls(time.monotonic(), machine_ticks(), process_ticks())


def cpu_split(before: CpuSnapshot, after: CpuSnapshot, app_pid: int,
              wrk_pid: int) -> dict[str, Any]:
    """Cores used during the window: gunicorn, Postgres, wrk, kernel irq/softirq (loopback
    TCP), and the rest ("other": processes that are not ours, i.e. noise)."""
    wall = after.at - before.at
    groups = {"app": 0, "pg": 0, "wrk": 0}
    others: dict[str, int] = {}
    for pid, (comm, ppid, ticks) in after.procs.items():
        delta = ticks - before.procs.get(pid, (comm, ppid, 0))[2]
        if pid == app_pid or ppid == app_pid:
            groups["app"] += delta
        elif comm.startswith("postgres"):
            groups["pg"] += delta
        elif pid in (wrk_pid, os.getpid()):
            groups["wrk"] += delta  # wrk has exited: its time is in our cutime
        elif delta > 0:
            others[f"{comm}[{pid}]"] = delta
    cores: dict[str, Any] = {k: v / CLK_TCK / wall for k, v in groups.items()}
    cores["busy"] = (after.machine[0] - before.machine[0]) / CLK_TCK / wall
    cores["steal"] = (after.machine[2] - before.machine[2]) / CLK_TCK / wall
    cores["irq"] = (after.machine[3] - before.machine[3]) / CLK_TCK / wall
    cores["other"] = max(0.0, cores["busy"] - cores["app"] - cores["pg"] - cores["wrk"]
                         - cores["irq"])
    cores = {k: round(v, 2) for k, v in cores.items()}
    top = sorted(others.items(), key=lambda kv: -kv[1])[:3]
    cores["top_other"] = {name: round(t / CLK_TCK / wall, 2) for name, t in top}
    return cores


def wait_quiet(max_wait: float, threshold: float = 0.08, window: float = 1.5) -> float:
    """Wait for a `window` with whole-machine CPU below `threshold`; returns the last share."""
    deadline = time.monotonic() + max_wait
    share = 1.0
    while True:
        busy0, total0, *_ = machine_ticks()
        time.sleep(window)
        busy1, total1, *_ = machine_ticks()
        share = (busy1 - busy0) / max(1, total1 - total0)
        if share < threshold or time.monotonic() > deadline:
            return share


# -- wrk ------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    raw: dict[str, Any]
    stdout: str

    @property
    def seconds(self) -> float:
        return self.raw["duration_us"] / 1e6

    @property
    def non_2xx(self) -> int:
        return self.raw["status"]  # wrk: "Non-2xx or 3xx responses"

    @property
    def socket_errors(self) -> int:
        return sum(self.raw[k] for k in ("connect", "read", "write", "timeout"))

    @property
    def ok(self) -> int:
        return self.raw["requests"] - self.raw["status"]

    @property
    def ok_per_s(self) -> float:
        return self.ok / self.seconds


def run_wrk(procs: Processes, url: str, seconds: float, args: argparse.Namespace,
            *, latency: bool, on_start: Callable[[int], None] | None = None) -> WrkResult:
    argv = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds:g}s"]
    if latency:
        argv.append("--latency")
    argv += ["-s", str(LUA), url]
    env = dict(os.environ, BENCH_MESSAGES=str(args.messages), BENCH_SENT_PCT=str(args.sent_pct),
               BENCH_PAYLOAD=args.payload, BENCH_BODY_BYTES=str(args.body_bytes))
    proc = procs.start(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if on_start:
        on_start(proc.pid)
    out, _ = proc.communicate(timeout=seconds + 60)
    procs.live.remove(proc)
    text = out.decode(errors="replace")
    match = re.search(r"^BENCH_JSON (\{.*\})$", text, re.MULTILINE)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}):\n{text}")
    return WrkResult(json.loads(match.group(1)), text)


# -- databases --------------------------------------------------------------------------------


class Target:
    """A throwaway tracker database: create, seed, count, drop."""

    kind = ""
    url = ""
    param = "?"

    def create(self) -> None: ...

    def drop(self) -> None: ...

    def connect(self) -> Any: ...

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql.replace("?", self.param), params)
            return cur.fetchall()
        finally:
            conn.close()

    def seed(self, n: int, chunk: int = 10_000) -> None:
        from tracker.status import order_key

        accepted = order_key("accepted", None)
        start = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=1)
        step = dt.timedelta(seconds=86_400 / max(n, 1))
        columns = ("reference, provider, provider_message_id, recipient, text, status,"
                   " status_rank, status_order, status_inferred, attempts, submitted_at,"
                   " created_at, updated_at")

        def rows(lo: int, hi: int) -> list[tuple[Any, ...]]:
            out = []
            for i in range(lo, hi):
                at = self.timestamp(start + step * i)
                out.append((f"b{i:08d}", "skycore", f"SMS_{i}", "+15551230000", "bench message",
                            "accepted", 1, accepted, self.false, 0, at, at, at))
            return out

        conn = self.connect()
        try:
            cur = conn.cursor()
            for lo in range(1, n + 1, chunk):
                self.insert_many(cur, f"INSERT INTO message ({columns}) VALUES",
                                 rows(lo, min(n + 1, lo + chunk)))
            conn.commit()
            self.analyze(conn)
        finally:
            conn.close()

    @staticmethod
    def insert_many(cur: Any, sql: str, rows: list[tuple[Any, ...]]) -> None:
        cur.executemany(f"{sql} ({', '.join('?' * len(rows[0]))})", rows)

    false: Any = False

    @staticmethod
    def timestamp(value: dt.datetime) -> Any:
        return value

    def analyze(self, conn: Any) -> None: ...


class SqliteTarget(Target):
    kind = "sqlite"
    false = 0

    def __init__(self, tmp: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sqlite-", dir=tmp))
        self.path = self.dir / "tracker.sqlite3"
        self.url = f"sqlite:///{self.path}"

    def drop(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    @staticmethod
    def timestamp(value: dt.datetime) -> str:
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")  # what peewee stores

    def describe(self) -> str:
        return f"SQLite file {self.path} (no ANALYZE, as in production)"


class PostgresTarget(Target):
    kind = "postgres"
    param = "%s"

    def __init__(self, admin_url: str) -> None:
        import psycopg2
        from psycopg2.extensions import make_dsn, parse_dsn

        self._psycopg2 = psycopg2
        self.admin_url = admin_url
        self.name = f"bench_{secrets.token_hex(4)}"
        dsn = parse_dsn(admin_url)
        dsn["dbname"] = self.name
        self.dsn = make_dsn(**dsn)
        user = dsn.get("user", "postgres")
        password = f":{dsn['password']}" if dsn.get("password") else ""
        self.url = (f"postgresql://{user}{password}@{dsn.get('host', '127.0.0.1')}:"
                    f"{dsn.get('port', 5432)}/{self.name}")
        self.created = False

    def _admin(self, sql: str) -> None:
        conn = self._psycopg2.connect(self.admin_url)
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

    def connect(self) -> Any:
        return self._psycopg2.connect(self.dsn)

    @staticmethod
    def insert_many(cur: Any, sql: str, rows: list[tuple[Any, ...]]) -> None:
        from psycopg2.extras import execute_values

        execute_values(cur, f"{sql} %s", rows, page_size=2000)

    def analyze(self, conn: Any) -> None:
        conn.autocommit = True
        conn.cursor().execute("VACUUM ANALYZE message")

    def describe(self) -> str:
        return f"Postgres database {self.name} (VACUUM ANALYZE after seeding)"


def write_config(tmp: Path, target: Target, port: int, token: str,
                 settings: dict[str, str] | None = None) -> Path:
    path = tmp / f"tracker-{target.kind}.toml"
    extra = "".join(f'{key} = "{value}"\n' for key, value in (settings or {}).items())
    path.write_text(
        f'database_url = "{target.url}"\n'
        f'public_base_url = "http://127.0.0.1:{port}"\n'
        f'secret_key = "{secrets.token_urlsafe(32)}"\n'
        # A configuration that names its providers has those alone; Skycore, the only one
        # here, is then the default provider without saying so (tracker.settings).
        f"{extra}"
        "\n[providers.skycore]\n"
        'api_key = "bench-api-key"\n'
        'shortcode = "60856"\n'
        f'callback_token = "{token}"\n'
    )
    return path


def tracker_command() -> list[str]:
    script = Path(sys.executable).with_name("tracker")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tracker.cli"]


# -- one measurement ---------------------------------------------------------------------------


@dataclass
class Measurement:
    label: str
    db: str | None
    wrk: WrkResult
    cpu: dict[str, float]
    quiet_share: float
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self, bare_rate: float | None, round_no: int) -> dict[str, Any]:
        ratio = self.wrk.ok_per_s / bare_rate if bare_rate and self.db else None
        target = TARGETS.get(self.db or "")
        passed = None
        if target is not None and ratio is not None:
            passed = (ratio >= target and self.wrk.non_2xx == 0
                      and self.wrk.socket_errors == 0)
        return {
            "round": round_no, "label": self.label, "db": self.db,
            "connections": self.extra.get("connections"),
            "ok_per_s": round(self.wrk.ok_per_s, 1),
            "p50_ms": self.wrk.raw["p50_us"] / 1000, "p99_ms": self.wrk.raw["p99_us"] / 1000,
            "non_2xx": self.wrk.non_2xx, "socket_errors": self.wrk.socket_errors,
            "ratio_vs_bare": round(ratio, 4) if ratio is not None else None,
            "bare_ok_per_s": round(bare_rate, 1) if bare_rate and self.db else None,
            "target": target, "pass": passed, "cpu_cores": self.cpu,
            "quiet_share_before": round(self.quiet_share, 3), "wrk": self.wrk.raw,
            **self.extra,
        }


def measure(procs: Processes, tmp: Path, label: str, args: argparse.Namespace, *,
            chdir: Path, app: str, env: dict[str, str], path: str,
            target: Target | None = None) -> Measurement:
    """Start gunicorn, warm up, measure, stop; verify against the database when there is one."""
    port = free_port()
    log_path = tmp / f"gunicorn-{label}.log"
    with open(log_path, "wb") as log:
        server = procs.start(gunicorn_argv(chdir, port, app), env=env, stdout=log,
                             stderr=subprocess.STDOUT)
    extra: dict[str, Any] = {"connections": args.connections}
    try:
        wait_ready(port, log_path, args.workers, server)
        url = f"http://127.0.0.1:{port}{path}"
        if args.warmup > 0:
            warm = run_wrk(procs, url, args.warmup, args, latency=False)
            extra["warmup_ok"] = warm.ok
        time.sleep(0.5)  # let requests still in the workers finish before counting
        before = target_counts(target) if target else None
        quiet = wait_quiet(args.quiet_wait) if args.quiet_wait > 0 else -1.0
        snaps: dict[str, Any] = {}

        def started(pid: int) -> None:
            snaps["wrk_pid"] = pid
            snaps["before"] = CpuSnapshot.take()
            if args.pyspy and target is not None:
                snaps["pyspy"] = start_pyspy(procs, server.pid, label, args)

        result = run_wrk(procs, url, args.duration, args, latency=True, on_start=started)
        cpu = cpu_split(snaps["before"], CpuSnapshot.take(), server.pid, snaps["wrk_pid"])
        for spy, out in snaps.get("pyspy", []):
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(timeout=30)
            procs.stop(spy)
            extra.setdefault("pyspy_files", []).append(str(out))
    finally:
        procs.stop(server)
    extra["gunicorn_log"] = log_findings(log_path)
    if target is not None and before is not None:
        after = target_counts(target)
        extra["stored_callbacks"] = after["callbacks"] - before["callbacks"]
        extra["verdicts"] = verdict_counts(target, before["max_id"])
        extra["events"] = event_count(target, before["max_id"])
        extra["messages_by_status"] = dict(target.query(
            "SELECT status, count(*) FROM message GROUP BY status ORDER BY 2 DESC"))
    return Measurement(label, target.kind if target else None, result, cpu, quiet, extra)


def start_pyspy(procs: Processes, master: int, label: str, args: argparse.Namespace
                ) -> list[tuple[subprocess.Popen[bytes], Path]]:
    """Sample every gunicorn worker with py-spy (collapsed stacks) during the measured run."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        raise RuntimeError(f"--pyspy: {spy} not found (pip install py-spy into the venv)")
    workers = [pid for pid, (_c, ppid, _t) in process_ticks().items() if ppid == master]
    seconds = max(1, int(min(args.pyspy, args.duration - 1)))
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = args.results.parent if args.results else RESULTS  # beside the JSON lines
    started = []
    for pid in workers:
        out = out_dir / f"pyspy-{label}-{stamp}-{pid}{'-idle' if args.pyspy_idle else ''}.txt"
        argv = [str(spy), "record", "--pid", str(pid), "--duration", str(seconds), "--rate",
                str(args.pyspy_rate), "--format", "raw", "--nonblocking", "--output", str(out)]
        if args.pyspy_idle:
            argv.append("--idle")
        started.append((procs.start(argv, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL), out))
    return started


def target_counts(target: Target) -> dict[str, int]:
    count, max_id = target.query("SELECT count(*), coalesce(max(id), 0) FROM callback")[0]
    return {"callbacks": count, "max_id": max_id}


def verdict_counts(target: Target, after_id: int) -> dict[str, int]:
    rows = target.query("SELECT verdict, count(*) FROM callback WHERE id > ? GROUP BY verdict"
                        " ORDER BY 2 DESC", (after_id,))
    return {verdict: count for verdict, count in rows}


def event_count(target: Target, after_id: int) -> int:
    return target.query("SELECT count(*) FROM event WHERE callback_id > ?", (after_id,))[0][0]


def measure_tracker(procs: Processes, tmp: Path, target: Target,
                    args: argparse.Namespace) -> Measurement:
    token = secrets.token_urlsafe(24)
    dbdir = Path(tempfile.mkdtemp(prefix=f"{target.kind}-", dir=tmp))
    target.create()
    try:
        port_hint = 8000  # public_base_url only; the real port is picked per run
        settings = ({"sqlite_synchronous": args.sqlite_synchronous}
                    if args.sqlite_synchronous and target.kind == "sqlite" else None)
        config = write_config(dbdir, target, port_hint, token, settings)
        env = clean_env(TRACKER_CONFIG=str(config), TRACKER_WEB_WORKERS=str(args.workers),
                        TRACKER_WEB_THREADS=str(args.web_threads))
        t0 = time.monotonic()
        done = subprocess.run([*tracker_command(), "db", "upgrade"], env=env, cwd=ROOT,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"tracker db upgrade failed:\n{done.stdout}{done.stderr}")
        target.seed(args.messages)
        print(f"  {target.describe()}: migrated + seeded {args.messages:,} messages in "
              f"{time.monotonic() - t0:.1f} s", flush=True)
        result = measure(procs, tmp, f"tracker-{target.kind}", args, chdir=ROOT,
                         app="wsgi:app", env=env, path=f"/callbacks/skycore/{token}",
                         target=target)
        if args.lean:  # the same database, after the tracker: every index, more rows
            print(f"round: lean-{target.kind} (bench/lean_app.py, same database)", flush=True)
            lean_env = clean_env(TRACKER_WEB_WORKERS=str(args.workers),
                                 TRACKER_WEB_THREADS=str(args.web_threads),
                                 LEAN_DATABASE_URL=target.url,
                                 LEAN_FSYNC="0" if args.sqlite_synchronous == "normal" else "1")
            result.extra["lean"] = measure(procs, tmp, f"lean-{target.kind}", args, chdir=BENCH,
                                           app="lean_app:app", env=lean_env,
                                           path=f"/callbacks/skycore/{token}")
    finally:
        if args.keep:
            print(f"  --keep: left {target.url} (config {dbdir})")
        else:
            target.drop()
            shutil.rmtree(dbdir, ignore_errors=True)
    return result


def lean_record(lean: Measurement, bare_rate: float, round_no: int) -> dict[str, Any]:
    """The lean reference's row: its ratio to bare, but no goal of its own."""
    row = lean.record(None, round_no)
    row.update(db=lean.label.split("-", 1)[1], reference=True,
               ratio_vs_bare=round(lean.wrk.ok_per_s / bare_rate, 4) if bare_rate else None)
    return row


def measure_bare(procs: Processes, tmp: Path, args: argparse.Namespace) -> Measurement:
    env = clean_env(TRACKER_WEB_WORKERS=str(args.workers),
                        TRACKER_WEB_THREADS=str(args.web_threads))
    return measure(procs, tmp, "bare-post", args, chdir=BENCH, app="bare_app:app", env=env,
                   path=f"/callbacks/skycore/{secrets.token_urlsafe(24)}")


# -- output ------------------------------------------------------------------------------------


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f} %"


def print_table(db: str, bares: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    p50_goal, p99_goal = LATENCY_GOALS_MS[db]
    print(f"\n{db}  (goal: >= {TARGETS[db] * 100:.0f} % of bare, 0 errors; "
          f"latency goal p50 <= {p50_goal} ms, p99 <= {p99_goal} ms, informational)")
    head = (f"{'label':<18} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>8} "
            f"{'sock err':>8} {'vs bare':>8} {'target':>7} {'result':>6}   "
            f"CPU cores: app/pg/wrk/irq/other = busy")
    print(head)
    print("-" * len(head))
    for row in [*bares, *rows]:
        cpu = row["cpu_cores"]
        target = "-" if row["target"] is None else f">={row['target'] * 100:.0f} %"
        result = "-" if row["pass"] is None else ("PASS" if row["pass"] else "FAIL")
        label = (f"bare {row['bare_position']}" if row["db"] is None and len(bares) > 1
                 else row["label"]) + (f" #{row['round']}" if row["round"] else "")
        print(f"{label:<18} {row['ok_per_s']:>7.0f} {row['p50_ms']:>7.1f} {row['p99_ms']:>7.1f} "
              f"{row['non_2xx']:>8} {row['socket_errors']:>8} "
              f"{fmt_pct(row['ratio_vs_bare'] if row['db'] else None):>8} {target:>7} "
              f"{result:>6}   {cpu['app']:.2f}/{cpu['pg']:.2f}/{cpu['wrk']:.2f}/"
              f"{cpu['irq']:.2f}/{cpu['other']:.2f} = {cpu['busy']:.2f}")


def print_checks(row: dict[str, Any]) -> None:
    ok = row["wrk"]["requests"] - row["wrk"]["status"]
    stored = row["stored_callbacks"]
    verdicts = ", ".join(f"{k} {v}" for k, v in row["verdicts"].items())
    verdict = "OK" if 0 <= stored - ok <= row["connections"] else "MISMATCH"
    print(f"  check {row['label']}: {verdict}: callbacks stored during the measured run "
          f"{stored:,}, 2xx answers counted by wrk {ok:,} (diff {stored - ok:+d}; up to one "
          f"request per connection is in flight when wrk stops: stored, not counted)")
    print(f"        verdicts: {verdicts}; events written {row['events']:,}")
    cpu, rate = row["cpu_cores"], max(row["ok_per_s"], 1e-9)
    print(f"        CPU per request: gunicorn {cpu['app'] / rate * 1e3:.2f} ms"
          + (f", postgres {cpu['pg'] / rate * 1e3:.2f} ms" if row["db"] == "postgres" else "")
          + f"; machine busy {cpu['busy']:.2f} of {os.cpu_count()} cores")
    log = row["gunicorn_log"]
    if any(log.values()):
        print(f"        gunicorn log: {log}")
    if row["quiet_share_before"] >= 0.08:
        print(f"        note: machine was {row['quiet_share_before'] * 100:.0f} % busy just "
              "before the run (another workload?)")
    if row["cpu_cores"]["other"] > 0.15:
        top = ", ".join(f"{k} {v:.2f}" for k, v in row["cpu_cores"]["top_other"].items())
        print(f"        note: {row['cpu_cores']['other']:.2f} cores used by other processes "
              f"during the run (top: {top or 'short-lived processes'}); figures are noisy")


def print_summary(records: list[dict[str, Any]], dbs: list[str]) -> None:
    print("\nsummary over rounds (median, min-max; verdict on the median ratio and all errors)")
    for label in ["bare-post", *(f"{kind}-{db}" for db in dbs for kind in ("tracker", "lean"))]:
        rows = [r for r in records if r["label"] == label]
        if not rows:
            continue
        rps = [r["ok_per_s"] for r in rows]
        line = (f"  {label:<16} req/s {statistics.median(rps):>6.0f} "
                f"({min(rps):.0f}-{max(rps):.0f})  p50 "
                f"{statistics.median(r['p50_ms'] for r in rows):.1f} ms  p99 "
                f"{statistics.median(r['p99_ms'] for r in rows):.1f} ms")
        ratios = [r["ratio_vs_bare"] for r in rows if r["ratio_vs_bare"] is not None]
        if ratios and rows[0]["target"] is None:  # the lean reference
            line += (f"  vs bare {statistics.median(ratios) * 100:.0f} % "
                     f"({min(ratios) * 100:.0f}-{max(ratios) * 100:.0f} %)  (reference)")
        elif ratios:
            errors = sum(r["non_2xx"] + r["socket_errors"] for r in rows)
            verdict = ("PASS" if statistics.median(ratios) >= rows[0]["target"] and not errors
                       else "FAIL")
            line += (f"  vs bare {statistics.median(ratios) * 100:.0f} % "
                     f"({min(ratios) * 100:.0f}-{max(ratios) * 100:.0f} %)  errors {errors}"
                     f"  target >= {rows[0]['target'] * 100:.0f} %  {verdict}")
        print(line)


def git_state() -> dict[str, Any]:
    def run(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout.strip()

    return {"commit": run("rev-parse", "HEAD"),
            "dirty": bool(run("status", "--porcelain", "--untracked-files=no"))}


# -- main ------------------------------------------------------------------------------------------


def default_web(key: str) -> int:
    """`web_workers` or `web_threads` as `tracker serve` would use them."""
    try:
        from tracker.settings import DEFAULTS

        return int(os.environ.get(f"TRACKER_{key.upper()}", DEFAULTS[key]))
    except ImportError:
        return {"web_workers": 2, "web_threads": 8}[key]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both",
                        help="which database(s) to measure")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds")
    parser.add_argument("--messages", type=int, default=100_000, help="messages seeded")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=default_web("web_workers"),
                        help="gunicorn workers (TRACKER_WEB_WORKERS)")
    parser.add_argument("--web-threads", type=int, default=default_web("web_threads"),
                        help="threads per gunicorn worker (TRACKER_WEB_THREADS)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of bare + each db")
    parser.add_argument("--payload", choices=["postback", "notification"], default="postback",
                        help="Skycore form: flat <POSTBACK> or legacy <NOTIFICATION>")
    parser.add_argument("--sent-pct", type=int, default=30,
                        help="percent of postbacks reporting 'sent' (rest 'delivered')")
    parser.add_argument("--body-bytes", type=int, default=500, help="bodies padded to this")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL,
                        help="server + role that may CREATE/DROP DATABASE bench_<random>")
    parser.add_argument("--sqlite-synchronous", choices=["full", "normal"],
                        help="set the tracker's sqlite_synchronous (default: its own default)")
    parser.add_argument("--bare-runs", type=int, choices=[1, 2], default=2,
                        help="measure bare before (1) or before and after (2) the tracker in"
                        " every round; ratios use the mean")
    parser.add_argument("--quiet-wait", type=float, default=20.0,
                        help="max seconds to wait for an idle machine before each run")
    parser.add_argument("--lean", action="store_true",
                        help="also measure bench/lean_app.py (perf-baseline.md's lean shape) on"
                             " the same database, as a second reference")
    parser.add_argument("--keep", action="store_true",
                        help="keep the databases and configs (for profiling); prints where")
    parser.add_argument("--pyspy", type=float, default=0.0, metavar="SECONDS",
                        help="sample each worker with py-spy for this long during the measured"
                        " run (pyspy-*.txt in bench/results/, or beside --results; slows the"
                        " run: figures not comparable)")
    parser.add_argument("--pyspy-idle", action="store_true",
                        help="with --pyspy: include idle samples (lock waits, I/O) = wall time")
    parser.add_argument("--pyspy-rate", type=int, default=200, help="py-spy samples/s")
    parser.add_argument("--results", type=Path, default=None, help="JSON lines file")
    args = parser.parse_args(argv)
    for name in ("duration", "warmup"):
        if getattr(args, name) != int(getattr(args, name)):
            parser.error(f"--{name}: wrk takes whole seconds, got {getattr(args, name):g}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk not found: install it first (Debian: apt-get install -y wrk).",
              file=sys.stderr)
        return 2
    try:
        import tracker  # noqa: F401
    except ImportError:
        print(f"cannot import tracker with {sys.executable}; run with the project venv, "
              "e.g. .venv/bin/python bench/ingest.py", file=sys.stderr)
        return 2
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    results_path = args.results or RESULTS / f"ingest-{stamp}.jsonl"
    results_path.parent.mkdir(parents=True, exist_ok=True)
    mix = (f"{args.payload} form, TRACKINGID uniform over SMS_1..SMS_{args.messages}, "
           f"{args.sent_pct} % sent / {100 - args.sent_pct} % delivered"
           + (" (N201/N202)" if args.payload == "postback" else " (N201 without/with P4:0)")
           + f", random TIMESTAMP seconds, bodies padded to {args.body_bytes} bytes")
    print(f"dlr-tracker callback ingestion: {os.cpu_count()} CPUs, gunicorn -w "
          f"{args.workers} --threads {args.web_threads} "
          f"(python:tracker.gunicorn_conf), wrk -t{args.threads} "
          f"-c{args.connections}, warm-up {args.warmup:g} s + {args.duration:g} s --latency")
    print(f"payload: {mix}.")
    print("Receipts for one message repeat or arrive out of order (delivered before sent); the "
          "verdict counts after each run show how many were applied, ignored or duplicates.")
    if args.sqlite_synchronous:
        print(f"SQLite: sqlite_synchronous = {args.sqlite_synchronous!r} (tracker setting).")
    print("Only the web app runs: the worker (scheduled jobs) is not started.", flush=True)

    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="dlr-ingest-"))
    records: list[dict[str, Any]] = []
    meta = {"time": stamp, "host": platform.node(), "cpus": os.cpu_count(),
            "workers": args.workers, "web_threads": args.web_threads,
            "connections": args.connections, "threads": args.threads,
            "duration": args.duration, "warmup": args.warmup, "messages": args.messages,
            "payload": args.payload, "sent_pct": args.sent_pct, "body_bytes": args.body_bytes,
            "sqlite_synchronous": args.sqlite_synchronous, "bare_runs": args.bare_runs,
            **git_state()}
    try:
        for round_no in range(1, args.repeat + 1):
            tag = round_no if args.repeat > 1 else 0
            print(f"\nround {round_no}/{args.repeat}: bare-post", flush=True)
            bares = [measure_bare(procs, tmp, args)]
            measured = []
            for db in dbs:
                print(f"round {round_no}/{args.repeat}: tracker-{db}", flush=True)
                target: Target = (SqliteTarget(tmp)
                                  if db == "sqlite" else PostgresTarget(args.pg_admin_url))
                try:
                    measured.append(measure_tracker(procs, tmp, target, args))
                finally:
                    if not args.keep:
                        target.drop()
            if args.bare_runs == 2:
                print(f"round {round_no}/{args.repeat}: bare-post again", flush=True)
                bares.append(measure_bare(procs, tmp, args))
            bare_rate = statistics.mean(b.wrk.ok_per_s for b in bares)
            bare_rows = [b.record(None, tag) for b in bares]
            for row, when in zip(bare_rows, ("before", "after"), strict=False):
                row["bare_position"] = when
            leans = {m.db: lean_record(m.extra.pop("lean"), bare_rate, tag)
                     for m in measured if "lean" in m.extra}
            rows = [m.record(bare_rate, tag) for m in measured]
            spread = (max(r["ok_per_s"] for r in bare_rows) / min(r["ok_per_s"] for r in bare_rows)
                      - 1)
            print(f"\nbare reference for the ratios: {bare_rate:.0f} req/s (mean of "
                  + " and ".join(f"{r['bare_position']} {r['ok_per_s']:.0f}" for r in bare_rows)
                  + (f"; they differ by {spread * 100:.0f} %" if len(bare_rows) > 1 else "")
                  + ")")
            for row in rows:
                print_table(row["db"], bare_rows, [row, *filter(None, [leans.get(row["db"])])])
                print_checks(row)
            with open(results_path, "a") as fh:
                for row in [*bare_rows, *rows, *leans.values()]:
                    fh.write(json.dumps({**meta, **row}) + "\n")
            records += [*bare_rows, *rows, *leans.values()]
        if args.repeat > 1:
            print_summary(records, dbs)
        print(f"\nresults appended to {results_path.relative_to(ROOT)}"
              if results_path.is_relative_to(ROOT) else f"\nresults: {results_path}")
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        procs.stop_all()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
