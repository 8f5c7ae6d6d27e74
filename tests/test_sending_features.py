"""What production sending needs, on both databases and over real HTTP where a provider speaks:
encoding and segments, routing and failover, cancel, the shared rate limit, polling, expiry.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import MOBIZON_KEY, SKYCORE, build_app, make_config, running
from flask import Flask
from standins.mobizon import MobizonStandIn
from standins.skycore import Reply, SkycoreStandIn

from tracker import correlation, expiry, polling, routing, segments, sending
from tracker.db import db, write_tx
from tracker.models import Callback, Event, Message, utcnow
from tracker.providers.base import Receipt
from tracker.settings import ConfigError
from tracker.status import Status

# -- encoding and segments (pure) ------------------------------------------------------------


@pytest.mark.parametrize(("text", "encoding", "count"), [
    ("", "GSM-7", 0),
    ("a" * 160, "GSM-7", 1),
    ("a" * 161, "GSM-7", 2),
    ("a" * 306, "GSM-7", 2),
    ("a" * 307, "GSM-7", 3),
    ("€" * 80, "GSM-7", 1),  # extension characters count double: 160 septets
    ("€" * 81, "GSM-7", 2),
    ("a" * 152 + "€" + "a" * 10, "GSM-7", 2),  # the ESC pair moves whole to segment 2
    # 306 septets would fit two segments of 153, but the pair may not straddle them: three.
    ("a" * 152 + "€" + "a" * 152, "GSM-7", 3),
    ("Ваш код 1234", "UCS-2", 1),
    ("я" * 70, "UCS-2", 1),
    ("я" * 71, "UCS-2", 2),
    ("я" * 134, "UCS-2", 2),
    ("я" * 135, "UCS-2", 3),
    ("😀" * 35, "UCS-2", 1),  # outside the BMP: two UTF-16 units each
    ("😀" * 36, "UCS-2", 2),
    ("Grüße ÄÖÜ ñ à é @£$¥", "GSM-7", 1),  # all in the GSM basic table
    ("ç", "UCS-2", 1),  # lower-case c-cedilla is not in it (only Ç is)
])
def test_encoding_and_segment_count(text: str, encoding: str, count: int) -> None:
    shape = segments.segment(text)
    assert (shape.encoding, shape.segments) == (encoding, count)


# -- routing (pure) ----------------------------------------------------------------------------

PROVIDERS = {"fake": {}, "skycore": {}, "mobizon": {}}


def test_route_by_longest_prefix_then_country_then_default() -> None:
    routes = routing.validate({"+7": ["mobizon", "fake"], "+7701": ["skycore"], "us": "skycore",
                               "default": ["fake"]}, PROVIDERS)
    assert routes["US"] == ("skycore",)  # keys normalized, comma strings (env vars) accepted
    assert routing.choose("+77011234567", routes, "fake").providers == ("skycore",)
    assert routing.choose("+77771234567", routes, "fake") == routing.Route(
        ("mobizon", "fake"), "route +7")
    assert routing.choose("+15551234888", routes, "fake").rule == "route US"
    assert routing.choose("+380501234567", routes, "fake").rule == "route default"
    assert routing.choose("+380501234567", {}, "fake") == routing.Route(("fake",),
                                                                        "default_provider")
    # A provider named in the request is used alone: never sent elsewhere behind the caller.
    assert routing.choose("+77011234567", routes, "fake", "mobizon") == routing.Route(
        ("mobizon",), routing.EXPLICIT)


@pytest.mark.parametrize(("routes", "message"), [
    ({"+7": ["nope"]}, "routes.+7: provider 'nope' has no [providers.nope] table"),
    ({"Kazakhstan": ["fake"]}, "routes.Kazakhstan: key must be"),
    ({"+7": []}, "routes.+7: expected a list of provider names"),
    ({"+7": ["fake", "fake"]}, "routes.+7: a provider is listed twice"),
])
def test_bad_routes_name_the_key(routes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("+", r"\+")):
        routing.validate(routes, PROVIDERS)


# -- against real stand-ins, on both databases ---------------------------------------------------


def _config(database_url: str, sky: SkycoreStandIn, mob: MobizonStandIn,
            **skycore: Any) -> dict[str, Any]:
    return make_config(
        database_url,
        providers={
            "fake": {"callback_token": "fake-token"},
            "skycore": {**SKYCORE, "base_url": sky.url, **skycore},
            "mobizon": {"api_key": MOBIZON_KEY, "base_url": mob.url,
                        "callback_token": "mz-token", "poll_after_seconds": 0},
        },
        routes={"+1": ["skycore", "mobizon"], "default": ["mobizon"]},
    )


@pytest.fixture
def app(database_url: str, sky: SkycoreStandIn, mob: MobizonStandIn) -> Iterator[Flask]:
    with running(_config(database_url, sky, mob)) as flask_app:
        yield flask_app


def send(app: Flask, to: str = "+15551234888", **data: Any) -> Message:
    cfg = app.config["TRACKER"]
    new = sending.validate({"to": to, "text": "Your code is 1234", **data},
                           providers=app.extensions["providers"],
                           default_provider=cfg["default_provider"], routes=cfg["routes"])
    return sending.enqueue(new, source="test")


def dispatch(app: Flask) -> int:
    return sending.dispatch(app.extensions["providers"], batch_size=10, max_attempts=3,
                            backoff_seconds=30)


def timeline(message: Message) -> list[tuple[str, str | None, str | None]]:
    return [(e.kind, e.provider, e.status) for e in
            Event.select().where(Event.message == message.id).order_by(Event.id)]


def test_provider_side_failure_fails_over_to_the_next_provider(
        app: Flask, sky: SkycoreStandIn, mob: MobizonStandIn) -> None:
    sky.script(Reply.failure("E713"))  # billing problem on our Skycore account
    message = send(app)
    stored = Message.get_by_id(message.id)
    assert (stored.provider, stored.route, stored.encoding, stored.segments) == (
        "skycore", "mobizon", "GSM-7", 1)
    assert dispatch(app) == 1
    stored = Message.get_by_id(message.id)
    assert (stored.provider, stored.route, stored.status, stored.attempts) == (
        "mobizon", None, "queued", 0)
    assert dispatch(app) == 1  # due at once, through Mobizon now
    assert [r["recipient"] for r in mob.calls()] == ["15551234888"]
    stored = Message.get_by_id(message.id)
    assert (stored.status, stored.provider) == ("accepted", "mobizon")
    events = timeline(message)
    assert events == [("created", "skycore", "queued"), ("routed", "skycore", None),
                      ("failover", "skycore", None), ("submitted", "mobizon", "accepted")]
    failover = Event.get((Event.message == message.id) & (Event.kind == "failover"))
    assert failover.error_code == "E713"
    assert failover.detail.startswith("skycore failed (E713: ")


def test_recipient_side_rejection_never_fails_over(app: Flask, sky: SkycoreStandIn,
                                                   mob: MobizonStandIn) -> None:
    sky.script(Reply.failure("E110"))  # invalid receiver number
    message = send(app)
    dispatch(app)
    dispatch(app)
    stored = Message.get_by_id(message.id)
    assert (stored.status, stored.provider, stored.error_code) == ("rejected", "skycore", "E110")
    assert mob.calls() == []


def test_cancel_before_submission_then_409_after(app: Flask, sky: SkycoreStandIn,
                                                 mob: MobizonStandIn, api_key: str) -> None:
    client = app.test_client()
    auth = {"Authorization": f"Bearer {api_key}"}
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    created = client.post("/api/v1/messages", headers=auth, json={
        "to": "+15551234888", "text": "later", "send_at": later})
    assert created.json["status"] == "scheduled"
    assert (created.json["encoding"], created.json["segments"], created.json["failover"]) == (
        "GSM-7", 1, ["mobizon"])
    ident = created.json["id"]
    assert dispatch(app) == 0  # not due
    canceled = client.delete(f"/api/v1/messages/{ident}", headers=auth)
    assert canceled.status_code == 200
    assert canceled.json["status"] == "canceled"
    assert [e["kind"] for e in canceled.json["events"]][-1] == "canceled"
    again = client.delete(f"/api/v1/messages/{ident}", headers=auth)
    assert (again.status_code, again.json["error"]["code"], again.json["error"]["status"]) == (
        409, "not_cancelable", "canceled")

    now = client.post("/api/v1/messages", headers=auth, json={"to": "+15551234888", "text": "x"})
    dispatch(app)
    late = client.delete(f"/api/v1/messages/{now.json['id']}", headers=auth)
    assert (late.status_code, late.json["error"]["status"]) == (409, "accepted")
    assert client.delete("/api/v1/messages/999999", headers=auth).status_code == 404
    assert client.delete(f"/api/v1/messages/{ident}").status_code == 401
    assert len(sky.requests) == 1  # the canceled one never went out


def test_a_message_being_sent_cannot_be_canceled(app: Flask) -> None:
    message = send(app)
    [claimed] = sending.claim_due("dispatcher-1", {"skycore": 10})
    [started] = sending.start_sends("dispatcher-1", [claimed], dt.timedelta(seconds=60))
    assert started.id == message.id  # its request may be on the wire from now on
    with pytest.raises(sending.NotCancelable):
        sending.cancel(message.id, source="test")
    assert Message.get_by_id(message.id).status == "queued"


def test_a_provider_with_no_room_does_not_hold_up_the_others(app: Flask) -> None:
    """A provider at its capacity (or rate limit) gets no claims this round; the providers
    after it in the round still get theirs."""
    skycore, mobizon = send(app, provider="skycore"), send(app, provider="mobizon")
    claimed = sending.claim_due("dispatcher-1", {"skycore": 0, "mobizon": 10})
    assert [m.id for m in claimed] == [mobizon.id]
    assert [m.id for m in sending.claim_due("dispatcher-2", {"skycore": 10, "mobizon": 0})
            ] == [skycore.id]


def test_a_claimed_message_canceled_before_its_send_starts_is_never_sent(app: Flask) -> None:
    message = send(app)
    [claimed] = sending.claim_due("dispatcher-1", {"skycore": 10})
    sending.cancel(message.id, source="test")  # claimed, but no request has left
    assert sending.start_sends("dispatcher-1", [claimed], dt.timedelta(seconds=60)) == []
    stored = Message.get_by_id(message.id)
    assert (stored.status, stored.send_started_at, stored.attempts) == ("canceled", None, 0)


def test_poll_applies_answers_through_correlation_and_keeps_the_raw_answer(
        app: Flask, mob: MobizonStandIn) -> None:
    message = send(app, to="+77011234567")  # route default: mobizon
    dispatch(app)
    stored = Message.get_by_id(message.id)
    assert stored.status == "accepted" and stored.poll_at is not None
    mobizon = app.extensions["providers"]["mobizon"]
    later = utcnow() + dt.timedelta(seconds=1)
    mob.set_status(stored.provider_message_id, "DELIVRD")
    assert polling.poll_provider(mobizon, now=later) == 1
    stored = Message.get_by_id(message.id)
    assert stored.status == "delivered"
    receipt = Event.get((Event.message == message.id) & (Event.kind == "receipt"))
    assert (receipt.source, receipt.status, receipt.applied) == ("poll", "delivered", True)
    raw = Callback.get_by_id(receipt.callback_id)
    assert (raw.method, raw.provider, raw.verdict) == ("POLL", "mobizon", "applied")
    assert stored.provider_message_id in bytes(raw.body).decode()
    [status_call] = mob.calls("getSMSStatus")
    assert status_call.ids() == [stored.provider_message_id]
    # Final now: never polled again.
    assert polling.poll_provider(mobizon, now=later + dt.timedelta(days=1)) == 0
    assert len(mob.calls("getSMSStatus")) == 1


def test_poll_waits_its_interval_and_a_failing_provider_is_not_hammered(
        app: Flask, mob: MobizonStandIn) -> None:
    message = send(app, to="+77011234567")
    dispatch(app)
    mobizon = app.extensions["providers"]["mobizon"]
    start = utcnow() + dt.timedelta(seconds=1)
    mob.stop()  # unreachable: PollError, logged
    assert polling.poll_provider(mobizon, now=start) == 0
    poll_at = Message.get_by_id(message.id).poll_at
    assert poll_at >= start + dt.timedelta(seconds=mobizon.config["poll_interval_seconds"])
    assert polling.due("mobizon", start + dt.timedelta(seconds=5), 100) == []


def test_expiry_is_inferred_and_a_late_final_receipt_overrides_it(app: Flask,
                                                                  sky: SkycoreStandIn) -> None:
    message = send(app)
    dispatch(app)
    stored = Message.get_by_id(message.id)
    validity = dt.timedelta(minutes=app.extensions["providers"]["skycore"]
                            .config["validity_minutes"])
    assert stored.expires_at - stored.submitted_at == validity
    assert expiry.expire_overdue(now=utcnow()) == 0  # not yet
    assert expiry.expire_overdue(now=stored.expires_at + dt.timedelta(seconds=1)) == 1
    stored = Message.get_by_id(message.id)
    assert (stored.status, stored.status_inferred) == ("expired", True)
    assert expiry.expire_overdue(now=stored.expires_at + dt.timedelta(days=1)) == 0
    with write_tx():
        outcome = correlation.apply_receipt(Receipt(
            provider="skycore", status=Status.DELIVERED,
            provider_message_id=stored.provider_message_id, dedupe_key="late-n202"),
            source="test")
    assert outcome.verdict == correlation.Verdict.APPLIED
    stored = Message.get_by_id(message.id)
    assert (stored.status, stored.status_inferred) == ("delivered", False)
    assert [k for k, _p, _s in timeline(message)][-2:] == ["expired", "receipt"]


# -- the rate limit, shared by dispatcher processes ------------------------------------------------


# 16 sends fit the dispatchers' slot wait (MAX_SLOT_WAIT): 10 claimed by one, 6 by the other.
RATE, SENDS = 8.0, 16


def _dispatch_rate_limited(database_url: str, sky_url: str, mob_url: str, barrier: Any,
                           go: Any) -> None:
    app = build_app(_config(database_url, _Url(sky_url), _Url(mob_url),
                            rate_limit_per_second=RATE))
    with app.app_context(), db.connection_context():
        sending.anything_due()  # connected, and the providers' HTTP clients built, before the
        for provider in app.extensions["providers"].values():  # start that `go` marks
            provider.client  # noqa: B018
        barrier.wait(timeout=60)
        go.value = time.monotonic()
        while dispatch(app):
            pass
    for provider in app.extensions["providers"].values():
        provider.client.close()


class _Url:
    def __init__(self, url: str) -> None:
        self.url = url


def test_rate_limit_holds_across_dispatcher_processes(database_url: str, sky: SkycoreStandIn,
                                                      mob: MobizonStandIn) -> None:
    app = build_app(_config(database_url, sky, mob, rate_limit_per_second=RATE))
    with app.app_context(), db.connection_context():
        for i in range(SENDS):
            send(app, to=f"+1555123{i:04d}")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    go = [ctx.Value("d", 0.0) for _ in range(2)]
    procs = [ctx.Process(target=_dispatch_rate_limited,
                         args=(database_url, sky.url, mob.url, barrier, g)) for g in go]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=90)
    assert [p.exitcode for p in procs] == [0, 0]
    arrivals = sorted(r.received_at for r in sky.requests)
    assert len(arrivals) == SENDS
    # No send leaves before its slot, and the slots of both processes are at least 1/RATE apart
    # from when they started: the k-th send arrives k/RATE after that at the earliest, however
    # late a send left on a busy machine (as in test_dispatcher's rate test).
    start = min(g.value for g in go)
    early = [(k, round(t - start, 3)) for k, t in enumerate(arrivals) if t < start + k / RATE]
    assert early == [], early


# -- scheduling held by the provider (Mobizon's params[deferredToTs]) -----------------------------


def test_provider_scheduling_hands_the_message_over_at_once(database_url: str,
                                                            sky: SkycoreStandIn,
                                                            mob: MobizonStandIn) -> None:
    config = _config(database_url, sky, mob)
    config["providers"]["mobizon"]["provider_scheduling"] = True
    app = build_app(config)
    with app.app_context(), db.connection_context():
        at = (utcnow() + dt.timedelta(hours=3)).replace(microsecond=0)
        held = send(app, to="+77011234567", send_at=at.isoformat() + "Z")  # route: mobizon
        kept = send(app, send_at=at.isoformat() + "Z")  # route +1: skycore cannot hold it
        too_soon = send(app, to="+77011234568",  # under Mobizon's one-hour minimum
                        send_at=(utcnow() + dt.timedelta(minutes=30)).isoformat() + "Z")
        assert dispatch(app) == 1
        [call] = mob.calls()
        assert call["params[deferredToTs]"] == f"{at:%Y-%m-%d %H:%M:%S}"
        stored = Message.get_by_id(held.id)
        assert stored.status == "accepted"
        validity = dt.timedelta(minutes=app.extensions["providers"]["mobizon"]
                                .config["validity_minutes"])
        assert stored.expires_at == at + validity  # counted from when it will go out
        with pytest.raises(sending.NotCancelable):
            sending.cancel(held.id, source="test")
        assert "held by mobizon" in Event.get((Event.message == held.id)
                                              & (Event.kind == "created")).detail
        for waiting in (kept, too_soon):
            assert Message.get_by_id(waiting.id).status == "scheduled"
        assert sky.requests == []
        for provider in app.extensions["providers"].values():
            provider.client.close()
