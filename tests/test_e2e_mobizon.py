"""End to end, on both databases: `tracker serve` (gunicorn + worker) and the Mobizon stand-in.

A message goes in through the JSON API, the worker submits it to the stand-in as a form-encoded
sendSmsMessage (string ids come back), and the stand-in posts the webhook events Mobizon would
(int ids, signed): a form event, the delivery report, its retry (same eventId, next attempt)
and a late non-final report. A second test walks the send error path: rate limited, retried,
then rejected for the recipient.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx
from servers import db_rows, tracker_serve, wait_until
from standins.mobizon import MobizonStandIn, Reply, retry_of, webhook_event

KEY = "kz0123456789abcdef0123456789abcdef01234567"
SECRET = "webhook-secret-key"
# The timeline kinds these tests are about (the core also writes e.g. `routed`).
KINDS = ("created", "submitted", "receipt", "retry", "send_failed")
TEXT = "Order #42 shipped & paid: 100% + tracking/ok? – thanks"  # noqa: RUF001 - en dash


def mobizon_settings(url: str, **extra: Any) -> dict[str, Any]:
    return {"base_url": url, "api_key": KEY, "callback_token": "mob-token",
            "webhook_secret": SECRET, **extra}


def test_message_from_api_to_delivered_through_mobizon_webhooks(database_url: str,
                                                                 tmp_path: Path) -> None:
    with MobizonStandIn(api_key=KEY) as mob, tracker_serve(
        tmp_path, database_url=database_url, default_provider="mobizon",
        providers={"mobizon": mobizon_settings(mob.url, sender="Shop", validity_minutes=120)},
    ) as server:
        key = server.create_api_key("e2e")
        with httpx.Client(base_url=server.base_url, timeout=10.0,
                          headers={"Authorization": f"Bearer {key}"}) as api:
            created = api.post("/api/v1/messages", json={
                "to": "+380 73 789 3456", "text": TEXT, "provider": "mobizon"})
            assert created.status_code == 202, created.text
            ident = created.json()["id"]

            def detail() -> dict[str, Any]:
                response = api.get(f"/api/v1/messages/{ident}")
                assert response.status_code == 200, response.text
                return response.json()

            [request] = mob.wait_for_requests(1, timeout=15)
            assert (request.http_method, request.path.split("?")[0]) == (
                "POST", "/service/message/sendSmsMessage")
            assert request.query == {"output": "json", "api": "v1", "apiKey": KEY}
            assert request.content_type == "application/x-www-form-urlencoded"
            assert request.fields == {"recipient": "380737893456", "text": TEXT, "from": "Shop",
                                      "params[validity]": "120"}
            accepted = wait_until(lambda: (d := detail())["status"] == "accepted" and d,
                                  timeout=10, message="message never became accepted")
            message_id = accepted["provider_message_id"]
            assert message_id == "70000000001"  # a JSON string in the send answer

            url = server.callback_url("mobizon")
            t0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
            form = webhook_event(1, event_type="form-submission", secret=SECRET)
            delivered = webhook_event(int(message_id), "DELIVRD", event_id=41, secret=SECRET,
                                      created=t0 + dt.timedelta(seconds=6),
                                      updated=t0 + dt.timedelta(seconds=5))
            late = webhook_event(int(message_id), "PDLIVRD", event_id=40, secret=SECRET,
                                 updated=t0 + dt.timedelta(seconds=2))
            answers = [mob.deliver(url, e) for e in (
                form, delivered, retry_of(delivered, SECRET), late)]
            assert [(a.status_code, a.text.strip()) for a in answers] == [
                (200, "OK ignored"), (200, "OK applied"), (200, "OK duplicate"),
                (200, "OK ignored")]
            final = wait_until(lambda: (d := detail())["status"] == "delivered" and d,
                               timeout=10, message="message never became delivered")

        events = [e for e in final["events"] if e["kind"] in KINDS]
        timeline = [(e["kind"], e["status"], e["applied"], e["raw_status"]) for e in events]
        assert timeline == [
            ("created", "queued", True, None),
            ("submitted", "accepted", True, None),
            ("receipt", "delivered", True, "DELIVRD"),
            ("receipt", "sent", False, "PDLIVRD"),
        ]
        assert events[-1]["reason"] == "message is already final (delivered)"
        assert events[2]["occurred_at"].startswith(
            (t0 + dt.timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S"))
        assert all(e["callback_id"] for e in events[2:])
        callbacks = db_rows(database_url, "SELECT verdict FROM callback ORDER BY id")
        assert callbacks == [("ignored",), ("applied",), ("duplicate",), ("ignored",)]
        assert len(mob.requests) == 1  # sent once, never again


def test_rate_limited_then_rejected_for_the_recipient(database_url: str,
                                                      tmp_path: Path) -> None:
    with MobizonStandIn(api_key=KEY) as mob, tracker_serve(
        tmp_path, database_url=database_url, default_provider="mobizon",
        send_backoff_seconds=0.2, providers={"mobizon": mobizon_settings(mob.url)},
    ) as server:
        mob.script(Reply.error(30), Reply.error(1, {"recipient": ["Invalid phone number"]}))
        key = server.create_api_key("e2e")
        with httpx.Client(base_url=server.base_url, timeout=10.0,
                          headers={"Authorization": f"Bearer {key}"}) as api:
            created = api.post("/api/v1/messages", json={"to": "+380737893456", "text": "hi"})
            assert created.status_code == 202, created.text
            ident = created.json()["id"]
            first, second = mob.wait_for_requests(2, timeout=15)
            final = wait_until(
                lambda: (d := api.get(f"/api/v1/messages/{ident}").json())["status"]
                == "rejected" and d,
                timeout=10, message="message never became rejected")

        assert first.fields == second.fields == {
            "recipient": "380737893456", "text": "hi", "params[validity]": "1440"}
        events = [e for e in final["events"] if e["kind"] in KINDS]
        assert [(e["kind"], e["status"], e["error_code"]) for e in events] == [
            ("created", "queued", None), ("retry", None, "30"),
            ("send_failed", "rejected", "1")]
        assert "Invalid phone number" in events[-1]["detail"]
        assert (final["error_code"], final["provider"]) == ("1", "mobizon")
        assert len(mob.requests) == 2
