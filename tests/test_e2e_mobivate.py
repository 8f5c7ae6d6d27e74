"""End to end, on both databases: `tracker serve` (gunicorn + worker) and the Mobivate stand-in.

A message goes in through the JSON API, the worker submits it to `/send/single`, and the
stand-in posts the receipts Mobivate would: JSON, with a `deliveryMessageId` that is not the
send answer's id, so the first is matched through `clientReference` (our reference) and gives
the message that log id, by which a later receipt without a reference is matched. A duplicate
and a late, out-of-order receipt follow; the API shows the whole timeline. A 400 "Missing
Originator object" is our configuration's fault, not the recipient's: the message fails over
to the next provider of its route.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx
from servers import db_rows, tracker_serve, wait_until
from standins.mobivate import MobivateStandIn, Reply, SentMessage

KEY = "e2e-mobivate-key"
TOKEN = "mob-secret-token"
TEXT = "Your parcel arrives today – reply STOP to opt out"  # noqa: RUF001 - non-ASCII on purpose


def mobivate_settings(base_url: str) -> dict[str, Any]:
    return {"base_url": base_url, "api_key": KEY, "sender": "ACME", "callback_token": TOKEN}


def test_message_from_api_to_delivered_through_mobivate_receipts(database_url: str,
                                                                  tmp_path: Path) -> None:
    with MobivateStandIn(api_key=KEY) as mob, tracker_serve(
        tmp_path, database_url=database_url, default_provider="mobivate",
        providers={"mobivate": mobivate_settings(mob.url)},
    ) as server:
        key = server.create_api_key("e2e")
        with httpx.Client(base_url=server.base_url, timeout=10.0,
                          headers={"Authorization": f"Bearer {key}"}) as api:
            created = api.post("/api/v1/messages", json={
                "to": "+44 7900 000001", "text": TEXT, "client_ref": "order-7"})
            assert created.status_code == 202, created.text
            message = created.json()
            assert (message["to"], message["provider"], message["status"]) == (
                "+447900000001", "mobivate", "queued")
            ident, reference = message["id"], message["reference"]

            def detail() -> dict[str, Any]:
                response = api.get(f"/api/v1/messages/{ident}")
                assert response.status_code == 200, response.text
                return response.json()

            # The worker submits it to the stand-in: the request, field by field.
            [sent] = mob.wait_for_messages(1, timeout=15)
            request = sent.request
            assert (request.method, request.path) == ("POST", "/send/single")
            assert request.headers["authorization"] == f"Bearer {KEY}"
            assert request.headers["content-type"] == "application/json"
            assert request.fields == {
                "text": TEXT, "originator": "ACME", "recipient": "447900000001",
                "reference": reference, "callbackURL": server.callback_url("mobivate"),
                "shortenUrls": None, "excludeOptouts": None, "scheduleDateTime": None,
            }
            assert request.extra_fields == ()
            accepted = wait_until(lambda: (d := detail())["status"] == "accepted" and d,
                                  timeout=10, message="message never became accepted")
            assert accepted["provider_message_id"] == sent.record_id
            assert sent.log_id != sent.record_id  # receipts will name another id

            # Mobivate posts every change: accepted by the carrier, delivered, the delivery
            # again, then a late "acknowledged by the next tier" from before the delivery, which
            # carries no clientReference (null, as in the published receipt): the log id that
            # came with the first receipt finds the message.
            url = server.callback_url("mobivate")
            t0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
            carrier = sent.dlr("ACCEPTED", created=t0 + dt.timedelta(seconds=1))
            delivered = sent.dlr("DELIVERED", created=t0 + dt.timedelta(seconds=5))
            late = sent.dlr("INTERIM_ACKNOWLEDGED", created=t0 + dt.timedelta(seconds=2),
                            client_reference=None)
            answers = [mob.deliver(url, body) for body in (carrier, delivered, delivered, late)]
            assert [(a.status_code, a.text.strip()) for a in answers] == [
                (200, "OK applied"), (200, "OK applied"), (200, "OK duplicate"),
                (200, "OK ignored"),
            ]
            final = wait_until(lambda: (d := detail())["status"] == "delivered" and d,
                               timeout=10, message="message never became delivered")

        assert final["provider_message_id"] == sent.log_id  # kept from the first receipt
        assert final["client_ref"] == "order-7"
        timeline = [(e["kind"], e["status"], e["applied"], e["raw_status"])
                    for e in final["events"]]
        assert timeline == [
            ("created", "queued", True, None),
            ("routed", None, None, None),  # default_provider chose mobivate
            ("submitted", "accepted", True, None),
            ("receipt", "sent", True, "ACCEPTED (2)"),
            ("receipt", "delivered", True, "DELIVERED (1)"),
            ("receipt", "sent", False, "INTERIM_ACKNOWLEDGED (9)"),
        ]
        assert final["events"][-1]["reason"] == "message is already final (delivered)"
        assert all(e["callback_id"] for e in final["events"][3:])
        assert final["status_at"].startswith(
            (t0 + dt.timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S"))
        assert json.loads(final["events"][2]["detail"])["record"]["id"] == sent.record_id

        rows = db_rows(database_url, "SELECT provider_message_id, reference FROM event"
                                     " WHERE kind = 'receipt' ORDER BY id")
        assert rows == [(sent.log_id, reference)] * 2 + [(sent.log_id, None)]
        assert db_rows(database_url, "SELECT provider_message_id FROM event"
                                     " WHERE kind = 'submitted'") == [(sent.record_id,)]
        callbacks = db_rows(database_url, "SELECT verdict FROM callback ORDER BY id")
        assert callbacks == [("applied",), ("applied",), ("duplicate",), ("ignored",)]
        assert len(mob.sends) == 1  # sent once, never again

        server.stop()


def test_receipt_that_beats_the_send_answer_is_matched_by_reference(database_url: str,
                                                                     tmp_path: Path) -> None:
    """Mobivate posts a receipt before the worker has read the send answer: it finds the
    message by `clientReference` at once (no orphan), and the late `accepted` does not lower it."""
    with MobivateStandIn(api_key=KEY) as mob, tracker_serve(
        tmp_path, database_url=database_url, default_provider="mobivate",
        providers={"mobivate": mobivate_settings(mob.url)},
    ) as server:
        early: list[tuple[int, str]] = []

        def receipt_first(sent: SentMessage) -> None:
            answer = mob.deliver(server.callback_url("mobivate"), sent.dlr("ACCEPTED"))
            early.append((answer.status_code, answer.text.strip()))

        mob.on_send = receipt_first
        key = server.create_api_key("e2e")
        with httpx.Client(base_url=server.base_url, timeout=10.0,
                          headers={"Authorization": f"Bearer {key}"}) as api:
            created = api.post("/api/v1/messages", json={"to": "+447900000002",
                                                         "text": "early bird", "from": "Shop"})
            assert created.status_code == 202, created.text
            ident = created.json()["id"]
            [sent] = mob.wait_for_messages(1, timeout=15)
            assert sent.request["originator"] == "Shop"

            def submitted() -> dict[str, Any] | None:
                d = api.get(f"/api/v1/messages/{ident}").json()
                return d if any(e["kind"] == "submitted" for e in d["events"]) else None

            after_send = wait_until(submitted, timeout=10, message="never submitted")
            # A receipt naming the message by its log id alone (no reference) still finds it.
            answer = mob.deliver(server.callback_url("mobivate"),
                                 sent.dlr("FAILED_NACK", client_reference=None))
            assert (answer.status_code, answer.text.strip()) == (200, "OK applied")
            final = api.get(f"/api/v1/messages/{ident}").json()

        assert not mob.hook_errors
        assert early == [(200, "OK applied")]
        assert after_send["status"] == "sent"
        # The early receipt gave the message its log id; the late send answer keeps it (the
        # UUID stays on the `submitted` event).
        assert after_send["provider_message_id"] == sent.log_id
        timeline = [(e["kind"], e["status"], e["applied"]) for e in final["events"]]
        assert timeline == [("created", "queued", True), ("routed", None, None),
                            ("receipt", "sent", True),
                            ("submitted", "accepted", False), ("receipt", "undelivered", True)]
        assert (final["status"], final["error_code"]) == ("undelivered", "FAILED_NACK")
        assert final["provider_message_id"] == sent.log_id
        assert final["error_detail"] == "accepted but not delivered to the handset"
        assert db_rows(database_url, "SELECT count(*) FROM event WHERE message_id IS NULL") == [
            (0,)]


def test_missing_originator_fails_over_to_the_next_provider(database_url: str,
                                                            tmp_path: Path) -> None:
    """A 400 is not always the recipient's fault. PROTOCOLS.md §2.2 "Responses":

        400 `{"success":false,"error":{"name":"ValidationError","statusCode":400,
        "object":"Missing Originator object"}}`

    The originator is our sender ID: a fault of our configuration, so on the route
    "mobivate,fake" the message goes on to `fake` at once (README "Routing and failover": "A
    provider-side failure … fails over at once to the next provider in the route"). An
    "Invalid Recipient object" on the same route is the number's fault: `rejected`, no
    failover ("A recipient-side rejection … never fails over")."""
    with MobivateStandIn(api_key=KEY) as mob, tracker_serve(
        tmp_path, database_url=database_url, default_provider="mobivate",
        providers={"mobivate": mobivate_settings(mob.url)},
        routes={"default": "mobivate,fake"},
    ) as server:
        mob.script(Reply.validation("Originator"), Reply.validation("Recipient", "Invalid"))
        key = server.create_api_key("e2e")
        with httpx.Client(base_url=server.base_url, timeout=10.0,
                          headers={"Authorization": f"Bearer {key}"}) as api:

            def detail(ident: int) -> dict[str, Any]:
                response = api.get(f"/api/v1/messages/{ident}")
                assert response.status_code == 200, response.text
                return response.json()

            created = api.post("/api/v1/messages", json={"to": "+447900000003",
                                                         "text": "fail me over"})
            assert created.status_code == 202, created.text
            message = created.json()
            assert (message["provider"], message["failover"]) == ("mobivate", ["fake"])
            final = wait_until(lambda: (d := detail(message["id"]))["status"] == "delivered"
                               and d, timeout=15, message="never delivered through fake")
            assert len(mob.sends) == 1

            second = api.post("/api/v1/messages", json={"to": "+447900000004",
                                                        "text": "bad number"})
            assert second.status_code == 202, second.text
            rejected = wait_until(
                lambda: (d := detail(second.json()["id"]))["status"] == "rejected" and d,
                timeout=15, message="never rejected")

        assert (final["provider"], final["failover"], final["error_code"]) == ("fake", [], None)
        assert [(e["kind"], e["status"], e["error_code"]) for e in final["events"]] == [
            ("created", "queued", None),
            ("routed", None, None),
            ("failover", None, "ValidationError"),
            ("submitted", "accepted", None),
            ("receipt", "delivered", None),
        ]
        failover = final["events"][2]["detail"]
        assert failover.startswith("mobivate failed (Mobivate HTTP 400 ValidationError: "
                                   "Missing Originator object); trying fake"), failover

        assert (rejected["provider"], rejected["error_code"]) == ("mobivate", "ValidationError")
        assert "Invalid Recipient object" in rejected["error_detail"]
        assert [e["kind"] for e in rejected["events"]] == ["created", "routed", "send_failed"]
        assert [r["recipient"] for r in (s.fields for s in mob.sends)] == [
            "447900000003", "447900000004"]
        assert mob.messages == []  # Mobivate took neither
