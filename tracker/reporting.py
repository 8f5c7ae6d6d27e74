"""Query functions the API, the dashboard and the CLI share (no Flask imports)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import peewee as pw

from . import phones
from .models import Callback, Event, Message
from .status import Status

PAGE_SIZE = 50


def iso(value: dt.datetime | None) -> str | None:
    """Naive UTC -> ISO 8601 with Z."""
    return value.isoformat(timespec="milliseconds") + "Z" if value else None


def resolve_message_id(ident: str) -> int | None:
    """A message id from its numeric id or its reference."""
    if ident.isdigit():
        found = Message.select(Message.id).where(Message.id == int(ident)).first()
    else:
        found = Message.select(Message.id).where(Message.reference == ident).first()
    return found.id if found else None


def message_detail(message_id: int) -> dict[str, Any]:
    """The API representation of one message with its events."""
    m = Message.get_by_id(message_id)
    return {
        "id": m.id,
        "reference": m.reference,
        "client_ref": m.client_ref,
        "provider": m.provider,
        "provider_message_id": m.provider_message_id,
        "status": m.status,
        "status_inferred": m.status_inferred,
        "to": m.recipient,
        "from": m.sender,
        "text": m.text,
        "encoding": m.encoding,
        "segments": m.segments,
        "failover": m.route.split(",") if m.route else [],  # providers still to try
        "error_code": m.error_code,
        "error_detail": m.error_detail,
        "attempts": m.attempts,
        "send_at": iso(m.send_at),
        "created_at": iso(m.created_at),
        "submitted_at": iso(m.submitted_at),
        "status_at": iso(m.status_at),
        "expires_at": iso(m.expires_at),
        "updated_at": iso(m.updated_at),
        "events": [event_dict(e) for e in timeline(message_id)],
    }


def event_dict(e: Event) -> dict[str, Any]:
    """The API representation of one event."""
    return {
        "id": e.id,
        "kind": e.kind,
        "source": e.source,
        "status": e.status,
        "applied": e.applied,
        "reason": e.reason,
        "raw_status": e.raw_status,
        "error_code": e.error_code,
        "detail": e.detail,
        "callback_id": e.callback_id,
        "occurred_at": iso(e.occurred_at),
        "received_at": iso(e.received_at),
    }


def timeline(message_id: int) -> list[Event]:
    """Every event of a message, in the order we recorded them."""
    return list(Event.select().where(Event.message == message_id).order_by(Event.id))


def callbacks_for(events: list[Event]) -> dict[int, Callback]:
    """The raw callbacks behind a set of events, by id."""
    ids = {e.callback_id for e in events if e.callback_id}
    if not ids:
        return {}
    return {c.id: c for c in Callback.select().where(Callback.id.in_(ids))}


@dataclass(frozen=True)
class MessageFilter:
    """What the messages list is narrowed to."""

    status: str = ""
    provider: str = ""
    q: str = ""  # phone number in any format, reference, provider message id or client_ref
    before: int | None = None  # keyset pagination: ids below this one


def list_messages(f: MessageFilter, default_region: str = "",
                  limit: int = PAGE_SIZE) -> list[Message]:
    """Newest first, narrowed by the filter; one index range scan per shape."""
    query = Message.select(
        Message.id, Message.reference, Message.provider, Message.provider_message_id,
        Message.recipient, Message.status, Message.status_at, Message.created_at,
        Message.error_code, Message.client_ref,
    )
    return list(narrow(query, f, default_region).order_by(Message.id.desc()).limit(limit))


def narrow(query: pw.ModelSelect, f: MessageFilter, default_region: str = "") -> pw.ModelSelect:
    """Apply a filter to any query over Message: the list, the counts and the exports all
    show exactly the same messages."""
    if f.status in {s.value for s in Status}:
        query = query.where(Message.status == f.status)
    if f.provider:
        query = query.where(Message.provider == f.provider)
    if f.q.strip():
        query = query.where(_search_condition(f.q.strip(), default_region))
    if f.before:
        query = query.where(Message.id < f.before)
    return query


def _search_condition(q: str, default_region: str) -> pw.Expression:
    by_text = ((Message.reference == q) | (Message.provider_message_id == q)
               | (Message.client_ref == q))
    number = phones.search_forms(q, default_region)
    return (Message.recipient == number) | by_text if number else by_text


def pretty_body(callback: Callback) -> str:
    """The raw body as text for display: JSON indented, anything else decoded as-is."""
    raw = bytes(callback.body)
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text
