"""Receipts -> events and status: dedupe, match, the status rule, orphans and their re-match.

Hot path (a callback): per receipt one SELECT that finds the message and tells a duplicate at
once (`match`), then, unless it is a duplicate, one INSERT of the event (`ON CONFLICT DO
NOTHING RETURNING` settles races) and, when the rule says so, one guarded UPDATE (`apply`).
Because the outcome is known after the SELECT, the caller can store the callback with its
verdict in one INSERT. Hand-written SQL: peewee's query building costs ~140 µs a statement, as
much as the statement itself (perf-baseline.md §5). Every function here runs inside
`write_tx()`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from .db import execute, write_tx
from .models import utcnow
from .providers import PROVIDERS
from .providers.base import Receipt
from .status import GUARD_SQL, RANK, Current, Decision, Status, decide, guard_params, order_key


class Verdict(StrEnum):
    """What became of a callback (or of one receipt in it)."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    ORPHAN = "orphan"
    IGNORED = "ignored"  # understood, but changed nothing (stale, lower rank, not for us)
    INVALID = "invalid"  # nothing in it could be understood
    ERROR = "error"  # stored, but processing failed on our side; replay it
    UNAUTHORIZED = "unauthorized"  # right path token, wrong signature: stored, not applied
    PENDING = "pending"  # only while the transaction that stores a batch is open


# When a callback carries several receipts, its verdict is the most telling of theirs.
_VERDICT_WEIGHT = {Verdict.APPLIED: 4, Verdict.ORPHAN: 3, Verdict.IGNORED: 2,
                   Verdict.DUPLICATE: 1}


@dataclass(frozen=True)
class Outcome:
    """What one receipt did."""

    verdict: Verdict
    message_id: int | None = None
    reason: str | None = None


# One round trip: is this report already stored, and which message (newest first: providers
# may reuse ids) does it belong to. The LEFT JOIN returns the duplicate flag without a message.
_MATCH_BY_PMID = (
    "SELECT m.id, m.status, m.status_order, m.status_inferred,"
    " EXISTS (SELECT 1 FROM event WHERE dedupe_key = ?)"
    " FROM (SELECT 1 AS one) AS x LEFT JOIN message m"
    " ON m.provider = ? AND m.provider_message_id = ? ORDER BY m.id DESC LIMIT 1"
)
_MATCH_BY_REFERENCE = (
    "SELECT m.id, m.status, m.status_order, m.status_inferred,"
    " EXISTS (SELECT 1 FROM event WHERE dedupe_key = ?), m.provider_message_id"
    " FROM (SELECT 1 AS one) AS x LEFT JOIN message m ON m.reference = ? AND m.provider = ?"
)
_ADOPT_ID = "UPDATE message SET provider_message_id = ? WHERE id = ? AND provider = ?"
_SELECT_BY_ID = "SELECT id, status, status_order, status_inferred FROM message WHERE id = ?"
_INSERT_EVENT = (
    "INSERT INTO event (message_id, callback_id, kind, source, provider, provider_message_id,"
    " reference, status, raw_status, error_code, detail, applied, reason, occurred_at,"
    " received_at, dedupe_key) VALUES (?, ?, 'receipt', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id"
)
_UPDATE_STATUS = (
    "UPDATE message SET status = ?, status_rank = ?, status_order = ?, status_inferred = ?,"  # noqa: S608
    " status_at = ?, error_code = ?, error_detail = ?, updated_at = ? WHERE id = ? AND "
    + GUARD_SQL
)


@dataclass(frozen=True)
class Match:
    """A receipt looked up before anything is written: its message and what the rule says."""

    receipt: Receipt
    message_id: int | None
    duplicate: bool
    decision: Decision | None  # None for orphans and duplicates

    @property
    def expected(self) -> Verdict:
        """The verdict, unless a concurrent writer changes things before `apply`."""
        if self.duplicate:
            return Verdict.DUPLICATE
        if self.message_id is None:
            return Verdict.ORPHAN
        return Verdict.APPLIED if self.decision and self.decision.applies else Verdict.IGNORED


def match(receipt: Receipt) -> Match:
    """Find a receipt's message (by our reference when the receipt echoes it, else by provider
    message id); spot duplicates. Our reference first: it is unique and ours, while a provider
    may report under another id than its send answer gave (Mobivate), which would cost every
    such receipt a lookup that cannot match. For such a provider (ADOPTS_RECEIPT_ID) a receipt
    matched by reference gives the message the id it carries, once per message (`_adopt_id`)."""
    dedupe = dedupe_key(receipt)
    row = None
    if receipt.reference:
        row = execute(_MATCH_BY_REFERENCE, (dedupe, receipt.reference, receipt.provider),
                      prepare=True).fetchone()
        if row[0] is not None and _adopts(receipt, row[5]):
            row = _adopt_id(receipt, row)
    if receipt.provider_message_id and (row is None or row[0] is None):
        row = execute(_MATCH_BY_PMID, (dedupe, receipt.provider, receipt.provider_message_id),
                      prepare=True).fetchone()
    if row is None or row[0] is None:
        return Match(receipt, None, bool(row and row[4]), None)
    if row[4]:
        return Match(receipt, row[0], True, None)
    return Match(receipt, row[0], False, decide(_current(row), receipt.status,
                                                receipt.occurred_at))


def _adopts(receipt: Receipt, stored_id: str | None) -> bool:
    """True when a receipt matched by our reference names its message by another provider id,
    and its provider reports under ids its send answer never gave (ADOPTS_RECEIPT_ID: Mobivate's
    log id). A clipped id ("…") is no real id."""
    pmid = receipt.provider_message_id
    return (bool(pmid) and pmid != stored_id and not pmid.endswith("…")
            and getattr(PROVIDERS.get(receipt.provider), "ADOPTS_RECEIPT_ID", False))


def _adopt_id(receipt: Receipt, row: tuple) -> tuple:
    """Keep the receipt's id as the message's provider id, so later receipts carrying that id
    alone (and polls) find it, and apply the orphans that were waiting under it. Here, not in
    `apply`: every path matches, and intake's Postgres path never calls `apply`. The id came
    with our reference, so the write stands even if storing this receipt fails."""
    with write_tx():
        execute(_ADOPT_ID, (receipt.provider_message_id, row[0], receipt.provider))
        if rematch_orphans(receipt.provider, receipt.provider_message_id, row[0]):
            return (*execute(_SELECT_BY_ID, (row[0],)).fetchone(), row[4])
    return row


def find_message(receipt: Receipt) -> int | None:
    """The id of the message a receipt belongs to, or None."""
    return match(receipt).message_id


def apply(found: Match, *, source: str, callback_id: int | None = None,
          received_at: dt.datetime | None = None) -> Outcome:
    """Record a matched receipt as an event and move its message when the rule allows."""
    receipt, message_id, decision = found.receipt, found.message_id, found.decision
    if found.duplicate:
        return Outcome(Verdict.DUPLICATE, message_id, "duplicate receipt")
    received_at = received_at or utcnow()
    if message_id is None or decision is None:
        event_id = _insert_event(receipt, None, callback_id, source, received_at,
                                 applied=None, reason="orphan: no message with this id yet")
        return Outcome(Verdict.ORPHAN if event_id else Verdict.DUPLICATE)
    event_id = _insert_event(receipt, message_id, callback_id, source, received_at,
                             applied=decision.applies, reason=decision.reason)
    if event_id is None:  # a concurrent copy was stored first
        return Outcome(Verdict.DUPLICATE, message_id, "duplicate receipt")
    if not decision.applies:
        return Outcome(Verdict.IGNORED, message_id, decision.reason)
    if _update_status(message_id, receipt):
        return Outcome(Verdict.APPLIED, message_id)
    return record_lost_race(message_id, event_id, receipt)


def apply_receipt(receipt: Receipt, *, source: str, callback_id: int | None = None,
                  received_at: dt.datetime | None = None) -> Outcome:
    """Match and apply one receipt."""
    return apply(match(receipt), source=source, callback_id=callback_id,
                 received_at=received_at)


def callback_verdict(outcomes: list[Outcome]) -> Verdict:
    """The verdict of a callback from those of its receipts."""
    if not outcomes:
        return Verdict.IGNORED
    return max((o.verdict for o in outcomes), key=_VERDICT_WEIGHT.__getitem__)


def set_status(message_id: int, status: Status, *, occurred_at: dt.datetime | None = None,
               error_code: str | None = None, detail: str | None = None,
               inferred: bool = False) -> bool:
    """Move a message through the same guarded UPDATE receipts use (send outcomes, expiry)."""
    receipt = Receipt(provider="", status=status, error_code=error_code, detail=detail,
                      occurred_at=occurred_at)
    return _update_status(message_id, receipt, inferred=inferred)


def rematch_orphans(provider: str, provider_message_id: str, message_id: int) -> int:
    """Apply orphan receipts that were waiting for this message's provider id; returns count."""
    rows = execute(
        "SELECT id, status, raw_status, error_code, detail, occurred_at FROM event"
        " WHERE message_id IS NULL AND kind = 'receipt' AND provider = ?"
        " AND provider_message_id = ? ORDER BY id",
        (provider, provider_message_id), prepare=True,
    ).fetchall()
    for event_id, status, raw_status, error_code, detail, occurred_at in rows:
        receipt = Receipt(provider=provider, status=Status(status), raw_status=raw_status,
                          provider_message_id=provider_message_id, error_code=error_code,
                          detail=detail, occurred_at=as_datetime(occurred_at))
        current = _current(execute(_SELECT_BY_ID, (message_id,)).fetchone())
        decision = decide(current, receipt.status, receipt.occurred_at)
        applied = decision.applies and _update_status(message_id, receipt)
        reason = None if applied else (decision.reason or "superseded by a concurrent receipt")
        execute("UPDATE event SET message_id = ?, applied = ?, reason = ? WHERE id = ?",
                (message_id, applied, reason, event_id))
    return len(rows)


def pending_orphans(limit: int = 500) -> list[tuple[str, str, int]]:
    """(provider, provider message id, message id) for orphans whose message now exists."""
    return execute(
        "SELECT DISTINCT e.provider, e.provider_message_id, m.id FROM event e"
        " JOIN message m ON m.provider = e.provider"
        " AND m.provider_message_id = e.provider_message_id"
        " WHERE e.message_id IS NULL AND e.kind = 'receipt' LIMIT ?",
        (limit,),
    ).fetchall()


def _insert_event(receipt: Receipt, message_id: int | None, callback_id: int | None,
                  source: str, received_at: dt.datetime, *, applied: bool | None,
                  reason: str | None) -> int | None:
    row = execute(_INSERT_EVENT, (
        message_id, callback_id, source, receipt.provider, receipt.provider_message_id,
        receipt.reference, receipt.status.value, receipt.raw_status, receipt.error_code,
        receipt.detail, applied, reason, receipt.occurred_at, received_at, dedupe_key(receipt),
    )).fetchone()
    return row[0] if row else None


def dedupe_key(receipt: Receipt) -> str | None:
    """The stored, provider-scoped dedupe key of a receipt."""
    return f"{receipt.provider}:{receipt.dedupe_key}" if receipt.dedupe_key else None


def _update_status(message_id: int, receipt: Receipt, *, inferred: bool = False) -> bool:
    status = receipt.status
    cursor = execute(_UPDATE_STATUS, (
        status.value, RANK[status], order_key(status, receipt.occurred_at), inferred,
        receipt.occurred_at, receipt.error_code, receipt.detail, utcnow(), message_id,
        *guard_params(status, receipt.occurred_at, inferred=inferred),
    ), prepare=True)
    return cursor.rowcount == 1


def record_lost_race(message_id: int, event_id: int, receipt: Receipt) -> Outcome:
    """Another process moved the message between our SELECT and UPDATE: record why."""
    current = _current(execute(_SELECT_BY_ID, (message_id,)).fetchone())
    reason = decide(current, receipt.status, receipt.occurred_at).reason or "superseded"
    execute("UPDATE event SET applied = ?, reason = ? WHERE id = ?", (False, reason, event_id))
    return Outcome(Verdict.IGNORED, message_id, reason)


def _current(row: tuple) -> Current:
    return Current(status=Status(row[1]), order=row[2], inferred=bool(row[3]))


def as_datetime(value: object) -> dt.datetime | None:
    """SQLite hands timestamps back as text from raw SQL; Postgres as datetime."""
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))
