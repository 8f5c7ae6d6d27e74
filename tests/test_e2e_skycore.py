"""End to end, on both databases: `tracker serve` (gunicorn + worker) and the Skycore stand-in.

A message goes in through the JSON API, the worker submits it to the stand-in, the stand-in posts
the postbacks Skycore would (N201 <POSTBACK>, legacy delivery <NOTIFICATION>, a duplicate of it
and a late legacy "sent"; or the v2 JSON ones), and the API shows the whole timeline. SIGTERM
then stops everything.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SKYCORE
from servers import db_rows, start_tracker, tracker_serve, wait_until
from standins.skycore import Reply, SendRequest, SkycoreStandIn

TEXT = "Hello Jerry – Greetings from Marc!!"  # noqa: RUF001 - the seed's en dash, on purpose


def test_message_from_api_to_delivered_through_skycore_postbacks(database_url: str,
                                                                  tmp_path: Path) -> None:
    with SkycoreStandIn(api_key=SKYCORE["api_key"]) as sky, tracker_serve(
        tmp_path, database_url=database_url, skycore_url=sky.url,
    ) as server:
        key = server.create_api_key("e2e")
        with httpx.Client(base_url=server.base_url, timeout=10.0,
                          headers={"Authorization": f"Bearer {key}"}) as api:
            created = api.post("/api/v1/messages", json={
                "to": "+1 555 123 4888", "text": TEXT, "provider": "skycore",
                "client_ref": "order-42"})
            assert created.status_code == 202, created.text
            message = created.json()
            assert (message["to"], message["status"]) == ("+15551234888", "queued")
            ident = message["id"]

            def detail() -> dict[str, Any]:
                response = api.get(f"/api/v1/messages/{ident}")
                assert response.status_code == 200, response.text
                return response.json()

            # The worker picks it up and submits it to the stand-in.
            [request] = sky.wait_for_requests(1, timeout=15)
            assert request.transport == "form"
            assert request.fields == {
                "ACTION": "sendSMS", "API_KEY": SKYCORE["api_key"], "TO": "15551234888",
                "FROM": SKYCORE["shortcode"], "TEXT": TEXT, "CAMPAIGNREF": None,
            }
            accepted = wait_until(lambda: (d := detail())["status"] == "accepted" and d,
                                  timeout=10, message="message never became accepted")
            tracking_id = accepted["provider_message_id"]
            assert tracking_id == "SMS_1"

            # Skycore posts back: sent, delivered, the delivery again, then a late "sent".
            url = server.callback_url()
            t0 = dt.datetime.now(dt.UTC)
            sent = sky.postback(tracking_id, "N201", timestamp=t0 + dt.timedelta(seconds=1))
            delivered = sky.notification_delivery(tracking_id, protocol="4", status="0",
                                                  timestamp=t0 + dt.timedelta(seconds=5))
            late_sent = sky.notification_sent(tracking_id,
                                              timestamp=t0 + dt.timedelta(seconds=2))
            answers = [
                sky.deliver(url, sent),
                sky.deliver(url, delivered),
                sky.deliver(url, delivered, form=True),  # Skycore retrying, as xml= this time
                sky.deliver(url, late_sent),
            ]
            assert [(a.status_code, a.text.strip()) for a in answers] == [
                (200, "OK applied"), (200, "OK applied"), (200, "OK duplicate"),
                (200, "OK ignored"),
            ]

            final = wait_until(lambda: (d := detail())["status"] == "delivered" and d,
                               timeout=10, message="message never became delivered")

        assert final["provider_message_id"] == tracking_id
        assert final["client_ref"] == "order-42"
        timeline = [(e["kind"], e["status"], e["applied"], e["raw_status"])
                    for e in final["events"]]
        assert timeline == [
            ("created", "queued", True, None),
            ("submitted", "accepted", True, None),
            ("receipt", "sent", True, "N201 Message Sent"),
            ("receipt", "delivered", True, "N201 P4:0"),
            ("receipt", "sent", False, "N201"),
        ]
        late = final["events"][-1]
        assert late["reason"] == "message is already final (delivered)"
        assert [e["status"] for e in final["events"]].count("delivered") == 1  # duplicate folded
        assert all(e["callback_id"] for e in final["events"][2:])
        assert final["status_at"].startswith(
            (t0 + dt.timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S"))

        callbacks = db_rows(database_url, "SELECT verdict, method FROM callback ORDER BY id")
        assert callbacks == [("applied", "POST"), ("applied", "POST"), ("duplicate", "POST"),
                             ("ignored", "POST")]
        assert len(sky.requests) == 1  # sent once, never again

        server.stop()  # SIGTERM: exits within 15 s, gunicorn and the worker gone with it


def test_delivery_receipt_that_beats_the_send_response(database_url: str,
                                                       tmp_path: Path) -> None:
    """Skycore posts the delivery before the worker has read the sendSMS answer: the receipt
    is stored as an orphan and applied once the worker records the TRACKINGID."""
    with SkycoreStandIn(api_key=SKYCORE["api_key"]) as sky, tracker_serve(
        tmp_path, database_url=database_url, skycore_url=sky.url,
    ) as server:
        early: list[tuple[int, str]] = []

        def postback_first(_request: SendRequest) -> None:
            answer = sky.deliver(server.callback_url(), sky.postback("SMS_early", "N202"))
            early.append((answer.status_code, answer.text.strip()))

        sky.on_request = postback_first
        sky.script(Reply.success("SMS_early"))
        key = server.create_api_key("e2e")
        with httpx.Client(base_url=server.base_url, timeout=10.0,
                          headers={"Authorization": f"Bearer {key}"}) as api:
            created = api.post("/api/v1/messages", json={
                "to": "+15551234888", "text": "early bird", "provider": "skycore"})
            assert created.status_code == 202, created.text
            ident = created.json()["id"]
            sky.wait_for_requests(1, timeout=15)
            final = wait_until(
                lambda: (d := api.get(f"/api/v1/messages/{ident}").json())["status"]
                == "delivered" and d,
                timeout=10, message="the early receipt was never applied")

        assert not sky.hook_errors
        assert early == [(200, "OK orphan")]
        assert final["provider_message_id"] == "SMS_early"
        by_kind = {e["kind"]: e for e in final["events"]}
        assert sorted(by_kind) == ["created", "receipt", "submitted"]
        assert (by_kind["receipt"]["status"], by_kind["receipt"]["applied"]) == (
            "delivered", True)
        assert by_kind["submitted"]["status"] == "accepted"
        assert db_rows(database_url, "SELECT count(*) FROM event WHERE message_id IS NULL") == [
            (0,)]


def test_v2_json_postbacks_move_a_sent_message_to_delivered(database_url: str,
                                                          tmp_path: Path) -> None:
    """PROTOCOLS.md §3.3 Format C: the Messaging API v2 posts its postbacks as
    "`POST content-type: application/json` with keys `origin`, `code`, `sent-as`, `status`
    (Sent/Delivered/Failed/Rejected), … `tracking-id`, … `timestamp`" to the same account
    Postback URL; §3.4: "postback N201 / v2 `Sent` → sent", "postback N202 / v2 `Delivered` →
    delivered". Through `tracker serve`: v2 N201 makes the message sent, v2 N202 delivered,
    Skycore's retry of the N202 is a duplicate."""
    with SkycoreStandIn(api_key=SKYCORE["api_key"]) as sky, tracker_serve(
        tmp_path, database_url=database_url, skycore_url=sky.url,
    ) as server:
        key = server.create_api_key("e2e")
        with httpx.Client(base_url=server.base_url, timeout=10.0,
                          headers={"Authorization": f"Bearer {key}"}) as api:
            created = api.post("/api/v1/messages", json={
                "to": "+15551234888", "text": "v2 postbacks", "provider": "skycore"})
            assert created.status_code == 202, created.text
            ident = created.json()["id"]

            def status() -> tuple[str, dict[str, Any]]:
                detail = api.get(f"/api/v1/messages/{ident}").json()
                return detail["status"], detail

            sky.wait_for_requests(1, timeout=15)
            wait_until(lambda: status()[0] == "accepted", timeout=10,
                       message="message never became accepted")
            url = server.callback_url()
            t0 = dt.datetime.now(dt.UTC)
            sent = sky.postback_v2("SMS_1", "N201", timestamp=t0 + dt.timedelta(seconds=1))
            answer = sky.deliver(url, sent)
            assert (answer.status_code, answer.text.strip()) == (200, "OK applied")
            assert status()[0] == "sent"

            delivered = sky.postback_v2("SMS_1", "N202", timestamp=t0 + dt.timedelta(seconds=4))
            answers = [sky.deliver(url, delivered), sky.deliver(url, delivered)]
            assert [(a.status_code, a.text.strip()) for a in answers] == [
                (200, "OK applied"), (200, "OK duplicate")]
            final = wait_until(lambda: (s := status())[0] == "delivered" and s[1], timeout=10,
                               message="message never became delivered")

        assert [(e["kind"], e["status"], e["applied"], e["raw_status"])
                for e in final["events"]] == [
            ("created", "queued", True, None),
            ("submitted", "accepted", True, None),
            ("receipt", "sent", True, "N201 Sent"),
            ("receipt", "delivered", True, "N202 Delivered"),
        ]
        assert final["status_at"].startswith(
            (t0 + dt.timedelta(seconds=4)).strftime("%Y-%m-%dT%H:%M:%S"))
        callbacks = db_rows(database_url, "SELECT verdict FROM callback ORDER BY id")
        assert callbacks == [("applied",), ("applied",), ("duplicate",)]
        [(headers,)] = db_rows(database_url, "SELECT headers FROM callback ORDER BY id LIMIT 1")
        assert ["Content-Type", "application/json"] in json.loads(headers)
        assert len(sky.requests) == 1


@pytest.mark.parametrize("level", ["INFO", "WARNING"])
def test_serve_honours_tracker_log_level(tmp_path: Path, level: str) -> None:
    """TRACKER_LOG_LEVEL reaches the web app and the worker: at WARNING the worker's routine
    INFO lines (started, took the lease, stopped) are not written; at INFO they are. `stop()`
    checks the rest: gunicorn and the worker ran, and all exit 0 on SIGTERM."""
    url = f"sqlite:///{tmp_path / 't.sqlite3'}"
    with SkycoreStandIn() as sky:
        server = start_tracker(tmp_path, database_url=url, skycore_url=sky.url,
                               env={"TRACKER_LOG_LEVEL": level})
        # The worker is past its start (it holds the job lease) before it is stopped.
        wait_until(lambda: db_rows(url, "SELECT count(*) FROM lease")[0][0], timeout=60,
                   message="the worker never took the job lease")
        server.stop()
    routine = re.findall(r" INFO \[tracker\.[a-z.]+\] .*", server.output())
    if level == "INFO":
        assert any("took the job lease" in line for line in routine), server.output()
        assert any("worker" in line and "stopped" in line for line in routine), server.output()
    else:
        assert routine == [], routine
