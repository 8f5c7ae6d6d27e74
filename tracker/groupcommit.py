"""Group commit: writes that arrive together share one transaction and one fsync.

Each request thread hands its writes (a function) to `GroupCommit.run` and waits. One of the
waiting threads, the leader, runs every write queued so far in a single write transaction,
commits, makes the commit durable (one fsync of the WAL) and only then wakes the threads whose
writes it ran: each is answered after its own rows are durable, never before. Meanwhile the
next writes queue up, and the first of them leads the next batch. Threads never wait for a batch
to fill; under light load a batch is one write and costs what a transaction of its own did.

SQLite only: it has one writer at a time anyway, and measured with bench/ingest.py (2 workers x
8 threads) group commit took 695 to 870 callbacks/s. Postgres runs concurrent transactions
itself, and one leader running everybody's statements in turn made them wait on each other
(765 callbacks/s one transaction each, 607 grouped); there `run` is a transaction of its own.

A write that fails for its own reasons (a bug, a value the database refuses) must not take the
others with it: the batch is rolled back and its writes run again one transaction each, so
only that one fails. A database that is down fails them all, and their callers answer 503.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .db import UNAVAILABLE_ERRORS, WriteLockTimeout, is_sqlite, make_durable, write_tx

T = TypeVar("T")

MAX_BATCH = 64  # writes per transaction: bounds how long one batch holds the writer lock
WAIT_SECONDS = 30.0  # past any writer-lock timeout: a follower never waits forever


class GroupCommitTimeout(WriteLockTimeout):
    """The write was not run in time: the database is as good as unavailable (503); the write
    may still run later, and a sender's retry is then a duplicate."""


class _Write(Generic[T]):
    __slots__ = ("done", "error", "result", "wake", "work")

    def __init__(self, work: Callable[[], T]) -> None:
        self.work = work
        self.wake = threading.Event()
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[no-any-return]


class GroupCommit:
    """One per process: the queue of writes waiting for a transaction, and who leads."""

    def __init__(self, max_batch: int = MAX_BATCH) -> None:
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: deque[_Write[Any]] = deque()
        self._leading = False
        self.batches = 0  # transactions run so far (with `writes`: the mean batch size)
        self.writes = 0

    def run(self, work: Callable[[], T]) -> T:
        """Run `work` (its writes) in a shared write transaction; its result once durable."""
        if not is_sqlite():  # Postgres runs concurrent transactions itself: one each
            with write_tx():
                return work()
        write = _Write(work)
        with self._lock:
            self._queue.append(write)
            lead = not self._leading
            self._leading = True
        if not lead:
            if not write.wake.wait(WAIT_SECONDS):
                with self._lock:
                    if write in self._queue and not write.wake.is_set():
                        self._queue.remove(write)
                        raise GroupCommitTimeout("no transaction took this write in time")
                write.wake.wait()  # taken into a batch, or promoted, just now
            if write.done:
                return write.outcome()
            # Woken without a result: promoted, this thread leads the next batch.
        self._lead()
        return write.outcome()

    def _lead(self) -> None:
        with self._lock:
            batch = [self._queue.popleft()
                     for _ in range(min(self.max_batch, len(self._queue)))]
            self.batches += 1
            self.writes += len(batch)
        try:
            _run_together(batch)
            try:
                make_durable()
            except OSError as exc:  # the commits may not survive a power loss: none is acked
                for write in batch:
                    if write.error is None:
                        write.error = exc
        finally:
            self._pass_lead()
        for write in batch:
            write.done = True
            write.wake.set()

    def _pass_lead(self) -> None:
        """The next queued write's thread leads; nobody leads while the queue is empty."""
        with self._lock:
            if self._queue:
                self._queue[0].wake.set()
            else:
                self._leading = False


def _run_together(batch: list[_Write[Any]]) -> None:
    try:
        with write_tx(durable=False):
            for write in batch:
                write.result = write.work()
        return
    except UNAVAILABLE_ERRORS as exc:  # the database, not a write: every one of them fails
        for write in batch:
            write.error = exc
        return
    except Exception as exc:
        if len(batch) == 1:
            batch[0].error = exc
            return
    for write in batch:  # rolled back: each again on its own, so only the culprit fails
        try:
            with write_tx(durable=False):
                write.result = write.work()
        except Exception as exc:
            write.error = exc
