"""Status webhooks to client applications: what is sent, how it is signed, and where to.

Signed per the Standard Webhooks specification (standardwebhooks.com): `webhook-id` (the same
on every retry, so a receiver can deduplicate), `webhook-timestamp` (Unix seconds of this try)
and `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">` keyed by the API key's
secret `whsec_<base64>`. During a rotation's grace period the old secret signs too (the header
then holds both signatures, space-separated), so a receiver can switch at its own pace.

Where to: the message's `status_callback` URL and its API key's endpoints whose event filter
matches. The outbox (tracker.outbox) and the sender (tracker.webhook_sender) do the rest.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
from typing import Any
from urllib.parse import urlsplit

from .db import write_tx
from .models import ApiKey, Outbox, WebhookEndpoint, utcnow
from .status import Status

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, no secret
ROTATION_GRACE = dt.timedelta(hours=24)  # the old secret keeps signing this long
# Event names a filter may name: every status, and failover (a provider gave up, the next
# one of the route takes the message; its status stays `queued`).
EVENTS = (*(s.value for s in Status), "failover")
URL_MAX = 2048


class WebhookRefused(ValueError):
    """A webhook URL or event filter that cannot be used; says why."""


# -- where to -------------------------------------------------------------------------------


def check_url(url: Any) -> str:
    """A webhook URL as stored: http(s), a host, no credentials, no fragment."""
    if not isinstance(url, str) or not url.strip():
        raise WebhookRefused("must be an http:// or https:// URL")
    url = url.strip()
    if len(url) > URL_MAX:
        raise WebhookRefused(f"is longer than {URL_MAX} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise WebhookRefused(f"is not a valid URL ({exc})") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise WebhookRefused("must not carry a user or password (the signature authenticates)")
    if parts.fragment:
        raise WebhookRefused("must not have a #fragment")
    return url


def origin(url: str) -> str:
    """scheme://host:port of a URL: concurrency is bounded per origin."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname}:{port}"


def parse_events(text: str | None) -> str | None:
    """A comma-separated event filter as stored (None = every event); unknown names refused."""
    if text is None or not text.strip() or text.strip() == "*":
        return None
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in EVENTS]
    if unknown:
        raise WebhookRefused(f"unknown event(s) {', '.join(unknown)}; known: {', '.join(EVENTS)}")
    return ",".join(dict.fromkeys(names))


def wants(events: str | None, event: str) -> bool:
    """Whether an endpoint with this filter receives this event name."""
    return events is None or event in events.split(",")


def add_endpoint(key: ApiKey, url: str, events: str | None = None) -> WebhookEndpoint:
    """Register an endpoint for an API key (its secret is created if it has none)."""
    url, events = check_url(url), parse_events(events)
    with write_tx():
        ensure_secret(key.id)
        return WebhookEndpoint.create(api_key=key.id, url=url, events=events)


def remove_endpoint(endpoint_id: int) -> bool:
    """Delete an endpoint with its deliveries and their attempts."""
    with write_tx():
        return WebhookEndpoint.delete().where(WebhookEndpoint.id == endpoint_id).execute() == 1


# -- secrets --------------------------------------------------------------------------------


def new_secret() -> str:
    """A fresh signing secret: whsec_ and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def ensure_secret(key_id: int) -> str:
    """The key's current secret, created now if it has none (inside a write transaction)."""
    current = ApiKey.select(ApiKey.webhook_secret).where(ApiKey.id == key_id).scalar()
    if current:
        return str(current)
    secret = new_secret()
    ApiKey.update(webhook_secret=secret).where(
        (ApiKey.id == key_id) & ApiKey.webhook_secret.is_null()).execute()
    return str(ApiKey.select(ApiKey.webhook_secret).where(ApiKey.id == key_id).scalar())


def rotate_secret(key_id: int, grace: dt.timedelta = ROTATION_GRACE,
                  now: dt.datetime | None = None) -> str:
    """A new secret for the key; the old one keeps signing for `grace` (0: stops at once)."""
    now = now or utcnow()
    with write_tx():
        old = ensure_secret(key_id)
        secret = new_secret()
        ApiKey.update(webhook_secret=secret, webhook_secret_previous=old if grace else None,
                      webhook_secret_previous_until=now + grace if grace else None).where(
            ApiKey.id == key_id).execute()
    return secret


def signing_secrets(key: ApiKey | None, now: dt.datetime | None = None) -> list[str]:
    """The secrets that sign this key's webhooks now: the current one, and the previous one
    during its grace period."""
    if key is None or not key.webhook_secret:
        return []
    now = now or utcnow()
    out = [key.webhook_secret]
    until = key.webhook_secret_previous_until
    if key.webhook_secret_previous and until and until > now:
        out.append(key.webhook_secret_previous)
    return out


# -- signing --------------------------------------------------------------------------------


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of a body, per Standard Webhooks."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    content = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(webhook_id: str, body: bytes, keys: list[str], timestamp: int) -> dict[str, str]:
    """The Standard Webhooks headers of one try (every current secret signs)."""
    out = {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp),
           "content-type": "application/json"}
    if keys:
        out["webhook-signature"] = " ".join(sign(k, webhook_id, timestamp, body) for k in keys)
    return out


# -- what is sent ---------------------------------------------------------------------------


def event_name(row: Outbox) -> str:
    """The name filters use: the status, or `failover`."""
    return "failover" if row.kind == "failover" else row.status


def new_webhook_id() -> str:
    """The id a receiver deduplicates on: random, so two installations never collide."""
    return "msg_" + secrets.token_hex(12)


def payload(row: Outbox, message: Any, meaning: str | None) -> dict[str, Any]:
    """The event: Standard Webhooks' type/timestamp/data shape, `data` in the API's message
    field names, as the message stood at the change."""
    from .reporting import iso

    data = {
        "id": message.id,
        "reference": message.reference,
        "client_ref": message.client_ref,
        "provider": row.provider,
        "provider_message_id": message.provider_message_id,
        "status": row.status,
        "status_inferred": bool(row.status_inferred),
        "error_code": row.error_code,
        "error_meaning": meaning,
        "error_detail": row.error_detail,
        "segments": message.segments,
        "status_at": iso(row.status_at),
        "changed_at": iso(row.changed_at),
    }
    if row.kind == "failover":
        data["failed_provider"] = row.previous_provider
    return {"type": f"message.{event_name(row)}", "timestamp": iso(row.changed_at),
            "data": data}


def body(event: dict[str, Any]) -> str:
    """The exact bytes signed and sent (compact JSON)."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)
