"""The database proxy, its connection lifecycle and the one way to open a write transaction.

SQLite: one persistent connection per thread (connect costs ~0.4 ms, as much as a whole bare
request), WAL, and every write transaction is `BEGIN IMMEDIATE` behind a process-wide writer
lock (mutex + flock): a deferred transaction that upgrades to a write fails at once with
"database is locked", and SQLite's busy handler polls in growing sleeps while a flock waiter is
woken at once.

Durability (`sqlite_synchronous = "full"`, the default): an acknowledged receipt must survive
power loss, so `write_tx()` returns only after the WAL holding its commit is fsynced. SQLite's own
synchronous=FULL does that fsync inside COMMIT, i.e. while every other writer waits for the lock,
and on this disk an fsync takes 1-2 ms: writes were capped near one fsync each. Here the
connection runs synchronous=NORMAL (COMMIT writes the WAL frames, checkpoints still fsync) and
`write_tx()` fsyncs the WAL itself *after* releasing the lock: the next writer proceeds at once,
and concurrent fsyncs of the same file share the filesystem's journal commits (group commit).
Nothing is acknowledged before its own fsync returned; a crash before that loses only answers
never given. `"normal"` skips the fsync (process crashes are still safe; power loss may drop
the last commits).

Postgres: a connection pool per process, checked out per request and returned at teardown.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import hashlib
import itertools
import os
import re
import signal
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlparse

import peewee
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase

# Explicit adapters: the implicit datetime adapter is deprecated since Python 3.12, and this is
# the text form peewee reads back ("2026-01-01 12:00:00.000001").
sqlite3.register_adapter(dt.datetime, lambda value: value.isoformat(" "))
sqlite3.register_adapter(dt.date, lambda value: value.isoformat())

db = peewee.DatabaseProxy()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": 1,  # NORMAL; write_tx() fsyncs outside the lock (see the module docstring)
    "foreign_keys": 1,
    "cache_size": -64 * 1024,  # 64 MiB
    "busy_timeout": 5000,
}
WRITE_LOCK_TIMEOUT = 5.0  # seconds; past it the caller answers 503, the sender retries

# Errors that mean "the database cannot take this write now", never "the input was bad".
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    peewee.OperationalError,
    peewee.InterfaceError,
    MaxConnectionsExceeded,
)


class WriteLockTimeout(peewee.OperationalError):
    """Another process held the SQLite writer lock for longer than WRITE_LOCK_TIMEOUT."""


def connect_database(url: str, pool_size: int = 8, synchronous: str = "full") -> peewee.Database:
    """Build (but do not open) a database from a sqlite:// or postgres:// URL."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else parsed.path
        database = SqliteDatabase(path, pragmas=SQLITE_PRAGMAS, timeout=5,
                                  returning_clause=True)
        database.sync_commits = synchronous == "full"
        return database
    if parsed.scheme in ("postgres", "postgresql"):
        # Query options are libpq's (sslmode=require, connect_timeout=3, ...) and may name the
        # host or port themselves: `postgresql://app@/tracker?host=/var/run/postgresql` is
        # libpq's URL for a Unix socket (it was a TypeError: host given twice). A value in the
        # query wins over the URL's part.
        options: dict[str, Any] = {
            "user": parsed.username, "password": parsed.password,
            "host": parsed.hostname, "port": parsed.port}
        options.update((name, value) for name, value in parse_qsl(parsed.query)
                       if value or options.get(name) is None)
        return PostgresDatabase(
            (parsed.path or "/").lstrip("/"),
            max_connections=pool_size,
            stale_timeout=300,
            timeout=5,  # wait up to 5 s for a free pooled connection, then 503
            **options,
        )
    raise ValueError(f"database_url: unsupported scheme {parsed.scheme!r} (use sqlite or postgres)")


class SqliteDatabase(peewee.SqliteDatabase):
    """SQLite with a process-wide writer lock shared across threads and processes."""

    def init(self, database: str, *args: Any, **kwargs: Any) -> None:
        super().init(database, *args, **kwargs)
        self._mutex = threading.Lock()
        self._lock_path = f"{database}-writelock"
        self._lock_fd: int | None = None
        self._wal_path = f"{database}-wal"
        self.sync_commits = True

    def sync_wal(self) -> None:
        """fsync the WAL, making every commit so far durable (call it outside the lock)."""
        if not self.sync_commits:
            return
        try:
            # Opened per call: the WAL may be replaced (deleted when the last connection closes,
            # then created anew), and an old descriptor would sync a file no one reads.
            fd = os.open(self._wal_path, os.O_RDONLY)
        except FileNotFoundError:
            return  # no WAL left: a checkpoint copied it into the database and synced that
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Serialise writers: an in-process mutex, then an flock across processes."""
        if not self._mutex.acquire(timeout=WRITE_LOCK_TIMEOUT):
            raise WriteLockTimeout("database is locked (writer mutex)")
        try:
            fd = self._lock_file()
            _flock(fd, WRITE_LOCK_TIMEOUT)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._mutex.release()

    def _lock_file(self) -> int:
        # Opened lazily so a forked child never inherits the parent's descriptor state.
        if self._lock_fd is None:
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._lock_fd


class PostgresDatabase(PooledPostgresqlDatabase):
    """A pool that does not ping: peewee sends `SELECT 1` at every checkout, a round trip per
    request. A connection that died is seen at its first failing query (the request answers
    503) and psycopg2 then marks it closed, so the pool drops it at the next checkout."""

    def _is_closed(self, conn: Any) -> bool:
        return bool(conn.closed) or self._adapter.txn_status(conn) == self._adapter.txn_unknown


def _flock(fd: int, timeout: float) -> None:
    """Take the exclusive flock within `timeout` seconds or raise WriteLockTimeout.

    The wait is a blocking flock: the kernel wakes the waiter the moment the holder lets go.
    Polling instead leaves the lock idle between a release and the next poll, which measured
    as a third of the throughput (and, in threaded web workers, 630 against 832 callbacks/s).
    In the main thread a one-shot timer bounds it.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    if threading.current_thread() is not threading.main_thread():
        # No timer can interrupt another thread's flock. The wait is still bounded: the holder
        # is one of our processes inside a short transaction, the kernel releases its lock if
        # it dies, and this process's other threads time out on the mutex meanwhile (503).
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    if signal.getitimer(signal.ITIMER_REAL)[0]:
        _flock_polling(fd, timeout)
        return

    def _expired(_signum: int, _frame: Any) -> None:
        raise WriteLockTimeout("database is locked (writer lock)")

    previous = signal.signal(signal.SIGALRM, _expired)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            fcntl.flock(fd, fcntl.LOCK_EX)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except WriteLockTimeout:
        # The timer may have fired just after flock returned: never keep a lock we report lost.
        fcntl.flock(fd, fcntl.LOCK_UN)
        raise
    finally:
        signal.signal(signal.SIGALRM, previous)


def _flock_polling(fd: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.0001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise WriteLockTimeout("database is locked (writer lock)") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.001)


def is_sqlite(database: peewee.Database | None = None) -> bool:
    """True when the bound database is SQLite."""
    target = database or db.obj
    return isinstance(target, peewee.SqliteDatabase)


def on_connection(work: Callable[[], Any]) -> None:
    """Run `work` on this thread's connection; a broken connection is dropped, so the next
    step opens a fresh one (the worker's threads: dispatcher, webhook sender)."""
    try:
        db.connect(reuse_if_open=True)
        work()
    except UNAVAILABLE_ERRORS:
        with contextlib.suppress(Exception):
            db.close()
        raise


@contextlib.contextmanager
def write_tx(durable: bool = True) -> Iterator[None]:
    """The only way to open a transaction that writes (BEGIN IMMEDIATE + lock on SQLite).

    `durable=False` leaves the fsync to the caller's `make_durable()` (group commit: the next
    batch takes the lock while this one's fsync runs)."""
    database = db.obj
    if isinstance(database, SqliteDatabase):
        if database.in_transaction():
            with database.atomic():  # nested: a savepoint inside the outer IMMEDIATE tx
                yield
            return
        with database.writer_lock(), database.atomic("IMMEDIATE"):
            yield
        if durable:
            database.sync_wal()  # after the lock: other writers need not wait for our fsync
    else:
        with database.atomic():
            yield


@contextlib.contextmanager
def read_snapshot() -> Iterator[None]:
    """Reads that must agree with each other (a message and its timeline) from one snapshot.

    Postgres's default isolation (READ COMMITTED) gives each statement its own snapshot: a
    receipt committed between two reads showed a final status beside a timeline without the
    event that made it final (seen in CI). REPEATABLE READ keeps the first statement's
    snapshot; SQLite's read transaction (WAL) does the same from its first read."""
    database = db.obj
    if database.in_transaction():  # inside a transaction already: its snapshot rules
        yield
        return
    with database.atomic():
        if not isinstance(database, SqliteDatabase):
            database.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


@contextlib.contextmanager
def without_jit() -> Iterator[None]:
    """Postgres: this connection's statements run without JIT compilation meanwhile.

    For long reads of many small statements (an export's batches): Postgres compiles a
    statement whose estimated cost passes jit_above_cost (100,000), and a batch of 5,000 rows
    with the status-time subqueries is estimated past it on a table of 1 M rows. It spent
    38 ms compiling each 104 ms batch, a third of an export's time (EXPLAIN ANALYZE)."""
    database = db.obj
    if isinstance(database, SqliteDatabase):
        yield
        return
    with contextlib.suppress(peewee.ProgrammingError):  # a server without JIT (before 11)
        database.execute_sql("SET jit = off")
    try:
        yield
    finally:
        with contextlib.suppress(*UNAVAILABLE_ERRORS, peewee.ProgrammingError):
            database.execute_sql("RESET jit")  # the pooled connection goes back as it came


def make_durable() -> None:
    """Make every commit so far survive a power loss (SQLite: fsync the WAL; Postgres's
    COMMIT already is)."""
    database = db.obj
    if isinstance(database, SqliteDatabase):
        database.sync_wal()


@functools.lru_cache(maxsize=256)
def _placeholder_sql(sql: str, param: str) -> str:
    return sql if param == "?" else sql.replace("?", param)


def execute(sql: str, params: tuple[Any, ...] | list[Any] = (), prepare: bool = False) -> Any:
    """Run hand-written SQL written with `?` placeholders on either database (or with the
    bound database's own, `db.obj.param`, as reporting composes its statements).

    `prepare`: on Postgres, run it as a server-side prepared statement (for the callback path's
    statements, which run for every receipt). Postgres then parses and plans it once per
    connection instead of every time: half of a 0.25 ms match query, a fifth of the 0.6 ms store
    statement, CPU the server shares with the app on a small machine. (Not through a pooler in
    transaction mode, such as PgBouncer's, which does not keep a session's prepared
    statements; SQLite's own module already caches its statements.)"""
    database = db.obj
    if prepare and isinstance(database, PostgresDatabase):
        return _execute_prepared(database, sql, params)
    return database.execute_sql(_placeholder_sql(sql, database.param), params)


_prepared_on: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


@functools.lru_cache(maxsize=64)
def _prepared_statement(sql: str) -> tuple[str, str]:
    """(name, PREPARE statement) for `sql`: the name is derived from the text, so a changed
    statement never runs under an old name. Placeholders: `?`, or psycopg2's `%s`."""
    name = "tracker_" + hashlib.sha1(sql.encode(), usedforsecurity=False).hexdigest()[:16]
    numbers = itertools.count(1)
    return name, f"PREPARE {name} AS " + re.sub(r"\?|%s", lambda _: f"${next(numbers)}", sql)


def _execute_prepared(database: PostgresDatabase, sql: str,
                      params: tuple[Any, ...] | list[Any]) -> Any:
    name, prepare = _prepared_statement(sql)
    done = _prepared_on.setdefault(database.connection(), set())
    if name not in done:
        with peewee.__exception_wrapper__:  # psycopg2 errors as peewee's (UNAVAILABLE_ERRORS)
            database.cursor().execute(prepare)  # a session's statement: survives a rollback
        done.add(name)
    arguments = f" ({', '.join(['%s'] * len(params))})" if params else ""
    return database.execute_sql(f"EXECUTE {name}{arguments}", params)


def init_app(app: Any) -> None:
    """Bind the proxy to the configured database and register the request hooks."""
    cfg = app.config["TRACKER"]
    db.initialize(connect_database(cfg["database_url"], cfg["db_pool_size"],
                                   cfg["sqlite_synchronous"]))

    @app.before_request
    def _open() -> None:
        with contextlib.suppress(*UNAVAILABLE_ERRORS):
            db.connect(reuse_if_open=True)  # a down database is reported by the view

    @app.teardown_request
    def _close(_exc: BaseException | None) -> None:
        # Postgres: return the connection to the pool. SQLite: keep the per-thread connection.
        if not is_sqlite() and not db.is_closed():
            db.close()
