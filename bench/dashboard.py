"""The messages list, search and filters at 1,000,000 messages and 3,000,000 events.

Goal (issue 4, item 2; issue 12, items 1-3): every list, search and filter answers in <= 5 ms
p95 *server time*, on SQLite and on Postgres, and so does its row of counts per status when the
page leaves that to a second request (`GET /messages/counts`, which static/counts.js fetches
once the list is shown; a first page with room to spare holds its counts and needs none). For
each filter shape this times both real views through Flask's test client with a logged-in
session, counting only the time inside the application (a WSGI middleware around
`app.wsgi_app`, so the test client's own work is left out) and the CPU time of its thread, and,
beside each, its queries alone (the list: `reporting.list_messages` with its count; the counts:
`reporting.status_counts`). A shape passes when both requests are within the goal.

    .venv/bin/python bench/dashboard.py --db sqlite
    .venv/bin/python bench/dashboard.py --db postgres          # database dlr_bench
    .venv/bin/python bench/dashboard.py --db sqlite --rebuild  # build the data set anew
    .venv/bin/python bench/dashboard.py --db sqlite --smoke    # seconds: 3,000 messages, no goal

The data set is built once and kept: the SQLite file under bench/data/ (gitignored), the
Postgres database `dlr_bench` on postgresql://postgres@127.0.0.1:5432 (--pg-admin-url). The
schema comes from the real migrations, applied again at every run, so a new migration's
indexes are built on the kept data. Postgres gets VACUUM ANALYZE after the load (autovacuum
would do it in production); SQLite gets no ANALYZE, as in production.

Data (fixed seed): 1,000,000 messages created over 90 days in id order, 5 providers with
different shares, statuses as a busy sender sees them (80 % delivered, failures with
provider-specific error codes, some shared across providers), recipients from 250,000 numbers in
several countries plus 1,000 frequent ones and one QA number with 3,000 messages, client refs
(unique order ids and 100 shared campaign refs), and 3 events per message (3,000,000).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import random
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tracker.status import RANK, Status, order_key  # noqa: E402

DATA = ROOT / "bench" / "data"
RESULTS = ROOT / "bench" / "results"
DATA_VERSION = 1  # bump when the generated data changes: the cached file is rebuilt
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DB = "dlr_bench"
GOAL_MS = 5.0

N_MESSAGES = 1_000_000
EVENTS_PER_MESSAGE = 3
END = dt.datetime(2026, 1, 1)  # fixed, so the cached data and the shapes agree
START = END - dt.timedelta(days=90)
QA_NUMBER = "+15550000001"
QA_MESSAGES = 3_000

PROVIDERS = [("skycore", 35), ("mobivate", 25), ("mobizon", 20), ("alphasms", 15), ("fake", 5)]
STATUSES = [("delivered", 800), ("undelivered", 60), ("failed", 30), ("rejected", 20),
            ("expired", 20), ("accepted", 30), ("sent", 20), ("unknown", 5), ("canceled", 10),
            ("queued", 3), ("scheduled", 2)]
WITH_ERROR = {"undelivered", "failed", "rejected", "expired"}
# Provider-specific error codes, most frequent first; "1".."3" are shared by two providers.
ERROR_CODES = {
    "skycore": ["E710", "E711", "E712", "E720", "E730", "E101", "E102"],
    "mobivate": ["1", "2", "3", "5", "8", "11"],
    "mobizon": ["1", "2", "3", "4", "6"],
    "alphasms": ["101", "102", "103", "110"],
    "fake": ["F1", "F2"],
}
COUNTRIES = ["+7701", "+7702", "+1555", "+44770090", "+49151", "+33612", "+38067"]


def _weighted(pairs: list[tuple[str, int]]) -> tuple[list[str], list[int]]:
    return [p for p, _ in pairs], [w for _, w in pairs]


def reference(i: int) -> str:
    """Unique, random-looking: an odd multiplier is a bijection modulo 2**40."""
    return f"{(i * 0x9E3779B97F) % (1 << 40):010x}"


def generate(seed: int = 20260101) -> Iterator[tuple[tuple[Any, ...], list[tuple[Any, ...]]]]:
    """(message row, its event rows) in id order."""
    rnd = random.Random(seed)
    providers, pweights = _weighted(PROVIDERS)
    statuses, sweights = _weighted(STATUSES)
    numbers = [f"{rnd.choice(COUNTRIES)}{rnd.randrange(10**6, 10**7)}"
               for _ in range(min(250_000, N_MESSAGES // 4))]
    frequent = numbers[:1_000]
    qa_every = N_MESSAGES // QA_MESSAGES
    step = (END - START) / N_MESSAGES
    event_id = 0
    for i in range(1, N_MESSAGES + 1):
        created = START + step * i + dt.timedelta(microseconds=rnd.randrange(1000))
        provider = rnd.choices(providers, pweights)[0]
        status = rnd.choices(statuses, sweights)[0]
        if i % qa_every == 0:
            to = QA_NUMBER
        elif rnd.random() < 0.05:
            to = rnd.choice(frequent)
        else:
            to = rnd.choice(numbers)
        codes = ERROR_CODES[provider]
        error = (codes[min(int(rnd.expovariate(0.7)), len(codes) - 1)]
                 if status in WITH_ERROR else None)
        sent = status not in ("queued", "scheduled", "canceled")
        pmid = (f"SMS_{i}" if provider == "skycore" else f"{provider[:2]}-{i * 7919:x}") \
            if sent else None
        roll = rnd.random()
        client_ref = (f"order-{i}" if roll < 0.3 else
                      f"campaign-{rnd.randrange(100)}" if roll < 0.35 else None)
        submitted = created + dt.timedelta(seconds=1) if sent else None
        status_at = created + dt.timedelta(seconds=rnd.randrange(2, 600)) if sent else None
        message = (i, reference(i), client_ref, provider, pmid, to, "ACME",
                   "Your code is 123456", status, RANK[status], order_key(status, status_at),
                   False, status_at, error, "provider said no" if error else None, None, None,
                   None, 1 if sent else 0, submitted, created, status_at or created, "GSM-7", 1,
                   None, None, None)
        events = []
        for kind, source, ev_status, at in (("created", "api", "queued", created),
                                             ("submitted", "dispatcher", "accepted", submitted),
                                             ("receipt", "callback", status, status_at)):
            event_id += 1
            events.append((event_id, i, None, kind, source, provider, pmid, reference(i),
                           ev_status, ev_status.upper(), error if kind == "receipt" else None,
                           None, True, None, at, at or created, None))
        yield message, events


MESSAGE_COLUMNS = (
    "id, reference, client_ref, provider, provider_message_id, recipient, sender, text, status,"
    " status_rank, status_order, status_inferred, status_at, error_code, error_detail, send_at,"
    " due_at, claimed_until, attempts, submitted_at, created_at, updated_at, encoding, segments,"
    " route, expires_at, poll_at")
EVENT_COLUMNS = (
    "id, message_id, callback_id, kind, source, provider, provider_message_id, reference,"
    " status, raw_status, error_code, detail, applied, reason, occurred_at, received_at,"
    " dedupe_key")


# -- building the data set --------------------------------------------------------------


def migrate(url: str) -> None:
    """Apply the real migrations (new ones too, on a kept data set)."""
    from tracker import db as tdb
    from tracker import migrations

    database = tdb.connect_database(url)
    tdb.db.initialize(database)
    with tdb.db.connection_context():
        migrations.upgrade(database, log=lambda line: print("  " + line))


def build_sqlite(path: Path) -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm", "-writelock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    migrate(url)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    m_sql = f"INSERT INTO message ({MESSAGE_COLUMNS}) VALUES ({','.join('?' * 27)})"
    e_sql = f"INSERT INTO event ({EVENT_COLUMNS}) VALUES ({','.join('?' * 17)})"
    messages: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    with conn:
        for message, evs in generate():
            messages.append(message)
            events.extend(evs)
            if len(messages) == 50_000:
                conn.executemany(m_sql, messages)
                conn.executemany(e_sql, events)
                messages.clear()
                events.clear()
                print(f"  {message[0]:,} messages", end="\r", flush=True)
        conn.executemany(m_sql, messages)
        conn.executemany(e_sql, events)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, dt.datetime):
        return value.isoformat(" ")
    return str(value)


def build_postgres(admin_url: str, url: str) -> None:
    import psycopg2

    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (PG_DB,))
        cur.execute(f'DROP DATABASE IF EXISTS "{PG_DB}"')
        cur.execute(f'CREATE DATABASE "{PG_DB}"')
    migrate(url)
    conn = psycopg2.connect(url)

    def flush(table: str, columns: str, rows: list[tuple[Any, ...]]) -> None:
        buf = io.StringIO()
        for row in rows:
            buf.write("\t".join(_copy_text(v) for v in row) + "\n")
        buf.seek(0)
        with conn.cursor() as cur:
            cur.copy_expert(f"COPY {table} ({columns}) FROM STDIN", buf)

    messages: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    for message, evs in generate():
        messages.append(message)
        events.extend(evs)
        if len(messages) == 50_000:
            flush("message", MESSAGE_COLUMNS, messages)
            flush("event", EVENT_COLUMNS, events)
            messages.clear()
            events.clear()
            print(f"  {message[0]:,} messages", end="\r", flush=True)
    flush("message", MESSAGE_COLUMNS, messages)
    flush("event", EVENT_COLUMNS, events)
    with conn.cursor() as cur:
        cur.execute("SELECT setval('message_id_seq', (SELECT max(id) FROM message))")
        cur.execute("SELECT setval('event_id_seq', (SELECT max(id) FROM event))")
    conn.commit()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    conn.close()


def ensure_data(args: argparse.Namespace) -> str:
    """The database URL of a complete data set, building it when missing or stale."""
    if args.db == "sqlite":
        path = DATA / f"dashboard-v{DATA_VERSION}.sqlite3"
        if args.rebuild or not path.exists():
            t0 = time.perf_counter()
            print(f"building {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} ...")
            build_sqlite(path)
            print(f"  built in {time.perf_counter() - t0:.0f} s")
        url = f"sqlite:///{path}"
    else:
        url = args.pg_admin_url.rsplit("/", 1)[0] + "/" + PG_DB
        if args.rebuild or not _pg_complete(url):
            t0 = time.perf_counter()
            print(f"building Postgres database {PG_DB} ...")
            build_postgres(args.pg_admin_url, url)
            print(f"  built in {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    migrate(url)  # a migration added since the build gets its indexes now
    if args.db == "postgres" and time.perf_counter() - t0 > 1:
        import psycopg2

        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ANALYZE message")
        conn.close()
    return url


SMOKE_MESSAGES = 3_000


@contextlib.contextmanager
def smoke_data_set(db: str, pg_admin_url: str) -> Iterator[None]:
    """--smoke: a data set of 3,000 messages in a temp folder, or in a Postgres database of its
    own, both removed afterwards. The kept 1,000,000-message data sets are not touched."""
    global DATA, PG_DB, N_MESSAGES, QA_MESSAGES
    saved = DATA, PG_DB, N_MESSAGES, QA_MESSAGES
    tmp = Path(tempfile.mkdtemp(prefix="dlr-bench-smoke-"))
    DATA, PG_DB = tmp, f"dlr_bench_smoke_{secrets.token_hex(4)}"
    N_MESSAGES, QA_MESSAGES = SMOKE_MESSAGES, 30
    try:
        yield
    finally:
        if db == "postgres":
            import psycopg2

            admin = psycopg2.connect(pg_admin_url)
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
            admin.close()
        shutil.rmtree(tmp, ignore_errors=True)
        DATA, PG_DB, N_MESSAGES, QA_MESSAGES = saved


def _pg_complete(url: str) -> bool:
    import psycopg2

    try:
        conn = psycopg2.connect(url)
    except psycopg2.OperationalError:
        return False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT (SELECT max(id) FROM message), (SELECT max(id) FROM event)")
            return cur.fetchone() == (N_MESSAGES, N_MESSAGES * EVENTS_PER_MESSAGE)
    except psycopg2.Error:
        return False
    finally:
        conn.close()


# -- measuring ---------------------------------------------------------------------------


def shapes(order_ref: str, number: str) -> list[tuple[str, dict[str, str]]]:
    """Every filter shape of the list, with values that exercise the worst cases too.
    `number`: a Kazakh number with a few messages, as a customer's is. Every shape's page also
    counts its matches per status (the row of status links)."""
    day = (END - dt.timedelta(days=30)).date().isoformat()
    week_from = (END - dt.timedelta(days=40)).date().isoformat()
    week_to = (END - dt.timedelta(days=34)).date().isoformat()
    return [
        ("newest (no filter)", {}),
        ("page 2 (before=)", {"before": "999951"}),
        ("last page", {"before": "30"}),
        ("newer (after=)", {"after": "500000"}),
        ("status delivered (80 %)", {"status": "delivered"}),
        ("status unknown (0.5 %)", {"status": "unknown"}),
        ("status, no match", {"status": "sent", "provider": "skycore", "error_code": "F1"}),
        ("provider skycore", {"provider": "skycore"}),
        ("provider unknown (400)", {"provider": "nobody"}),
        ("status+provider", {"status": "failed", "provider": "alphasms"}),
        ("date: one day", {"created_from": day, "created_to": day}),
        ("date: a week", {"created_from": week_from, "created_to": week_to}),
        ("date, no match", {"created_from": "2020-01-01", "created_to": "2020-01-31"}),
        ("date+status", {"status": "rejected", "created_from": day, "created_to": day}),
        ("date+provider", {"provider": "fake", "created_from": day, "created_to": day}),
        ("date+status+provider", {"status": "expired", "provider": "mobizon",
                                  "created_from": week_from, "created_to": week_to}),
        ("error code (shared '1')", {"error_code": "1"}),
        ("error code, rare", {"error_code": "E102"}),
        ("error code, no match", {"error_code": "E999"}),
        ("error+status", {"error_code": "1", "status": "failed"}),
        ("error+status mismatch", {"error_code": "1", "status": "delivered"}),
        ("error+provider", {"error_code": "1", "provider": "mobizon"}),
        ("error+provider mismatch", {"error_code": "E710", "provider": "mobivate"}),
        ("error+status+provider", {"error_code": "2", "status": "undelivered",
                                   "provider": "mobivate"}),
        ("error+date", {"error_code": "E710", "created_from": week_from,
                        "created_to": week_to}),
        ("search phone (spaces)", {"q": "+1 555 000 0001"}),
        ("search phone + status", {"q": QA_NUMBER, "status": "delivered"}),
        ("search phone + mismatch", {"q": QA_NUMBER, "status": "scheduled",
                                     "provider": "fake"}),
        ("search phone, last page", {"q": QA_NUMBER, "before": "2000"}),
        ("search reference", {"q": reference(123_456)}),
        ("search provider id", {"q": "SMS_500003"}),
        ("search client_ref (unique)", {"q": order_ref}),
        ("search client_ref (campaign)", {"q": "campaign-7"}),
        ("search + date + status", {"q": "campaign-7", "status": "delivered",
                                    "created_from": week_from, "created_to": week_to}),
        ("search, no match", {"q": "nothing-like-this"}),
        # The end of a number (migration 0009): the last 4 digits split 1,000,000 messages into
        # buckets of ~100; the QA number's last 4 hold its 3,000 messages too.
        ("search last 4 digits", {"q": number[-4:]}),
        ("search last 4, busy number", {"q": QA_NUMBER[-4:]}),
        ("search last 6 digits", {"q": number[-6:]}),
        ("search last 6 in a busy last 4", {"q": "99" + QA_NUMBER[-4:]}),
        ("search last 4 + status", {"q": number[-4:], "status": "delivered"}),
        ("search national (8 701 ...)", {"q": national(number)}),
        ("search national, no trunk", {"q": number[2:]}),
        ("everything, no match", {"q": QA_NUMBER, "status": "failed", "provider": "fake",
                                  "error_code": "F2", "created_from": day, "created_to": day}),
    ]


def shape_values() -> tuple[str, str]:
    """From the data set: a unique client_ref, and a Kazakh number with a few messages."""
    from tracker.models import Message

    order_ref = Message.select(Message.client_ref).where(
        Message.id.between(700, 800), Message.client_ref.startswith("order-")
    ).order_by(Message.id).first()  # ordered: both databases pick the same row every run
    number = Message.select(Message.recipient).where(
        Message.id.between(N_MESSAGES // 2, N_MESSAGES), Message.recipient.startswith("+7701"),
        Message.recipient != QA_NUMBER).order_by(Message.id).first()
    return order_ref.client_ref, number.recipient


def national(number: str) -> str:
    """+77011234567 as a Kazakh support agent writes it: 8 701 123 45 67."""
    n = number[2:]
    return f"8 {n[:3]} {n[3:6]} {n[6:8]} {n[8:]}"


class ServerTimer:
    """WSGI middleware: the time the application spends on a request, body included, and the
    CPU time its thread spent on it (on a machine others load, the wall time also counts the
    waits for a core; the CPU time does not, and on SQLite it is nearly all of the work)."""

    def __init__(self, inner: Callable[..., Any]) -> None:
        self.inner = inner
        self.last = 0.0
        self.last_cpu = 0.0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        t0, c0 = time.perf_counter(), time.thread_time()
        body = b"".join(self.inner(environ, start_response))
        self.last, self.last_cpu = time.perf_counter() - t0, time.thread_time() - c0
        return [body]


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(url: str, reps: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Each shape's row of figures, and the same run's reference: what this machine gave at
    the same moments for a request that does no work of ours and for one database round trip
    (this VM's speed drifts by a fifth within an hour; the reference shows where it was)."""
    from tracker import accounts, create_app, reporting
    from tracker.db import db

    app = create_app({"database_url": url, "secret_key": "bench", "providers": {
        "fake": {}, "skycore": {"api_key": "k", "shortcode": "60856", "callback_token": "t"}}})
    app.config["WTF_CSRF_ENABLED"] = False
    # As a gunicorn worker runs it: its post_worker_init hook tunes the collector once the app
    # is loaded (tracker.gunicorn_conf, tracker.gctune).
    from tracker.gctune import tune_for_serving

    tune_for_serving()
    timer = ServerTimer(app.wsgi_app)
    app.wsgi_app = timer  # type: ignore[method-assign]
    with app.app_context(), db.connection_context():
        if not accounts.authenticate("bench", "bench password 1"):
            from tracker.models import User

            User.delete().where(User.username == "bench").execute()
            accounts.create_user("bench", "bench password 1", "viewer")
    with app.app_context(), db.connection_context():
        values = shape_values()
    client = app.test_client()
    login = client.post("/auth/login", data={"username": "bench",
                                             "password": "bench password 1"})
    assert login.status_code == 302, login.status_code
    # Rounds over every shape, not each shape's repetitions in a row: a burst of load from
    # elsewhere on the machine then lands on every shape alike instead of ruining one.
    todo = shapes(*values)
    timed: dict[str, dict[str, list[float]]] = {
        name: {k: [] for k in ("view", "cpu", "counts", "counts_cpu", "query", "counts_query")}
        for name, _ in todo}
    last: dict[str, Any] = {}
    later: dict[str, bool] = {}  # the page leaves its counts per status to a second request
    filters = {name: reporting.MessageFilter.from_args(params) for name, params in todo}
    reference: dict[str, list[float]] = {"healthz": [], "round_trip": []}
    for rep in range(reps + 5):  # the first 5 rounds warm caches and are not counted
        assert client.get("/healthz").status_code == 200  # Flask alone: no session, no query
        if rep >= 5:
            reference["healthz"].append(timer.last * 1000)
        for name, params in todo:
            t = timed[name]
            response = client.get("/messages", query_string=params)
            expected = 400 if reporting.filter_problems(params) else 200
            assert response.status_code == expected, (name, response.status_code)
            if rep >= 5:
                t["view"].append(timer.last * 1000)
                t["cpu"].append(timer.last_cpu * 1000)
            # The row of counts per status, as static/counts.js fetches it after the list,
            # when the page does not hold it.
            later[name] = b"data-counts=" in response.data
            if later[name]:
                counts = client.get("/messages/counts", query_string=params)
                assert counts.status_code == expected, (name, counts.status_code)
                if rep >= 5:
                    t["counts"].append(timer.last * 1000)
                    t["counts_cpu"].append(timer.last_cpu * 1000)
            last[name] = response
        with app.test_request_context("/messages"):
            db.connect(reuse_if_open=True)
            t0 = time.perf_counter()
            db.execute_sql("SELECT 1").fetchall()
            if rep >= 5:
                reference["round_trip"].append((time.perf_counter() - t0) * 1000)
            for name, _ in todo:
                t = timed[name]
                flt = filters[name]
                t0 = time.perf_counter()
                base = reporting.base_where(flt, "")  # as the view does
                where = base.status(flt.status)
                listed = reporting.list_messages(flt, "", where=where,
                                                 count_cap=reporting.COUNT_CAP)
                counted = listed.count or reporting.count_messages(flt, "", where=where)
                t1 = time.perf_counter()
                if later[name]:  # as message_counts does
                    reporting.status_counts(base, status=flt.status)
                t2 = time.perf_counter()
                if rep >= 5:
                    t["query"].append((t1 - t0) * 1000)
                    if later[name]:
                        t["counts_query"].append((t2 - t1) * 1000)
                last[name] = (last[name], listed, counted)
            if not db.is_closed() and "sqlite" not in url:
                db.close()
    rows = []
    for name, params in todo:
        response, listed, counted = last[name]
        t = timed[name]
        html = response.get_data(as_text=True)
        r = {"shape": name, "params": params, "rows": len(listed.rows),
             "count": counted.figure, "in_page": html.count('<tr class="m">'),
             "view_p50": p(t["view"], 0.5), "view_p95": p(t["view"], 0.95),
             "view_cpu_p95": p(t["cpu"], 0.95),
             "query_p50": p(t["query"], 0.5), "query_p95": p(t["query"], 0.95),
             "counts_later": later[name]}
        if later[name]:
            r.update({"counts_p50": p(t["counts"], 0.5), "counts_p95": p(t["counts"], 0.95),
                      "counts_cpu_p95": p(t["counts_cpu"], 0.95),
                      "counts_query_p50": p(t["counts_query"], 0.5),
                      "counts_query_p95": p(t["counts_query"], 0.95)})
        r["pass"] = r["view_p95"] <= GOAL_MS and r.get("counts_p95", 0) <= GOAL_MS
        rows.append(r)
        assert r["in_page"] == r["rows"], (name, r)
        counts = (f"{r['counts_query_p50']:6.2f} {r['counts_query_p95']:6.2f}  "
                  f"{r['counts_p50']:6.2f} {r['counts_p95']:6.2f}" if later[name]
                  else f"{'(in the page)':>27}")
        print(f"{name:30} {r['rows']:>4} {r['count']:>6}  {r['query_p50']:6.2f} "
              f"{r['query_p95']:6.2f}  {r['view_p50']:6.2f} {r['view_p95']:6.2f}  "
              f"{r['view_cpu_p95']:6.2f}  {counts}  {'PASS' if r['pass'] else 'FAIL'}",
              flush=True)
    return rows, {f"{name}_{q}": p(values, share) for name, values in reference.items()
                  for q, share in (("p50", 0.5), ("p95", 0.95))}


def plans(url: str) -> None:
    """The plan of the list's query and the status counts' for every shape (EXPLAIN QUERY PLAN on
    SQLite, EXPLAIN ANALYZE on Postgres: scan node, rows, time)."""
    from tracker import db as tdb
    from tracker import reporting

    tdb.db.initialize(tdb.connect_database(url))
    with tdb.db.connection_context():
        for name, params in shapes(*shape_values()):
            flt = reporting.MessageFilter.from_args(params)
            print(f"== {name} {params}")
            base = reporting.base_where(flt)
            counts = (reporting.grouped_sql(base) if base.searching else
                      reporting.each_capped_sql(base, [s.value for s in Status]))
            for label, (sql, args) in (("list", reporting.list_sql(flt, where=base.status(
                    flt.status))), ("counts", counts)):
                if "sqlite" in url:
                    lines = [r[3] for r in tdb.db.execute_sql("EXPLAIN QUERY PLAN " + sql, args)]
                else:
                    lines = [r[0].strip() for r in tdb.db.execute_sql(
                        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + sql, args)]
                    lines = [x for x in lines if "Scan" in x or "Sort" in x or "Execution" in x]
                print(f"  {label}: " + " | ".join(lines))


def print_reference(reference: dict[str, float]) -> None:
    print(f"same-run reference, p50/p95: GET /healthz (Flask alone) {reference['healthz_p50']:.2f}"
          f"/{reference['healthz_p95']:.2f} ms; one database round trip (SELECT 1)"
          f" {reference['round_trip_p50']:.2f}/{reference['round_trip_p95']:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--rebuild", action="store_true", help="build the data set anew")
    parser.add_argument("--reps", type=int, help="timed requests per shape (default 200;"
                        " --smoke: 3)")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL)
    parser.add_argument("--plans", action="store_true", help="print query plans, no timing")
    parser.add_argument("--smoke", action="store_true",
                        help="a check that it runs, in seconds: 3,000 messages in a throwaway "
                             "database, 3 reps, then the plans; figures mean nothing")
    args = parser.parse_args()
    if args.reps is None:
        args.reps = 3 if args.smoke else 200
    if args.smoke:
        args.rebuild = True
        with smoke_data_set(args.db, args.pg_admin_url):
            print(f"smoke: {N_MESSAGES:,} messages in a throwaway database; the figures are"
                  " not comparable with anything")
            url = ensure_data(args)
            print_reference(measure(url, args.reps)[1])
            plans(url)
        return
    url = ensure_data(args)
    if args.plans:
        plans(url)
        return
    print(f"\n{args.db}: {N_MESSAGES:,} messages, {N_MESSAGES * EVENTS_PER_MESSAGE:,} events;"
          f" {args.reps} timed requests per shape; goal: view p95 <= {GOAL_MS} ms server time")
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores here; others' work adds noise)")
    print(f"{'':43}{'the list (GET /messages)':^38}  {'its counts per status':^27}")
    print(f"{'shape':30} {'rows':>4} {'count':>6}  {'queries p50/p95':>13}  "
          f"{'view p50/p95':>13}  {'cpu p95':>6}  {'queries p50/p95':>13}  "
          f"{'view p50/p95':>13}  result")
    rows, reference = measure(url, args.reps)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print_reference(reference)
    worst = max(rows, key=lambda r: r["view_p95"])
    passed = sum(r["pass"] for r in rows)
    worst_cpu = max(rows, key=lambda r: r["view_cpu_p95"])
    later = [r for r in rows if r["counts_later"]]
    worst_counts = max(later, key=lambda r: r["counts_p95"]) if later else None
    print(f"\n{passed}/{len(rows)} shapes within {GOAL_MS} ms p95, the list and its counts each;"
          f" worst list: {worst['shape']} {worst['view_p95']:.2f} ms (CPU p95: "
          f"{worst_cpu['shape']} {worst_cpu['view_cpu_p95']:.2f} ms)"
          + (f"; worst counts: {worst_counts['shape']} {worst_counts['counts_p95']:.2f} ms"
             if worst_counts else ""))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"dashboard-{args.db}-{dt.datetime.now():%Y%m%d-%H%M%S}.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in [*rows, {"reference": reference}]))
    print(f"results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
