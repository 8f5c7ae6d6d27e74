"""Per-provider send rate limit shared by every dispatcher process, kept in the database.

One row per provider holds the earliest time the next send may start. Reserving a slot is one
atomic UPDATE (`next_at = max(next_at, now) + interval`), so dispatchers in any number of
processes or hosts never exceed the rate between them, on SQLite (writer lock) and Postgres
(row lock) alike. Times are Unix seconds in a float column: the arithmetic stays portable SQL.
"""

from __future__ import annotations

import time

from .db import execute, write_tx

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
