"""Retention: old callbacks, and old final messages with their events, deleted in batches;
everything newer, and every message not final yet, kept; on SQLite and Postgres."""

from __future__ import annotations

import datetime as dt

import pytest
from flask import Flask

from tracker import jobs, metrics, retention, settings
from tracker.models import Callback, Event, Message, Outbox, utcnow
from tracker.scheduler import Worker
from tracker.status import RANK, Status, order_key

NOW = utcnow()
OLD = NOW - dt.timedelta(days=40)
RECENT = NOW - dt.timedelta(days=5)


def callback(at: dt.datetime) -> Callback:
    return Callback.create(provider="fake", method="POST", path="/callbacks/fake/***",
                           body=b'{"id": "x", "status": "delivered"}', received_at=at,
                           verdict="applied")


def message(at: dt.datetime, status: Status = Status.DELIVERED, n: int = 0) -> Message:
    return Message.create(reference=f"r{at:%j}{status.value[:3]}{n}", provider="fake",
                          recipient="+15551234888", text="hi", status=status.value,
                          status_rank=RANK[status], status_order=order_key(status, None),
                          created_at=at, updated_at=at)


def event(msg: Message | None, cb: Callback | None, at: dt.datetime, key: str) -> Event:
    return Event.create(message=msg, callback=cb, kind="receipt", source="callback",
                        provider="fake", provider_message_id=key, status="delivered",
                        received_at=at, dedupe_key=key)


def counted(table: str) -> float:
    return metrics.RETENTION_DELETED.labels(table)._value.get()


def test_old_callbacks_go_and_their_events_keep_their_place(app: Flask) -> None:
    kept_message = message(RECENT)
    old_cb, new_cb = callback(OLD), callback(RECENT)
    linked = event(kept_message, old_cb, OLD, "k1")
    other = event(kept_message, new_cb, RECENT, "k2")
    before = counted("callback")
    deleted = retention.purge({"callbacks": 30, "messages": 0})
    assert deleted == {"callback": 1}
    assert counted("callback") - before == 1
    assert [c.id for c in Callback.select()] == [new_cb.id]
    assert Event.get_by_id(linked.id).callback_id is None  # on the timeline, unlinked
    assert Event.get_by_id(other.id).callback_id == new_cb.id
    assert Message.get_by_id(kept_message.id).status == "delivered"


def test_old_final_messages_go_with_their_events_and_orphans(app: Flask) -> None:
    old_final = message(OLD, Status.DELIVERED)
    old_open = message(OLD, Status.SENT)  # never final: kept however old
    old_scheduled = message(OLD, Status.SCHEDULED)
    recent = message(RECENT, Status.FAILED)
    cb = callback(RECENT)
    gone = event(old_final, cb, OLD, "a")
    kept = [event(old_open, None, OLD, "b"), event(recent, None, RECENT, "c"),
            event(None, None, RECENT, "recent-orphan")]
    event(None, None, OLD, "old-orphan")
    Outbox.create(message=old_final, kind="status", status="delivered", status_inferred=False,
                  provider="fake", changed_at=OLD)
    deleted = retention.purge({"callbacks": 0, "messages": 30})
    assert deleted == {"message": 1, "event": 1}
    assert {m.id for m in Message.select()} == {old_open.id, old_scheduled.id, recent.id}
    assert {e.id for e in Event.select()} == {e.id for e in kept}
    assert not Event.select().where(Event.id == gone.id).exists()
    assert Outbox.select().count() == 0  # cascaded with its message
    assert Callback.select().count() == 1  # callbacks have a retention of their own (off)


def test_nothing_goes_while_retention_is_off(app: Flask) -> None:
    message(OLD)
    callback(OLD)
    assert retention.purge({"callbacks": 0, "messages": 0}) == {}
    assert jobs.apply_retention(app) == 0
    assert (Message.select().count(), Callback.select().count()) == (1, 1)


def test_deletes_go_in_batches_oldest_first_with_pauses(app: Flask) -> None:
    ages = [OLD - dt.timedelta(hours=i) for i in range(7)]
    for at in ages:
        callback(at)
    newest_old = max(ages)
    pauses: list[float] = []

    def stop(pause: float) -> bool:
        pauses.append(pause)
        return len(pauses) == 2  # stop after the second batch

    deleted = retention.purge({"callbacks": 30}, stop=stop, batch=3)
    assert deleted == {"callback": 6} and len(pauses) == 2
    assert all(pause >= retention.MIN_PAUSE for pause in pauses)
    # The oldest went first: the one left is the newest of them.
    assert [c.received_at for c in Callback.select()] == [newest_old]
    assert retention.purge({"callbacks": 30}, stop=stop, batch=3) == {"callback": 1}


def test_the_worker_runs_retention_only_when_it_is_set(database_url: str) -> None:
    from conftest import make_config, running

    with running(make_config(database_url)) as flask_app:
        assert Worker(flask_app).scheduler.get_job("retention") is None
    with running(make_config(database_url,
                             retention_days={"messages": 30})) as flask_app:
        assert Worker(flask_app).scheduler.get_job("retention") is not None
        message(OLD)
        message(RECENT)
        assert jobs.apply_retention(flask_app) == 1
        assert [m.created_at for m in Message.select()] == [RECENT]


@pytest.mark.parametrize(("value", "problem"), [
    ({"callback": 3}, "retention_days.callback: unknown key"),
    ({"messages": -1}, "retention_days.messages: expected a whole number"),
    ({"messages": 1.5}, "retention_days.messages: expected a whole number"),
    ({"messages": True}, "retention_days.messages: expected a whole number"),
    ("30", "retention_days: expected dict"),
])
def test_bad_retention_settings_stop_start_up(value: object, problem: str) -> None:
    with pytest.raises(settings.ConfigError, match=problem.replace(".", r"\.")):
        settings.load({"retention_days": value})


def test_retention_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKER_RETENTION_DAYS__CALLBACKS", "14")
    assert settings.load()["retention_days"] == {"callbacks": 14, "messages": 0}
