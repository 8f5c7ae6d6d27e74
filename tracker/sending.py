"""Enqueue, claim, dispatch, retry: write first, send second, update third.

The message row exists (and is committed) before any provider is called, so a receipt that
beats the send response still finds it by reference, and a crash mid-send leaves a row to retry.
No transaction is held while a provider is called.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import random
import secrets
from dataclasses import dataclass
from typing import Any

from . import correlation, phones, routing, wakeup, webhooks
from .db import db, execute, is_sqlite, write_tx
from .models import Event, Message, utcnow
from .providers.base import OutboundMessage, Provider, SendError, SendResult
from .segments import segment
from .status import Status, order_key

log = logging.getLogger(__name__)


class SendRejected(ValueError):
    """The request to send is invalid; `field` names what to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


EXPLICIT = routing.EXPLICIT


@dataclass(frozen=True)
class NewMessage:
    """A validated request to send one SMS."""

    to: str
    text: str
    provider: str
    sender: str | None = None
    client_ref: str | None = None
    send_at: dt.datetime | None = None
    failover: tuple[str, ...] = ()  # providers to try next, in order
    deferred: bool = False  # scheduled, and handed to the provider at once to hold (defers())
    rule: str = EXPLICIT  # what chose the providers (shown on the timeline)
    validity: dt.timedelta = dt.timedelta(minutes=2880)
    status_callback: str | None = None  # the caller's webhook URL for this message
    api_key_id: int | None = None  # the API key that sent it (its webhook endpoints)

    def route_description(self) -> str:
        """One line for the `routed` event."""
        return routing.Route((self.provider, *self.failover), self.rule).describe()


def validate(data: dict[str, Any], *, providers: dict[str, Provider], default_provider: str,
             default_region: str = "",
             routes: dict[str, tuple[str, ...]] | None = None,
             api_key_id: int | None = None) -> NewMessage:
    """Check an API/CLI send request; raise SendRejected naming the bad field."""
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise SendRejected("text", "text is required")
    if len(text) > 1600:
        raise SendRejected("text", "text is longer than 1600 characters")
    try:
        to = phones.normalize(data.get("to") or "", default_region)
    except phones.InvalidPhone as exc:
        raise SendRejected("to", f"invalid phone number: {exc}") from exc
    explicit = data.get("provider") or None
    if explicit is not None and not isinstance(explicit, str):
        raise SendRejected("provider", "provider must be a string")
    if explicit is not None and explicit not in providers:
        raise SendRejected("provider", f"provider {explicit!r} is not configured "
                                       f"(configured: {', '.join(sorted(providers))})")
    route = routing.choose(to, routes or {}, default_provider, explicit)
    sender, client_ref = data.get("from"), data.get("client_ref")
    for name, value, limit in (("from", sender, 32), ("client_ref", client_ref, 64)):
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise SendRejected(name, f"{name} must be a string of at most {limit} characters")
    first = providers[route.providers[0]]
    validity = dt.timedelta(minutes=first.config["validity_minutes"])
    send_at = _parse_send_at(data.get("send_at"))
    status_callback = _status_callback(data.get("status_callback"))
    return NewMessage(status_callback=status_callback, api_key_id=api_key_id,
                      to=to, text=text, provider=route.providers[0],
                      failover=route.providers[1:], rule=route.rule, validity=validity,
                      sender=sender or None, client_ref=client_ref or None, send_at=send_at,
                      deferred=first.defers(send_at, utcnow()))


def _status_callback(value: Any) -> str | None:
    if value in (None, ""):
        return None
    try:
        return webhooks.check_url(value)
    except webhooks.WebhookRefused as exc:
        raise SendRejected("status_callback", f"status_callback {exc}") from exc


def _parse_send_at(value: Any) -> dt.datetime | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise SendRejected("send_at", "send_at must be an ISO 8601 string")
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SendRejected("send_at", f"send_at is not ISO 8601: {value!r}") from exc
    if when.tzinfo is None:
        raise SendRejected("send_at", "send_at needs a time zone (e.g. 2026-01-01T09:00:00Z)")
    try:
        when = when.astimezone(dt.UTC).replace(tzinfo=None)
    except OverflowError as exc:  # 0001-01-01 or 9999-12-31 with an offset
        raise SendRejected("send_at", f"send_at is out of range: {value!r}") from exc
    if when > utcnow() + MAX_SCHEDULE_AHEAD:
        raise SendRejected("send_at", f"send_at is more than {MAX_SCHEDULE_AHEAD.days} days "
                                      "ahead")
    return when


# How far ahead a message may be scheduled: far beyond any real campaign, and short of the
# dates whose validity arithmetic would overflow (9999-12-31).
MAX_SCHEDULE_AHEAD = dt.timedelta(days=100 * 365)


def enqueue(new: NewMessage, *, source: str) -> Message:
    """Store the message (queued or scheduled) and its `created` event."""
    return enqueue_many([new], source=source)[0]


# Rows per INSERT statement: SQLite binds at most 32,766 parameters in one statement.
_INSERT_CHUNK = 500


def enqueue_many(news: list[NewMessage], *, source: str) -> list[Message]:
    """Store messages (queued or scheduled), each with its `created` (and `routed`) event, in
    one transaction: all of them or, on an error, none."""
    now = utcnow()
    messages: list[Message] = []
    for new in news:
        scheduled = new.send_at is not None and new.send_at > now
        status = Status.SCHEDULED if scheduled else Status.QUEUED
        due = new.send_at if scheduled and new.send_at and not new.deferred else now
        shape = segment(new.text)
        messages.append(Message(
            reference=new_reference(), client_ref=new.client_ref, provider=new.provider,
            recipient=new.to, sender=new.sender, text=new.text, status=status,
            status_rank=0, status_order=order_key(status, None), send_at=new.send_at,
            due_at=due, created_at=now, updated_at=now, encoding=shape.encoding,
            segments=shape.segments, route=",".join(new.failover) or None,
            expires_at=due + new.validity, attempts=0, status_inferred=False,
            status_callback=new.status_callback, api_key_id=new.api_key_id,
        ))
    fields = [f for f in Message._meta.sorted_fields if f.name != "id"]
    with write_tx():
        for i in range(0, len(messages), _INSERT_CHUNK):
            chunk = messages[i:i + _INSERT_CHUNK]
            ids = dict(Message.insert_many([[getattr(m, f.name) for f in fields] for m in chunk],
                                           fields=fields)
                       .returning(Message.reference, Message.id).tuples().execute())
            for message in chunk:
                message.id = ids[message.reference]
        events = []
        for new, message in zip(news, messages, strict=True):
            scheduled = message.status == Status.SCHEDULED
            events.append({
                "message": message.id, "kind": "created", "source": source,
                "provider": new.provider, "status": message.status, "applied": True,
                "received_at": now,
                "detail": (f"scheduled for {new.send_at:%Y-%m-%d %H:%M:%S} UTC"
                           + (f", held by {new.provider}" if new.deferred else ""))
                if scheduled else None})
            if new.rule != EXPLICIT:  # a named provider is the caller's choice, not a decision
                events.append({"message": message.id, "kind": "routed", "source": source,
                               "provider": new.provider, "status": None, "applied": None,
                               "received_at": now, "detail": new.route_description()})
        for i in range(0, len(events), _INSERT_CHUNK):
            Event.insert_many(events[i:i + _INSERT_CHUNK]).execute()
        if any(m.status == Status.QUEUED for m in messages):
            wakeup.notify()  # a dispatcher sends them now rather than at its next look
    return messages


def new_reference() -> str:
    """Our random, unique reference (also sent to providers that echo one back)."""
    return "m" + secrets.token_hex(12)


# A claimed message no dispatcher has started to send goes back to the queue after this long.
CLAIM_SECONDS = 120
# How long past its request timeout a send in flight is held before any dispatcher may declare
# its outcome unknown (the request, answer and the recording of it fit well within this).
SEND_LEASE_MARGIN = 10.0
_PENDING = "status IN ('queued', 'scheduled')"
_FIELDS = Message._meta.sorted_fields
_COLUMNS = ", ".join(f'"{f.column_name}"' for f in _FIELDS)


def claim_due(owner: str, limits: dict[str, int], *, start: frozenset[str] = frozenset(),
              lease: dt.timedelta | None = None, others: int = 0,
              configured: tuple[str, ...] = (), now: dt.datetime | None = None
              ) -> list[Message]:
    """Claim due messages for dispatcher `owner`: at most `limits[slug]` of each provider, and
    `others` of providers not `configured` (any more: they fail).

    One statement per provider: two dispatchers never claim the same message (Postgres: `FOR
    UPDATE SKIP LOCKED`, so every host shares one queue without waiting on another's rows;
    SQLite: the writer lock serialises). A claim is not a send: until `start_sends` a message
    may still be canceled, and a dispatcher that dies holding claims only delays them by
    CLAIM_SECONDS.

    `start`: providers whose claimed messages start sending at once (no rate-limit slot to wait
    for): the same statement records their sends as started, with `lease`, so claim and start
    cost one write (the caller sends only after the commit). A message with a send_at still
    ahead (a provider that holds it was configured not to since) is only claimed."""
    now = now or utcnow()
    claim_until = now + dt.timedelta(seconds=CLAIM_SECONDS)
    lock = "" if is_sqlite() else " FOR UPDATE SKIP LOCKED"
    rows: list[tuple[Any, ...]] = []
    wanted = [("provider = ?", (slug,), n, slug in start) for slug, n in limits.items()]
    if others and configured:
        wanted.append((f"provider NOT IN ({', '.join('?' * len(configured))})", configured,
                       others, False))
    with write_tx():
        for where, params, limit, starts in wanted:
            if limit <= 0:
                continue
            if starts and lease is not None:
                now_ok = "(send_at IS NULL OR send_at <= ?)"
                set_sql = (f"send_started_at = CASE WHEN {now_ok} THEN ? END,"
                           f" claimed_until = CASE WHEN {now_ok} THEN ? ELSE ? END,"
                           f" attempts = attempts + CASE WHEN {now_ok} THEN 1 ELSE 0 END")
                set_params: tuple[Any, ...] = (now, now, now, now + lease, claim_until, now)
            else:
                set_sql, set_params = "claimed_until = ?", (claim_until,)
            rows += execute(
                f"UPDATE message SET {set_sql}, claimed_by = ? WHERE id IN ("  # noqa: S608
                f" SELECT id FROM message WHERE {where} AND due_at <= ? AND {_PENDING}"
                " AND (claimed_until IS NULL OR claimed_until < ?) ORDER BY due_at LIMIT ?"
                f"{lock}) RETURNING {_COLUMNS}",
                (*set_params, owner, *params, now, now, limit),
            ).fetchall()
    messages = [Message(**{f.name: f.python_value(v) for f, v in zip(_FIELDS, row, strict=True)})
                for row in rows]
    return sorted(messages, key=lambda m: (m.due_at, m.id))


def anything_due(now: dt.datetime | None = None) -> bool:
    """A cheap read: is a message due that no dispatcher holds? (Saves a write transaction
    each time a dispatcher is woken for nothing.)"""
    now = now or utcnow()
    return execute(
        f"SELECT 1 FROM message WHERE due_at <= ? AND {_PENDING}"  # noqa: S608
        " AND (claimed_until IS NULL OR claimed_until < ?) LIMIT 1", (now, now),
    ).fetchone() is not None


def start_sends(owner: str, messages: list[Message], lease: dt.timedelta,
                release: dict[int, dt.datetime] | None = None) -> list[Message]:
    """Record, in one committed transaction, that these sends start now; return those still
    ours to send. Only after this commit may a request leave: a dispatcher that dies from here
    on leaves a trace that makes the message `unknown`, never sent a second time.

    `release`: claimed messages to put back in the queue instead, due at the given time (a rate
    limit slot or a send_at this provider will not hold for us)."""
    now = utcnow()
    ours: set[int] = set()
    with write_tx():
        for message_id, due in (release or {}).items():
            execute("UPDATE message SET due_at = ?, claimed_until = NULL, claimed_by = NULL"
                    " WHERE id = ? AND claimed_by = ? AND send_started_at IS NULL",
                    (due, message_id, owner))
        if messages:
            ids = [m.id for m in messages]
            rows = execute(
                "UPDATE message SET send_started_at = ?, claimed_until = ?,"  # noqa: S608
                f" attempts = attempts + 1 WHERE id IN ({', '.join('?' * len(ids))})"
                f" AND claimed_by = ? AND send_started_at IS NULL AND {_PENDING} RETURNING id",
                (now, now + lease, *ids, owner),
            ).fetchall()
            ours = {r[0] for r in rows}
    started = [m for m in messages if m.id in ours]
    for message in started:
        message.send_started_at = now
        message.claimed_until = now + lease
        message.attempts += 1
    return started


def release_claims(owner: str) -> int:
    """Give back every claim of `owner` whose send has not started (a dispatcher stopping)."""
    with write_tx():
        return execute("UPDATE message SET claimed_until = NULL, claimed_by = NULL"
                       " WHERE claimed_by = ? AND send_started_at IS NULL", (owner,)).rowcount


def lost_sends(now: dt.datetime | None = None,
               owners: list[str] | None = None) -> list[tuple[int, str, dt.datetime]]:
    """(id, owner, started) of sends in flight whose lease ran out, or whose dispatcher is one
    of `owners` (known to be gone)."""
    now = now or utcnow()
    gone = f" OR claimed_by IN ({', '.join('?' * len(owners))})" if owners else ""
    rows = execute(
        "SELECT id, claimed_by, send_started_at FROM message"  # noqa: S608
        f" WHERE send_started_at IS NOT NULL AND (claimed_until < ?{gone})",
        (now, *(owners or ())),
    ).fetchall()
    return [(r[0], r[1], correlation.as_datetime(r[2])) for r in rows]


def send_owners() -> list[str]:
    """Every dispatcher that has a send in flight or a claim (claims are on due rows)."""
    return [r[0] for r in execute(
        "SELECT DISTINCT claimed_by FROM message WHERE send_started_at IS NOT NULL"
        " UNION SELECT DISTINCT claimed_by FROM message WHERE due_at IS NOT NULL"
        " AND claimed_by IS NOT NULL").fetchall() if r[0]]


def record_lost(message_id: int, owner: str, started: dt.datetime, why: str) -> bool:
    """A send started and never got an answer recorded: `unknown`, with the reason, and never
    sent again by itself (the provider may have it). False if its answer came in meanwhile."""
    now = utcnow()
    with write_tx():
        cleared = execute(
            "UPDATE message SET send_started_at = NULL, claimed_until = NULL, claimed_by = NULL,"
            " due_at = NULL, updated_at = ? WHERE id = ? AND send_started_at = ?",
            (now, message_id, started)).rowcount
        if not cleared:
            return False
        detail = (f"outcome unknown, not resent: the send started {started:%Y-%m-%d %H:%M:%S}"
                  f" UTC by dispatcher {owner} got no answer ({why})")
        # A receipt matched by our reference may already have moved it past `queued`: then the
        # provider has it and nothing is unknown; only a message still waiting is marked.
        applied = correlation.set_status(message_id, Status.UNKNOWN, error_code="SEND_LOST",
                                         detail=detail) if _still_pending(message_id) else False
        Event.create(message=message_id, kind="send_unknown", source="dispatcher",
                     status=Status.UNKNOWN, error_code="SEND_LOST", applied=applied,
                     received_at=now, detail=detail,
                     provider=Message.select(Message.provider).where(
                         Message.id == message_id).scalar())
    return True


def _still_pending(message_id: int) -> bool:
    return execute(f"SELECT 1 FROM message WHERE id = ? AND {_PENDING}",  # noqa: S608
                   (message_id,)).fetchone() is not None


def too_early(message: Message, provider: Provider, now: dt.datetime) -> bool:
    """A scheduled message this provider will not hold: it waits here until its send_at."""
    return bool(message.send_at and message.send_at > now
                and not provider.defers(message.send_at, now))


def outbound_for(message: Message, provider: Provider) -> OutboundMessage:
    """What the provider module gets: the message, its callback URL, validity and send time."""
    return OutboundMessage(
        reference=message.reference, to=message.recipient, text=message.text,
        sender=message.sender, callback_url=provider.callback_url(message.reference),
        validity=dt.timedelta(minutes=provider.config["validity_minutes"]),
        send_at=message.send_at if provider.defers(message.send_at, utcnow()) else None,
        message_id=message.id,
    )


def record_outcome(message: Message, outcome: SendResult | SendError,
                   providers: dict[str, Provider], *, max_attempts: int,
                   backoff_seconds: float) -> None:
    """Record what one send came to (call inside the batch's write transaction)."""
    if isinstance(outcome, SendResult):
        record_accepted(message, outcome, providers.get(message.provider))
    elif outcome.outcome_unknown:
        record_unknown(message, outcome)
    elif outcome.provider_side and message.route:
        fail_over(message, outcome, providers)
    else:
        record_failure(message, outcome, max_attempts=max_attempts,
                       backoff_seconds=backoff_seconds)


def dispatch(providers: dict[str, Provider], *, batch_size: int, max_attempts: int,
             backoff_seconds: float) -> int:
    """Claim up to `batch_size` due messages, send them (concurrently, up to each provider's
    max_in_flight), record every outcome; returns how many were claimed. One round of what the
    worker's dispatcher does continuously (tracker.dispatcher)."""
    from .dispatcher import Dispatcher  # the engine builds on this module

    with Dispatcher(providers, max_attempts=max_attempts,
                    backoff_seconds=backoff_seconds) as dispatcher:
        return dispatcher.run_once(batch_size)


_ACCEPTED = (
    # A provider whose receipts name messages by another id (ADOPTS_RECEIPT_ID) may have had
    # that id adopted from a receipt that beat the send answer here: it is kept.
    "UPDATE message SET provider_message_id = CASE WHEN ? AND provider_message_id IS NOT NULL"
    " THEN provider_message_id ELSE ? END, submitted_at = ?, due_at = NULL,"
    " expires_at = ?, poll_at = ?, send_started_at = NULL, claimed_until = NULL,"
    " claimed_by = NULL, updated_at = ? WHERE id = ?")
_SUBMITTED_EVENT = (
    "INSERT INTO event (message_id, kind, source, provider, provider_message_id, status,"
    " detail, applied, received_at) VALUES (?, 'submitted', 'dispatcher', ?, ?, 'accepted', ?,"
    " ?, ?)")


def record_accepted(message: Message, result: SendResult,
                    provider: Provider | None = None) -> None:
    """Store the provider id, move to `accepted`, and apply receipts that waited for it."""
    now = utcnow()
    starts = max(now, message.send_at) if message.send_at else now  # a provider may hold it
    # Hand-written statements: this runs for every message sent, in the dispatcher's one
    # thread, where peewee's query building would cost as much as the statements themselves.
    with _joined_tx():
        adopts = bool(getattr(provider, "ADOPTS_RECEIPT_ID", False))
        execute(_ACCEPTED, (adopts, result.provider_message_id, now,
                            starts + _validity(provider), _first_poll(provider, starts), now,
                            message.id), prepare=True)
        applied = correlation.set_status(message.id, Status.ACCEPTED)
        execute(_SUBMITTED_EVENT, (message.id, message.provider, result.provider_message_id,
                                   _clip(result.raw), applied, now), prepare=True)
        correlation.rematch_orphans(message.provider, result.provider_message_id, message.id)
        for receipt in result.receipts:
            correlation.apply_receipt(receipt, source=message.provider)


def record_failure(message: Message, error: SendError, *, max_attempts: int,
                   backoff_seconds: float) -> None:
    """Retry later with backoff, or finalize as rejected/failed."""
    now = utcnow()
    final = error.permanent or message.attempts >= max_attempts
    with _joined_tx():
        if final:
            status = error.status if error.permanent else Status.FAILED
            _end_send(message, now, due_at=None)
            applied = correlation.set_status(message.id, status, error_code=error.code,
                                             detail=error.detail)
            detail = error.detail if error.permanent else (
                f"gave up after {message.attempts} attempts: {error.detail}")
            Event.create(message=message.id, kind="send_failed", source="dispatcher",
                         provider=message.provider, status=status, error_code=error.code,
                         detail=detail, applied=applied, received_at=now)
            return
        delay = min(backoff_seconds * 2 ** (message.attempts - 1), 3600)
        retry_at = now + dt.timedelta(seconds=delay * random.uniform(0.8, 1.2))  # noqa: S311
        requeued = _end_send(message, now, pending_only=True, due_at=retry_at,
                             error_code=error.code, error_detail=error.detail)
        Event.create(message=message.id, kind="retry", source="dispatcher",
                     provider=message.provider, error_code=error.code, received_at=now,
                     detail=f"attempt {message.attempts} failed: {error.detail}; "
                            + (f"next at {retry_at:%H:%M:%S} UTC" if requeued else _NOT_REQUEUED))


def record_unknown(message: Message, error: SendError) -> None:
    """The request may have reached the provider: never resend blindly. The message waits as
    `unknown` for a receipt (matched by our reference where the provider echoes it: Mobivate,
    AlphaSMS) or, failing that, expiry. Polls ask by provider id, which we never got."""
    now = utcnow()
    with _joined_tx():
        _end_send(message, now, due_at=None)
        applied = correlation.set_status(message.id, Status.UNKNOWN, error_code=error.code,
                                         detail=error.detail)
        Event.create(message=message.id, kind="send_unknown", source="dispatcher",
                     provider=message.provider, status=Status.UNKNOWN, error_code=error.code,
                     applied=applied, received_at=now,
                     detail=f"outcome unknown, not resent: {error.detail}")


def fail_over(message: Message, error: SendError, providers: dict[str, Provider]) -> None:
    """A provider-side failure: move the message to the next provider of its route."""
    now = utcnow()
    remaining = (message.route or "").split(",")
    nxt, rest = remaining[0], ",".join(remaining[1:]) or None
    provider = providers.get(nxt)
    with _joined_tx():
        moved = _end_send(
            message, now, pending_only=True, provider=nxt, route=rest, due_at=now, attempts=0,
            error_code=error.code, error_detail=error.detail,
            expires_at=now + _validity(provider) if provider else message.expires_at)
        # The provider that failed: the error code is its own, explained from its table.
        Event.create(message=message.id, kind="failover", source="dispatcher",
                     provider=message.provider, error_code=error.code, received_at=now,
                     detail=f"{message.provider} failed ({error.detail}); "
                            + ((f"trying {nxt}" + (f", then {rest.replace(',', ', ')}" if rest
                                                   else "")) if moved else _NOT_REQUEUED))


class NotCancelable(Exception):
    """The message was already handed to a provider (or is final)."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def cancel(message_id: int, *, source: str) -> None:
    """Cancel a message not yet submitted; raise NotCancelable once a send has started.

    The guard is in the UPDATE: a message whose send has started (committed before its request
    leaves) may be with the provider already, so it cannot be canceled. A message a dispatcher
    has only claimed can: its send then never starts (start_sends checks the status)."""
    now = utcnow()
    with write_tx():
        changed = execute(
            "UPDATE message SET status = 'canceled', status_rank = 3, status_order = ?,"
            " status_inferred = ?, status_at = ?, due_at = NULL, claimed_until = NULL,"
            " claimed_by = NULL, updated_at = ? WHERE id = ? AND status IN ('queued', 'scheduled')"
            " AND send_started_at IS NULL",
            (order_key(Status.CANCELED, now), False, now, now, message_id),
        ).rowcount
        if changed:
            Event.create(message=message_id, kind="canceled", source=source,
                         status=Status.CANCELED, applied=True, received_at=now,
                         detail=f"canceled by {source} before submission")
            return
    status = Message.select(Message.status).where(Message.id == message_id).scalar()
    raise NotCancelable(status or "missing")


RESENDABLE = frozenset({Status.FAILED, Status.REJECTED, Status.UNDELIVERED, Status.EXPIRED,
                        Status.UNKNOWN})


def resend(old: Message, new: NewMessage, *, source: str) -> Message:
    """Queue `new` as a resend of `old` (a final failure, or an unknown outcome), linked both
    ways on the timelines. The old message keeps its own history untouched. Whoever heard of
    the old one's status changes (its status_callback, its API key's endpoints) hears of the
    new one's, unless `new` names its own."""
    if Status(old.status) not in RESENDABLE:
        raise NotCancelable(old.status)  # the same 409 shape: not in a state that allows it
    if new.status_callback is None and new.api_key_id is None:
        new = dataclasses.replace(new, status_callback=old.status_callback,
                                  api_key_id=old.api_key_id)
    message = enqueue(new, source=source)
    now = utcnow()
    with write_tx():
        Message.update(resent_from=old.id).where(Message.id == message.id).execute()
        Event.create(message=old.id, kind="resent", source=source, received_at=now,
                     detail=f"resent as message #{message.id} ({message.reference})")
        Event.create(message=message.id, kind="resend_of", source=source, received_at=now,
                     detail=f"resend of message #{old.id} ({old.reference}, {old.status})")
    return message


def _joined_tx() -> contextlib.AbstractContextManager[None]:
    """A write transaction of its own, or none inside the caller's: the dispatcher records
    many outcomes in one transaction under one savepoint, and a savepoint per message (two
    more round trips each on Postgres) would cost as much as the statements themselves."""
    return contextlib.nullcontext() if db.obj.in_transaction() else write_tx()


# A refusal that came back after the send had been declared lost (`unknown`): it stays so.
_NOT_REQUEUED = "not queued again: this send had already been declared lost"


def _end_send(message: Message, now: dt.datetime, *, pending_only: bool = False,
              **fields: Any) -> bool:
    """Close the send in flight on the row (lease, owner, start mark) and write `fields`.

    `pending_only`: only while the message still waits for its send (to queue it again); a
    send declared lost meanwhile (`record_lost`) is never queued again."""
    query = Message.update(send_started_at=None, claimed_until=None, claimed_by=None,
                           updated_at=now, **fields).where(Message.id == message.id)
    if pending_only:
        query = query.where(Message.status.in_((Status.QUEUED, Status.SCHEDULED)))
    return query.execute() == 1


def _validity(provider: Provider | None) -> dt.timedelta:
    minutes = provider.config["validity_minutes"] if provider else 2880
    return dt.timedelta(minutes=minutes)


def _first_poll(provider: Provider | None, now: dt.datetime) -> dt.datetime | None:
    if provider is None or provider.POLL_BATCH <= 0:
        return None
    return now + dt.timedelta(seconds=provider.config["poll_after_seconds"])


def _clip(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
