"""Rate limits kept in the database, shared by every process: per-provider send slots, and
wrong attempts (API keys) per address.

One row per provider holds the earliest time the next send may start. Reserving a slot is one
atomic UPDATE (`next_at = max(next_at, now) + interval`), so dispatchers in any number of
processes or hosts never exceed the rate between them, on SQLite (writer lock) and Postgres
(row lock) alike. Times are Unix seconds in a float column: the arithmetic stays portable SQL.
"""

from __future__ import annotations

import datetime as dt
import math
import time

from .db import execute, write_tx
from .models import LoginFailure, utcnow

_ENSURE = ("INSERT INTO provider_throttle (provider, next_at) VALUES (?, 0)"
           " ON CONFLICT (provider) DO NOTHING")
_RESERVE = ("UPDATE provider_throttle SET next_at = CASE WHEN next_at > ? THEN next_at ELSE ? END"
            " + ? WHERE provider = ? RETURNING next_at")


def reserve(provider: str, interval: float, count: int = 1) -> float:
    """Reserve the provider's next `count` send slots, `interval` apart; returns when the first
    one starts (Unix time, never before now). Slot i starts `i * interval` after it."""
    span = interval * count
    with write_tx():
        now = time.time()  # read under the lock: a wait for it must not move slots earlier
        row = execute(_RESERVE, (now, now, span, provider)).fetchone()
        if row is None:
            execute(_ENSURE, (provider,))
            row = execute(_RESERVE, (now, now, span, provider)).fetchone()
    return row[0] - span


# -- wrong attempts --------------------------------------------------------------------------
# Wrong API keys (tracker.web.api) are counted per address in the login_failure table, beside
# the dashboard's wrong passwords (tracker.accounts), under keys of their own ("apikey:<addr>"):
# every web worker and host shares the count, and old rows age out the same way.


def failure_wait(key: str, limit: int, window: dt.timedelta,
                 now: dt.datetime | None = None) -> int:
    """Seconds until `key` may be tried again: 0 while it has fewer than `limit` failures in
    the last `window`, else until the oldest of its last `limit` ages out (rounded up)."""
    now = now or utcnow()
    recent = list(LoginFailure.select(LoginFailure.at)
                  .where((LoginFailure.key == key) & (LoginFailure.at > now - window))
                  .order_by(LoginFailure.at.desc()).limit(limit).tuples())
    if len(recent) < limit:
        return 0
    return max(1, math.ceil((recent[-1][0] + window - now).total_seconds()))


def record_failure(key: str, window: dt.timedelta, now: dt.datetime | None = None) -> None:
    """Count one failure of `key`, and forget its failures older than `window`."""
    now = now or utcnow()
    with write_tx():
        LoginFailure.delete().where((LoginFailure.key == key)
                                    & (LoginFailure.at <= now - window)).execute()
        LoginFailure.insert(key=key, at=now).execute()
