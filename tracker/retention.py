"""Retention: old raw callbacks, and old messages with their events, deleted in small batches.

`[retention_days]` has two keys, each 0 (or absent) to keep forever:
- `callbacks`: raw provider requests and poll answers received more than that many days ago.
  Events that came from one keep their place on the timeline, without the link to it (the
  foreign key sets it to null, through the index of m0012).
- `messages`: messages created more than that many days ago and final, with their events,
  outbox rows and webhook deliveries (foreign keys cascade), and orphan receipts received
  before then. A message not final yet is never deleted.

The worker's lease holder runs `purge` (tracker.jobs.apply_retention). Each batch is one short
transaction of at most BATCH rows, oldest first through an index on the age column, and after
each the job pauses PAUSE_FACTOR times as long as the batch took (at least MIN_PAUSE): on SQLite
the writer lock is then free 95 % of the time for callbacks to take, and on Postgres the
server's CPU mostly theirs; the slower the machine is under load, the slower the job goes.
bench/retention.py measures what it costs the callback path.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from .db import execute, write_tx
from .errors import ConfigError
from .models import utcnow

log = logging.getLogger(__name__)

KEYS = ("callbacks", "messages")
BATCH = 1000
MIN_PAUSE = 0.05  # seconds between two batches, however quick
# pause = 19 x the batch's own time: deletes hold the writer (and a core) at most 5 % of the
# time. With 9 (10 %) ingest lost 11 % on SQLite in bench/retention.py; at 19 the job still
# deletes about a million rows in a quarter of an hour under full callback load.
PAUSE_FACTOR = 19.0

# Each: the ids of the oldest BATCH rows past the cutoff, through an index on its age column.
_OLDEST = {
    "callback": "SELECT id FROM callback WHERE received_at < ? ORDER BY received_at LIMIT ?",
    # Only final messages: the message_created_at index, skipping the few not final.
    "message": "SELECT id FROM message WHERE created_at < ? AND status_rank = 3"
               " ORDER BY created_at LIMIT ?",
    # Orphans never matched: the partial orphan index holds them alone.
    "event": "SELECT id FROM event WHERE message_id IS NULL AND received_at < ? LIMIT ?",
}


def validate(section: Any) -> dict[str, int]:
    """`[retention_days]` as {"callbacks": days, "messages": days} (0: keep forever)."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError("retention_days: expected a table (callbacks = DAYS, messages = DAYS)")
    out = {}
    for key, value in section.items():
        if key not in KEYS:
            raise ConfigError(f"retention_days.{key}: unknown key; one of {', '.join(KEYS)}")
        days = _days(key, value)
        out[key] = days
    return {key: out.get(key, 0) for key in KEYS}


def _days(key: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():  # from TRACKER_RETENTION_DAYS__…
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"retention_days.{key}: expected a whole number of days (0: keep "
                          f"forever), got {value!r}")
    return value


def enabled(days: dict[str, int]) -> bool:
    """True when anything is ever deleted."""
    return any(days.get(key) for key in KEYS)


def purge(days: dict[str, int], *, stop: Callable[[float], bool] | None = None,
          now: dt.datetime | None = None, batch: int = BATCH) -> Counter[str]:
    """Delete what is past its retention, a batch at a time, until nothing is left or
    `stop(pause)` (called between batches: it waits up to `pause` seconds) says to stop.
    Returns the rows deleted per table."""
    from . import metrics

    now = now or utcnow()
    stop = stop or _sleep
    deleted: Counter[str] = Counter()
    plan = []
    if days.get("callbacks"):
        plan.append(("callback", now - dt.timedelta(days=days["callbacks"])))
    if days.get("messages"):
        cutoff = now - dt.timedelta(days=days["messages"])
        plan += [("message", cutoff), ("event", cutoff)]
    for table, cutoff in plan:
        while True:
            started = time.monotonic()
            count = delete_batch(table, cutoff, batch)
            deleted[table] += count
            metrics.RETENTION_DELETED.labels(table).inc(count)
            if count < batch:
                break
            if stop(max(MIN_PAUSE, (time.monotonic() - started) * PAUSE_FACTOR)):
                log.info("retention stopped with more to delete: %s", dict(deleted))
                return deleted
    if deleted:
        log.info("retention deleted %s", ", ".join(f"{n} {t}(s)" for t, n in deleted.items()))
    return deleted


def delete_batch(table: str, cutoff: dt.datetime, batch: int) -> int:
    """Delete at most `batch` of the oldest rows of `table` past `cutoff`, in one transaction;
    how many were deleted."""
    with write_tx():
        cursor = execute(f"DELETE FROM {table} WHERE id IN ({_OLDEST[table]})",  # noqa: S608
                         (cutoff, batch))
        return cursor.rowcount


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False
