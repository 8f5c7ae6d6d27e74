"""When a message's current status happened, and whose clock says so.

`message.status_at` is the time that came with the status: the provider's time in a receipt,
or ours for a cancel or an expiry the tracker decided. Many receipts carry no time at all (the
offline `fake` provider's, AlphaSMS hooks without one, polls of some APIs); then status_at
stays empty, so that a provider's time and ours are never confused. Where a time is shown or
measured (the message page, the API, exports, the overview's latency) it falls back to when
the tracker received the receipt that set the status (the applied receipt event's
received_at), and says which one it is:

- "provider": the provider's own time for the status;
- "tracker": a time the tracker set (canceled, or an expiry it inferred);
- "received": the provider gave no time: when its receipt was received here.

A status the send answer set (accepted, or refused at sending) has no status time: the
submission time says when.

Computed where it is read rather than stored, so nothing is rewritten and history recorded
before this rule reads the same way. The fallback is one probe of the event table's
(message_id, id) index, and only for messages without a status_at.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import peewee as pw
from peewee import fn

from .models import Event, Message

PROVIDER, TRACKER, RECEIVED = "provider", "tracker", "received"
SOURCES = (PROVIDER, TRACKER, RECEIVED)
UNSENT = ("queued", "scheduled")  # no receipt can set these (rank 0): nothing to look up


@dataclass(frozen=True)
class StatusTime:
    """A message's status time and whose clock it is (SOURCES); both None before any status
    change was recorded (a queued message)."""

    at: dt.datetime | None
    source: str | None


def of(message: Message, events: Iterable[Event] | None = None) -> StatusTime:
    """The status time of one message; `events`: its timeline when the caller has it already."""
    if message.status_at is not None:
        ours = message.status == "canceled" or message.status_inferred
        return StatusTime(message.status_at, TRACKER if ours else PROVIDER)
    if message.status in UNSENT:
        return StatusTime(None, None)
    if events is None:
        received = _applied_receipt(Event.message == message.id, message.status).scalar()
    else:
        received = max((e.received_at for e in events if e.kind == "receipt" and e.applied
                        and e.status == message.status), default=None)
    if isinstance(received, str):  # SQLite hands back max() of a text column as text
        received = dt.datetime.fromisoformat(received)
    return StatusTime(received, RECEIVED) if received else StatusTime(None, None)


# SQL over the `message` table (raw queries): when the event that set the current status was
# received, and the status time as shown.
RECEIVED_SQL = ("(SELECT max(e.received_at) FROM event e WHERE e.message_id = message.id"
                " AND e.kind = 'receipt' AND e.applied = TRUE AND e.status = message.status)")
SHOWN_SQL = f"COALESCE(message.status_at, {RECEIVED_SQL})"


def shown() -> Any:
    """The status time as shown, as a peewee expression over Message (exports)."""
    return fn.coalesce(Message.status_at,
                       _applied_receipt(Event.message == Message.id, Message.status))


def _applied_receipt(which: Any, status: Any) -> Any:
    """When the applied receipt that set this status was received (the latest, should a
    non-final status have been reported twice)."""
    return Event.select(fn.max(Event.received_at)).where(
        which & (Event.kind == "receipt") & (Event.applied == True)  # noqa: E712
        & (Event.status == status))


def source() -> Any:
    """Whose clock `shown()` is (SOURCES, or NULL), as a peewee expression over Message."""
    ours = (Message.status == "canceled") | (Message.status_inferred == True)  # noqa: E712
    return pw.Case(None, [(Message.status_at.is_null(False) & ours, TRACKER),
                          (Message.status_at.is_null(False), PROVIDER),
                          (shown().is_null(False), RECEIVED)], None)
