"""A second reference for bench/ingest.py: the "lean" callback shape of perf-baseline.md §5.

perf-baseline.md set the ingest goals (45 % of bare on SQLite, 25 % on Postgres) from this shape
measured once on another day: one Flask POST route that parses the Skycore postback with
defusedxml, then stores the raw body and moves the message's status in two hand-written
statements, on a connection kept per thread (SQLite: BEGIN IMMEDIATE behind a mutex + flock;
Postgres: one transaction). No event row, no dedupe, no verdict, no timeline, no signature or
token check: it is the floor of any real callback path, not a product. Measuring it in the same
run as bare and the tracker tells how much of a gap is the machine (its disk, its gunicorn) and
how much is the tracker.

It runs against the tracker's own migrated, seeded database (LEAN_DATABASE_URL), so every index
the dashboard needs is updated here too. LEAN_FSYNC=1 makes SQLite as durable as the tracker's
default (`sqlite_synchronous = "full"`: the WAL is fsynced after the lock, before the answer).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import sqlite3
import threading
from typing import Any
from urllib.parse import urlparse

from defusedxml.ElementTree import fromstring
from flask import Flask, Response, request

URL = os.environ["LEAN_DATABASE_URL"]
FSYNC = os.environ.get("LEAN_FSYNC") == "1"
RANK = {"sent": 2, "delivered": 3}
INSERT = ("INSERT INTO callback (provider, method, path, query, headers, body, remote_addr,"
          " received_at, verdict) VALUES (?, 'POST', '/callbacks/skycore/***', '', '[]', ?, ?,"
          " ?, 'applied')")
UPDATE = ("UPDATE message SET status = ?, status_rank = ?, updated_at = ?"
          " WHERE provider = 'skycore' AND provider_message_id = ? AND status_rank < ?")

app = Flask(__name__)
_conn = threading.local()  # a connection per thread, as the tracker keeps them
_mutex = threading.Lock()


class Sqlite:
    def __init__(self, path: str) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=wal", "synchronous=1", "busy_timeout=5000",
                       "cache_size=-65536"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.lock_fd = os.open(f"{path}-lean-lock", os.O_RDWR | os.O_CREAT, 0o600)

    def store(self, params: tuple[Any, ...], update: tuple[Any, ...]) -> None:
        with _mutex:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.execute(INSERT, params)
                self.conn.execute(UPDATE, update)
                self.conn.execute("COMMIT")
            finally:
                fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
        if FSYNC:
            fd = os.open(f"{self.path}-wal", os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)


class Postgres:
    def __init__(self, url: str) -> None:
        import psycopg2

        self.conn = psycopg2.connect(url)

    def store(self, params: tuple[Any, ...], update: tuple[Any, ...]) -> None:
        with self.conn, self.conn.cursor() as cur:  # one transaction, committed on exit
            cur.execute(INSERT.replace("?", "%s"), params)
            cur.execute(UPDATE.replace("?", "%s"), update)


def database() -> Sqlite | Postgres:
    if not hasattr(_conn, "db"):  # opened in the worker's threads, never before fork
        parsed = urlparse(URL)
        _conn.db = (Sqlite(URL[len("sqlite:///"):]) if parsed.scheme == "sqlite"
                    else Postgres(URL))
    return _conn.db


@app.post("/callbacks/<provider>/<token>")
def receive(provider: str, token: str) -> Response:
    body = request.get_data(cache=True)
    root = fromstring(body, forbid_dtd=True)
    tracking_id = (root.findtext("TRACKINGID") or "").strip()
    status = "delivered" if (root.findtext("CODE") or "").strip() == "N202" else "sent"
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(" ")  # as the tracker stores it
    database().store((provider, body, request.remote_addr, now),
                     (status, RANK[status], now, tracking_id, RANK[status]))
    return Response("OK\n", status=200, mimetype="text/plain")
