"""The rules of sending as an API client and an operator meet them, on both databases.

A send request: every refusal names its field and says what to fix (what an API client shows
its user), the limits themselves are accepted, every accepted field is stored as sent, and the
route, validity and send time follow the configuration. Then what happens to a message after:
its send, its retries and failover, its cancellation, each on the message's timeline.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import MOBIZON_KEY, SKYCORE, make_config, running
from flask import Flask
from standins.mobizon import MobizonStandIn
from standins.mobizon import Reply as MobizonReply
from standins.skycore import Reply, SkycoreStandIn
from test_accounts import fresh_client
from test_dashboard import PASSWORD, csrf, login

from tracker import accounts, correlation, sending
from tracker.db import db, write_tx
from tracker.dispatcher import Dispatcher
from tracker.models import ApiKey, Event, Message, utcnow
from tracker.providers.base import Receipt, SendError, SendResult
from tracker.status import Status

# Minutes, distinct so that each provider's validity shows.
SKYCORE_VALIDITY, MOBIZON_VALIDITY, FAKE_VALIDITY = 30, 45, 90


def settings(database_url: str, sky: SkycoreStandIn, mob: MobizonStandIn,
             **mobizon: Any) -> dict[str, Any]:
    """Numbers in +1 go through Skycore, then Mobizon, then the fake provider; others through
    the fake one; numbers written without a country code are Kazakh."""
    return make_config(
        database_url,
        providers={"fake": {"callback_token": "fake-token", "validity_minutes": FAKE_VALIDITY},
                   "skycore": {**SKYCORE, "base_url": sky.url,
                               "validity_minutes": SKYCORE_VALIDITY},
                   "mobizon": {"api_key": MOBIZON_KEY, "base_url": mob.url,
                               "callback_token": "mz-token",
                               "validity_minutes": MOBIZON_VALIDITY, **mobizon}},
        default_provider="fake", default_region="KZ",
        routes={"+1": ["skycore", "mobizon", "fake"]})


@pytest.fixture
def app(database_url: str, sky: SkycoreStandIn, mob: MobizonStandIn) -> Iterator[Flask]:
    with running(settings(database_url, sky, mob)) as flask_app:
        yield flask_app


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def post(client: Any, key: str, **body: Any) -> Any:
    return client.post("/api/v1/messages", json=body, headers=auth(key))


def at(value: str) -> dt.datetime:
    """An API timestamp (…Z) as naive UTC, as stored."""
    return dt.datetime.fromisoformat(value.removesuffix("Z"))


def ahead(**delta: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(**delta)).isoformat()


# -- refusals: the field, and what to fix -------------------------------------------------------

US = "+15551234888"


@pytest.mark.parametrize(("body", "field", "message"), [
    ({"to": US}, "text", "text is required"),
    ({"to": US, "text": " \n "}, "text", "text is required"),
    ({"to": US, "text": 42}, "text", "text is required"),
    ({"to": US, "text": "a" * 1601}, "text", "text is longer than 1600 characters"),
    ({"text": "hi"}, "to", "invalid phone number: phone number is empty"),
    ({"to": "", "text": "hi"}, "to", "invalid phone number: phone number is empty"),
    ({"to": "+999 123 456", "text": "hi"}, "to", "invalid phone number: no valid country code"),
    ({"to": US, "text": "hi", "provider": 7}, "provider", "provider must be a string"),
    ({"to": US, "text": "hi", "provider": "nope"}, "provider",
     "provider 'nope' is not configured (configured: fake, mobizon, skycore)"),
    ({"to": US, "text": "hi", "from": "A" * 33}, "from",
     "from must be a string of at most 32 characters"),
    ({"to": US, "text": "hi", "from": 42}, "from",
     "from must be a string of at most 32 characters"),
    ({"to": US, "text": "hi", "client_ref": "x" * 65}, "client_ref",
     "client_ref must be a string of at most 64 characters"),
    ({"to": US, "text": "hi", "client_ref": ["order-42"]}, "client_ref",
     "client_ref must be a string of at most 64 characters"),
    ({"to": US, "text": "hi", "status_callback": "ftp://example.com/hook"}, "status_callback",
     "status_callback must be an http:// or https:// URL with a host"),
    ({"to": US, "text": "hi", "send_at": 1767258000}, "send_at",
     "send_at must be an ISO 8601 string"),
    ({"to": US, "text": "hi", "send_at": "tomorrow"}, "send_at",
     "send_at is not ISO 8601: 'tomorrow'"),
    ({"to": US, "text": "hi", "send_at": "2030-01-01T09:00:00"}, "send_at",
     "send_at needs a time zone (e.g. 2026-01-01T09:00:00Z)"),
    ({"to": US, "text": "hi", "send_at": "0001-01-01T00:00:00+05:00"}, "send_at",
     "send_at is out of range: '0001-01-01T00:00:00+05:00'"),
    ({"to": US, "text": "hi", "send_at": "9999-12-31T23:59:59Z"}, "send_at",
     "send_at is more than 36500 days ahead"),
])
def test_a_refusal_names_the_field_and_says_what_to_fix(client, api_key, body, field,
                                                        message) -> None:
    response = post(client, api_key, **body)
    assert response.status_code == 400
    error = response.json["error"]
    assert (error["code"], error["field"]) == (f"invalid_{field}", field)
    assert error["message"].startswith(message), error["message"]
    assert Message.select().count() == 0


def test_the_limits_themselves_are_accepted_and_stored_as_sent(client, api_key) -> None:
    text, sender, ref = "a" * 1600, "S" * 32, "r" * 64
    hook = "https://example.com/hooks/sms?order=42"
    response = post(client, api_key, to=US, text=text, **{"from": sender}, client_ref=ref,
                    status_callback=hook)
    assert response.status_code == 202, response.json
    body = response.json
    assert (body["text"], body["from"], body["client_ref"], body["status_callback"]) == (
        text, sender, ref, hook)
    # Sent with this key: the key's own webhook endpoints are told of its changes too.
    assert Message.get_by_id(body["id"]).api_key_id == ApiKey.get(ApiKey.name == "tests").id
    assert (body["encoding"], body["segments"]) == ("GSM-7", 11)


def test_empty_optional_fields_count_as_absent(client, api_key) -> None:
    response = post(client, api_key, to=US, text="hi", provider="", client_ref="", send_at="",
                    status_callback="", **{"from": ""})
    assert response.status_code == 202, response.json
    body = response.json
    assert (body["from"], body["client_ref"], body["send_at"], body["status_callback"]) == (
        None, None, None, None)
    assert (body["status"], body["provider"], body["failover"]) == (
        "queued", "skycore", ["mobizon", "fake"])


# -- where a message goes, and for how long ---------------------------------------------------


def test_a_number_without_country_code_is_read_in_the_default_region(client, api_key) -> None:
    response = post(client, api_key, to="8 701 123 45 67", text="hi")
    assert response.status_code == 202, response.json
    assert response.json["to"] == "+77011234567"


def test_the_route_chooses_the_providers_and_the_timeline_says_which_rule(client,
                                                                          api_key) -> None:
    routed = post(client, api_key, to=US, text="via the +1 route").json
    assert (routed["provider"], routed["failover"]) == ("skycore", ["mobizon", "fake"])
    assert [(e["kind"], e["detail"]) for e in routed["events"]] == [
        ("created", None),
        ("routed", "route +1: skycore → mobizon → fake (failover in this order)")]

    default = post(client, api_key, to="+77011234567", text="no route matches").json
    assert (default["provider"], default["failover"]) == ("fake", [])
    assert [e["detail"] for e in default["events"] if e["kind"] == "routed"] == [
        "default_provider: fake"]

    # A provider named in the request is the caller's choice: used alone, not a routing rule.
    named = post(client, api_key, to=US, text="named", provider="fake").json
    assert (named["provider"], named["failover"]) == ("fake", [])
    assert [e["kind"] for e in named["events"]] == ["created"]


@pytest.mark.parametrize(("to", "minutes"), [(US, SKYCORE_VALIDITY),
                                             ("+77011234567", FAKE_VALIDITY)])
def test_a_message_expires_after_its_first_providers_validity(client, api_key, to,
                                                              minutes) -> None:
    body = post(client, api_key, to=to, text="hi").json
    assert at(body["expires_at"]) - at(body["created_at"]) == dt.timedelta(minutes=minutes)


# -- a send time, in any zone -------------------------------------------------------------------


@pytest.mark.parametrize(("written", "utc"), [
    ("2099-01-01T09:00:00+02:00", "2099-01-01T07:00:00.000Z"),
    ("2099-01-01T09:00:00Z", "2099-01-01T09:00:00.000Z"),
    ("2099-01-01T09:00:00-05:30", "2099-01-01T14:30:00.000Z"),
])
def test_a_send_time_in_any_zone_is_stored_in_utc_and_waits_for_it(client, api_key, written,
                                                                    utc) -> None:
    body = post(client, api_key, to=US, text="later", send_at=written).json
    assert (body["status"], body["send_at"]) == ("scheduled", utc)
    # Its validity counts from when it goes out, not from now.
    assert at(body["expires_at"]) - at(utc) == dt.timedelta(minutes=SKYCORE_VALIDITY)
    created = body["events"][0]
    assert created["detail"] == f"scheduled for {at(utc):%Y-%m-%d %H:%M:%S} UTC"
    stored = Message.get_by_id(body["id"])
    assert stored.due_at == at(utc)


def test_the_servers_own_time_zone_never_shifts_a_send_time(client, api_key,
                                                            monkeypatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Almaty")  # a server set to local time (UTC+5)
    time.tzset()
    try:
        body = post(client, api_key, to=US, text="later",
                    send_at="2099-01-01T09:00:00+02:00").json
    finally:
        monkeypatch.undo()
        time.tzset()
    assert body["send_at"] == "2099-01-01T07:00:00.000Z"


def test_a_send_time_already_past_sends_now(client, api_key) -> None:
    body = post(client, api_key, to=US, text="late", send_at=ahead(minutes=-5)).json
    assert body["status"] == "queued"
    assert body["events"][0]["detail"] is None
    stored = Message.get_by_id(body["id"])
    assert stored.due_at <= utcnow()


def test_a_send_time_may_be_up_to_a_hundred_years_ahead(client, api_key) -> None:
    limit = dt.timedelta(days=100 * 365)
    within = post(client, api_key, to=US, text="far", send_at=ahead(days=limit.days - 1))
    assert (within.status_code, within.json["status"]) == (202, "scheduled")
    beyond = post(client, api_key, to=US, text="too far", send_at=ahead(days=limit.days + 1))
    assert beyond.status_code == 400
    assert beyond.json["error"]["message"] == "send_at is more than 36500 days ahead"


def test_a_batch_of_the_largest_size_is_stored_whole_each_message_with_its_events(
        client, api_key) -> None:
    items = [{"to": f"+1 555 12{i:05d}", "text": f"#{i}", **({"provider": "fake"} if i % 2 else {})}
             for i in range(1000)]  # more rows than one INSERT statement carries
    response = client.post("/api/v1/messages/batch", json={"messages": items},
                           headers=auth(api_key))
    assert response.status_code == 202, response.json
    got = response.json["messages"]
    by_id = {m.id: m for m in Message.select()}
    assert [(by_id[m["id"]].text, by_id[m["id"]].recipient) for m in got] == [
        (f"#{i}", f"+155512{i:05d}") for i in range(1000)]
    kinds: dict[int, list[str]] = {}
    for event in Event.select().order_by(Event.id):
        kinds.setdefault(event.message_id, []).append(event.kind)
    # A routed message says which rule chose its providers; a named provider is no decision.
    assert [kinds[m["id"]] for m in got] == [
        ["created"] if i % 2 else ["created", "routed"] for i in range(1000)]


# -- after the request: sends, refusals, failover, retries ---------------------------------------


def dispatch(app: Flask, *, backoff_seconds: float = 30.0) -> int:
    return sending.dispatch(app.extensions["providers"], batch_size=50, max_attempts=3,
                            backoff_seconds=backoff_seconds)


def read(client: Any, key: str, ident: int) -> dict[str, Any]:
    return client.get(f"/api/v1/messages/{ident}", headers=auth(key)).json


def event_fields(event: dict[str, Any]) -> tuple[Any, ...]:
    return (event["kind"], event["source"], event["status"], event["applied"],
            event["error_code"])


def staff_page(app: Flask, path: str, role: str = "viewer") -> str:
    """The page as a logged-in member of staff sees it."""
    accounts.create_user(f"{role}-1", PASSWORD, role)
    browser = fresh_client(app)
    login(browser, f"{role}-1")
    return browser.get(path).get_data(as_text=True)


BILLING = "E713: There is billing problem on your account"


def test_a_provider_side_failure_moves_the_message_down_its_route_and_says_why(
        app, client, api_key, sky, mob) -> None:
    sky.script(Reply.failure("E713"))  # our Skycore account: another provider may succeed
    mob.stop()  # and Mobizon unreachable
    ident = post(client, api_key, to=US, text="code 1234").json["id"]
    before = utcnow()
    assert dispatch(app) == 1
    after = utcnow()
    moved = read(client, api_key, ident)
    assert (moved["status"], moved["provider"], moved["failover"], moved["attempts"]) == (
        "queued", "mobizon", ["fake"], 0)
    assert (moved["error_code"], moved["error_detail"]) == ("E713", BILLING)
    # From now on Mobizon's validity, counted from the move.
    validity = dt.timedelta(minutes=MOBIZON_VALIDITY)
    assert before + validity <= at(moved["expires_at"]) <= after + validity
    failover = moved["events"][-1]
    assert event_fields(failover) == ("failover", "dispatcher", None, None, "E713")
    assert failover["detail"] == f"skycore failed ({BILLING}); trying mobizon, then fake"

    assert dispatch(app) == 1
    moved = read(client, api_key, ident)
    assert (moved["status"], moved["provider"], moved["failover"]) == ("queued", "fake", [])
    last = moved["events"][-1]["detail"]
    assert last.startswith("mobizon failed (Mobizon unreachable") and last.endswith(
        "; trying fake"), last

    assert dispatch(app) == 1
    done = read(client, api_key, ident)
    assert (done["status"], done["provider"]) == ("delivered", "fake")
    assert [e["kind"] for e in done["events"]][:5] == [
        "created", "routed", "failover", "failover", "submitted"]
    # Support staff see what the provider's code means.
    page = staff_page(app, f"/messages/{ident}")
    assert "billing problem on the Skycore account" in page


def test_a_longer_route_keeps_every_provider_after_the_next(app, client, api_key) -> None:
    message = sending.enqueue(sending.NewMessage(
        to=US, text="four providers", provider="skycore",
        failover=("mobizon", "fake", "mobivate")), source="test")
    with write_tx():
        sending.fail_over(message, SendError("Skycore HTTP 503", permanent=False,
                                             provider_side=True, code="HTTP_503"),
                          app.extensions["providers"])
    body = read(client, api_key, message.id)
    assert (body["provider"], body["failover"]) == ("mobizon", ["fake", "mobivate"])
    assert body["events"][-1]["detail"] == (
        "skycore failed (Skycore HTTP 503); trying mobizon, then fake, mobivate")


@pytest.mark.parametrize("provider_side", [True, False], ids=["failover", "retry"])
def test_a_refusal_after_the_send_was_declared_lost_never_sends_it_again(
        app, sky, mob, provider_side) -> None:
    message = sending.enqueue(sending.NewMessage(
        to=US, text="slow refusal", provider="skycore", failover=("mobizon",)), source="test")
    owner = "gone-host:4242:abcdef"
    [started] = sending.claim_due(owner, {"skycore": 10}, start=frozenset({"skycore"}),
                                  lease=dt.timedelta(seconds=60))
    assert sending.record_lost(started.id, owner, started.send_started_at, "test")
    # Then the refusal comes after all: the provider may still have had it, so it stays so.
    refusal = SendError("Skycore HTTP 503", permanent=False, provider_side=provider_side,
                        code="HTTP_503")
    with write_tx():
        sending.record_outcome(started, refusal, app.extensions["providers"], max_attempts=3,
                               backoff_seconds=0)
    stored = Message.get_by_id(message.id)
    assert (stored.status, stored.provider, stored.route, stored.due_at) == (
        "unknown", "skycore", "mobizon", None)
    last = Event.select().where(Event.message == message.id).order_by(Event.id.desc()).get()
    assert last.kind == ("failover" if provider_side else "retry")
    assert last.detail.endswith("; not queued again: this send had already been declared lost")
    assert dispatch(app) == 0
    assert (sky.requests, mob.calls()) == ([], [])


RATE_LIMITED = "E106: You can call API every 1 seconds"


@pytest.mark.parametrize("rate", [0.0, 50.0], ids=["unthrottled", "rate-limited"])
def test_a_retryable_refusal_waits_twice_as_long_each_time_then_fails_with_the_count(
        database_url, sky, mob, rate) -> None:
    config = settings(database_url, sky, mob)
    config["providers"]["skycore"]["rate_limit_per_second"] = rate
    with running(config) as app:
        sky.default = Reply.failure("E106")  # Skycore's own rate limit: try again later
        client, key = app.test_client(), accounts.create_api_key("tests")
        ident = post(client, key, to=US, text="code 1234", provider="skycore").json["id"]
        for attempt in (1, 2):
            before = utcnow()
            assert dispatch(app, backoff_seconds=100) == 1
            body = read(client, key, ident)
            assert (body["status"], body["attempts"], body["error_code"],
                    body["error_detail"]) == ("queued", attempt, "E106", RATE_LIMITED)
            assert at(body["updated_at"]) >= before
            stored = Message.get_by_id(ident)
            # No dispatcher holds it while it waits: any may send it when due.
            assert (stored.claimed_by, stored.claimed_until, stored.send_started_at) == (
                None, None, None)
            backoff = 100 * 2 ** (attempt - 1)  # ± 20 % jitter
            assert 0.8 * backoff - 1 <= (stored.due_at - before).total_seconds() <= (
                1.2 * backoff + 1)
            retry = body["events"][-1]
            assert event_fields(retry) == ("retry", "dispatcher", None, None, "E106")
            assert retry["detail"] == (f"attempt {attempt} failed: {RATE_LIMITED}; "
                                       f"next at {stored.due_at:%H:%M:%S} UTC")
            Message.update(due_at=utcnow()).where(Message.id == ident).execute()  # time passes
        assert dispatch(app, backoff_seconds=100) == 1
        body = read(client, key, ident)
        assert (body["status"], body["attempts"], body["error_code"]) == ("failed", 3, "E106")
        failed = body["events"][-1]
        assert event_fields(failed) == ("send_failed", "dispatcher", "failed", True, "E106")
        assert failed["detail"] == f"gave up after 3 attempts: {RATE_LIMITED}"
        assert len(sky.requests) == 3
        page = staff_page(app, f"/messages/{ident}")
        assert page.count("rate limit: too many API calls") == 3  # two retries, the failure


def test_an_answer_that_cannot_be_read_leaves_the_message_unknown_and_says_why(
        app, client, api_key, sky) -> None:
    sky.script(Reply.http_error(200, b"<html>maintenance</html>"))
    ident = post(client, api_key, to=US, text="open", provider="skycore").json["id"]
    assert dispatch(app) == 1
    body = read(client, api_key, ident)
    assert (body["status"], body["error_code"]) == ("unknown", "UNREADABLE")
    assert body["error_detail"].startswith("Skycore HTTP 200, answer unreadable")
    last = body["events"][-1]
    assert event_fields(last) == ("send_unknown", "dispatcher", "unknown", True, "UNREADABLE")
    assert last["detail"] == f"outcome unknown, not resent: {body['error_detail']}"
    assert dispatch(app) == 0 and len(sky.requests) == 1


def test_an_accepted_send_without_an_id_is_unknown_and_staff_see_what_the_code_means(
        app, client, api_key, mob) -> None:
    mob.script(MobizonReply.raw(b'{"code": 100, "data": {}, "message": ""}'))
    ident = post(client, api_key, to=US, text="no id", provider="mobizon").json["id"]
    assert dispatch(app) == 1
    body = read(client, api_key, ident)
    assert (body["status"], body["error_code"]) == ("unknown", "100")
    assert event_fields(body["events"][-1]) == ("send_unknown", "dispatcher", "unknown", True,
                                                "100")
    # Mobizon's code 100: it took the message as a background task, without an id to track.
    assert "queued as a background task" in staff_page(app, f"/messages/{ident}")


def _started(owner: str, provider: str = "skycore", text: str = "lost") -> Message:
    """A message whose send `owner` started (and then, say, died)."""
    sending.enqueue(sending.NewMessage(to=US, text=text, provider=provider), source="test")
    [started] = sending.claim_due(owner, {provider: 10}, start=frozenset({provider}),
                                  lease=dt.timedelta(seconds=60))
    return started


def _lease_runs_out(app: Flask) -> int:
    Message.update(claimed_until=utcnow() - dt.timedelta(seconds=1)).where(
        Message.send_started_at.is_null(False)).execute()
    with Dispatcher(app.extensions["providers"], max_attempts=3, backoff_seconds=1) as engine:
        return engine.reap()


def test_a_send_whose_answer_never_came_says_when_it_started_and_who_sent_it(
        app, client, api_key) -> None:
    owner = "gone-host:4242:abcdef"
    started = _started(owner)
    assert _lease_runs_out(app) == 1
    body = read(client, api_key, started.id)
    detail = (f"outcome unknown, not resent: the send started "
              f"{started.send_started_at:%Y-%m-%d %H:%M:%S} UTC by dispatcher {owner} got no "
              "answer (the send lease ran out)")
    assert (body["status"], body["error_code"], body["error_detail"]) == (
        "unknown", "SEND_LOST", detail)
    last = body["events"][-1]
    assert event_fields(last) == ("send_unknown", "dispatcher", "unknown", True, "SEND_LOST")
    assert last["detail"] == detail


def test_a_send_the_provider_already_reported_on_keeps_that_status_when_its_lease_runs_out(
        app, client, api_key) -> None:
    started = _started("gone-host:4242:abcdef", provider="fake")
    with write_tx():  # a receipt naming our reference beat the send's answer
        correlation.apply_receipt(Receipt(provider="fake", status=Status.SENT,
                                          reference=started.reference), source="test")
    assert _lease_runs_out(app) == 1
    body = read(client, api_key, started.id)
    assert body["status"] == "sent"  # the provider has it: nothing is unknown
    last = body["events"][-1]
    assert event_fields(last) == ("send_unknown", "dispatcher", "unknown", False, "SEND_LOST")


def test_a_send_answered_as_it_was_declared_lost_is_kept_as_answered(app) -> None:
    started = _started("slow-host:4242:abcdef")
    [(ident, owner, when)] = sending.lost_sends(now=utcnow() + dt.timedelta(minutes=5))
    with write_tx():  # its answer is recorded first
        sending.record_accepted(started, SendResult("SMS_1", raw="<RESPONSE/>"),
                                app.extensions["providers"]["skycore"])
    assert sending.record_lost(ident, owner, when, "the send lease ran out") is False
    assert Message.get_by_id(ident).status == "accepted"
    assert not Event.select().where(Event.kind == "send_unknown").exists()


def test_an_accepted_message_expires_after_its_providers_validity_and_is_polled_if_it_can_be(
        app, client, api_key, sky, mob) -> None:
    via_skycore = post(client, api_key, to=US, text="one", provider="skycore").json["id"]
    via_mobizon = post(client, api_key, to=US, text="two", provider="mobizon").json["id"]
    assert dispatch(app) == 2
    for ident, minutes in ((via_skycore, SKYCORE_VALIDITY), (via_mobizon, MOBIZON_VALIDITY)):
        body = read(client, api_key, ident)
        assert body["status"] == "accepted"
        assert at(body["expires_at"]) - at(body["submitted_at"]) == dt.timedelta(
            minutes=minutes)
    # Mobizon has a status API: asked after poll_after_seconds; Skycore has none: never asked.
    polled = Message.get_by_id(via_mobizon)
    assert polled.poll_at - polled.submitted_at == dt.timedelta(
        seconds=app.extensions["providers"]["mobizon"].config["poll_after_seconds"])
    assert Message.get_by_id(via_skycore).poll_at is None


@pytest.mark.parametrize("size", [2000, 2001])
def test_the_providers_answer_is_kept_on_the_timeline_up_to_2000_characters(
        app, client, api_key, mob, size) -> None:
    envelope = {"code": 0, "data": {"campaignId": "9001", "messageId": "42", "status": 2},
                "message": ""}
    padding = "x" * (size - len(json.dumps({**envelope, "pad": ""})))
    answer = json.dumps({**envelope, "pad": padding})
    assert len(answer) == size
    mob.script(MobizonReply.raw(answer.encode()))
    ident = post(client, api_key, to=US, text="hi", provider="mobizon").json["id"]
    assert dispatch(app) == 1
    [submitted] = [e for e in read(client, api_key, ident)["events"] if e["kind"] == "submitted"]
    assert submitted["detail"] == (answer if size <= 2000 else answer[:2000] + "…")


def test_a_queued_message_wakes_a_waiting_dispatcher(app, client, api_key, sky) -> None:
    engine = Dispatcher(app.extensions["providers"], max_attempts=3, backoff_seconds=30,
                        interval=120.0)  # its own look for due messages: every two minutes
    stopping = threading.Event()

    def run() -> None:
        try:
            engine.run(stopping)
        finally:
            db.close()  # this thread's own connection

    runner = threading.Thread(target=run)
    runner.start()
    try:
        post(client, api_key, to=US, text="first", provider="skycore")
        sky.wait_for_requests(1, timeout=30)  # sent at once or by its first look
        post(client, api_key, to=US, text="second", provider="skycore")
        sky.wait_for_requests(2, timeout=30)  # far sooner than its next look
    finally:
        stopping.set()
        engine.poke()  # it sleeps until its next look otherwise
        runner.join(30)
    assert not runner.is_alive()
    assert [r.fields["TEXT"] for r in sky.requests] == ["first", "second"]


# -- cancel and resend ---------------------------------------------------------------------------


def test_cancel_says_who_canceled_and_a_refusal_says_where_the_message_is(
        app, client, api_key) -> None:
    later = post(client, api_key, to=US, text="later", send_at=ahead(hours=1)).json
    sent = post(client, api_key, to="+77011234567", text="now").json  # fake: delivered at once
    assert dispatch(app) == 1
    answer = client.delete(f"/api/v1/messages/{later['id']}", headers=auth(api_key))
    body = answer.json
    assert (answer.status_code, body["status"], body["status_inferred"]) == (
        200, "canceled", False)
    canceled = body["events"][-1]
    assert event_fields(canceled) == ("canceled", "api", "canceled", True, None)
    assert canceled["detail"] == "canceled by api before submission"
    assert Message.get_by_id(later["id"]).due_at is None

    refused = client.delete(f"/api/v1/messages/{sent['id']}", headers=auth(api_key))
    assert (refused.status_code, refused.json["error"]["status"]) == (409, "delivered")
    assert refused.json["error"]["message"] == (
        f"message {sent['id']} is delivered: only a queued or scheduled message that no "
        "dispatcher is sending can be canceled")


def test_canceling_a_message_that_is_gone_says_so(app) -> None:
    with pytest.raises(sending.NotCancelable, match=r"^missing$") as refused:
        sending.cancel(123456789, source="cli")
    assert refused.value.status == "missing"


def test_a_resend_links_both_timelines_and_a_pending_message_is_not_resent(
        app, client, api_key, sky) -> None:
    sky.script(Reply.failure("E110"))  # invalid receiver number: rejected
    old = post(client, api_key, to=US, text="code 1234", provider="skycore").json
    assert dispatch(app) == 1
    rejected = read(client, api_key, old["id"])
    assert rejected["status"] == "rejected"
    # Refused for good at the first attempt: the provider's words, no count of attempts.
    assert rejected["events"][-1]["detail"] == "E110: Invalid receiver number"
    accounts.create_user("boss", PASSWORD, "admin")
    admin = fresh_client(app)
    login(admin, "boss")
    assert "invalid receiver number" in admin.get(f"/messages/{old['id']}").get_data(
        as_text=True)
    admin.post(f"/messages/{old['id']}/resend",
               data={"csrf_token": csrf(admin, f"/messages/{old['id']}")})
    [new] = Message.select().where(Message.resent_from == old["id"])
    resent = read(client, api_key, old["id"])["events"][-1]
    assert (resent["kind"], resent["source"], resent["detail"]) == (
        "resent", "dashboard", f"resent as message #{new.id} ({new.reference})")
    resend_of = [e for e in read(client, api_key, new.id)["events"] if e["kind"] == "resend_of"]
    assert [(e["source"], e["detail"]) for e in resend_of] == [
        ("dashboard", f"resend of message #{old['id']} ({old['reference']}, rejected)")]

    answer = admin.post(f"/messages/{new.id}/resend",
                        data={"csrf_token": csrf(admin, f"/messages/{new.id}")},
                        follow_redirects=True)
    assert ("Not resent: the message is queued; only a failed one is resent."
            in answer.get_data(as_text=True))


# -- waiting: for a rate-limit slot, for a send time ---------------------------------------------


def test_a_rate_limited_provider_sends_what_its_rate_allows_and_gives_the_rest_back(
        database_url, sky, mob) -> None:
    config = settings(database_url, sky, mob)
    config["providers"]["skycore"]["rate_limit_per_second"] = 1.0
    with running(config) as app:
        for i in range(5):
            sending.enqueue(sending.NewMessage(to=US, text=f"slot #{i}", provider="skycore"),
                            source="test")
        with Dispatcher(app.extensions["providers"], max_attempts=3,
                        backoff_seconds=1) as engine:
            assert engine.run_once(10) == 5
        # Slots a second apart: those within the slot wait went out, the rest wait in the queue
        # for their slots, held by no dispatcher.
        sent = len(sky.requests)
        assert 2 <= sent <= 3
        waiting = list(Message.select().where(Message.status == "queued")
                       .order_by(Message.due_at))
        assert len(waiting) == 5 - sent
        assert {(m.claimed_by, m.send_started_at, m.attempts) for m in waiting} == {
            (None, None, 0)}
        dues = [m.due_at for m in waiting]
        assert dues[0] > utcnow()
        assert all(later - earlier >= dt.timedelta(seconds=0.9)
                   for earlier, later in itertools.pairwise(dues))


def test_a_send_started_at_its_rate_limit_slot_holds_its_lease(app) -> None:
    sending.enqueue(sending.NewMessage(to=US, text="slot", provider="skycore"), source="test")
    [claimed] = sending.claim_due("me:1:aaaaaa", {"skycore": 10})  # claimed, not yet started
    [started] = sending.start_sends("me:1:aaaaaa", [claimed], dt.timedelta(seconds=60))
    stored = Message.get_by_id(started.id)
    assert stored.claimed_until - stored.send_started_at == dt.timedelta(seconds=60)
    assert sending.lost_sends() == []  # no dispatcher declares it lost while its lease runs


def test_a_message_held_for_a_provider_that_stopped_holding_waits_here_for_its_time(
        database_url, sky, mob) -> None:
    send_at = (utcnow() + dt.timedelta(hours=3)).replace(microsecond=0)
    with running(settings(database_url, sky, mob, provider_scheduling=True)) as app:
        body = post(app.test_client(), accounts.create_api_key("tests"), to=US, text="held",
                    provider="mobizon", send_at=send_at.isoformat() + "Z").json
        assert body["events"][0]["detail"].endswith(", held by mobizon")  # due at once
    with running(settings(database_url, sky, mob)) as app:  # restarted without it
        assert dispatch(app) == 1
        assert mob.calls() == []
        stored = Message.get_by_id(body["id"])
        assert (stored.status, stored.due_at, stored.claimed_by) == ("scheduled", send_at, None)
        assert dispatch(app) == 0


def test_a_claim_never_started_holds_the_message_for_claim_seconds_only(app) -> None:
    message = sending.enqueue(sending.NewMessage(to=US, text="claimed", provider="skycore"),
                              source="test")
    now = utcnow()
    assert sending.anything_due(now)
    assert len(sending.claim_due("dead-host:1:aaaaaa", {"skycore": 10}, now=now)) == 1
    hold, second = dt.timedelta(seconds=sending.CLAIM_SECONDS), dt.timedelta(seconds=1)
    # Its dispatcher died before starting the send: nobody else takes it until the claim ends.
    assert not sending.anything_due(now + hold - second)
    assert sending.claim_due("other-host:2:bbbbbb", {"skycore": 10}, now=now + hold - second) == []
    assert sending.anything_due(now + hold + second)
    [again] = sending.claim_due("other-host:2:bbbbbb", {"skycore": 10}, now=now + hold + second)
    assert (again.id, again.claimed_by) == (message.id, "other-host:2:bbbbbb")


def test_a_message_for_a_provider_no_longer_configured_fails_over_or_fails_saying_why(
        database_url, sky, mob) -> None:
    with running(settings(database_url, sky, mob)):
        alone = sending.enqueue(sending.NewMessage(to=US, text="alone", provider="mobizon"),
                                source="test")
        routed = sending.enqueue(sending.NewMessage(to=US, text="routed", provider="mobizon",
                                                    failover=("fake",)), source="test")
    config = settings(database_url, sky, mob)
    del config["providers"]["mobizon"]  # restarted without Mobizon
    config["routes"] = {"+1": ["skycore", "fake"]}
    with running(config) as app:
        assert dispatch(app) == 2
        stored = Message.get_by_id(alone.id)
        assert (stored.status, stored.error_code, stored.error_detail) == (
            "failed", "NOT_CONFIGURED", "provider 'mobizon' is no longer configured")
        assert (Message.get_by_id(routed.id).provider, Message.get_by_id(routed.id).status) == (
            "fake", "queued")
        assert dispatch(app) == 1
        assert Message.get_by_id(routed.id).status == "delivered"
    assert mob.calls() == []


def test_a_receipt_id_adopted_before_the_send_answer_is_kept_when_the_answer_comes(
        database_url) -> None:
    """Mobivate reports under a log id its send answer never gives (ADOPTS_RECEIPT_ID): a
    receipt carrying our reference and that id, arriving before the answer, gives the message
    the log id, and the answer recorded after it must not replace it."""
    log, record = "9A85B95E0A000A9D2FBD46710388AD54", "e5815fee-e86e-4fd7-9cad-55444f023bbb"
    config = make_config(database_url)
    config["providers"]["mobivate"] = {"base_url": "http://127.0.0.1:9", "api_key": "key",
                                       "sender": "ACME", "callback_token": "mob-token"}
    with running(config) as app:
        message = _started("mobivate-host:1:aaaaaa", provider="mobivate")
        with write_tx():
            correlation.apply_receipt(Receipt(provider="mobivate", status=Status.SENT,
                                              provider_message_id=log,
                                              reference=message.reference), source="test")
        with write_tx():
            sending.record_outcome(message, SendResult(record), app.extensions["providers"],
                                   max_attempts=3, backoff_seconds=1)
        assert Message.get_by_id(message.id).provider_message_id == log
        submitted = Event.get((Event.message == message.id) & (Event.kind == "submitted"))
        assert submitted.provider_message_id == record  # the answer's id, on its own event
        with write_tx():  # a later receipt with the log id alone finds the message
            outcome = correlation.apply_receipt(Receipt(
                provider="mobivate", status=Status.DELIVERED, provider_message_id=log),
                source="test")
        assert outcome.message_id == message.id
