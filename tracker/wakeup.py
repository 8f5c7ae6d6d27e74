"""Wake the dispatcher the moment a message is queued, instead of at its next look.

Postgres: the transaction that queues a message also runs `NOTIFY`, which Postgres delivers at
commit to every listening dispatcher on every host; a dispatcher listens on a connection of its
own (not one of the pool's: a pooled connection is shared by requests and returned between them).

SQLite (one host): a watcher reads `PRAGMA data_version` every WATCH_INTERVAL on its own
connection. The value changes whenever another connection has committed, and reading it touches
only the WAL index in shared memory (a few microseconds), so no wake-up channel between the web
processes and the worker is needed. Any commit wakes the dispatcher (a callback too), which then
looks for due messages with one cheap read before it takes the writer lock.
"""

from __future__ import annotations

import contextlib
import logging
import select
import sqlite3
import threading
from collections.abc import Callable

from .db import db, execute, is_sqlite

log = logging.getLogger(__name__)

CHANNEL = "tracker_dispatch"
WATCH_INTERVAL = 0.02  # seconds between two looks at SQLite's data_version
RECONNECT_DELAY = 2.0  # after the listening connection failed


def notify() -> None:
    """Tell every dispatcher that a message is due (call inside the write transaction that
    queued it: Postgres delivers the notification only if, and when, it commits)."""
    if not is_sqlite():
        execute(f"NOTIFY {CHANNEL}")


class Watcher(threading.Thread):
    """Calls `on_change()` whenever the database may hold a newly queued message."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        super().__init__(name="dispatch-wakeup", daemon=True)
        self.on_change = on_change
        self.stopping = threading.Event()
        self.database = db.obj  # bound now: the thread must not depend on the proxy later

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                if is_sqlite(self.database):
                    self._watch_sqlite()
                else:
                    self._listen_postgres()
            except Exception as exc:  # the dispatcher still looks every dispatch interval
                log.warning("dispatch wake-up channel failed (%r); retrying in %.0f s", exc,
                            RECONNECT_DELAY)
                self.on_change()  # something may have been missed meanwhile
                self.stopping.wait(RECONNECT_DELAY)

    def _watch_sqlite(self) -> None:
        conn = sqlite3.connect(self.database.database, timeout=5, check_same_thread=False)
        try:
            last = conn.execute("PRAGMA data_version").fetchone()[0]
            while not self.stopping.wait(WATCH_INTERVAL):
                version = conn.execute("PRAGMA data_version").fetchone()[0]
                if version != last:
                    last = version
                    self.on_change()
        finally:
            conn.close()

    def _listen_postgres(self) -> None:
        import psycopg2

        conn = psycopg2.connect(dbname=self.database.database, **self.database.connect_params)
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f"LISTEN {CHANNEL}")
            self.on_change()  # messages queued before we listened
            while not self.stopping.is_set():
                if select.select([conn], [], [], 1.0)[0]:
                    conn.poll()
                    if conn.notifies:
                        conn.notifies.clear()
                        self.on_change()
        finally:
            with contextlib.suppress(Exception):
                conn.close()
