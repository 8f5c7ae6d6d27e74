"""The status rule: unit cases, order independence (hypothesis), and races across processes."""

from __future__ import annotations

import datetime as dt
import multiprocessing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_callbacks import URL as CALLBACK_URL
from test_callbacks import postback

from tracker import correlation, sending
from tracker.db import db, write_tx
from tracker.models import Callback, Event, Message
from tracker.providers.base import Receipt
from tracker.status import FINAL, RANK, Current, Decision, Status, decide, order_key

T0 = dt.datetime(2026, 1, 1, 12, 0, 0)


def current(status: Status, at: dt.datetime | None = None, inferred: bool = False) -> Current:
    return Current(status, order_key(status, at), inferred)


@pytest.mark.parametrize(("cur", "new", "applies"), [
    (Status.ACCEPTED, Status.SENT, True),
    (Status.SENT, Status.DELIVERED, True),
    (Status.DELIVERED, Status.SENT, False),  # a late "sent" never regresses
    (Status.DELIVERED, Status.UNDELIVERED, False),  # final is final: first terminal kept
    (Status.UNDELIVERED, Status.DELIVERED, False),
    (Status.QUEUED, Status.DELIVERED, True),  # a receipt can beat the send response
    (Status.DELIVERED, Status.ACCEPTED, False),  # ... and the send response then loses
    (Status.CANCELED, Status.DELIVERED, False),
])
def test_rank_rule(cur: Status, new: Status, applies: bool) -> None:
    assert decide(current(cur, T0), new, T0).applies is applies


def test_same_rank_needs_a_newer_provider_time() -> None:
    later = T0 + dt.timedelta(seconds=5)
    assert decide(current(Status.SENT, T0), Status.UNKNOWN, later).applies
    older = decide(current(Status.SENT, later), Status.UNKNOWN, T0)
    assert not older.applies and "not newer" in (older.reason or "")


def test_inferred_expiry_yields_only_to_a_provider_final() -> None:
    expired = current(Status.EXPIRED, T0, inferred=True)
    assert decide(expired, Status.DELIVERED, T0).applies
    assert not decide(expired, Status.SENT, T0).applies
    assert not decide(current(Status.EXPIRED, T0), Status.DELIVERED, T0).applies


def test_reasons_say_why() -> None:
    assert decide(current(Status.DELIVERED), Status.SENT, T0).reason == (
        "message is already final (delivered)")
    assert decide(current(Status.DELIVERED), Status.DELIVERED, T0) == Decision(
        False, "message is already delivered")  # a second "delivered" is no conflict
    # The same status at the same provider time is no news; a lower rank never wins, even
    # with a later time.
    assert decide(current(Status.SENT, T0), Status.SENT, T0) == Decision(
        False, "not newer than the current status sent")
    assert decide(current(Status.SENT, T0), Status.ACCEPTED, T0 + dt.timedelta(hours=1)) == (
        Decision(False, "accepted ranks below the current status sent"))
    assert "ranks below" in (decide(current(Status.SENT, T0), Status.ACCEPTED, T0).reason or "")


# --- order independence, through the real correlation path on the real database ------------

NON_FINAL = [Status.ACCEPTED, Status.SENT, Status.UNKNOWN]
receipt_specs = st.tuples(st.sampled_from(NON_FINAL), st.integers(0, 4))  # (status, seconds)


def _make_message() -> Message:
    new = sending.NewMessage(to="+15551234888", text="x", provider="skycore")
    message = sending.enqueue(new, source="test")
    Message.update(provider_message_id=f"T{message.id}").where(Message.id == message.id).execute()
    return Message.get_by_id(message.id)


def _receipts(message: Message, specs: list[tuple[Status, int]]) -> list[Receipt]:
    return [Receipt(provider="skycore", status=s, provider_message_id=message.provider_message_id,
                    occurred_at=T0 + dt.timedelta(seconds=sec), raw_status=f"{s}@{sec}",
                    dedupe_key=f"{message.provider_message_id}|{s}|{sec}")
            for s, sec in specs]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    specs=st.lists(receipt_specs, min_size=1, max_size=6, unique=True),
    final=st.one_of(st.none(), st.tuples(st.sampled_from(sorted(FINAL - {Status.CANCELED})),
                                         st.integers(0, 4))),
    data=st.data(),
)
def test_any_order_and_duplication_gives_the_same_outcome(app, specs, final, data) -> None:
    """At most one final receipt per message (a conflicting second final is kept out by design:
    the first terminal status wins, so with two finals order matters by the rule itself)."""
    distinct = specs + ([final] if final else [])
    outcomes = []
    for _ in range(2):
        message = _make_message()
        receipts = _receipts(message, distinct)
        delivery = data.draw(st.permutations(receipts + data.draw(
            st.lists(st.sampled_from(receipts), max_size=4))))
        with write_tx():
            for receipt in delivery:
                correlation.apply_receipt(receipt, source="test")
        outcomes.append(_summary(message.id))
    first, second = outcomes
    assert first["status"] == second["status"]
    assert first["status_at"] == second["status_at"]
    best = max(distinct, key=lambda spec: order_key(spec[0], T0 + dt.timedelta(seconds=spec[1])))
    assert first["status"] == best[0]
    for summary in outcomes:
        # One event per distinct receipt, whatever the duplication.
        assert sorted(summary["events"]) == sorted((s.value, sec) for s, sec in distinct)
        # The applied events form a strictly rising chain that ends at the winning receipt.
        chain = summary["applied"]
        assert chain == sorted(chain) and len(set(chain)) == len(chain)
        assert chain[-1] == order_key(best[0], T0 + dt.timedelta(seconds=best[1]))


def _summary(message_id: int) -> dict:
    m = Message.get_by_id(message_id)
    events = list(Event.select().where((Event.message == message_id) & (Event.kind == "receipt"))
                  .order_by(Event.id))
    return {
        "status": Status(m.status),
        "status_at": m.status_at,
        "events": [(e.status, int(e.raw_status.split("@")[1])) for e in events],
        "applied": [order_key(e.status, e.occurred_at) for e in events if e.applied],
    }


# --- concurrent processes never regress a status ---------------------------------------------

def _apply_in_process(database_url: str, receipts: list[tuple[str, str, int]]) -> None:
    from conftest import build_app, make_config

    app = build_app(make_config(database_url))
    with app.app_context(), db.connection_context():
        for pmid, status, sec in receipts:
            receipt = Receipt(provider="skycore", status=Status(status), provider_message_id=pmid,
                              occurred_at=T0 + dt.timedelta(seconds=sec),
                              dedupe_key=f"{pmid}|{status}|{sec}")
            with write_tx():
                correlation.apply_receipt(receipt, source="test")


def test_concurrent_receipts_never_regress(app, database_url) -> None:
    messages = [_make_message() for _ in range(40)]
    # Each process applies every message's receipts in a different order: delivered first for
    # some, the late "sent"/"accepted" first for others. A read-modify-write would regress.
    plans = [
        [(m.provider_message_id, s, sec) for m in messages for s, sec in order]
        for order in (
            [("delivered", 3), ("sent", 1), ("accepted", 0)],
            [("accepted", 0), ("sent", 1), ("delivered", 3)],
            [("sent", 1), ("delivered", 3), ("accepted", 0)],
            [("sent", 2), ("accepted", 0), ("delivered", 3)],
        )
    ]
    db.close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_apply_in_process, args=(database_url, plan)) for plan in plans]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    db.connect(reuse_if_open=True)
    statuses = {m.status for m in Message.select().where(Message.id.in_([x.id for x in messages]))}
    assert statuses == {"delivered"}
    # Every message's history holds each distinct receipt once, and one applied delivered.
    for m in messages:
        events = list(Event.select().where((Event.message == m.id) & (Event.kind == "receipt")))
        assert len(events) == 4
        assert [e.status for e in events if e.applied and RANK[Status(e.status)] == 3] == [
            "delivered"]


# --- a receipt judged before another writer moved the message ---------------------------------

@pytest.mark.parametrize(("first", "late_code", "late"), [
    (Status.DELIVERED, "E202", Status.UNDELIVERED),
    (Status.UNDELIVERED, "N202", Status.DELIVERED),
])
def test_a_conflicting_final_receipt_that_lost_the_race_never_replaces_the_first(
        app, monkeypatch: pytest.MonkeyPatch, first: Status, late_code: str,
        late: Status) -> None:
    """Two final receipts for one message, handled at once by two workers: the intake judges
    the second against 'accepted' (it would apply), and before it writes, the other worker's
    final receipt lands. The database's guard, not that stale judgement, decides: the first
    final status stays, the second is kept as an event that did not apply. The second carries
    the later provider time, so only the "final is final" half of the guard can refuse it."""
    message = _make_message()
    real_match = correlation.match

    def match_then_lose_the_race(receipt: Receipt) -> correlation.Match:
        found = real_match(receipt)
        monkeypatch.setattr(correlation, "match", real_match)  # the other worker: plain
        other = Receipt(provider="skycore", status=first, occurred_at=T0,
                        provider_message_id=message.provider_message_id,
                        dedupe_key=f"{message.provider_message_id}|first")
        with write_tx():
            assert correlation.apply_receipt(other, source="test").verdict == "applied"
        return found

    monkeypatch.setattr(correlation, "match", match_then_lose_the_race)
    late_at = T0 + dt.timedelta(minutes=5)
    answer = app.test_client().post(
        CALLBACK_URL, data=postback(message.provider_message_id, late_code,
                                    ts=f"{late_at:%Y-%m-%dT%H:%M:%S}+00:00"),
        content_type="text/xml")
    assert answer.status_code == 200, answer.data
    assert Message.get_by_id(message.id).status == first
    events = Event.select().where((Event.message == message.id) & (Event.kind == "receipt"))
    assert sorted((e.status, e.applied, e.reason) for e in events) == sorted(
        [(first.value, True, None),
         (late.value, False, f"message is already final ({first.value})")])
    assert answer.data == b"OK ignored\n"
    # ... and the stored callback says so too (it was written expecting "applied").
    assert Callback.get().verdict == "ignored"
