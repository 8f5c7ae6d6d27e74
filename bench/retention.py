"""Retention under load: callbacks/s through the real callback path while the retention job
deletes 1,000,000 old rows, beside the same service without deletes, in the same run.

For each database (SQLite, Postgres) a fresh, migrated database gets what bench/ingest.py
seeds (N 'accepted' Skycore messages the postbacks name) plus --old-rows old rows: a third each
of final messages created 400 days ago, one event each, and the callback each event came from.
gunicorn runs the web app as `tracker serve` does (web only, bench/ingest.py's command line) and
wrk posts Skycore postbacks as in bench/ingest.py. Three phases, one gunicorn:

  1. alone:    wrk for --alone-windows windows of --duration seconds, nothing else running;
  2. deleting: the retention job (tracker.jobs.apply_retention, in a process of its own as in the
               worker, retention_days callbacks = 30 and messages = 30) deletes every old row
               in its batches while wrk runs, in --duration windows, until the job is done;
               after every --alone-every windows, one window with the job held still between
               two batches: ingest alone under the same conditions, the reference;
  3. alone:    wrk again (so drift over the run shows, and the reference is their mean).

It prints callbacks/s of each phase, the cost of the deletes (the deleting windows against the
held-still ones; goal: under 10 %: this machine drifts too much over minutes for phases 1 and 3
alone to be the reference), rows deleted per second, and checks that every old row is gone and every
callback acknowledged is stored.

    .venv/bin/python bench/retention.py                      # both databases, 1,000,000 rows
    .venv/bin/python bench/retention.py --db sqlite --old-rows 300000 --duration 10

Needs `wrk` and, for Postgres, a server allowed to create databases (--pg-admin-url), as
bench/ingest.py. Results are appended to bench/results/retention-<time>.jsonl.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ingest  # bench/ingest.py: processes, targets, gunicorn and wrk as it runs them
from ingest import PostgresTarget, Processes, SqliteTarget, Target, WrkResult

ROOT = Path(__file__).resolve().parent.parent
GOAL = 0.10  # ingest may lose less than this while the deletes run
OLD_DAYS = 400
RETENTION_DAYS = "30"


# -- seeding ---------------------------------------------------------------------------------


def seed_old(target: Target, rows: int, chunk: int = 20_000) -> int:
    """`rows` old rows: final messages with one event each, from one callback each. Ids are
    given (far above the recent messages'), and Postgres's sequences moved past them."""
    from tracker.status import order_key

    count = rows // 3
    at = target.timestamp(dt.datetime.now(dt.UTC).replace(tzinfo=None)
                          - dt.timedelta(days=OLD_DAYS))
    delivered = order_key("delivered", None)
    body = (b"<?xml version='1.0'?><POSTBACK><CODE>N202</CODE><STATUS>DELIVERED</STATUS>"
            b"<TRACKINGID>OLD</TRACKINGID></POSTBACK>").ljust(500, b" ")
    base = 50_000_000
    conn = target.connect()
    try:
        cur = conn.cursor()
        for lo in range(0, count, chunk):
            ids = range(base + lo, base + min(count, lo + chunk))
            target.insert_many(cur, "INSERT INTO callback (id, provider, method, path, query,"
                               " headers, body, remote_addr, received_at, verdict) VALUES",
                               [(i, "skycore", "POST", "/callbacks/skycore/***", "", "[]", body,
                                 "127.0.0.1", at, "applied") for i in ids])
            target.insert_many(cur, "INSERT INTO message (id, reference, provider,"
                               " provider_message_id, recipient, text, status, status_rank,"
                               " status_order, status_inferred, attempts, submitted_at,"
                               " created_at, updated_at) VALUES",
                               [(i, f"o{i}", "skycore", f"OLD_{i}", "+15551230000", "old",
                                 "delivered", 3, delivered, target.false, 0, at, at, at)
                                for i in ids])
            target.insert_many(cur, "INSERT INTO event (id, message_id, callback_id, kind,"
                               " source, provider, provider_message_id, status, applied,"
                               " received_at, dedupe_key) VALUES",
                               [(i, i, i, "receipt", "callback", "skycore", f"OLD_{i}",
                                 "delivered", not target.false, at, f"skycore:old|{i}")
                                for i in ids])
        if target.kind == "postgres":
            for table in ("callback", "message", "event"):
                cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                            f" (SELECT max(id) FROM {table}))")
        conn.commit()
    finally:
        conn.close()
    return count * 3


def old_left(target: Target) -> dict[str, int]:
    cutoff = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=int(RETENTION_DAYS))
    stamp = target.timestamp(cutoff)
    return {"callback": target.query("SELECT count(*) FROM callback WHERE received_at < ?",
                                     (stamp,))[0][0],
            "message": target.query("SELECT count(*) FROM message WHERE created_at < ?",
                                    (stamp,))[0][0],
            "event": target.query("SELECT count(*) FROM event WHERE received_at < ?",
                                  (stamp,))[0][0]}


# -- the phases ------------------------------------------------------------------------------


def wrk_window(procs: Processes, url: str, seconds: float, args: argparse.Namespace
               ) -> WrkResult:
    return ingest.run_wrk(procs, url, seconds, args, latency=True)


def alone_window(procs: Processes, url: str, args: argparse.Namespace,
                 purge: subprocess.Popen[bytes], pause: Path) -> WrkResult:
    """A window with the retention job held still between two batches."""
    pause.touch()
    held = pause.with_suffix(".held")
    while purge.poll() is None and not held.exists():
        time.sleep(0.02)
    try:
        return wrk_window(procs, url, args.duration, args)
    finally:
        pause.unlink()


def combined(results: list[WrkResult]) -> dict[str, Any]:
    ok = sum(r.ok for r in results)
    seconds = sum(r.seconds for r in results)
    return {"ok": ok, "seconds": round(seconds, 2), "ok_per_s": round(ok / seconds, 1),
            "p99_ms": max(r.raw["p99_us"] for r in results) / 1000,
            "p50_ms": sorted(r.raw["p50_us"] for r in results)[len(results) // 2] / 1000,
            "errors": sum(r.non_2xx + r.socket_errors for r in results),
            "non_2xx": sum(r.non_2xx for r in results),
            "socket_errors": sum(r.socket_errors for r in results), "windows": len(results)}


def start_purge(procs: Processes, env: dict[str, str], out: Path, pause: Path
                ) -> subprocess.Popen[bytes]:
    """The retention job as the worker runs it, in a process of its own; while `pause`
    exists it holds still between two batches."""
    env = dict(env, TRACKER_RETENTION_DAYS__CALLBACKS=RETENTION_DAYS,
               TRACKER_RETENTION_DAYS__MESSAGES=RETENTION_DAYS,
               RETENTION_BENCH_PAUSE=str(pause))
    with open(out, "wb") as fh:
        return procs.start([sys.executable, __file__, "--purge"], env=env, cwd=ROOT,
                           stdout=fh, stderr=subprocess.STDOUT)


def purge_main() -> int:
    """--purge: run tracker.jobs.apply_retention once to the end; print what it did."""
    from tracker import create_app, jobs

    app = create_app()
    pause = Path(os.environ["RETENTION_BENCH_PAUSE"])
    held = pause.with_suffix(".held")
    paused = 0.0

    def between_batches(seconds: float) -> bool:
        """The job's own pause; then, while the bench measures ingest alone, hold still."""
        nonlocal paused
        time.sleep(seconds)
        since = time.monotonic()
        while pause.exists():
            held.touch()
            time.sleep(0.02)
        held.unlink(missing_ok=True)
        paused += time.monotonic() - since
        return False

    print("PURGE_START", flush=True)  # the bench starts its windows now, not at our start-up
    started = time.monotonic()
    deleted = jobs.apply_retention(app, stop=between_batches)
    print("PURGE_JSON " + json.dumps({
        "deleted": deleted, "seconds": round(time.monotonic() - started - paused, 2),
        "held_seconds": round(paused, 2)}))
    return 0


def measure(procs: Processes, tmp: Path, target: Target, args: argparse.Namespace
            ) -> dict[str, Any]:
    token = secrets.token_urlsafe(24)
    dbdir = Path(tempfile.mkdtemp(prefix=f"{target.kind}-", dir=tmp))
    target.create()
    try:
        config = ingest.write_config(dbdir, target, 8000, token)
        env = ingest.clean_env(TRACKER_CONFIG=str(config), TRACKER_WEB_WORKERS=str(args.workers),
                               TRACKER_WEB_THREADS=str(args.web_threads))
        done = subprocess.run([*ingest.tracker_command(), "db", "upgrade"], env=env, cwd=ROOT,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"tracker db upgrade failed:\n{done.stdout}{done.stderr}")
        t0 = time.monotonic()
        target.seed(args.messages)
        old = seed_old(target, args.old_rows)
        print(f"  {target.describe()}: {args.messages:,} messages for the postbacks and {old:,}"
              f" old rows seeded in {time.monotonic() - t0:.1f} s", flush=True)
        return run_phases(procs, tmp, target, env, token, old, args)
    finally:
        target.drop()
        shutil.rmtree(dbdir, ignore_errors=True)


def run_phases(procs: Processes, tmp: Path, target: Target, env: dict[str, str], token: str,
               old: int, args: argparse.Namespace) -> dict[str, Any]:
    port = ingest.free_port()
    log_path = tmp / f"gunicorn-{target.kind}.log"
    with open(log_path, "wb") as log:
        server = procs.start(ingest.gunicorn_argv(ROOT, port, "wsgi:app"), env=env,
                             stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/callbacks/skycore/{token}"
    try:
        ingest.wait_ready(port, log_path, args.workers, server)
        if args.warmup > 0:
            ingest.run_wrk(procs, url, args.warmup, args, latency=False)
        last_id = target.query("SELECT max(id) FROM callback")[0][0]
        print("  phase 1: alone", flush=True)
        before = [wrk_window(procs, url, args.duration, args) for _ in range(args.alone_windows)]
        print("  phase 2: deleting", flush=True)
        purge_log = tmp / f"purge-{target.kind}.log"
        pause = tmp / f"pause-{target.kind}"
        purge = start_purge(procs, env, purge_log, pause)
        while purge.poll() is None and "PURGE_START" not in purge_log.read_text(errors="replace"):
            time.sleep(0.05)
        started = time.monotonic()
        during: list[WrkResult] = []
        between: list[WrkResult] = []  # the job held still: alone, under the same conditions
        while purge.poll() is None:
            if args.alone_every and len(during) % args.alone_every == 0 and during \
                    and len(between) < len(during) // args.alone_every:
                between.append(alone_window(procs, url, args, purge, pause))
            else:
                during.append(wrk_window(procs, url, args.duration, args))
        purge_seconds = time.monotonic() - started
        procs.live.remove(purge)
        purged = purge_log.read_text(errors="replace")
        if purge.returncode != 0 or "PURGE_JSON " not in purged:
            raise RuntimeError(f"the retention job failed (exit {purge.returncode}):\n{purged}")
        job = json.loads(purged.split("PURGE_JSON ", 1)[1].splitlines()[0])
        print("  phase 3: alone again", flush=True)
        after = [wrk_window(procs, url, args.duration, args) for _ in range(args.alone_windows)]
    finally:
        procs.stop(server)
    ok = sum(r.ok for r in [*before, *during, *between, *after])
    stored = target.query("SELECT count(*) FROM callback WHERE id > ?", (last_id,))[0][0]
    left = old_left(target)
    # The reference: the windows with the job held still, between the deleting ones (the same
    # machine conditions); without them, the mean of before and after.
    alone = (combined(between)["ok_per_s"] if between
             else (combined(before)["ok_per_s"] + combined(after)["ok_per_s"]) / 2)
    row = {"db": target.kind, "old_rows": old, "before": combined(before),
           "during": combined(during), "between": combined(between) if between else None,
           "after": combined(after), "alone_ok_per_s": alone,
           "gunicorn_log": ingest.log_findings(log_path),
           "job": job, "purge_wall_seconds": round(purge_seconds, 1),
           "old_left": left, "rows_gone": old - sum(left.values()), "acknowledged": ok,
           "stored": stored,
           "windows": len(before) + len(during) + len(between) + len(after),
           "connections": args.connections}
    row["cost"] = round(1 - row["during"]["ok_per_s"] / alone, 4) if alone else None
    return row


# -- output ----------------------------------------------------------------------------------


def report(row: dict[str, Any]) -> None:
    print(f"\n{row['db']}: {row['old_rows']:,} old rows deleted while callbacks came in "
          f"(goal: ingest loses < {GOAL * 100:.0f} %)")
    print(f"  {'phase':<22} {'callbacks/s':>11} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}"
          f" {'seconds':>8}")
    for name, key in (("1 alone", "before"), ("2 while deleting", "during"),
                      ("2 job held still", "between"), ("3 alone again", "after")):
        part = row[key]
        if part is None:
            continue
        print(f"  {name:<22} {part['ok_per_s']:>11.0f} {part['p50_ms']:>7.1f}"
              f" {part['p99_ms']:>7.1f} {part['errors']:>6} {part['seconds']:>8.1f}")
    cost, job = row["cost"], row["job"]
    verdict = "PASS" if cost is not None and cost < GOAL and not row["during"]["errors"] \
        else "FAIL"
    reference = ("the windows with the job held still" if row["between"]
                 else "mean of phases 1 and 3")
    print(f"  cost of the deletes: {cost * 100:+.1f} % of {row['alone_ok_per_s']:.0f}/s "
          f"({reference})  {verdict}")
    during = row["during"]
    print(f"  errors while deleting: {during['non_2xx']} non-2xx, {during['socket_errors']}"
          f" socket errors (wrk); gunicorn log: {row['gunicorn_log']}")
    rate = row["rows_gone"] / job["seconds"] if job["seconds"] else 0.0
    print(f"  retention job: {row['rows_gone']:,} rows gone ({job['deleted']:,} deleted, their"
          f" events with the messages) in {job['seconds']:.1f} s ({rate:,.0f} rows/s, batches of"
          f" 1,000 with pauses); old rows left: {row['old_left']}")
    # Up to one request per connection is in flight when a wrk window (or the warm-up) ends:
    # stored, never counted as answered.
    slack = row["connections"] * (row["windows"] + 1)
    check = "OK" if 0 <= row["stored"] - row["acknowledged"] <= slack \
        and not any(row["old_left"].values()) else "MISMATCH"
    print(f"  check: {check}: callbacks acknowledged {row['acknowledged']:,}, stored "
          f"{row['stored']:,}; every old row gone: {not any(row['old_left'].values())}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--old-rows", type=int, default=1_000_000,
                        help="old rows to delete (a third each: messages, events, callbacks)")
    parser.add_argument("--messages", type=int, default=100_000,
                        help="recent messages the postbacks name")
    parser.add_argument("--duration", type=int, default=10,
                        help="seconds of each wrk window (phase 2 runs as many as it takes)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up seconds")
    parser.add_argument("--alone-windows", type=int, default=3,
                        help="wrk windows before and after the deletes (phases 1 and 3)")
    parser.add_argument("--alone-every", type=int, default=2,
                        help="during the deletes, after every N windows one with the job held"
                             " still between two batches: the reference (0: none)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=ingest.default_web("web_workers"))
    parser.add_argument("--web-threads", type=int, default=ingest.default_web("web_threads"))
    parser.add_argument("--pg-admin-url", default=ingest.PG_ADMIN_URL)
    parser.add_argument("--results", type=Path, default=None, help="JSON lines file")
    parser.add_argument("--purge", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # What bench/ingest.py's wrk script reads.
    args.payload, args.sent_pct, args.body_bytes = "postback", 30, 500
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.purge:
        return purge_main()
    if shutil.which("wrk") is None:
        print("wrk not found: install it first (Debian: apt-get install -y wrk).",
              file=sys.stderr)
        return 2
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    results = args.results or ingest.RESULTS / f"retention-{stamp}.jsonl"
    results.parent.mkdir(parents=True, exist_ok=True)
    print(f"dlr-tracker retention under load: {os.cpu_count()} CPUs, gunicorn -w {args.workers}"
          f" --threads {args.web_threads}, wrk -t{args.threads} -c{args.connections},"
          f" {args.duration} s windows; {args.old_rows:,} old rows", flush=True)
    signal.signal(signal.SIGTERM, ingest._raise_interrupt)
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="dlr-retention-"))
    try:
        for db in dbs:
            print(f"{db}:", flush=True)
            target = SqliteTarget(tmp) if db == "sqlite" else PostgresTarget(args.pg_admin_url)
            row = measure(procs, tmp, target, args)
            report(row)
            with open(results, "a") as fh:
                fh.write(json.dumps({"time": stamp, **row}) + "\n")
        print(f"\nresults appended to {results}")
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
