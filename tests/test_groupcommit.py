"""Group commit on a real SQLite file: writes that arrive together share a transaction, each
caller gets its own result only once its rows are committed, and one bad write fails alone."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import peewee
import pytest
from conftest import make_config, running

from tracker.db import db, execute
from tracker.groupcommit import GroupCommit

WRITERS = 8


@pytest.fixture
def sqlite_app(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'gc.sqlite3'}"
    with running(make_config(url)):
        execute("CREATE TABLE note (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")
        yield tmp_path / "gc.sqlite3"


def _insert(text: str) -> int:
    return execute("INSERT INTO note (text) VALUES (?) RETURNING id", (text,)).fetchone()[0]


def _in_threads(group: GroupCommit, works: list, path: Path) -> list:
    """Run each work through `group` from a thread of its own; each thread checks, from a
    connection of its own, that its row is committed as soon as `run` returned."""
    results: list = [None] * len(works)

    def call(i: int) -> None:
        db.connect(reuse_if_open=True)
        try:
            results[i] = group.run(works[i])
            if isinstance(results[i], int):
                with sqlite3.connect(path) as other:
                    seen = other.execute("SELECT text FROM note WHERE id = ?",
                                         (results[i],)).fetchone()
                results[i] = (results[i], seen)
        except Exception as exc:
            results[i] = exc
        finally:
            db.close()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(works))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_writes_queued_behind_a_transaction_share_the_next_one(sqlite_app: Path) -> None:
    group = GroupCommit()
    release = threading.Event()

    def first() -> int:  # holds the first transaction until the others are queued
        release.wait(10)
        return _insert("first")

    works = [first] + [lambda i=i: _insert(f"w{i}") for i in range(WRITERS - 1)]
    waiter = threading.Thread(target=lambda: (_wait_queued(group, WRITERS - 1), release.set()))
    waiter.start()
    results = _in_threads(group, works, sqlite_app)
    waiter.join()

    assert all(isinstance(r, tuple) and r[1] is not None for r in results), results
    assert group.writes == WRITERS
    assert group.batches == 2  # the first alone, then the seven that queued meanwhile


def test_a_failing_write_fails_alone(sqlite_app: Path) -> None:
    group = GroupCommit()
    release = threading.Event()

    def first() -> int:
        release.wait(10)
        return _insert("first")

    def bad() -> int:
        _insert("half of a bad write")
        raise ValueError("bad write")

    works = [first, lambda: _insert("a"), bad, lambda: _insert("b")]
    waiter = threading.Thread(target=lambda: (_wait_queued(group, 3), release.set()))
    waiter.start()
    results = _in_threads(group, works, sqlite_app)
    waiter.join()

    assert isinstance(results[2], ValueError)
    assert all(isinstance(results[i], tuple) and results[i][1] for i in (0, 1, 3)), results
    with sqlite3.connect(sqlite_app) as conn:
        texts = sorted(t for (t,) in conn.execute("SELECT text FROM note"))
    assert texts == ["a", "b", "first"]  # nothing of the bad write, everything of the others


def test_a_database_error_fails_the_whole_batch(sqlite_app: Path) -> None:
    group = GroupCommit()
    release = threading.Event()

    def first() -> int:
        release.wait(10)
        return _insert("first")

    def broken() -> int:
        raise peewee.OperationalError("disk I/O error")

    works = [first, lambda: _insert("a"), broken]
    waiter = threading.Thread(target=lambda: (_wait_queued(group, 2), release.set()))
    waiter.start()
    results = _in_threads(group, works, sqlite_app)
    waiter.join()

    assert isinstance(results[0], tuple)
    assert isinstance(results[1], peewee.OperationalError)  # the caller answers 503: retried
    assert isinstance(results[2], peewee.OperationalError)


def _wait_queued(group: GroupCommit, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(group._queue) < count and time.monotonic() < deadline:
        time.sleep(0.005)
