"""Storing a callback that carries one receipt (the usual case) with the least work.

The receipt is matched first, outside any write transaction, so the writes that follow know
their verdict and the SQLite writer lock is held only for them. The status UPDATE keeps its
guard and the event INSERT its dedupe constraint, so a concurrent writer between the match and
the writes is detected and the verdict corrected, never applied twice or regressed.

Postgres is bound by CPU shared between the app and the server, and each round trip costs both
(perf-baseline.md §5): there the raw callback, its event and the status UPDATE go in one
statement (data-modifying CTEs run atomically, so no BEGIN/COMMIT round trips either). SQLite
has no data-modifying CTEs; there the same writes run in one short write transaction.
"""

from __future__ import annotations

import datetime as dt

from . import correlation
from .correlation import Match, Verdict
from .db import execute, is_sqlite, write_tx
from .models import utcnow
from .status import GUARD_SQL, RANK, guard_params, order_key

_STORE_AND_APPLY = (
    "WITH cb AS ("  # noqa: S608 - constant SQL, no user text
    " INSERT INTO callback (provider, method, path, query, headers, body, remote_addr,"
    " received_at, verdict, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id),"
    " ev AS ("
    " INSERT INTO event (message_id, callback_id, kind, source, provider, provider_message_id,"
    " reference, status, raw_status, error_code, detail, applied, reason, occurred_at,"
    " received_at, dedupe_key)"
    " SELECT ?, cb.id, 'receipt', 'callback', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM cb WHERE ?"
    " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id),"
    " up AS ("
    " UPDATE message SET status = ?, status_rank = ?, status_order = ?, status_inferred = FALSE,"
    " status_at = ?, error_code = ?, error_detail = ?, updated_at = ?"
    " WHERE id = ? AND ? AND EXISTS (SELECT 1 FROM ev) AND " + GUARD_SQL + " RETURNING id)"
    " SELECT (SELECT id FROM cb), (SELECT id FROM ev), (SELECT id FROM up)"
)


_INSERT_CALLBACK = (
    "INSERT INTO callback (provider, method, path, query, headers, body, remote_addr,"
    " received_at, verdict, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)


def insert_callback(callback_row: tuple, verdict: str, detail: str | None) -> int:
    """INSERT the raw request with its verdict (inside the caller's write transaction)."""
    return execute(_INSERT_CALLBACK, (*callback_row, verdict, detail)).fetchone()[0]


def store_and_apply(callback_row: tuple, detail: str | None, found: Match,
                    received_at: dt.datetime) -> Verdict:
    """Store the raw callback with its one receipt's event and status change; the verdict."""
    if is_sqlite():
        with write_tx():
            callback_id = insert_callback(callback_row, found.expected.value, detail)
            outcome = correlation.apply(found, source="callback", callback_id=callback_id,
                                        received_at=received_at)
            if outcome.verdict != found.expected:
                return _correct(callback_id, outcome.verdict)
        return outcome.verdict
    return _store_and_apply_postgres(callback_row, detail, found, received_at)


def _store_and_apply_postgres(callback_row: tuple, detail: str | None, found: Match,
                              received_at: dt.datetime) -> Verdict:
    r, decision = found.receipt, found.decision
    expected = found.expected
    applies = bool(decision and decision.applies)
    reason = decision.reason if decision else (
        None if found.duplicate else "orphan: no message with this id yet")
    _cb, event_id, updated = execute(_STORE_AND_APPLY, (
        *callback_row, expected.value, detail,
        found.message_id, r.provider, r.provider_message_id, r.reference, r.status.value,
        r.raw_status, r.error_code, r.detail, applies if found.message_id else None, reason,
        r.occurred_at, received_at, correlation.dedupe_key(r), not found.duplicate,
        r.status.value, RANK[r.status], order_key(r.status, r.occurred_at), r.occurred_at,
        r.error_code, r.detail, utcnow(), found.message_id, applies,
        *guard_params(r.status, r.occurred_at),
    ), prepare=True).fetchone()
    if found.duplicate:
        return expected
    if event_id is None:  # a concurrent copy was stored between the SELECT and this statement
        return _correct(_cb, Verdict.DUPLICATE)
    if applies and updated is None:  # another receipt moved the message in between
        outcome = correlation.record_lost_race(found.message_id, event_id, r)
        return _correct(_cb, outcome.verdict)
    return expected


def set_verdict(callback_id: int, verdict: Verdict) -> None:
    """Give a stored callback its final verdict (a batch's is known once it is applied)."""
    execute("UPDATE callback SET verdict = ? WHERE id = ?", (verdict.value, callback_id))


def _correct(callback_id: int, verdict: Verdict) -> Verdict:
    set_verdict(callback_id, verdict)
    return verdict
