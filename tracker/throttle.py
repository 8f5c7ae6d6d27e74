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


def reserve(provider: str, interval: float, now: float | None = None) -> float:
    """Reserve the provider's next send slot; seconds to wait until it starts (0 = now)."""
    now = time.time() if now is None else now
    with write_tx():
        row = execute(_RESERVE, (now, now, interval, provider)).fetchone()
        if row is None:
            execute(_ENSURE, (provider,))
            row = execute(_RESERVE, (now, now, interval, provider)).fetchone()
    start = row[0] - interval
    return max(0.0, start - now)
