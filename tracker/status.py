"""The status enum, its ranks and the one rule that decides whether a receipt moves a message.

Rule (DESIGN.md): a receipt is applied when it raises the rank, or keeps a non-final rank with a
newer `occurred_at`. A final status is never left, except an `expired` the tracker inferred
itself, which yields to a provider's final receipt.

To make the outcome independent of arrival order, every (status, occurred_at) pair has an
*order key*: a string that sorts by rank, then occurred_at, then a fixed per-status tie-break.
The rule is then "apply when the new key is greater and the message is not final", which one
guarded UPDATE can enforce atomically (read-modify-write in Python loses races across processes).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Status(StrEnum):
    """Where a message stands."""

    QUEUED = "queued"
    SCHEDULED = "scheduled"
    ACCEPTED = "accepted"
    SENT = "sent"
    UNKNOWN = "unknown"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    EXPIRED = "expired"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELED = "canceled"


RANK: dict[Status, int] = {
    Status.QUEUED: 0,
    Status.SCHEDULED: 0,
    Status.ACCEPTED: 1,
    Status.SENT: 2,
    Status.UNKNOWN: 2,
    Status.DELIVERED: 3,
    Status.UNDELIVERED: 3,
    Status.EXPIRED: 3,
    Status.REJECTED: 3,
    Status.FAILED: 3,
    Status.CANCELED: 3,
}
FINAL_RANK = 3
FINAL: frozenset[Status] = frozenset(s for s, r in RANK.items() if r == FINAL_RANK)

# Equal rank and equal occurred_at: the later enum member wins, whatever the arrival order.
_TIEBREAK: dict[Status, int] = {s: i for i, s in enumerate(Status)}
_NO_TIME = "0000-00-00T00:00:00.000000"

# The guard every status UPDATE carries; parameters: new order key, new-is-provider-final.
GUARD_SQL = (
    "((status_rank < 3 AND status_order < ?)"
    " OR (status = 'expired' AND status_inferred AND ?))"
)


def is_final(status: Status | str) -> bool:
    """True for statuses a message never leaves (but see the inferred-expiry exception)."""
    return RANK[Status(status)] == FINAL_RANK


def order_key(status: Status | str, occurred_at: datetime | None) -> str:
    """Sortable key: rank, then provider time (UTC, naive), then the fixed tie-break."""
    status = Status(status)
    when = occurred_at.strftime("%Y-%m-%dT%H:%M:%S.%f") if occurred_at else _NO_TIME
    return f"{RANK[status]}|{when}|{_TIEBREAK[status]:02d}"


@dataclass(frozen=True)
class Current:
    """The status fields of a message row, as the rule needs them."""

    status: Status
    order: str
    inferred: bool


@dataclass(frozen=True)
class Decision:
    """Whether a receipt applies, and in words why not when it does not."""

    applies: bool
    reason: str | None = None


def decide(current: Current, new: Status, occurred_at: datetime | None, *,
           inferred: bool = False) -> Decision:
    """Apply the status rule to one receipt against the message's current status."""
    new_final = is_final(new)
    if current.status == Status.EXPIRED and current.inferred and new_final and not inferred:
        return Decision(True)
    if is_final(current.status):
        if current.status == new:
            return Decision(False, f"message is already {current.status}")
        return Decision(False, f"message is already final ({current.status})")
    new_order = order_key(new, occurred_at)
    if new_order > current.order:
        return Decision(True)
    if RANK[new] < RANK[current.status]:
        return Decision(False, f"{new} ranks below the current status {current.status}")
    return Decision(False, f"not newer than the current status {current.status}")


def guard_params(new: Status, occurred_at: datetime | None, *, inferred: bool = False) -> tuple:
    """Parameters for GUARD_SQL, matching `decide` exactly."""
    return (order_key(new, occurred_at), is_final(new) and not inferred)
