"""Exports at 1,000,000 messages: seconds and rows/s per format against the goal, and peak RSS
at 100,000 vs 1,000,000 rows to show memory flat in the row count.

Goal (issue 4, item 6): 1,000,000 rows in <= 12 s, worker memory flat in the row count.

    .venv/bin/python bench/export.py                  # SQLite (bench/data/export-1m.sqlite3)
    .venv/bin/python bench/export.py --db postgres    # database dlr_bench_export
    .venv/bin/python bench/export.py --formats csv,xlsx --rebuild
    .venv/bin/python bench/export.py --smoke          # seconds: 2,000 rows, throwaway database

Each export is the real `tracker export` command run as a child process (the same
`exports.export` a job from the messages page runs in the worker), so its time includes
interpreter start, create_app and the count of the rows (for the progress shown on a terminal:
not here, stderr is a pipe), and its peak RSS
(os.wait4's ru_maxrss) is that process alone. 100,000 rows are `--created-to 2026-01-03` (the
first 3 of the 30 days; a provider filter no longer reads p0..p9, which are not provider
names), 1,000,000 rows are no filter; the file is checked for its row count (line count; for XLSX
the sheet's last row number).

First, as the reference measured in the same run, perf-baseline.md's plain export (every
column via `.tuples().iterator()` into csv.writer, no formatting; 9.9 s on its machine): this
VM's speed drifts by 20-30 %, so compare against that line, not across days.

Data (fixed seed), built once and kept: 1,000,000 messages over 30 days in id order, providers
p0..p9 in equal shares, 85 % delivered / 7 % sent / 5 % failed / 3 % expired, with error codes
and details on failures. Inserted with executemany in transactions of 100,000 rows. The schema
comes from the real migrations.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = ROOT / "bench" / "data"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DB = "dlr_bench_export"
ROWS = 1_000_000
GOAL_SECONDS = 12.0
CHUNK = 100_000
SUBSET_TO = "2026-01-03"  # the first 3 of the 30 days: a tenth of the messages

COLUMNS = ("reference", "client_ref", "provider", "provider_message_id", "recipient", "sender",
           "text", "status", "status_rank", "status_order", "status_inferred", "status_at",
           "error_code", "error_detail", "attempts", "submitted_at", "created_at", "updated_at",
           "encoding", "segments")


def generate(start: int, count: int) -> list[tuple]:
    rng = random.Random(start)
    t0 = dt.datetime(2026, 1, 1)
    out = []
    for i in range(start, start + count):
        roll = rng.random()
        status = ("delivered" if roll < 0.85 else "sent" if roll < 0.92
                  else "failed" if roll < 0.97 else "expired")
        created = t0 + dt.timedelta(seconds=i * 30 * 86400 / ROWS)  # 30 days, whatever ROWS
        submitted = created + dt.timedelta(milliseconds=rng.randint(50, 900))
        status_at = submitted + dt.timedelta(milliseconds=rng.randint(500, 60_000))
        failed = status == "failed"
        out.append((
            f"R{i:012d}", f"order-{i}" if i % 4 else None, f"p{i % 10}", f"PM{i:010d}",
            f"+7701{rng.randint(0, 9_999_999):07d}", "ACME",
            "Your code is 123456. Do not share it with anyone.", status,
            3 if status != "sent" else 2, f"{status}|x", i % 50 == 0,
            status_at if status != "sent" else None,
            "E30003" if failed else None, "Unreachable handset" if failed else None, 1,
            submitted, created, status_at, "GSM-7", 1,
        ))
    return out


def sqlite_database(rebuild: bool) -> str:
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / "export-1m.sqlite3"
    url = f"sqlite:///{path}"
    if rebuild:
        for suffix in ("", "-wal", "-shm", "-writelock"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    migrate(url)
    conn = sqlite3.connect(path)
    have = conn.execute("SELECT count(*) FROM message").fetchone()[0]
    if have != ROWS:
        started = time.monotonic()
        conn.execute("DELETE FROM message")
        sql = (f"INSERT INTO message ({', '.join(COLUMNS)}) "
               f"VALUES ({', '.join('?' * len(COLUMNS))})")
        for start in range(0, ROWS, CHUNK):
            with conn:
                conn.executemany(sql, generate(start, CHUNK))
        print(f"built {path.name}: {ROWS:,} messages in {time.monotonic() - started:.0f} s",
              flush=True)
    conn.close()
    return url


def postgres_database(rebuild: bool) -> str:
    import psycopg2
    from psycopg2.extras import execute_values

    admin = psycopg2.connect(PG_ADMIN_URL)
    admin.autocommit = True
    with admin.cursor() as cur:
        if rebuild:
            cur.execute(f'DROP DATABASE IF EXISTS "{PG_DB}"')
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DB,))
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{PG_DB}"')
    admin.close()
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + PG_DB
    migrate(url)
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM message")
        have = cur.fetchone()[0]
    if have != ROWS:
        started = time.monotonic()
        with conn, conn.cursor() as cur:
            cur.execute("TRUNCATE message CASCADE")
        for start in range(0, ROWS, CHUNK):
            with conn, conn.cursor() as cur:
                execute_values(cur, f"INSERT INTO message ({', '.join(COLUMNS)}) VALUES %s",
                               generate(start, CHUNK), page_size=5000)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE message")
        print(f"built {PG_DB}: {ROWS:,} messages in {time.monotonic() - started:.0f} s",
              flush=True)
    conn.close()
    return url


def migrate(url: str) -> None:
    from tracker import migrations
    from tracker.db import connect_database, db

    database = connect_database(url)
    db.initialize(database)  # migrations write through the proxy (write_tx)
    database.connect()
    migrations.upgrade(database, log=lambda _line: None)
    database.close()


def rows_in(fmt: str, path: Path) -> int:
    """Data rows in the file (header excluded)."""
    if fmt == "xlsx":
        # Streamed, keeping the tail: reading the whole sheet (590 MB at 1 M rows) would grow
        # this process, and Linux hands a parent's peak RSS on to the children it forks next
        # (ru_maxrss survives fork and exec), which would then be charged to the next export.
        tail = b""
        with zipfile.ZipFile(path) as book, book.open("xl/worksheets/sheet1.xml") as sheet:
            for chunk in iter(lambda: sheet.read(1 << 20), b""):
                tail = (tail + chunk)[-4000:]
        return int(re.findall(r'<row r="(\d+)"', tail.decode("utf-8", "replace"))[-1]) - 1
    with open(path, "rb") as handle:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    return lines - (0 if fmt == "jsonl" else 1)


def run_export(url: str, fmt: str, created_to: str,
               out_dir: Path) -> tuple[float, float, int, int]:
    """One `tracker export` in a child: (seconds, peak RSS MB, rows, bytes)."""
    output = out_dir / f"export.{fmt}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env["TRACKER_DATABASE_URL"] = url
    started = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "tracker.cli", "export", "--format", fmt,
                              "--created-to", created_to, "--output", str(output)],
                             env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(child.pid, 0)
    seconds = time.monotonic() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    error = child.stderr.read().decode() if child.stderr else ""
    if child.returncode != 0:
        raise SystemExit(f"tracker export failed: {error}")
    rows, size = rows_in(fmt, output), output.stat().st_size
    output.unlink()
    return seconds, usage.ru_maxrss / 1024, rows, size


REFERENCE = """
import csv, sys
from tracker.db import connect_database, db
from tracker.models import Message
db.initialize(connect_database(sys.argv[1]))
with open(sys.argv[2], "w", newline="") as out:
    writer = csv.writer(out)
    for row in Message.select().tuples().iterator():
        writer.writerow(row)
"""


def run_reference(url: str, out_dir: Path) -> tuple[float, float]:
    """perf-baseline.md's export (c): every column, `.tuples().iterator()` into csv.writer,
    no formatting (9.9 s there): the same machine's speed in this run."""
    output = out_dir / "reference.csv"
    started = time.monotonic()
    child = subprocess.Popen([sys.executable, "-c", REFERENCE, url, str(output)], cwd=ROOT)
    _pid, status, usage = os.wait4(child.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    child.returncode = 0
    output.unlink()
    return time.monotonic() - started, usage.ru_maxrss / 1024


def main() -> None:
    global DATA, PG_ADMIN_URL, PG_DB, ROWS, CHUNK
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--formats", default="csv,csv-excel,jsonl,xlsx")
    parser.add_argument("--rebuild", action="store_true", help="build the data set anew")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL,
                        help="server + role that may CREATE DATABASE")
    parser.add_argument("--smoke", action="store_true",
                        help="a check that it runs, in seconds: 2,000 rows in a throwaway "
                             "database (a temp folder or its own Postgres database); figures "
                             "mean nothing")
    args = parser.parse_args()
    PG_ADMIN_URL = args.pg_admin_url
    if not args.smoke:
        run(args)
        return
    DATA = Path(tempfile.mkdtemp(prefix="dlr-export-smoke-"))
    PG_DB = f"dlr_bench_smoke_{secrets.token_hex(4)}"
    ROWS = CHUNK = 2_000
    print(f"smoke: {ROWS:,} rows in a throwaway database; the figures are not comparable with "
          "anything")
    try:
        run(args)
    finally:
        if args.db == "postgres":
            import psycopg2

            admin = psycopg2.connect(PG_ADMIN_URL)
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
            admin.close()
        shutil.rmtree(DATA, ignore_errors=True)


def run(args: argparse.Namespace) -> None:
    url = sqlite_database(args.rebuild) if args.db == "sqlite" else postgres_database(args.rebuild)
    print(f"\nexports on {args.db}, {ROWS:,} messages; goal: {ROWS:,} rows in "
          f"<= {GOAL_SECONDS:.0f} s, peak RSS flat in the row count\n")
    print(f"{'format':<10} {'rows':>10} {'seconds':>8} {'rows/s':>9} {'MB':>7} "
          f"{'peak RSS MB':>12}  goal")
    with tempfile.TemporaryDirectory(dir=DATA if DATA.exists() else None) as tmp:
        seconds, rss = run_reference(url, Path(tmp))
        print(f"{'reference':<10} {ROWS:>10,} {seconds:>8.1f} {ROWS / seconds:>9,.0f} "
              f"{'':>7} {rss:>12.0f}  (.tuples().iterator() -> csv, perf-baseline: 9.9 s)",
              flush=True)
        for fmt in args.formats.split(","):
            results = []
            for created_to, expected in ((SUBSET_TO, ROWS // 10), ("", ROWS)):
                seconds, rss, rows, size = run_export(url, fmt, created_to, Path(tmp))
                assert rows == expected, f"{fmt}: {rows} rows in the file, expected {expected}"
                results.append((seconds, rss))
                verdict = ""
                if rows == ROWS:
                    verdict = (f"{'PASS' if seconds <= GOAL_SECONDS else 'FAIL'} "
                               f"({seconds:.1f} s vs {GOAL_SECONDS:.0f} s; RSS "
                               f"{results[0][1]:.0f} MB at 100k -> {rss:.0f} MB at 1M)")
                print(f"{fmt:<10} {rows:>10,} {seconds:>8.1f} {rows / seconds:>9,.0f} "
                      f"{size / 1e6:>7.0f} {rss:>12.0f}  {verdict}", flush=True)


if __name__ == "__main__":
    main()
