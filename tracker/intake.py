"""The intake: a provider's request, or a poll answer, to a stored callback and its verdict.

Verify, store raw, parse, correlate, verdict: every provider callback goes through `receive`,
every poll answer through `store_poll_answer`, and replay re-judges stored rows with the same
verdict rule (`verdict_of`) and the same callback-table writes. The raw request is stored in the
same transaction as its receipts' events and status changes, so whatever is acknowledged is
stored; writes that arrive together share that transaction and its fsync (tracker.groupcommit).

A callback carrying one receipt (the usual case) is matched before its transaction, so the
writer lock is held only for the writes, whose verdict is then known. The status UPDATE keeps
its guard and the event INSERT its dedupe constraint, so a writer in between is detected and the
verdict corrected, never applied twice or regressed. On Postgres, bound by CPU shared between
the app and the server (perf-baseline.md §5), the raw callback, its event and the status UPDATE
go in one statement (data-modifying CTEs run atomically); SQLite has no data-modifying CTEs and
runs the same writes one by one inside the transaction.

What the database refuses to take propagates (UNAVAILABLE_ERRORS: the caller answers 503 and
the sender retries); a failure of our own code is stored with the verdict `error`, to replay.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import correlation
from .correlation import Match, Outcome, Verdict
from .db import UNAVAILABLE_ERRORS, execute, is_sqlite
from .groupcommit import GroupCommit
from .models import utcnow
from .providers.base import (
    POLL_METHOD,
    CallbackRequest,
    ParsedCallback,
    PollAnswer,
    Provider,
    Receipt,
    without_nul,
)
from .status import GUARD_SQL, RANK, guard_params, order_key

log = logging.getLogger(__name__)

REDACTED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})

_together = GroupCommit()  # one per process: its request threads share transactions

_INSERT_CALLBACK = (
    "INSERT INTO callback (provider, method, path, query, headers, body, remote_addr,"
    " received_at, verdict, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
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


@dataclass(frozen=True)
class Arrival:
    """A provider's request (or poll answer) as it is stored: never with the secret token."""

    provider: str
    request: CallbackRequest
    path: str
    query_string: str = ""
    headers: Sequence[tuple[str, str]] = field(default_factory=tuple)  # as received
    remote_addr: str | None = None
    received_at: dt.datetime = field(default_factory=utcnow)

    def row(self) -> tuple:
        """The callback table's columns up to `verdict`, credentials redacted."""
        headers = [[k, "[redacted]" if k.lower() in REDACTED_HEADERS else v]
                   for k, v in self.headers]
        return (self.provider, self.request.method, self.path, self.query_string,
                json.dumps(headers), self.request.body, self.remote_addr, self.received_at)


def receive(handler: Provider, arrival: Arrival) -> Verdict:
    """Verify, store raw, parse and correlate one provider callback; its verdict."""
    problem = handler.verify(arrival.request)
    if problem:  # kept: a wrong secret on our side can be fixed, then the callback replayed
        log.warning("callback from %s failed its signature check: %s", arrival.provider, problem)
        return _together.run(lambda: _store_only(arrival, Verdict.UNAUTHORIZED, problem))
    try:
        return _store_parsed(arrival, handler.parse_callback(arrival.request))
    except UNAVAILABLE_ERRORS:
        raise
    except Exception:
        log.exception("callback from %s: processing failed", arrival.provider)
        return _together.run(
            lambda: _store_only(arrival, Verdict.ERROR, "processing failed; replay it"))


def store_poll_answer(provider: str, asked: str, answer: PollAnswer) -> list[Outcome]:
    """Keep a status API's raw answer beside the callbacks and apply its receipts."""
    arrival = Arrival(provider, CallbackRequest(method=POLL_METHOD, content_type="", query={},
                                                body=answer.raw.encode("utf-8")),
                      path=f"poll:{provider}", query_string=f"ids={asked}"[:4000])
    detail = without_nul("; ".join(answer.errors)) or None
    return _together.run(lambda: _store_receipts(arrival, detail, answer.receipts,
                                                 answer.errors, source="poll")[1])


def verdict_of(errors: Sequence[str], outcomes: Sequence[Outcome]) -> Verdict:
    """A callback's verdict: its receipts' strongest; with none, invalid if anything in it
    could not be read, else ignored (a notification we have no use for)."""
    if outcomes:
        return correlation.callback_verdict(list(outcomes))
    return Verdict.INVALID if errors else Verdict.IGNORED


def set_verdict(callback_id: int, verdict: Verdict | str) -> None:
    """Give a stored callback its final verdict (a batch's is known once it is applied)."""
    execute("UPDATE callback SET verdict = ? WHERE id = ?", (str(verdict), callback_id))


def rejudge(callback_id: int, verdict: Verdict | str, detail: str | None) -> None:
    """Give a stored callback a new verdict and the reasons for it (replay)."""
    execute("UPDATE callback SET verdict = ?, detail = ? WHERE id = ?",
            (str(verdict), detail, callback_id))


# -- the writes, run inside a shared transaction ------------------------------------------


def _store_parsed(arrival: Arrival, parsed: ParsedCallback) -> Verdict:
    detail = without_nul("; ".join(parsed.errors + parsed.notes)) or None
    if len(parsed.receipts) == 1:  # the usual case: matched before the transaction
        found = correlation.match(parsed.receipts[0])
        if not is_sqlite():  # one statement, atomic on its own: no transaction to share
            return _store_and_apply_postgres(arrival, detail, found)
        return _together.run(lambda: _store_and_apply_sqlite(arrival, detail, found))
    return _together.run(lambda: _store_receipts(arrival, detail, parsed.receipts,
                                                 parsed.errors, source="callback")[0])


def _insert_callback(arrival: Arrival, verdict: Verdict, detail: str | None) -> int:
    return execute(_INSERT_CALLBACK, (*arrival.row(), verdict.value, detail)).fetchone()[0]


def _store_only(arrival: Arrival, verdict: Verdict, detail: str) -> Verdict:
    _insert_callback(arrival, verdict, detail)
    return verdict


def _store_receipts(arrival: Arrival, detail: str | None, receipts: Sequence[Receipt],
                    errors: Sequence[str], *, source: str) -> tuple[Verdict, list[Outcome]]:
    """A batch (or nothing understood): stored, applied in order, then given its verdict."""
    expected = Verdict.PENDING if receipts else verdict_of(errors, [])
    callback_id = _insert_callback(arrival, expected, detail)
    outcomes = [correlation.apply_receipt(r, source=source, callback_id=callback_id,
                                          received_at=arrival.received_at) for r in receipts]
    verdict = verdict_of(errors, outcomes)
    if verdict != expected:  # a batch's verdict is known once its receipts are applied
        set_verdict(callback_id, verdict)
    return verdict, outcomes


def _store_and_apply_sqlite(arrival: Arrival, detail: str | None, found: Match) -> Verdict:
    """The raw callback with its one receipt's event and status change (in a transaction)."""
    callback_id = _insert_callback(arrival, found.expected, detail)
    outcome = correlation.apply(found, source="callback", callback_id=callback_id,
                                received_at=arrival.received_at)
    if outcome.verdict != found.expected:
        set_verdict(callback_id, outcome.verdict)
    return outcome.verdict


def _store_and_apply_postgres(arrival: Arrival, detail: str | None, found: Match) -> Verdict:
    """The same in one statement; a correction, if any, is a statement of its own."""
    r, decision, received_at = found.receipt, found.decision, arrival.received_at
    expected = found.expected
    applies = bool(decision and decision.applies)
    reason = decision.reason if decision else (
        None if found.duplicate else "orphan: no message with this id yet")
    callback_id, event_id, updated = execute(_STORE_AND_APPLY, (
        *arrival.row(), expected.value, detail,
        found.message_id, r.provider, r.provider_message_id, r.reference, r.status.value,
        r.raw_status, r.error_code, r.detail, applies if found.message_id else None, reason,
        r.occurred_at, received_at, correlation.dedupe_key(r), not found.duplicate,
        r.status.value, RANK[r.status], order_key(r.status, r.occurred_at), r.occurred_at,
        r.error_code, r.detail, utcnow(), found.message_id, applies,
        *guard_params(r.status, r.occurred_at),
    ), prepare=True).fetchone()
    if found.duplicate:
        return expected
    if event_id is None:  # a concurrent copy was stored between the match and this statement
        set_verdict(callback_id, Verdict.DUPLICATE)
        return Verdict.DUPLICATE
    if applies and updated is None:  # another receipt moved the message in between
        outcome = correlation.record_lost_race(found.message_id, event_id, r)
        set_verdict(callback_id, outcome.verdict)
        return outcome.verdict
    return expected
