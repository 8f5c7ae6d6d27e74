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
from dataclasses import dataclass
from typing import Any

from . import correlation, phones
from .db import execute, is_sqlite, write_tx
from .models import Event, Message, utcnow
from .providers.base import OutboundMessage, Provider, SendError, SendResult
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


@dataclass(frozen=True)
class NewMessage:
    """A validated request to send one SMS."""

    to: str
    text: str
    provider: str
    sender: str | None = None
    client_ref: str | None = None
    send_at: dt.datetime | None = None


def validate(data: dict[str, Any], *, providers: dict[str, Provider], default_provider: str,
             default_region: str = "") -> NewMessage:
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
    provider = data.get("provider") or default_provider
    if provider not in providers:
        raise SendRejected("provider", f"provider {provider!r} is not configured "
                                       f"(configured: {', '.join(sorted(providers))})")
    sender, client_ref = data.get("from"), data.get("client_ref")
    for name, value, limit in (("from", sender, 32), ("client_ref", client_ref, 64)):
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise SendRejected(name, f"{name} must be a string of at most {limit} characters")
    return NewMessage(to=to, text=text, provider=provider, sender=sender or None,
                      client_ref=client_ref or None, send_at=_parse_send_at(data.get("send_at")))


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
    with write_tx():
        message = Message.create(
            reference=new_reference(), client_ref=new.client_ref, provider=new.provider,
            recipient=new.to, sender=new.sender, text=new.text, status=status,
            status_rank=0, status_order=order_key(status, None), send_at=new.send_at,
            due_at=new.send_at if scheduled else now, created_at=now, updated_at=now,
        )
        Event.create(message=message, kind="created", source=source, provider=new.provider,
                     status=status, applied=True, received_at=now,
                     detail=f"scheduled for {new.send_at:%Y-%m-%d %H:%M:%S} UTC" if scheduled
                     else None)
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
        if not _hold_for_send(message):
            continue  # our batch claim ran out and another dispatcher took this message
        provider = providers.get(message.provider)
        try:
            if provider is None:
                raise SendError(f"provider {message.provider!r} is no longer configured",
                                permanent=True, status=Status.FAILED, code="NOT_CONFIGURED")
            result = provider.send(outbound_for(message, provider))
        except SendError as exc:
            record_failure(message, exc, max_attempts=max_attempts,
                           backoff_seconds=backoff_seconds)
        except Exception as exc:  # a provider bug must not stop the batch
            log.exception("provider %s crashed on message %s", message.provider, message.id)
            record_failure(message, SendError(f"internal error: {exc!r}", permanent=False),
                           max_attempts=max_attempts, backoff_seconds=backoff_seconds)
        else:
            record_accepted(message, result)
    return len(messages)


def outbound_for(message: Message, provider: Provider) -> OutboundMessage:
    """What the provider module gets: the message, its callback URL and its validity."""
    return OutboundMessage(
        reference=message.reference, to=message.recipient, text=message.text,
        sender=message.sender, callback_url=provider.callback_url(message.reference),
        validity=dt.timedelta(minutes=provider.config["validity_minutes"]),
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


def record_accepted(message: Message, result: SendResult) -> None:
    """Store the provider id, move to `accepted`, and apply receipts that waited for it."""
    now = utcnow()
    with write_tx():
        Message.update(provider_message_id=result.provider_message_id, submitted_at=now,
                       due_at=None, claimed_until=None, updated_at=now
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


def _clip(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
