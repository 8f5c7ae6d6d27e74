"""The outbox: status changes for client applications, from the trigger's rows to deliveries,
claimed with leases, tried, retried with backoff, given up, re-delivered.

The trigger (m0011) writes an `outbox` row in the transaction of every status change of a
message someone listens to, so a change that committed is told and nothing else is. `fan_out`
gives each row its webhook id and JSON body and one `webhook_delivery` per destination, in one
transaction. `claim` hands due deliveries to a worker: the claim moves `next_at` to the end of
its lease and names the worker in `claimed_by` (cleared when the try is recorded), so a worker
killed mid-delivery leaves rows that are due again when the lease runs out (at once for a
worker of this host known dead: `recover`); at least once, never lost.
`record` writes each try (a `webhook_attempt`) and what follows: delivered, a retry with
exponential backoff and full jitter, or given up past `give_up_at`.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from peewee import fn

from . import webhooks
from .db import execute, is_sqlite, write_tx
from .dispatcher import owner_is_gone
from .models import (
    ApiKey,
    Message,
    Outbox,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    utcnow,
)
from .providers.base import Provider

FAN_OUT_BATCH = 500  # outbox rows per transaction
DISABLE_AFTER = dt.timedelta(days=3)  # an endpoint failing this long is disabled


@dataclass(frozen=True)
class Job:
    """A claimed delivery, with what the sender needs: nothing of it touches the database."""

    delivery_id: int
    url: str
    origin: str
    webhook_id: str
    body: bytes
    secrets: tuple[str, ...]


@dataclass(frozen=True)
class Try:
    """What one HTTP try came to."""

    job: Job
    at: dt.datetime
    status_code: int | None = None
    latency_ms: int | None = None
    response: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """A 2xx answer: delivered."""
        return self.status_code is not None and 200 <= self.status_code < 300


# -- fan-out --------------------------------------------------------------------------------


def fan_out(providers: Mapping[str, Provider], *, retry_hours: float,
            limit: int = FAN_OUT_BATCH, now: dt.datetime | None = None) -> int:
    """Give waiting outbox rows a delivery per destination, each with the event's webhook id
    and body (inside the caller's write transaction); returns how many rows. A handful of
    statements however many rows: on Postgres each is a round trip."""
    now = now or utcnow()
    lock = "" if is_sqlite() else " FOR UPDATE SKIP LOCKED"  # several workers share the rows
    ids = [r[0] for r in execute(
        f"SELECT id FROM outbox WHERE fanned_out_at IS NULL ORDER BY id LIMIT ?{lock}",  # noqa: S608
        (limit,)).fetchall()]
    if not ids:
        return 0
    rows = list(Outbox.select().where(Outbox.id.in_(ids)).order_by(Outbox.id))
    messages = {m.id: m for m in Message.select(
        Message.id, Message.reference, Message.client_ref, Message.provider_message_id,
        Message.segments, Message.status_callback, Message.api_key_id).where(
        Message.id.in_({r.message_id for r in rows}))}
    endpoints = _endpoints({m.api_key_id for m in messages.values() if m.api_key_id})
    give_up = now + dt.timedelta(hours=retry_hours)
    deliveries: list[dict[str, Any]] = []
    for row in rows:
        message = messages[row.message_id]
        provider = providers.get(row.provider)
        meaning = provider.explain(row.error_code) if provider else None
        event = {"webhook_id": webhooks.new_webhook_id(),
                 "payload": webhooks.body(webhooks.payload(row, message, meaning))}
        targets = ([(None, message.status_callback)] if message.status_callback else []) + [
            (e.id, e.url) for e in endpoints.get(message.api_key_id, ())
            if webhooks.wants(e.events, webhooks.event_name(row))]
        deliveries += [{"outbox": row.id, "endpoint": endpoint_id,
                        "api_key_id": message.api_key_id, "url": url,
                        "origin": webhooks.origin(url), **event, "state": "pending",
                        "attempts": 0, "created_at": now, "give_up_at": give_up,
                        "next_at": now}
                       for endpoint_id, url in targets]
    Outbox.update(fanned_out_at=now).where(Outbox.id.in_(ids)).execute()
    for key_id in {d["api_key_id"] for d in deliveries if d["api_key_id"]}:
        webhooks.ensure_secret(key_id)
    for i in range(0, len(deliveries), 200):
        WebhookDelivery.insert_many(deliveries[i:i + 200]).execute()
    return len(rows)


def _endpoints(key_ids: set[int]) -> dict[int, list[WebhookEndpoint]]:
    out: dict[int, list[WebhookEndpoint]] = {}
    if key_ids:
        for endpoint in WebhookEndpoint.select().where(
                WebhookEndpoint.api_key.in_(key_ids) & WebhookEndpoint.disabled_at.is_null()):
            out.setdefault(endpoint.api_key_id, []).append(endpoint)
    return out


def waiting(now: dt.datetime | None = None) -> bool:
    """A cheap read: is anything to fan out, or a delivery due? (Saves a write transaction at
    each idle look.)"""
    now = now or utcnow()
    return execute(
        "SELECT 1 FROM outbox WHERE fanned_out_at IS NULL UNION ALL SELECT 1 FROM"
        " (SELECT 1 FROM webhook_delivery WHERE state = 'pending' AND next_at <= ? LIMIT 1)"
        " AS due LIMIT 1", (now,)).fetchone() is not None


# -- claims ---------------------------------------------------------------------------------


def claim(owner: str, room: Mapping[str, int], *, default_room: int, limit: int,
          lease: dt.timedelta, now: dt.datetime | None = None) -> list[Job]:
    """Claim up to `limit` due deliveries, at most `room[origin]` (else `default_room`) per
    origin, for `lease` (inside the caller's write transaction). Origins without room are left
    out of the look, so one slow receiver's backlog never hides the others' deliveries."""
    now = now or utcnow()
    full = sorted(o for o, n in room.items() if n <= 0)
    skip = f" AND origin NOT IN ({', '.join('?' * len(full))})" if full else ""
    candidates = execute(
        "SELECT id, origin FROM webhook_delivery WHERE state = 'pending'"  # noqa: S608
        f" AND next_at <= ?{skip} ORDER BY next_at LIMIT ?", (now, *full, limit * 4)).fetchall()
    left = dict(room)
    picked: list[int] = []
    for delivery_id, origin in candidates:
        if left.setdefault(origin, default_room) > 0 and len(picked) < limit:
            left[origin] -= 1
            picked.append(delivery_id)
    if not picked:
        return []
    # Guarded: a row another worker claimed since the look (its next_at moved ahead) is not
    # ours; on Postgres the UPDATE waits for that worker's row lock, then re-checks.
    claimed = execute(
        "UPDATE webhook_delivery SET next_at = ?, claimed_by = ?"  # noqa: S608
        f" WHERE id IN ({', '.join('?' * len(picked))}) AND state = 'pending' AND next_at <= ?"
        " RETURNING id, api_key_id, url, origin, webhook_id, payload",
        (now + lease, owner, *picked, now)).fetchall()
    return _jobs(claimed, now)


def _jobs(claimed: list[tuple[Any, ...]], now: dt.datetime) -> list[Job]:
    if not claimed:
        return []
    keys = {k.id: k for k in ApiKey.select().where(ApiKey.id.in_({c[1] for c in claimed
                                                                  if c[1]}))}
    return [Job(delivery_id=d, url=url, origin=origin, webhook_id=webhook_id,
                body=payload.encode("utf-8"),
                secrets=tuple(webhooks.signing_secrets(keys.get(k), now)))
            for d, k, url, origin, webhook_id, payload in sorted(claimed)]


def recover(me: str) -> int:
    """At start: deliveries claimed by this host's workers that are gone are due now (instead
    of when their leases run out); returns how many."""
    owners = [r[0] for r in execute(
        "SELECT DISTINCT claimed_by FROM webhook_delivery WHERE state = 'pending'"
        " AND claimed_by IS NOT NULL").fetchall()]
    gone = [o for o in owners if owner_is_gone(o, me)]
    if not gone:
        return 0
    with write_tx():
        return execute(
            "UPDATE webhook_delivery SET next_at = ?, claimed_by = NULL WHERE state = 'pending'"  # noqa: S608
            f" AND claimed_by IN ({', '.join('?' * len(gone))})", (utcnow(), *gone)).rowcount


# -- outcomes -------------------------------------------------------------------------------


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds before the next try: exponential, with full jitter (a receiver coming back is
    not hit by every sender's retries in the same second)."""
    return random.uniform(0, min(cap, base * 2 ** max(0, attempts - 1)))  # noqa: S311


def record(owner: str, tries: Iterable[Try], *, backoff_base: float, backoff_max: float) -> int:
    """Write the tries and what follows from them (inside the caller's write transaction), in a
    few statements whatever their number; returns how many were delivered."""
    tries = list(tries)
    if not tries:
        return 0
    # A delivery deleted meanwhile (its endpoint removed, its message past retention) takes
    # no attempt: one refused row would fail the whole batch, again and again.
    ids = [t.job.delivery_id for t in tries]
    alive = {r[0] for r in execute(
        f"SELECT id FROM webhook_delivery WHERE id IN ({', '.join('?' * len(ids))})",  # noqa: S608
        ids).fetchall()}
    tries = [t for t in tries if t.job.delivery_id in alive]
    if not tries:
        return 0
    WebhookAttempt.insert_many([
        {"delivery": t.job.delivery_id, "at": t.at, "status_code": t.status_code,
         "latency_ms": t.latency_ms, "response": t.response, "error": t.error}
        for t in tries]).execute()
    delivered = _delivered(owner, [t for t in tries if t.ok])
    for done in tries:
        if not done.ok:
            _failed(owner, done, backoff_base, backoff_max)
    return delivered


def _delivered(owner: str, tries: list[Try]) -> int:
    """Successes: one UPDATE per status code (nearly always one), one per endpoint."""
    by_code: dict[int, list[Try]] = {}
    for done in tries:
        by_code.setdefault(done.status_code or 0, []).append(done)
    count = 0
    endpoints: dict[int, dt.datetime] = {}
    for code, group in by_code.items():
        ids = [t.job.delivery_id for t in group]
        at = max(t.at for t in group)
        changed = execute(
            "UPDATE webhook_delivery SET state = 'delivered', delivered_at = ?, attempts ="  # noqa: S608
            " attempts + 1, last_status_code = ?, last_error = NULL, next_at = NULL,"
            f" claimed_by = NULL WHERE id IN ({', '.join('?' * len(ids))})"
            " AND state = 'pending' AND claimed_by = ? RETURNING endpoint_id",
            (at, code, *ids, owner)).fetchall()
        count += len(changed)
        for (endpoint_id,) in changed:
            if endpoint_id is not None:
                endpoints[endpoint_id] = at
    for endpoint_id, at in endpoints.items():
        execute("UPDATE webhook_endpoint SET last_success_at = ?, failing_since = NULL"
                " WHERE id = ?", (at, endpoint_id))
    return count


def _failed(owner: str, done: Try, base: float, cap: float) -> None:
    why = done.error or f"HTTP {done.status_code}"
    row = execute("SELECT attempts, give_up_at, endpoint_id FROM webhook_delivery"
                  " WHERE id = ? AND state = 'pending' AND claimed_by = ?",
                  (done.job.delivery_id, owner)).fetchone()
    if row is None:  # re-delivered or claimed elsewhere meanwhile: the attempt is kept
        return
    attempts, give_up_at, endpoint_id = row[0] + 1, _as_datetime(row[1]), row[2]
    next_at = done.at + dt.timedelta(seconds=backoff(attempts, base, cap))
    state = "failed" if next_at > give_up_at else "pending"
    execute("UPDATE webhook_delivery SET state = ?, attempts = ?, last_status_code = ?,"
            " last_error = ?, next_at = ?, claimed_by = NULL WHERE id = ?",
            (state, attempts, done.status_code, why[:500],
             next_at if state == "pending" else None, done.job.delivery_id))
    if endpoint_id is not None:
        execute("UPDATE webhook_endpoint SET failing_since = COALESCE(failing_since, ?),"
                " last_error = ?, last_error_at = ? WHERE id = ?",
                (done.at, why[:500], done.at, endpoint_id))


def _as_datetime(value: object) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))


# -- repair ---------------------------------------------------------------------------------


def redeliver(delivery_ids: Iterable[int], *, retry_hours: float,
              now: dt.datetime | None = None) -> int:
    """Try these deliveries again now, with the same webhook id and a fresh retry window;
    returns how many (a delivery under way is left to finish)."""
    ids = list(delivery_ids)
    if not ids:
        return 0
    now = now or utcnow()
    with write_tx():
        return execute(
            "UPDATE webhook_delivery SET state = 'pending', next_at = ?, give_up_at = ?,"  # noqa: S608
            f" claimed_by = NULL WHERE id IN ({', '.join('?' * len(ids))})"
            " AND NOT (state = 'pending' AND claimed_by IS NOT NULL)",
            (now, now + dt.timedelta(hours=retry_hours), *ids)).rowcount


def failed_since(endpoint_id: int, since: dt.datetime) -> list[int]:
    """Ids of an endpoint's deliveries given up on, created at or after `since`."""
    return [d.id for d in WebhookDelivery.select(WebhookDelivery.id).where(
        (WebhookDelivery.endpoint == endpoint_id) & (WebhookDelivery.state == "failed")
        & (WebhookDelivery.created_at >= since))]


def endpoint_counts(endpoint_id: int, since: dt.datetime) -> dict[str, int]:
    """An endpoint's deliveries created since `since`, by state (pending, delivered, failed)."""
    query = (WebhookDelivery.select(WebhookDelivery.state, fn.COUNT(WebhookDelivery.id))
             .where((WebhookDelivery.endpoint == endpoint_id)
                    & (WebhookDelivery.created_at >= since))
             .group_by(WebhookDelivery.state).tuples())
    return dict(query)


def disable_failing(now: dt.datetime | None = None) -> list[int]:
    """Disable the endpoints that have failed without a success for DISABLE_AFTER; their
    pending deliveries are given up (re-deliver them once the endpoint works again)."""
    now = now or utcnow()
    with write_tx():
        ids = [e.id for e in WebhookEndpoint.select(WebhookEndpoint.id).where(
            WebhookEndpoint.disabled_at.is_null()
            & (WebhookEndpoint.failing_since < now - DISABLE_AFTER))]
        if not ids:
            return []
        WebhookEndpoint.update(
            disabled_at=now, disabled_reason=f"failing since more than {DISABLE_AFTER.days}"
            " days without a success").where(WebhookEndpoint.id.in_(ids)).execute()
        WebhookDelivery.update(state="failed", next_at=None,
                               last_error="endpoint disabled").where(
            WebhookDelivery.endpoint.in_(ids) & (WebhookDelivery.state == "pending")).execute()
    return ids


def enable(endpoint_id: int) -> bool:
    """Enable a disabled endpoint again (its failure streak starts afresh)."""
    with write_tx():
        return WebhookEndpoint.update(disabled_at=None, disabled_reason=None,
                                      failing_since=None).where(
            WebhookEndpoint.id == endpoint_id).execute() == 1


# -- reading (the dashboard's pages) --------------------------------------------------------


def deliveries_of(message_id: int) -> list[tuple[WebhookDelivery, list[Any]]]:
    """A message's deliveries, each with its attempts, oldest first."""
    deliveries = list(WebhookDelivery.select(WebhookDelivery, Outbox.status, Outbox.kind)
                      .join(Outbox).where(Outbox.message == message_id)
                      .order_by(WebhookDelivery.id))
    tries: dict[int, list[Any]] = {}
    if deliveries:
        for attempt in (WebhookAttempt.select()
                        .where(WebhookAttempt.delivery.in_([d.id for d in deliveries]))
                        .order_by(WebhookAttempt.id)):
            tries.setdefault(attempt.delivery_id, []).append(attempt)
    return [(d, tries.get(d.id, [])) for d in deliveries]


def endpoints_page(since: dt.datetime) -> list[tuple[WebhookEndpoint, dict[str, int]]]:
    """Every endpoint with its deliveries since `since`, by state."""
    return [(e, endpoint_counts(e.id, since)) for e in
            WebhookEndpoint.select(WebhookEndpoint, ApiKey).join(ApiKey)
            .order_by(WebhookEndpoint.id)]


def disabled_endpoints() -> list[WebhookEndpoint]:
    """Endpoints disabled after failing (the overview's notice)."""
    return list(WebhookEndpoint.select(WebhookEndpoint, ApiKey).join(ApiKey).where(
        WebhookEndpoint.disabled_at.is_null(False)).order_by(WebhookEndpoint.id))
