"""`sending.dispatch` against the Skycore stand-in over real HTTP, on both databases.

What reaches the provider field by field, how each kind of answer moves the message (accepted,
rejected, failed, retried, given up), a receipt that beats the send response, and two dispatcher
processes sharing one queue.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import SKYCORE, build_app, make_config, running
from flask import Flask
from standins.skycore import Reply, SkycoreStandIn

from tracker import sending
from tracker.db import db
from tracker.models import Callback, Event, Message, utcnow

TEXT = "Hello Jerry – Greetings from Marc!!"  # noqa: RUF001 - the seed's en dash, on purpose
TO = "+15551234888"


def skycore_config(database_url: str, base_url: str) -> dict[str, Any]:
    """make_config with providers.skycore pointed at the stand-in."""
    return make_config(database_url, providers={
        "fake": {"callback_token": "fake-token"},
        "skycore": {**SKYCORE, "base_url": base_url, "campaign_ref": "77676"},
    })


@pytest.fixture
def app(database_url: str, sky: SkycoreStandIn) -> Iterator[Flask]:
    """conftest's `app`, with the Skycore provider sending to the stand-in."""
    with running(skycore_config(database_url, sky.url)) as flask_app:
        yield flask_app


def queue(text: str = TEXT, to: str = TO) -> Message:
    return sending.enqueue(sending.NewMessage(to=to, text=text, provider="skycore"),
                           source="test")


def dispatch(app: Flask, *, max_attempts: int = 3, backoff_seconds: float = 30.0,
             batch_size: int = 10) -> int:
    return sending.dispatch(app.extensions["providers"], batch_size=batch_size,
                            max_attempts=max_attempts, backoff_seconds=backoff_seconds)


def reload(message: Message) -> Message:
    return Message.get_by_id(message.id)


def events(message: Message) -> list[Event]:
    return list(Event.select().where(Event.message == message.id).order_by(Event.id))


# -- what reaches Skycore --------------------------------------------------------------------


def test_send_request_field_by_field_and_accepted(app: Flask, sky: SkycoreStandIn) -> None:
    message = queue()
    assert dispatch(app) == 1

    [request] = sky.requests
    assert request.method == "POST"
    assert request.transport == "form"  # the XML document in the form field `xml`
    assert request.content_type.startswith("application/x-www-form-urlencoded")
    assert request.fields == {
        "ACTION": "sendSMS",
        "API_KEY": SKYCORE["api_key"],
        "TO": "15551234888",  # international format without "+"
        "FROM": SKYCORE["shortcode"],
        "CAMPAIGNREF": "77676",
        "TEXT": TEXT,  # exact, en dash included
    }

    stored = reload(message)
    assert stored.status == "accepted"
    assert stored.provider_message_id == "SMS_1"
    assert (stored.attempts, stored.due_at, stored.claimed_until) == (1, None, None)
    assert stored.submitted_at is not None
    created, submitted = events(message)
    assert (created.kind, created.status) == ("created", "queued")
    assert (submitted.kind, submitted.status, submitted.applied) == ("submitted", "accepted", True)
    assert submitted.provider_message_id == "SMS_1"
    assert "<TRACKINGID>SMS_1</TRACKINGID>" in submitted.detail  # the raw answer is kept

    assert dispatch(app) == 0  # nothing due any more
    assert len(sky.requests) == 1


def test_xml_special_characters_in_text_arrive_intact(app: Flask, sky: SkycoreStandIn) -> None:
    text = 'Tom & Jerry <3 "quotes" \'apos\' ]]> ü'
    queue(text)
    dispatch(app)
    assert sky.requests[0].fields["TEXT"] == text


def test_stand_in_reads_every_sendsms_transport(sky: SkycoreStandIn) -> None:
    """The stand-in itself: xml= form field, raw XML body, GET parameters, refusals."""
    document = ("<REQUEST><ACTION>sendSMS</ACTION><API_KEY>test-api-key</API_KEY>"
                "<TO>15551234888</TO><FROM>60856</FROM><TEXT>caf\u00e9</TEXT></REQUEST>")
    with httpx.Client(timeout=5.0) as client:
        answers = [
            client.post(sky.url, data={"xml": document}),
            client.post(sky.url, content=document.encode(), headers={"Content-Type": "text/xml"}),
            client.get(sky.url, params={"action": "sendsms", "api_key": "test-api-key",
                                        "to": "15551234888", "from": "60856", "text": "caf\u00e9"}),
            client.post(sky.url, data={"xml": document.replace("test-api-key", "wrong")}),
            client.post(sky.url, data={"xml": "<REQUEST><ACTION>sendSMS"}),
        ]
    assert [a.status_code for a in answers] == [200] * 5
    assert "<TRACKINGID>SMS_1</TRACKINGID>" in answers[0].text
    assert "<TRACKINGID>SMS_2</TRACKINGID>" in answers[1].text
    assert "<TRACKINGID>SMS_3</TRACKINGID>" in answers[2].text
    assert "<ERRORCODE>E104</ERRORCODE>" in answers[3].text
    assert "<ERRORCODE>E108</ERRORCODE>" in answers[4].text
    assert [r.transport for r in sky.requests] == ["form", "body", "query", "form", "form"]
    assert [r.fields["TEXT"] for r in sky.requests[:3]] == ["caf\u00e9"] * 3


# -- answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["E110", "E111"])
def test_request_error_rejects_without_retry(app: Flask, sky: SkycoreStandIn, code: str) -> None:
    sky.script(Reply.failure(code))
    message = queue()
    dispatch(app)
    stored = reload(message)
    assert (stored.status, stored.error_code, stored.due_at) == ("rejected", code, None)
    assert stored.provider_message_id is None
    failed = events(message)[-1]
    assert (failed.kind, failed.status, failed.error_code) == ("send_failed", "rejected", code)
    assert not [e for e in events(message) if e.kind == "retry"]
    assert dispatch(app) == 0
    assert len(sky.requests) == 1


def test_billing_problem_fails_without_retry(app: Flask, sky: SkycoreStandIn) -> None:
    sky.script(Reply.failure("E713"))
    message = queue()
    dispatch(app)
    stored = reload(message)
    assert (stored.status, stored.error_code, stored.due_at) == ("failed", "E713", None)
    assert "billing" in stored.error_detail
    assert events(message)[-1].kind == "send_failed"
    assert dispatch(app) == 0
    assert len(sky.requests) == 1


def _refused(sky: SkycoreStandIn, app: Flask) -> None:
    sky.stop()  # nothing listens on its port any more: connection refused


def _slow(sky: SkycoreStandIn, app: Flask) -> None:
    app.extensions["providers"]["skycore"].timeout = httpx.Timeout(0.5)
    sky.script(Reply.slow(5.0))


@pytest.mark.parametrize(("setup", "requests_seen", "error_code"), [
    (lambda sky, app: sky.script(Reply.failure("E106")), 1, "E106"),
    (lambda sky, app: sky.script(Reply.http_error(500)), 1, None),
    (lambda sky, app: sky.script(Reply.http_error(503, b"<html>down</html>")), 1, None),
    (_refused, 0, "UNREACHABLE"),
], ids=["E106-rate-limit", "http-500", "http-503", "connection-refused"])
def test_transient_failure_is_retried_later(app: Flask, sky: SkycoreStandIn, setup: Any,
                                            requests_seen: int, error_code: str | None) -> None:
    setup(sky, app)
    message = queue()
    before = utcnow()
    assert dispatch(app, backoff_seconds=30) == 1
    stored = reload(message)
    assert stored.status == "queued"
    assert stored.attempts == 1
    assert stored.error_code == error_code
    assert stored.claimed_until is None
    # First backoff is 30 s with ±20 % jitter.
    assert before + dt.timedelta(seconds=23) < stored.due_at < utcnow() + dt.timedelta(seconds=37)
    retry = events(message)[-1]
    assert retry.kind == "retry"
    assert "attempt 1 failed" in retry.detail
    assert len(sky.requests) == requests_seen
    assert dispatch(app) == 0  # not due yet


def test_timeout_after_the_request_was_sent_is_unknown_not_resent(app: Flask,
                                                                   sky: SkycoreStandIn) -> None:
    _slow(sky, app)
    message = queue()
    assert dispatch(app) == 1
    stored = reload(message)
    assert (stored.status, stored.error_code, stored.due_at, stored.claimed_until) == (
        "unknown", "NO_ANSWER", None, None)
    last = events(message)[-1]
    assert (last.kind, last.status) == ("send_unknown", "unknown")
    assert "not resent" in last.detail
    assert dispatch(app) == 0  # never picked up again
    assert len(sky.requests) == 1
    # Skycore did take it: its postback (by TRACKINGID) cannot find the message, but a poll or
    # a receipt matched by reference can still move it on from `unknown`.
    from tracker import correlation
    from tracker.db import write_tx
    from tracker.providers.base import Receipt
    from tracker.status import Status
    with write_tx():
        correlation.apply_receipt(Receipt(provider="skycore", status=Status.DELIVERED,
                                          reference=stored.reference, dedupe_key="d1"),
                                  source="test")
    assert reload(message).status == "delivered"


def test_gives_up_after_max_attempts(app: Flask, sky: SkycoreStandIn) -> None:
    sky.script(Reply.failure("E106"), Reply.http_error(500), Reply.failure("E106"))
    message = queue()
    for attempt in (1, 2):
        assert dispatch(app, max_attempts=3, backoff_seconds=0) == 1
        stored = reload(message)
        assert (stored.status, stored.attempts) == ("queued", attempt)
    assert dispatch(app, max_attempts=3, backoff_seconds=0) == 1
    stored = reload(message)
    assert (stored.status, stored.attempts, stored.due_at) == ("failed", 3, None)
    kinds = [e.kind for e in events(message)]
    assert kinds == ["created", "retry", "retry", "send_failed"]
    assert "gave up after 3 attempts" in events(message)[-1].detail
    assert dispatch(app, max_attempts=3, backoff_seconds=0) == 0
    assert len(sky.requests) == 3


def test_text_over_160_characters_is_rejected_without_a_request(app: Flask,
                                                                sky: SkycoreStandIn) -> None:
    too_long = queue("x" * 161)
    just_fits = queue("y" * 160)
    assert dispatch(app) == 2
    assert (reload(too_long).status, reload(too_long).error_code) == ("rejected", "TEXT_TOO_LONG")
    assert reload(just_fits).status == "accepted"
    assert [r.fields["TEXT"] for r in sky.requests] == ["y" * 160]


# -- a receipt that beats the send response --------------------------------------------------


def test_receipt_before_send_response_is_orphan_then_linked(app: Flask,
                                                            sky: SkycoreStandIn) -> None:
    client = app.test_client()
    seen: dict[str, Any] = {}

    def receipt_first(_request: object) -> None:
        # Runs in the stand-in while the dispatcher waits for the sendSMS answer.
        try:
            response = client.post(f"/callbacks/skycore/{SKYCORE['callback_token']}",
                                   data=sky.postback("SMS_x", "N202"), content_type="text/xml")
            seen["answer"] = (response.status_code, response.get_data(as_text=True).strip())
            seen["orphans"] = [(e.message_id, e.status) for e in Event.select().where(
                Event.provider_message_id == "SMS_x")]
        finally:
            if not db.is_closed():
                db.close()  # this thread's own connection

    sky.on_request = receipt_first
    sky.script(Reply.success("SMS_x"))
    message = queue()
    assert dispatch(app) == 1
    assert not sky.hook_errors

    assert seen["answer"] == (200, "OK orphan")
    assert seen["orphans"] == [(None, "delivered")]

    stored = reload(message)
    assert (stored.status, stored.provider_message_id) == ("delivered", "SMS_x")
    receipt = next(e for e in events(message) if e.kind == "receipt")
    assert (receipt.message_id, receipt.status, receipt.applied) == (message.id, "delivered", True)
    assert receipt.reason is None
    assert Callback.get_by_id(receipt.callback_id).verdict == "orphan"
    assert {e.kind for e in events(message)} == {"created", "submitted", "receipt"}
    assert Event.select().where(Event.message.is_null()).count() == 0


def test_reused_tracking_id_reaches_the_newer_message(app: Flask, sky: SkycoreStandIn) -> None:
    """Skycore calls TRACKINGID a "temporary" reference (PROTOCOLS.md §3.2, §3.7 Q4). Matching
    already prefers the newest message with a provider id; the dedupe key must not fold the
    newer message's receipts into the older one's."""
    client = app.test_client()
    url = f"/callbacks/skycore/{SKYCORE['callback_token']}"

    def post(document: bytes) -> str:
        response = client.post(url, data=document, content_type="text/xml")
        assert response.status_code == 200
        return response.get_data(as_text=True).strip()

    sky.script(Reply.success("SMS_7"), Reply.success("SMS_7"))
    day1 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    older = queue("older")
    dispatch(app)
    assert post(sky.postback("SMS_7", "N201", timestamp=day1)) == "OK applied"
    assert post(sky.postback("SMS_7", "N202", timestamp=day1 + dt.timedelta(seconds=5))) == (
        "OK applied")
    assert reload(older).status == "delivered"

    newer = queue("newer")
    dispatch(app)
    assert reload(newer).provider_message_id == "SMS_7"
    day2 = day1 + dt.timedelta(days=30)
    answers = [post(sky.postback("SMS_7", "N201", timestamp=day2)),
               post(sky.postback("SMS_7", "N202", timestamp=day2 + dt.timedelta(seconds=5)))]
    assert (answers, reload(newer).status) == (["OK applied", "OK applied"], "delivered")


def test_a_send_in_flight_outlasts_its_claim_and_is_not_sent_twice(
        app: Flask, sky: SkycoreStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider holds one request past the claim (CLAIM_SECONDS, shortened here to
    0.5 s): the started send holds a lease of its own, so a second dispatcher that runs then
    takes nothing, and each message goes out once."""
    monkeypatch.setattr(sending, "CLAIM_SECONDS", 0.5)
    batch = {m.text: m for m in (queue("batch #1"), queue("batch #2"))}
    second: dict[str, Any] = {}

    def claim_ran_out(held: Message) -> bool:
        started = Message.select(Message.send_started_at).where(Message.id == held.id).scalar()
        assert started is not None, "a send in flight is recorded as started"
        return utcnow() > started + dt.timedelta(seconds=sending.CLAIM_SECONDS)

    def second_dispatcher(request: Any) -> None:
        # The first request is held until its claim has run out (read from the database, not
        # guessed from a sleep); then dispatcher 2 (the stand-in's handler thread, with its
        # own connection) runs once.
        if second:
            return
        second["held"] = request.fields["TEXT"]
        try:
            deadline = time.monotonic() + 30
            while not claim_ran_out(batch[second["held"]]):
                assert time.monotonic() < deadline, "the claim never ran out"
                time.sleep(0.02)
            second["tried"] = dispatch(app)
        finally:
            if not db.is_closed():
                db.close()

    sky.on_request = second_dispatcher
    assert dispatch(app) == 2
    assert not sky.hook_errors
    assert second["tried"] == 0 and second["held"] in batch
    assert sorted(r.fields["TEXT"] for r in sky.requests) == ["batch #1", "batch #2"]
    assert {reload(m).status for m in batch.values()} == {"accepted"}


# -- two dispatchers -------------------------------------------------------------------------


def _dispatch_in_process(database_url: str, sky_url: str, barrier: Any, sent: Any) -> None:
    """A second, independent dispatcher: its own interpreter, app and connections."""
    app = build_app(skycore_config(database_url, sky_url))
    providers = app.extensions["providers"]
    total = 0
    barrier.wait(timeout=60)
    with app.app_context(), db.connection_context():
        while True:
            tried = sending.dispatch(providers, batch_size=5, max_attempts=3,
                                     backoff_seconds=30)
            if not tried:
                break
            total += tried
    for provider in providers.values():
        provider.client.close()
    if hasattr(db.obj, "close_all"):
        db.obj.close_all()
    sent.value = total


def test_two_dispatcher_processes_never_send_a_message_twice(app: Flask, database_url: str,
                                                             sky: SkycoreStandIn) -> None:
    messages = [queue(f"two dispatchers #{i:02d}", f"+1555123{i:04d}") for i in range(50)]
    sky.default = Reply.slow(0.02)  # each send takes a while, so the two overlap
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    counts = [ctx.Value("i", -1) for _ in range(2)]
    procs = [ctx.Process(target=_dispatch_in_process, args=(database_url, sky.url, barrier, n))
             for n in counts]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout=90)
        assert [p.exitcode for p in procs] == [0, 0]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=10)
            p.close()

    texts = Counter(r.fields["TEXT"] for r in sky.requests)
    assert texts == Counter(m.text for m in messages)  # each exactly once
    assert len(sky.requests) == 50
    sent = [n.value for n in counts]
    assert sum(sent) == 50
    assert min(sent) > 0, f"one dispatcher did all the work: {sent}"
    stored = list(Message.select().order_by(Message.id))
    assert {m.status for m in stored} == {"accepted"}
    assert {m.attempts for m in stored} == {1}
    assert len({m.provider_message_id for m in stored}) == 50
    assert Event.select().where(Event.kind == "submitted").count() == 50
