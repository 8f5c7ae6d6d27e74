"""The expiry job: a message still not final after its validity becomes `expired`, inferred.

Inferred, because no provider said so: a provider's final receipt that arrives later still
overrides it (DESIGN.md's one exception to "final is final"), and the timeline says which.
"""

from __future__ import annotations

import datetime as dt

from . import correlation
from .db import write_tx
from .models import Event, Message, utcnow
from .status import Status


def expire_overdue(now: dt.datetime | None = None, limit: int = 500) -> int:
    """Expire up to `limit` overdue messages; returns how many changed."""
    now = now or utcnow()
    overdue = list(Message.select(Message.id, Message.provider, Message.expires_at)
                   .where((Message.status_rank < 3) & (Message.expires_at < now))
                   .order_by(Message.expires_at).limit(limit).tuples())
    expired = 0
    for message_id, provider, expires_at in overdue:
        with write_tx():
            # The guarded UPDATE: a receipt that made the message final meanwhile wins.
            if not correlation.set_status(message_id, Status.EXPIRED, inferred=True,
                                          occurred_at=now, detail="validity ran out"):
                continue
            Message.update(due_at=None, claimed_until=None, updated_at=now).where(
                Message.id == message_id).execute()
            Event.create(message=message_id, kind="expired", source="worker", provider=provider,
                         status=Status.EXPIRED, applied=True, received_at=now,
                         detail=f"not final by {expires_at:%Y-%m-%d %H:%M:%S} UTC (its validity);"
                                " inferred, a later provider receipt overrides it")
            expired += 1
    return expired
