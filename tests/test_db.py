"""SQLite durability: a write transaction returns only after its WAL is fsynced, and that fsync
happens after the writer lock is released (other writers never wait for our disk)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

import peewee
import pytest

from tracker import migrations
from tracker.db import connect_database, db, execute, write_tx


def _open(path: Path, synchronous: str) -> Any:
    database = connect_database(f"sqlite:///{path}", synchronous=synchronous)
    db.initialize(database)
    database.connect()
    migrations.upgrade(database, log=lambda _line: None)
    return database


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Record every fdatasync: the file, and whether the writer lock was free at that moment."""
    calls: list[tuple[str, bool]] = []
    real = os.fdatasync

    def spy(fd: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}")
        probe = os.open(name.replace("-wal", "-writelock"), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if the lock is held
            fcntl.flock(probe, fcntl.LOCK_UN)
            free = True
        except BlockingIOError:
            free = False
        finally:
            os.close(probe)
        calls.append((name, free))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", spy)
    return calls


def test_full_fsyncs_the_wal_after_the_lock_is_released(tmp_path: Path,
                                                         fsyncs: list[tuple[str, bool]]) -> None:
    database = _open(tmp_path / "t.sqlite3", "full")
    try:
        fsyncs.clear()
        with write_tx():
            execute("INSERT INTO lease (name, owner, expires_at) VALUES ('a', 'b', ?)",
                    ("2026-01-01 00:00:00",))
            assert fsyncs == []  # nothing synced while the transaction is open
        assert fsyncs == [(str(tmp_path / "t.sqlite3-wal"), True)]
        # Nested transactions sync once, when the outermost one commits.
        fsyncs.clear()
        with write_tx(), write_tx():
            execute("UPDATE lease SET owner = 'c'")
        assert len(fsyncs) == 1
    finally:
        database.close()


def test_normal_does_not_fsync_on_commit(tmp_path: Path,
                                         fsyncs: list[tuple[str, bool]]) -> None:
    database = _open(tmp_path / "t.sqlite3", "normal")
    try:
        fsyncs.clear()
        with write_tx():
            execute("INSERT INTO lease (name, owner, expires_at) VALUES ('a', 'b', ?)",
                    ("2026-01-01 00:00:00",))
        assert fsyncs == []
        assert execute("PRAGMA synchronous").fetchone()[0] == 1
    finally:
        database.close()


def test_a_failed_transaction_is_not_synced(tmp_path: Path,
                                            fsyncs: list[tuple[str, bool]]) -> None:
    database = _open(tmp_path / "t.sqlite3", "full")
    try:
        fsyncs.clear()
        with pytest.raises(ZeroDivisionError), write_tx():
            execute("INSERT INTO lease (name, owner, expires_at) VALUES ('a', 'b', ?)",
                    ("2026-01-01 00:00:00",))
            1 / 0  # noqa: B018 - the body fails after a write
        assert fsyncs == []
        assert execute("SELECT count(*) FROM lease").fetchone()[0] == 0
    finally:
        database.close()


def test_prepared_statements_run_once_prepared_per_connection(app) -> None:
    """The callback path's statements run as server-side prepared statements on Postgres
    (parsed and planned once per connection); on SQLite `prepare` changes nothing. Results
    are those of the plain statement, and a rolled-back transaction keeps the statement."""
    sql = "SELECT ? + 1, ?"
    assert tuple(execute(sql, (1, "a"), prepare=True).fetchone()) == (2, "a")
    assert tuple(execute(sql, (41, "b"), prepare=True).fetchone()) == (42, "b")
    if isinstance(db.obj, peewee.SqliteDatabase):
        return
    names = [row[0] for row in execute(
        "SELECT name FROM pg_prepared_statements WHERE name LIKE ?", ("tracker_%",)).fetchall()]
    assert len(names) == 1
    with pytest.raises(peewee.IntegrityError), write_tx():
        assert tuple(execute(sql, (2, "c"), prepare=True).fetchone()) == (3, "c")
        execute("INSERT INTO api_key (name) VALUES (NULL)")  # fails: the transaction rolls back
    assert tuple(execute(sql, (3, "d"), prepare=True).fetchone()) == (4, "d")


def test_reads_in_a_snapshot_agree_while_others_commit(app) -> None:
    """A message and its timeline read for the API or the message page come from one moment:
    a receipt committed between the two reads (another connection, as another worker's) is
    in neither, never in the status alone. Outside a snapshot the second read sees it."""
    import threading

    from tracker import correlation, sending
    from tracker.db import read_snapshot
    from tracker.models import Event, Message
    from tracker.status import Status

    message = sending.enqueue(sending.NewMessage(to="+15551234567", text="hi", provider="fake"),
                              source="test")

    def receipt_elsewhere(status: Status) -> None:
        def work() -> None:
            with app.app_context(), db.connection_context(), write_tx():
                correlation.set_status(message.id, status)
                Event.create(message=message.id, kind="receipt", source="callback",
                             status=status, applied=True)
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()

    with read_snapshot():
        events = list(Event.select().where(Event.message == message.id))
        receipt_elsewhere(Status.ACCEPTED)
        status = Message.get_by_id(message.id).status
    assert (status, len(events)) == ("queued", 1)  # as of one moment: before the receipt

    events = list(Event.select().where(Event.message == message.id))
    receipt_elsewhere(Status.DELIVERED)
    assert Message.get_by_id(message.id).status == "delivered" and len(events) == 2  # skewed


@pytest.mark.parametrize(("url", "expected"), [
    # libpq's URL for a Unix socket: no host in the URL, the socket's folder in the query.
    ("postgresql://app@/tracker?host=/run/postgresql",
     {"user": "app", "host": "/run/postgresql", "port": None}),
    ("postgres://app:s3cret@db.example:5433/tracker?sslmode=require&connect_timeout=3",
     {"user": "app", "password": "s3cret", "host": "db.example", "port": 5433,
      "sslmode": "require", "connect_timeout": "3"}),
    ("postgresql://app@db.example/tracker?host=replica.example&port=6432",
     {"host": "replica.example", "port": "6432"}),  # the query's value wins
])
def test_postgres_urls_take_libpq_options_from_the_query(url: str, expected: dict) -> None:
    database = connect_database(url)
    assert database.database == "tracker"
    assert {name: database.connect_params.get(name) for name in expected} == expected
