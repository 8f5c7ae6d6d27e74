"""The callback path: authentication, store-first, verdicts, orphans, size limit, 503."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os

from tracker import correlation, jobs, sending
from tracker import db as dbmod
from tracker.models import Callback, Event, Message
from tracker.providers.base import Receipt, SendResult
from tracker.status import Status

URL = "/callbacks/skycore/sky-secret-token"


def postback(tracking: str, code: str = "N202", text: str = "Message Sent/Delivered",
             ts: str = "2013-11-05T05:41:15-05:00") -> bytes:
    return (f"<POSTBACK><ORIGIN>SMS_MT</ORIGIN><CODE>{code}</CODE><STATUS>{text}</STATUS>"
            f"<TO>16503333058</TO><TRACKINGID>{tracking}</TRACKINGID>"
            f"<TIMESTAMP>{ts}</TIMESTAMP></POSTBACK>").encode()


def accepted_message(tracking: str) -> Message:
    message = sending.enqueue(sending.NewMessage(to="+15551234888", text="hi",
                                                 provider="skycore"), source="test")
    sending.record_accepted(message, SendResult(tracking))
    return Message.get_by_id(message.id)


def test_raw_callback_is_stored_verbatim_without_the_token(client) -> None:
    body = postback("T9")
    client.post(URL + "?x=1", data=body, content_type="text/xml; charset=utf-8",
                headers={"Authorization": "Basic c2VjcmV0", "X-Sender": "sky"})
    stored = Callback.get()
    assert bytes(stored.body) == body and stored.method == "POST" and stored.query == "x=1"
    assert stored.path == "/callbacks/skycore/***" and stored.provider == "skycore"
    headers = dict(json.loads(stored.headers))
    assert headers["Authorization"] == "[redacted]" and headers["X-Sender"] == "sky"
    assert "sky-secret-token" not in stored.path + stored.headers + stored.query
    assert stored.remote_addr == "127.0.0.1" and stored.received_at


def test_unparseable_bodies_are_stored_and_acknowledged(client) -> None:
    for body, ctype in ((b"<POSTBACK><CODE>", "text/xml"), (b'{"a": 1}', "application/json"),
                        (b"", "text/xml"), (b"\xff\xfe garbage", "application/octet-stream")):
        response = client.post(URL, data=body, content_type=ctype)
        assert (response.status_code, response.data) == (200, b"OK invalid\n")
    stored = list(Callback.select().order_by(Callback.id))
    assert [c.verdict for c in stored] == ["invalid"] * 4
    assert all(c.detail for c in stored)


def test_xml_bomb_is_refused_and_stored(client) -> None:
    bomb = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><POSTBACK>&lol2;</POSTBACK>')
    response = client.post(URL, data=bomb, content_type="text/xml")
    assert response.data == b"OK invalid\n"
    assert "DOCTYPE not allowed" in Callback.get().detail


def test_batch_with_several_receipts(client) -> None:
    a, b = accepted_message("B1"), accepted_message("B2")
    body = b"<POSTBACKS>" + postback("B1") + postback("B2", "E202", "Message Sent/Expired") + (
        postback("NOBODY") + b"</POSTBACKS>")
    response = client.post(URL, data={"xml": body.decode()})
    assert response.data == b"OK applied\n"
    assert Message.get_by_id(a.id).status == "delivered"
    assert Message.get_by_id(b.id).status == "expired"
    assert Event.get(Event.provider_message_id == "NOBODY").message_id is None


def test_locked_sqlite_answers_503_with_retry_after(tmp_path, monkeypatch) -> None:
    from conftest import build_app, make_config

    client = build_app(make_config(f"sqlite:///{tmp_path / 'locked.sqlite3'}")).test_client()
    monkeypatch.setattr(dbmod, "WRITE_LOCK_TIMEOUT", 0.2)
    fd = os.open(dbmod.db.obj._lock_path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another process holding the writer lock too long
        response = client.post(URL, data=postback("L1"), content_type="text/xml")
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    assert response.status_code == 503 and response.headers["Retry-After"] == "30"
    assert Callback.select().count() == 0
    assert client.post(URL, data=postback("L1"), content_type="text/xml").status_code == 200


def test_database_down_answers_503(tmp_path) -> None:
    from conftest import build_app, make_config

    app = build_app(make_config(f"sqlite:///{tmp_path / 'ok.sqlite3'}"))
    down = app.test_client()
    # Swap in a Postgres server that is not there: connection refused.
    dbmod.db.initialize(dbmod.connect_database("postgresql://postgres@127.0.0.1:9/none"))
    try:
        response = down.post(URL, data=postback("D1"), content_type="text/xml")
        api = down.get("/api/v1/messages/1", headers={"Authorization": "Bearer dlr_x"})
    finally:
        dbmod.db.initialize(dbmod.connect_database(f"sqlite:///{tmp_path / 'ok.sqlite3'}"))
    assert response.status_code == 503 and response.headers["Retry-After"] == "30"
    assert api.status_code == 503 and api.json["error"]["code"] == "unavailable"


def test_database_down_every_page_answers_503_then_works_again(tmp_path) -> None:
    from conftest import build_app, make_config

    from tracker import accounts

    ok_url = f"sqlite:///{tmp_path / 'ok.sqlite3'}"
    app = build_app(make_config(ok_url))
    app.config["WTF_CSRF_ENABLED"] = False
    with app.app_context(), dbmod.db.connection_context():
        accounts.create_user("ana", "correct horse battery", "admin")
    client = app.test_client()
    assert client.post("/auth/login", data={"username": "ana",
                                            "password": "correct horse battery"}).status_code == 302
    pages = ["/messages", "/messages/1", "/overview", "/callback-log", "/reports",
             "/messages/export?format=csv"]
    dbmod.db.initialize(dbmod.connect_database("postgresql://postgres@127.0.0.1:9/none"))
    try:
        down = {page: client.get(page) for page in pages}
    finally:
        dbmod.db.initialize(dbmod.connect_database(ok_url))
    for page, response in down.items():
        assert response.status_code == 503, (page, response.status_code)
        assert response.headers["Retry-After"] == "30"
        assert "Temporarily unavailable" in response.get_data(as_text=True)
    assert client.get("/messages").status_code == 200  # the same process, no restart

def test_two_providers_may_report_under_the_same_key(app) -> None:
    """Receipts are deduplicated per provider: a Skycore receipt whose key (and message id)
    happens to equal a fake provider's is a receipt of its own, never taken for a duplicate."""
    messages = {}
    for provider in ("fake", "skycore"):
        message = sending.enqueue(sending.NewMessage(to="+15551234888", text="hi",
                                                     provider=provider), source="test")
        sending.record_accepted(message, SendResult("X1"))
        messages[provider] = message.id
    verdicts = []
    for provider in ("fake", "skycore"):
        receipt = Receipt(provider=provider, status=Status.DELIVERED, provider_message_id="X1",
                          raw_status="delivered", dedupe_key="X1|delivered")
        with dbmod.write_tx():
            verdicts.append(correlation.apply_receipt(receipt, source="test").verdict)
    assert verdicts == ["applied", "applied"]
    assert {Message.get_by_id(m).status for m in messages.values()} == {"delivered"}
    # ... and a true copy from the same provider still is one.
    again = Receipt(provider="skycore", status=Status.DELIVERED, provider_message_id="X1",
                    raw_status="delivered", dedupe_key="X1|delivered")
    with dbmod.write_tx():
        assert correlation.apply_receipt(again, source="test").verdict == "duplicate"


def test_an_orphan_stored_after_its_message_got_its_id_is_applied_by_the_worker(app) -> None:
    """The race the orphan job exists for: a receipt was matched (and found no message) just
    before the send answer gave the message its id, and was stored after the send answer's
    own re-match had looked. The worker's job applies it; without the job the message would
    stay 'accepted' forever."""
    receipt = Receipt(provider="skycore", status=Status.DELIVERED, provider_message_id="LATE1",
                      raw_status="N202", dedupe_key="LATE1|N202")
    matched_too_early = correlation.Match(receipt, None, False, None)  # no message had LATE1
    message = accepted_message("LATE1")  # the send answer, and its re-match: nothing yet
    with dbmod.write_tx():
        assert correlation.apply(matched_too_early, source="callback").verdict == "orphan"
    assert Message.get_by_id(message.id).status == "accepted"

    assert jobs.rematch_orphans(app) == 1
    assert Message.get_by_id(message.id).status == "delivered"
    event = Event.get(Event.dedupe_key == "skycore:LATE1|N202")
    assert (event.message_id, event.applied) == (message.id, True)
    assert jobs.rematch_orphans(app) == 0  # nothing left waiting


def test_orphans_applied_late_keep_their_time_error_and_order(app) -> None:
    """Receipts that waited for their message are applied, when it gets its id, as if they had
    come after it: in arrival order, by the status rule, with their provider time, error code
    and detail; the one the rule refuses says why."""
    t0 = dt.datetime(2026, 5, 1, 12, 0, 0)
    waiting = [(Status.SENT, 5, None, None), (Status.SENT, 9, None, None),
               (Status.UNDELIVERED, 10, "E205", "absent subscriber"), (Status.SENT, 7, None, None)]
    for status, second, code, detail in waiting:
        receipt = Receipt(provider="skycore", status=status, provider_message_id="LATE2",
                          raw_status=f"{status}@{second}", error_code=code, detail=detail,
                          occurred_at=t0 + dt.timedelta(seconds=second),
                          dedupe_key=f"LATE2|{status}|{second}")
        with dbmod.write_tx():
            assert correlation.apply_receipt(receipt, source="callback").verdict == "orphan"
    message = accepted_message("LATE2")  # the send answer applies what waited for it
    stored = Message.get_by_id(message.id)
    assert (stored.status, stored.error_code, stored.error_detail, stored.status_at) == (
        "undelivered", "E205", "absent subscriber", t0 + dt.timedelta(seconds=10))
    events = {e.raw_status: (e.applied, e.reason) for e in Event.select().where(
        (Event.message == message.id) & (Event.kind == "receipt"))}
    assert events == {
        "sent@5": (True, None), "sent@9": (True, None), "undelivered@10": (True, None),
        "sent@7": (False, "message is already final (undelivered)")}


def test_a_callback_our_code_fails_on_is_stored_for_replay_and_acknowledged(
        client, monkeypatch) -> None:
    """A bug of ours while parsing must not lose the callback: it is stored with the verdict
    `error` (replayable once fixed) and acknowledged, so the provider does not retry forever."""
    skycore = client.application.extensions["providers"]["skycore"]

    def broken(_request):
        raise ZeroDivisionError("a bug of ours")

    monkeypatch.setattr(skycore, "parse_callback", broken)
    body = postback("BUG1")
    response = client.post(URL, data=body, content_type="text/xml")
    assert (response.status_code, response.data) == (200, b"OK error\n")
    stored = Callback.get()
    assert (stored.verdict, stored.detail, bytes(stored.body)) == (
        "error", "processing failed; replay it", body)
