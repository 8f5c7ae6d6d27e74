"""Provider timestamps -> naive UTC, tolerant of the shapes providers actually send."""

from __future__ import annotations

import datetime as dt


def parse_timestamp(text: str | None, assume_tz: dt.tzinfo = dt.UTC) -> dt.datetime | None:
    """ISO 8601 or PostgreSQL-style (`2011-07-26 10:22:25.262743-04`) -> naive UTC, or None."""
    if not text or not text.strip():
        return None
    try:
        value = dt.datetime.fromisoformat(text.strip())
        if value.tzinfo is None:
            value = value.replace(tzinfo=assume_tz)
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):  # OverflowError: 9999-12-31T23:59-05:00 and the like
        return None  # a provider's clock is informative; a bad one must not drop the receipt
