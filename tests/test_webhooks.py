"""Status webhooks: the outbox written with every status change, fan-out to a message's
status_callback and its key's endpoints, Standard Webhooks signatures (verified with the
`standardwebhooks` package), retries with the same webhook-id, safe sending. Receivers are real
HTTP servers on loopback (tests/webhook_receiver.py); both databases."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import make_config, running
from flask import Flask
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from webhook_receiver import Receiver

from tracker import accounts, correlation, outbox, sending, webhooks
from tracker.db import write_tx
from tracker.models import ApiKey, Message, Outbox, WebhookAttempt, WebhookDelivery, utcnow
from tracker.providers.base import SendError
from tracker.status import Status
from tracker.webhook_sender import Sender

SKY_URL = "/callbacks/skycore/sky-secret-token"


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    """The app with loopback receivers allowed and retries a few milliseconds apart."""
    config = make_config(database_url, webhooks_allow_private=True,
                         webhook_backoff_seconds=0.01, webhook_backoff_max_seconds=0.02)
    with running(config) as flask_app:
        yield flask_app


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


@pytest.fixture
def key(app: Flask) -> ApiKey:
    accounts.create_api_key("shop")
    return ApiKey.get(ApiKey.name == "shop")


def queue(*, callback: str | None = None, key_id: int | None = None,
          provider: str = "fake", **extra: Any) -> Message:
    new = sending.NewMessage(to="+15551234567", text="hi", provider=provider,
                             status_callback=callback, api_key_id=key_id, **extra)
    return sending.enqueue(new, source="test")


def change(message: Message, status: Status, **kwargs: Any) -> bool:
    with write_tx():
        return correlation.set_status(message.id, status, **kwargs)


def deliver(app: Flask, **overrides: Any) -> Sender:
    """Fan out and deliver everything due, as the worker's sender does."""
    sender = Sender(app.extensions["providers"], {**app.config["TRACKER"], **overrides})
    try:
        sender.run_once()
    finally:
        sender.close()
    return sender


def try_once(app: Flask) -> Sender:
    """deliver, with a failure's retry an hour away: against a receiver that always fails,
    the round then ends after one try each. (With this module's retries a few ms apart, a
    round could find a retry due at every look and run into run_once's timeout: seen in CI.)"""
    return deliver(app, webhook_backoff_seconds=3600.0, webhook_backoff_max_seconds=3600.0)


def deliver_until(app: Flask, done: Any, timeout: float = 20.0) -> None:
    """Deliver rounds (retries become due a few ms apart) until `done()`."""
    deadline = time.monotonic() + timeout
    deliver(app)
    while not done():
        assert time.monotonic() < deadline, "deliveries not done in time"
        time.sleep(0.03)
        deliver(app)


# -- the outbox ----------------------------------------------------------------------------


def test_nobody_listening_writes_no_outbox_row(app: Flask, key: ApiKey) -> None:
    """A message without status_callback, or of a key without endpoints, costs nothing."""
    plain, keyed = queue(), queue(key_id=key.id)
    for message in (plain, keyed):
        assert change(message, Status.ACCEPTED)
    assert Outbox.select().count() == 0


def test_every_status_change_is_in_the_outbox_once(app: Flask, key: ApiKey) -> None:
    message = queue(callback="https://example.com/hook")
    change(message, Status.ACCEPTED)
    change(message, Status.SENT, occurred_at=utcnow())
    change(message, Status.SENT, occurred_at=utcnow() + dt.timedelta(seconds=1))  # no change
    change(message, Status.DELIVERED)
    change(message, Status.FAILED)  # refused by the rule: final is final
    rows = list(Outbox.select().order_by(Outbox.id))
    assert [(r.kind, r.status) for r in rows] == [("status", "accepted"), ("status", "sent"),
                                                  ("status", "delivered")]


def test_a_key_with_an_endpoint_gets_outbox_rows(app: Flask, key: ApiKey) -> None:
    message = queue(key_id=key.id)
    change(message, Status.ACCEPTED)
    webhooks.add_endpoint(key, "https://example.com/a")
    change(message, Status.DELIVERED)
    assert [r.status for r in Outbox.select()] == ["delivered"]


def test_a_receipt_through_the_callback_path_is_in_the_outbox(app: Flask, client: Any) -> None:
    """The intake's own statements (one CTE on Postgres) write the outbox row too."""
    from test_callbacks import postback

    from tracker.providers.base import SendResult

    message = queue(callback="https://example.com/hook", provider="skycore")
    sending.record_accepted(message, SendResult("T77"))
    response = client.post(SKY_URL, data=postback("T77"), content_type="text/xml")
    assert response.status_code == 200
    assert [r.status for r in Outbox.select().order_by(Outbox.id)] == ["accepted", "delivered"]


def test_failover_is_told_though_the_status_stays(app: Flask) -> None:
    message = queue(callback="https://example.com/hook", failover=("skycore",))
    message = Message.get_by_id(message.id)
    sending.fail_over(message, SendError("down", permanent=False, code="HTTP_503",
                                         provider_side=True), app.extensions["providers"])
    row = Outbox.get()
    assert (row.kind, row.status, row.provider, row.previous_provider) == (
        "failover", "queued", "skycore", "fake")


def test_expired_inferred_and_send_unknown_are_told(app: Flask) -> None:
    from tracker import expiry

    late = queue(callback="https://example.com/hook")
    Message.update(expires_at=utcnow() - dt.timedelta(minutes=1)).where(
        Message.id == late.id).execute()
    assert expiry.expire_overdue() == 1
    lost = queue(callback="https://example.com/hook")
    Message.update(send_started_at=utcnow(), claimed_by="gone").where(
        Message.id == lost.id).execute()
    started = Message.get_by_id(lost.id).send_started_at
    assert sending.record_lost(lost.id, "gone", started, "test")
    rows = {r.message_id: r for r in Outbox.select()}
    assert (rows[late.id].status, rows[late.id].status_inferred) == ("expired", True)
    assert (rows[lost.id].status, rows[lost.id].error_code) == ("unknown", "SEND_LOST")


# -- delivery and signatures ---------------------------------------------------------------


def test_status_callback_receives_a_verifiable_event(app: Flask, key: ApiKey,
                                                     rx: Receiver) -> None:
    message = queue(callback=rx.url("/status"), key_id=key.id, client_ref="order-7")
    change(message, Status.UNDELIVERED, error_code="N205")
    deliver(app)
    got = rx.wait_for(1)[0]
    secret = ApiKey.get_by_id(key.id).webhook_secret
    assert secret.startswith("whsec_")
    event = Webhook(secret).verify(got.body, got.headers)
    assert event["type"] == "message.undelivered"
    data = event["data"]
    assert {k: data[k] for k in ("id", "reference", "client_ref", "provider", "status",
                                 "error_code", "segments")} == {
        "id": message.id, "reference": message.reference, "client_ref": "order-7",
        "provider": "fake", "status": "undelivered", "error_code": "N205", "segments": 1}
    assert data["changed_at"].endswith("Z") and event["timestamp"] == data["changed_at"]
    assert got.headers["webhook-id"].startswith("msg_")
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.new_secret()).verify(got.body, got.headers)
    delivery = WebhookDelivery.get()
    assert (delivery.state, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)


def test_error_meaning_comes_from_the_provider(app: Flask, key: ApiKey, rx: Receiver) -> None:
    message = queue(callback=rx.url(), key_id=key.id, provider="skycore")
    change(message, Status.UNDELIVERED, error_code="E103")
    deliver(app)
    data = rx.wait_for(1)[0].event["data"]
    explained = app.extensions["providers"]["skycore"].explain("E103")
    assert explained and data["error_meaning"] == explained


def test_key_endpoints_receive_the_events_they_asked_for(app: Flask, key: ApiKey,
                                                         rx: Receiver) -> None:
    webhooks.add_endpoint(key, rx.url("/all"))
    webhooks.add_endpoint(key, rx.url("/final"), "delivered,undelivered,failed")
    message = queue(key_id=key.id, callback=rx.url("/mine"))
    change(message, Status.ACCEPTED)
    change(message, Status.DELIVERED)
    deliver(app)
    rx.wait_for(5)
    paths = sorted((r.path, r.event["data"]["status"]) for r in rx.received)
    assert paths == [("/all", "accepted"), ("/all", "delivered"), ("/final", "delivered"),
                     ("/mine", "accepted"), ("/mine", "delivered")]
    ids = {r.headers["webhook-id"] for r in rx.received if r.event["type"] ==
           "message.delivered"}
    assert len(ids) == 1  # one event, one id, whichever receiver


def test_a_rotated_secret_and_the_old_one_both_sign(app: Flask, key: ApiKey,
                                                    rx: Receiver) -> None:
    with write_tx():
        old = webhooks.ensure_secret(key.id)
    new = webhooks.rotate_secret(key.id)
    change(queue(callback=rx.url(), key_id=key.id), Status.ACCEPTED)
    deliver(app)
    got = rx.wait_for(1)[0]
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(got.body, got.headers)
    webhooks.rotate_secret(key.id, dt.timedelta(0))  # no grace: the old one stops at once
    change(queue(callback=rx.url(), key_id=key.id), Status.ACCEPTED)
    deliver(app)
    got = rx.wait_for(2)[1]
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(got.body, got.headers)


def test_500_then_200_is_retried_with_the_same_webhook_id(app: Flask, key: ApiKey,
                                                          rx: Receiver) -> None:
    rx.answers = [500, 503]
    change(queue(callback=rx.url(), key_id=key.id), Status.DELIVERED)
    deliver_until(app, lambda: WebhookDelivery.get().state == "delivered")
    got = rx.wait_for(3)
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert len({r.headers["webhook-timestamp"] for r in got}) >= 1
    secret = ApiKey.get_by_id(key.id).webhook_secret
    for r in got:
        Webhook(secret).verify(r.body, r.headers)
    tries = list(WebhookAttempt.select().order_by(WebhookAttempt.id))
    assert [t.status_code for t in tries] == [500, 503, 200]
    assert all(t.latency_ms is not None and t.response == "ok" for t in tries)
    assert WebhookDelivery.get().attempts == 3


def test_backoff_grows_with_full_jitter() -> None:
    waits = [outbox.backoff(n, 5.0, 3600.0) for n in range(1, 12) for _ in range(200)]
    assert all(0 <= w <= 3600 for w in waits)
    first = [outbox.backoff(1, 5.0, 3600.0) for _ in range(500)]
    tenth = [outbox.backoff(10, 5.0, 3600.0) for _ in range(500)]
    assert max(first) <= 5.0 < max(tenth) and min(tenth) < 300  # jitter reaches down to 0


def test_past_the_retry_window_a_delivery_is_given_up(app: Flask, rx: Receiver) -> None:
    rx.default = 500
    change(queue(callback=rx.url()), Status.DELIVERED)
    try_once(app)
    assert WebhookDelivery.get().state == "pending"  # within its window: tried again later
    # The window has run out, and the retry is due.
    WebhookDelivery.update(give_up_at=utcnow(), next_at=utcnow()).execute()
    deliver_until(app, lambda: WebhookDelivery.get().state == "failed")
    assert WebhookDelivery.get().last_error == "HTTP 500"


def test_redirects_are_not_followed(app: Flask, rx: Receiver) -> None:
    rx.answers = [302]
    rx.location = rx.url("/elsewhere")
    change(queue(callback=rx.url("/first")), Status.DELIVERED)
    # The 302, then (retried a few ms later, perhaps in a later round) a 200.
    deliver_until(app, lambda: WebhookDelivery.get().state != "pending")
    assert {r.path for r in rx.received} == {"/first"}
    tries = [a.status_code for a in WebhookAttempt.select().order_by(WebhookAttempt.id)]
    assert tries == [302, 200]


def test_only_the_first_bytes_of_an_answer_are_kept(app: Flask, rx: Receiver) -> None:
    rx.body = b"x" * 5_000_000
    change(queue(callback=rx.url()), Status.DELIVERED)
    deliver(app)
    attempt = WebhookAttempt.get()
    assert attempt.status_code == 200 and attempt.response == "x" * 1024


@pytest.mark.parametrize("host", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "[::1]",
                                  "localhost", "[::ffff:127.0.0.1]"])
def test_private_addresses_are_refused_unless_allowed(app: Flask, rx: Receiver,
                                                      host: str) -> None:
    url = rx.url().replace("127.0.0.1", host)
    change(queue(callback=url), Status.DELIVERED)
    deliver(app, webhooks_allow_private=False, webhook_timeout_seconds=1.0)
    assert rx.received == []
    attempt = WebhookAttempt.get()
    assert attempt.status_code is None and attempt.error.startswith("refused:")
    assert WebhookDelivery.get().state == "pending"  # retried: the setting may change


def test_a_slow_receiver_does_not_hold_up_others(app: Flask, rx: Receiver) -> None:
    with Receiver() as fast:
        rx.hold.clear()  # the slow one answers nothing until released
        for _ in range(6):
            change(queue(callback=rx.url("/slow")), Status.DELIVERED)
        change(queue(callback=fast.url("/fast")), Status.DELIVERED)
        sender = Sender(app.extensions["providers"],
                        {**app.config["TRACKER"], "webhook_max_in_flight_per_endpoint": 2,
                         "webhook_max_in_flight": 4})
        try:
            deadline = time.monotonic() + 10
            while not fast.received:
                assert time.monotonic() < deadline, "the fast receiver was held up"
                sender.step()
                time.sleep(0.02)
            assert rx.peak <= 2  # the slow origin never had more than its share
        finally:
            rx.hold.set()
            sender.run_once()
            sender.close()
    assert WebhookDelivery.select().where(WebhookDelivery.state == "delivered").count() == 7


def test_redeliver_sends_again_with_the_same_id(app: Flask, rx: Receiver) -> None:
    change(queue(callback=rx.url()), Status.DELIVERED)
    deliver(app)
    delivery = WebhookDelivery.get()
    assert outbox.redeliver([delivery.id], retry_hours=24) == 1
    deliver(app)
    first, second = rx.wait_for(2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body


def test_a_claim_whose_worker_died_is_delivered_again(app: Flask, rx: Receiver) -> None:
    """A claimed delivery whose worker never recorded the try is due when its lease ends."""
    change(queue(callback=rx.url()), Status.DELIVERED)
    with write_tx():
        outbox.fan_out({}, retry_hours=24)
        jobs = outbox.claim("dead-host:1:abc", {}, default_room=4, limit=4,
                            lease=dt.timedelta(seconds=0.3))
    assert len(jobs) == 1
    deliver(app)
    assert rx.received == []  # still leased to the dead worker
    time.sleep(0.4)
    deliver(app)
    assert len(rx.wait_for(1)) == 1 and WebhookDelivery.get().state == "delivered"


def test_an_endpoint_failing_for_three_days_is_disabled(app: Flask, key: ApiKey,
                                                        rx: Receiver) -> None:
    endpoint = webhooks.add_endpoint(key, rx.url())
    rx.default = 500
    change(queue(key_id=key.id), Status.DELIVERED)
    try_once(app)
    assert outbox.disable_failing() == []
    assert outbox.disable_failing(utcnow() + dt.timedelta(days=3, minutes=1)) == [endpoint.id]
    assert WebhookDelivery.get().state == "failed"
    change(queue(key_id=key.id), Status.DELIVERED)  # a disabled endpoint hears nothing
    assert Outbox.select().count() == 1


def test_the_api_takes_status_callback(app: Flask, client: Any, api_key: str,
                                       rx: Receiver) -> None:
    auth = {"Authorization": f"Bearer {api_key}"}
    refused = client.post("/api/v1/messages", json={"to": "+15551234567", "text": "hi",
                                                    "status_callback": "ftp://x"}, headers=auth)
    assert refused.status_code == 400
    assert refused.get_json()["error"]["field"] == "status_callback"
    made = client.post("/api/v1/messages", json={"to": "+15551234567", "text": "hi",
                                                 "status_callback": rx.url()}, headers=auth)
    assert made.status_code == 202 and made.get_json()["status_callback"] == rx.url()
    message = Message.get_by_id(made.get_json()["id"])
    assert message.api_key_id == ApiKey.get().id
    change(message, Status.ACCEPTED)
    deliver(app)
    got = rx.wait_for(1)[0]
    Webhook(ApiKey.get().webhook_secret).verify(got.body, got.headers)
    assert json.loads(got.body)["data"]["id"] == message.id


def test_an_endpoint_removed_mid_delivery_stops_nothing_else(app: Flask, key: ApiKey,
                                                             rx: Receiver) -> None:
    """Its tries under way come back to a deleted row: recorded nowhere, the others still."""
    endpoint = webhooks.add_endpoint(key, rx.url("/gone"))
    change(queue(key_id=key.id, callback=rx.url("/stays")), Status.DELIVERED)
    sender = Sender(app.extensions["providers"], app.config["TRACKER"])
    try:
        rx.hold.clear()
        sender.step()  # both claimed and under way
        deadline = time.monotonic() + 10
        while rx.in_flight < 2:
            assert time.monotonic() < deadline, "the tries did not start"
            time.sleep(0.02)
        assert webhooks.remove_endpoint(endpoint.id)
        rx.hold.set()
        sender.run_once()
    finally:
        sender.close()
    assert [(d.url, d.state) for d in WebhookDelivery.select()] == [(rx.url("/stays"),
                                                                     "delivered")]
    assert WebhookAttempt.select().count() == 1


def test_two_workers_share_the_deliveries_and_send_each_once(app: Flask,
                                                             rx: Receiver) -> None:
    """Workers on several hosts fan out and claim from one database: never the same
    delivery twice while nothing fails (Postgres: SKIP LOCKED and guarded claims)."""
    import threading

    from tracker.db import db

    for _ in range(40):
        change(queue(callback=rx.url()), Status.DELIVERED)
    stopping = threading.Event()
    # Few requests each, so both claim over and over, side by side.
    cfg = {**app.config["TRACKER"], "webhook_max_in_flight": 2,
           "webhook_max_in_flight_per_endpoint": 2}
    senders = [Sender(app.extensions["providers"], cfg, owner=f"host{i}:1:x") for i in range(2)]

    def work(sender: Sender) -> None:
        try:
            sender.run(stopping)
        finally:
            db.close()

    threads = [threading.Thread(target=work, args=(s,)) for s in senders]
    for thread in threads:
        thread.start()
    try:
        rx.wait_for(40)
        deadline = time.monotonic() + 20
        while WebhookDelivery.select().where(WebhookDelivery.state == "delivered").count() < 40:
            assert time.monotonic() < deadline, "not every delivery recorded"
            time.sleep(0.05)
    finally:
        stopping.set()
        for thread in threads:
            thread.join(timeout=30)
    ids = [r.headers["webhook-id"] for r in rx.received]
    assert len(ids) == len(set(ids)) == 40
    assert sum(s.delivered for s in senders) == 40


def test_a_resend_is_told_where_the_original_was(app: Flask, key: ApiKey, rx: Receiver) -> None:
    old = queue(callback=rx.url(), key_id=key.id)
    change(old, Status.FAILED, error_code="X")
    new = sending.resend(Message.get_by_id(old.id), sending.NewMessage(
        to="+15551234567", text="hi", provider="fake"), source="dashboard")
    assert (new.status_callback, new.api_key_id) == (rx.url(), key.id)
    change(new, Status.ACCEPTED)
    deliver(app)
    assert {r.event["data"]["id"] for r in rx.wait_for(2)} == {old.id, new.id}
