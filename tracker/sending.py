"""Enqueue, claim, dispatch, retry: write first, send second, update third.

The message row exists (and is committed) before any provider is called, so a receipt that
beats the send response still finds it by reference, and a crash mid-send leaves a row to retry.
No transaction is held while a provider is called.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import secrets
import time
from dataclasses import dataclass
from typing import Any

from . import correlation, phones, routing, throttle
from .db import execute, is_sqlite, write_tx
from .models import Event, Message, utcnow
from .providers.base import OutboundMessage, Provider, SendError, SendResult
from .segments import segment
from .status import Status, order_key

log = logging.getLogger(__name__)

CLAIM_SECONDS = 120  # a dispatcher's lease on a claimed batch
# Once a send starts, the message is held for this long: a dispatcher that dies mid-send must
# not let another one resend blindly (the provider may have accepted it).
SEND_LEASE_SECONDS = 3600


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

    def route_description(self) -> str:
        """One line for the `routed` event."""
        return routing.Route((self.provider, *self.failover), self.rule).describe()


def validate(data: dict[str, Any], *, providers: dict[str, Provider], default_provider: str,
             default_region: str = "",
             routes: dict[str, tuple[str, ...]] | None = None) -> NewMessage:
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
    return NewMessage(to=to, text=text, provider=route.providers[0],
                      failover=route.providers[1:], rule=route.rule, validity=validity,
                      sender=sender or None, client_ref=client_ref or None, send_at=send_at,
                      deferred=first.defers(send_at, utcnow()))


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
    return when.astimezone(dt.UTC).replace(tzinfo=None)


def enqueue(new: NewMessage, *, source: str) -> Message:
    """Store the message (queued or scheduled) and its `created` event."""
    now = utcnow()
    scheduled = new.send_at is not None and new.send_at > now
    status = Status.SCHEDULED if scheduled else Status.QUEUED
    due = new.send_at if scheduled and new.send_at and not new.deferred else now
    shape = segment(new.text)
    with write_tx():
        message = Message.create(
            reference=new_reference(), client_ref=new.client_ref, provider=new.provider,
            recipient=new.to, sender=new.sender, text=new.text, status=status,
            status_rank=0, status_order=order_key(status, None), send_at=new.send_at,
            due_at=due, created_at=now, updated_at=now, encoding=shape.encoding,
            segments=shape.segments, route=",".join(new.failover) or None,
            expires_at=due + new.validity,
        )
        Event.create(message=message, kind="created", source=source, provider=new.provider,
                     status=status, applied=True, received_at=now,
                     detail=(f"scheduled for {new.send_at:%Y-%m-%d %H:%M:%S} UTC"
                             + (f", held by {new.provider}" if new.deferred else ""))
                     if scheduled else None)
        if new.rule != EXPLICIT:  # a named provider is the caller's choice, not a decision
            Event.create(message=message, kind="routed", source=source, provider=new.provider,
                         received_at=now, detail=new.route_description())
    return message


def new_reference() -> str:
    """Our random, unique reference (also sent to providers that echo one back)."""
    return "m" + secrets.token_hex(12)


def claim_due(limit: int, now: dt.datetime | None = None) -> list[Message]:
    """Claim due messages for this dispatcher; two dispatchers never claim the same one."""
    now = now or utcnow()
    lock = "" if is_sqlite() else " FOR UPDATE SKIP LOCKED"  # SQLite: the writer lock serialises
    with write_tx():
        rows = execute(
            "UPDATE message SET claimed_until = ? WHERE id IN ("  # noqa: S608
            " SELECT id FROM message WHERE due_at <= ? AND status IN ('queued', 'scheduled')"
            " AND (claimed_until IS NULL OR claimed_until < ?) ORDER BY due_at LIMIT ?"
            f"{lock}) RETURNING id",
            (now + dt.timedelta(seconds=CLAIM_SECONDS), now, now, limit),
        ).fetchall()
    ids = [r[0] for r in rows]
    return list(Message.select().where(Message.id.in_(ids)).order_by(Message.id)) if ids else []


def dispatch(providers: dict[str, Provider], *, batch_size: int, max_attempts: int,
             backoff_seconds: float) -> int:
    """Submit every due message once; returns how many were tried."""
    messages = claim_due(batch_size)
    for message in messages:
        provider = providers.get(message.provider)
        if provider is not None and _too_early(message, provider):
            continue  # released until send_at: this provider will not hold it for us
        if provider is not None and not _wait_for_slot(message, provider):
            continue  # rate limited: deferred to its slot, claim released
        if not _hold_for_send(message):
            continue  # our batch claim ran out and another dispatcher took this message
        try:
            if provider is None:
                raise SendError(f"provider {message.provider!r} is no longer configured",
                                permanent=True, status=Status.FAILED, code="NOT_CONFIGURED",
                                provider_side=True)
            result = provider.send(outbound_for(message, provider))
        except SendError as exc:
            if exc.outcome_unknown:
                record_unknown(message, exc)
            elif exc.provider_side and message.route:
                fail_over(message, exc, providers)
            else:
                record_failure(message, exc, max_attempts=max_attempts,
                               backoff_seconds=backoff_seconds)
        except Exception as exc:  # a provider bug must not stop the batch
            log.exception("provider %s crashed on message %s", message.provider, message.id)
            record_failure(message, SendError(f"internal error: {exc!r}", permanent=False),
                           max_attempts=max_attempts, backoff_seconds=backoff_seconds)
        else:
            record_accepted(message, result, provider)
    return len(messages)


def _too_early(message: Message, provider: Provider) -> bool:
    """A scheduled message this provider will not hold: release it until its send_at."""
    now = utcnow()
    if not message.send_at or message.send_at <= now or provider.defers(message.send_at, now):
        return False
    with write_tx():
        Message.update(due_at=message.send_at, claimed_until=None).where(
            (Message.id == message.id) & (Message.claimed_until == message.claimed_until)
        ).execute()
    return True


# Longest a dispatcher sleeps for a rate-limit slot; a later slot defers the message instead,
# so one slow provider never holds up the others' messages in the same batch for long.
MAX_SLOT_WAIT = 2.0


def _wait_for_slot(message: Message, provider: Provider) -> bool:
    """Honor the provider's rate limit across every dispatcher; False = deferred."""
    rate = provider.config["rate_limit_per_second"]
    if rate <= 0:
        return True
    wait = throttle.reserve(provider.slug, 1.0 / rate)
    if wait <= MAX_SLOT_WAIT:
        if wait > 0:
            time.sleep(wait)
        return True
    # The slot we reserved stays reserved: conservative, the rate is never exceeded.
    later = utcnow() + dt.timedelta(seconds=wait)
    with write_tx():
        Message.update(due_at=later, claimed_until=None).where(
            (Message.id == message.id) & (Message.claimed_until == message.claimed_until)
        ).execute()
    return False


def outbound_for(message: Message, provider: Provider) -> OutboundMessage:
    """What the provider module gets: the message, its callback URL, validity and send time."""
    return OutboundMessage(
        reference=message.reference, to=message.recipient, text=message.text,
        sender=message.sender, callback_url=provider.callback_url(message.reference),
        validity=dt.timedelta(minutes=provider.config["validity_minutes"]),
        send_at=message.send_at if provider.defers(message.send_at, utcnow()) else None,
    )


def _hold_for_send(message: Message) -> bool:
    """Swap our batch claim for a send lease, only if the claim is still ours."""
    until = utcnow() + dt.timedelta(seconds=SEND_LEASE_SECONDS)
    with write_tx():
        taken = (Message.update(claimed_until=until, attempts=Message.attempts + 1)
                 .where((Message.id == message.id)
                        & (Message.claimed_until == message.claimed_until)).execute())
    message.claimed_until = until
    message.attempts += 1
    return taken == 1


def record_accepted(message: Message, result: SendResult,
                    provider: Provider | None = None) -> None:
    """Store the provider id, move to `accepted`, and apply receipts that waited for it."""
    now = utcnow()
    starts = max(now, message.send_at) if message.send_at else now  # a provider may hold it
    with write_tx():
        Message.update(provider_message_id=result.provider_message_id, submitted_at=now,
                       due_at=None, claimed_until=None, updated_at=now,
                       expires_at=starts + _validity(provider),
                       poll_at=_first_poll(provider, starts),
                       ).where(Message.id == message.id).execute()
        Event.create(message=message.id, kind="submitted", source="dispatcher",
                     provider=message.provider, provider_message_id=result.provider_message_id,
                     status=Status.ACCEPTED, detail=_clip(result.raw), received_at=now,
                     applied=correlation.set_status(message.id, Status.ACCEPTED))
        correlation.rematch_orphans(message.provider, result.provider_message_id, message.id)
        for receipt in result.receipts:
            correlation.apply_receipt(receipt, source=message.provider)


def record_failure(message: Message, error: SendError, *, max_attempts: int,
                   backoff_seconds: float) -> None:
    """Retry later with backoff, or finalize as rejected/failed."""
    now = utcnow()
    final = error.permanent or message.attempts >= max_attempts
    with write_tx():
        if final:
            status = error.status if error.permanent else Status.FAILED
            Message.update(due_at=None, claimed_until=None, updated_at=now
                           ).where(Message.id == message.id).execute()
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
        Message.update(due_at=retry_at, claimed_until=None, error_code=error.code,
                       error_detail=error.detail, updated_at=now
                       ).where(Message.id == message.id).execute()
        Event.create(message=message.id, kind="retry", source="dispatcher",
                     provider=message.provider, error_code=error.code, received_at=now,
                     detail=f"attempt {message.attempts} failed: {error.detail}; "
                            f"next at {retry_at:%H:%M:%S} UTC")


def record_unknown(message: Message, error: SendError) -> None:
    """The request may have reached the provider: never resend blindly. The message waits as
    `unknown` for a receipt (matched by our reference where the provider echoes it: Mobivate,
    AlphaSMS) or, failing that, expiry. Polls ask by provider id, which we never got."""
    now = utcnow()
    with write_tx():
        Message.update(due_at=None, claimed_until=None, updated_at=now,
                       ).where(Message.id == message.id).execute()
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
    with write_tx():
        Message.update(provider=nxt, route=rest, due_at=now, claimed_until=None, attempts=0,
                       error_code=error.code, error_detail=error.detail, updated_at=now,
                       expires_at=now + _validity(provider) if provider else message.expires_at,
                       ).where(Message.id == message.id).execute()
        Event.create(message=message.id, kind="failover", source="dispatcher",
                     provider=nxt, error_code=error.code, received_at=now,
                     detail=f"{message.provider} failed ({error.detail}); trying {nxt}"
                            + (f", then {rest.replace(',', ', ')}" if rest else ""))


class NotCancelable(Exception):
    """The message was already handed to a provider (or is final)."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def cancel(message_id: int, *, source: str) -> None:
    """Cancel a message not yet submitted; raise NotCancelable once a send has started.

    The guard is in the UPDATE: a dispatcher holding the message (claimed_until in the future)
    may be sending it right now, so it cannot be canceled."""
    now = utcnow()
    with write_tx():
        changed = execute(
            "UPDATE message SET status = 'canceled', status_rank = 3, status_order = ?,"
            " status_inferred = ?, status_at = ?, due_at = NULL, claimed_until = NULL,"
            " updated_at = ? WHERE id = ? AND status IN ('queued', 'scheduled')"
            " AND (claimed_until IS NULL OR claimed_until < ?)",
            (order_key(Status.CANCELED, now), False, now, now, message_id, now),
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
    ways on the timelines. The old message keeps its own history untouched."""
    if Status(old.status) not in RESENDABLE:
        raise NotCancelable(old.status)  # the same 409 shape: not in a state that allows it
    message = enqueue(new, source=source)
    now = utcnow()
    with write_tx():
        Message.update(resent_from=old.id).where(Message.id == message.id).execute()
        Event.create(message=old.id, kind="resent", source=source, received_at=now,
                     detail=f"resent as message #{message.id} ({message.reference})")
        Event.create(message=message.id, kind="resend_of", source=source, received_at=now,
                     detail=f"resend of message #{old.id} ({old.reference}, {old.status})")
    return message


def _validity(provider: Provider | None) -> dt.timedelta:
    minutes = provider.config["validity_minutes"] if provider else 2880
    return dt.timedelta(minutes=minutes)


def _first_poll(provider: Provider | None, now: dt.datetime) -> dt.datetime | None:
    if provider is None or provider.POLL_BATCH <= 0:
        return None
    return now + dt.timedelta(seconds=provider.config["poll_after_seconds"])


def _clip(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
