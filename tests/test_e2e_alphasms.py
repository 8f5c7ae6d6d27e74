"""End to end, on both databases: `tracker serve` (gunicorn + worker) and the AlphaSMS stand-in.

A message goes in through the JSON API, the worker submits it to json.php (the default: the
`hook` is documented for json.php only, PROTOCOLS.md §4.3/§4.4) with our message id, its lifetime
and a `hook` URL that carries the callback token and our reference, and the stand-in calls that
hook in the shapes an undocumented hook may take (GET query, JSON body, form body, a second '?'),
with a duplicate and a late, out-of-order report. The API then shows the whole timeline; SIGTERM
stops everything.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx
from servers import db_rows, tracker_serve, wait_until
from standins.alphasms import AlphaSmsStandIn, deliver, http_status, json_status

API_KEY = "alpha-api-key"
TOKEN = "alpha-secret-token"
TEXT = "Замовлення №42 доставлено – дякуємо!"  # noqa: RUF001 - a real Ukrainian en dash


def settings(base_url: str) -> dict[str, Any]:
    return {"base_url": base_url, "api_key": API_KEY, "sender": "Shop.UA",
            "callback_token": TOKEN}


def provider_events(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The events this provider's traffic explains (the core may add its own, e.g. routing)."""
    return [e for e in message["events"] if e["kind"] in ("created", "submitted", "receipt")]


def test_message_from_api_to_delivered_through_hooks(database_url: str, tmp_path: Path) -> None:
    with AlphaSmsStandIn(api_key=API_KEY) as alpha, tracker_serve(
        tmp_path, database_url=database_url, providers={"alphasms": settings(alpha.url)},
        default_provider="alphasms",
    ) as server:
        key = server.create_api_key("e2e")
        with httpx.Client(base_url=server.base_url, timeout=10.0,
                          headers={"Authorization": f"Bearer {key}"}) as api:
            created = api.post("/api/v1/messages", json={
                "to": "+380 50 123 4567", "text": TEXT, "client_ref": "order-42"})
            assert created.status_code == 202, created.text
            message = created.json()
            assert (message["provider"], message["status"]) == ("alphasms", "queued")
            ident, reference = message["id"], message["reference"]

            def detail() -> dict[str, Any]:
                response = api.get(f"/api/v1/messages/{ident}")
                assert response.status_code == 200, response.text
                return response.json()

            [item] = alpha.wait_for_json_items(1, timeout=15)
            hook_url = f"{server.callback_url('alphasms')}?ref={reference}"
            [request] = alpha.json_requests
            assert request["content_type"].startswith("application/json")
            assert request["body"]["auth"] == API_KEY
            assert item == {
                "type": "sms", "id": ident, "phone": 380501234567, "sms_signature": "Shop.UA",
                "sms_message": TEXT, "sms_lifetime": 172800,  # validity_minutes 2880
                "hook": hook_url,
            }
            accepted = wait_until(lambda: (d := detail())["status"] == "accepted" and d,
                                  timeout=10, message="message never became accepted")
            gateway_id = accepted["provider_message_id"]
            assert gateway_id == "84523377"  # json.php's msg_id
            assert alpha.messages[gateway_id].hook == hook_url

            # The hook, as AlphaSMS might call it: sent (GET), delivered (JSON), the delivery
            # again (as form fields this time), then a late "sent" appended with a second '?'.
            t0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
            sent = http_status(gateway_id, 2, t0 + dt.timedelta(seconds=1))
            delivered = json_status(gateway_id, "DELIVERED", t0 + dt.timedelta(seconds=5))
            late_sent = http_status(gateway_id, 2, t0 + dt.timedelta(seconds=2))
            answers = [
                alpha.call_hook(gateway_id, sent, method="GET"),
                alpha.call_hook(gateway_id, delivered, encoding="json"),
                alpha.call_hook(gateway_id, delivered, encoding="form"),
                alpha.call_hook(gateway_id, late_sent, method="GET", naive_query=True),
            ]
            assert [(a.status_code, a.text.strip()) for a in answers] == [
                (200, "OK applied"), (200, "OK applied"), (200, "OK duplicate"),
                (200, "OK ignored"),
            ]
            # Without the token the hook is refused, whatever it carries.
            forged = deliver(hook_url.replace(TOKEN, "guess"), delivered)
            assert forged.status_code == 404

            final = wait_until(lambda: (d := detail())["status"] == "delivered" and d,
                               timeout=10, message="message never became delivered")

        assert (final["provider_message_id"], final["client_ref"]) == (gateway_id, "order-42")
        timeline = [(e["kind"], e["status"], e["applied"], e["raw_status"])
                    for e in provider_events(final)]
        assert timeline == [
            ("created", "queued", True, None),
            ("submitted", "accepted", True, None),
            ("receipt", "sent", True, "2 Sent"),
            ("receipt", "delivered", True, "DELIVERED"),
            ("receipt", "sent", False, "2 Sent"),
        ]
        assert provider_events(final)[-1]["reason"] == "message is already final (delivered)"
        assert all(e["callback_id"] for e in provider_events(final)[2:])
        assert final["status_at"].startswith(
            (t0 + dt.timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S"))

        callbacks = db_rows(database_url, "SELECT verdict, method, query FROM callback ORDER BY id")
        assert [(v, m) for v, m, _ in callbacks] == [
            ("applied", "GET"), ("applied", "POST"), ("duplicate", "POST"), ("ignored", "GET")]
        assert callbacks[0][2].startswith(f"ref={reference}&id={gateway_id}&status=Sent")
        # Sent once, through json.php, never again; nothing went to http.php.
        assert (len(alpha.json_requests), alpha.requests) == (1, [])

        server.stop()  # SIGTERM: exits within 15 s, gunicorn and the worker gone with it


def test_hook_that_beats_the_send_answer_is_matched_by_reference(database_url: str,
                                                                 tmp_path: Path) -> None:
    """AlphaSMS calls the hook before the worker has read json.php's `msg_id`: with no gateway
    id known yet, the ref in the hook URL still finds the message, so the report applies at
    once."""
    with AlphaSmsStandIn(api_key=API_KEY) as alpha, tracker_serve(
        tmp_path, database_url=database_url, providers={"alphasms": settings(alpha.url)},
        default_provider="alphasms",
    ) as server:
        early: list[tuple[int, str]] = []

        def hook_first(body: dict[str, Any]) -> None:
            # Only the status and our ref: no id at all in the body.
            for item in body["data"]:
                answer = deliver(item["hook"], {"status": "DELIVERED"})
                early.append((answer.status_code, answer.text.strip()))

        alpha.on_json_request = hook_first
        key = server.create_api_key("e2e")
        with httpx.Client(base_url=server.base_url, timeout=10.0,
                          headers={"Authorization": f"Bearer {key}"}) as api:
            created = api.post("/api/v1/messages", json={"to": "+380501234567",
                                                         "text": "early bird"})
            assert created.status_code == 202, created.text
            ident = created.json()["id"]
            alpha.wait_for_json_items(1, timeout=15)
            final = wait_until(
                lambda: (d := api.get(f"/api/v1/messages/{ident}").json())["provider_message_id"]
                and d, timeout=10, message="the send answer was never recorded")

        assert not alpha.hook_errors
        assert early == [(200, "OK applied")]
        assert (final["status"], final["provider_message_id"]) == ("delivered", "84523377")
        timeline = [(e["kind"], e["status"], e["applied"]) for e in provider_events(final)]
        assert timeline == [("created", "queued", True), ("receipt", "delivered", True),
                            ("submitted", "accepted", False)]
        assert db_rows(database_url, "SELECT count(*) FROM event WHERE message_id IS NULL") == [
            (0,)]
