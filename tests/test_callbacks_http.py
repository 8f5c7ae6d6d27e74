"""The callback endpoint over real HTTP: `tracker serve` (gunicorn) on loopback, both databases.

Size limits (chunked and Content-Length), concurrent duplicates, methods and tokens; what was
stored is read straight from the database, not through the app.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import SKYCORE
from servers import TrackerServer, db_rows, reset_postgres, tracker_serve, wait_until
from standins.skycore import (
    SkycoreStandIn,
    as_form,
    batch,
    notification_delivery,
    notification_sent,
    postback,
)

LIMIT = 4096  # callback_max_bytes of the server under test (the default is 64 KiB)
TIMEOUT = 10.0


@dataclass
class Served:
    server: TrackerServer
    sky: SkycoreStandIn
    api_key: str

    @property
    def url(self) -> str:
        return self.server.callback_url()

    @property
    def path(self) -> str:
        return "/callbacks/skycore/" + SKYCORE["callback_token"]

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        return db_rows(self.server.database_url, sql, params)

    def callback_count(self) -> int:
        return self.rows("SELECT count(*) FROM callback")[0][0]

    def last_callback_id(self) -> int:
        return self.rows("SELECT coalesce(max(id), 0) FROM callback")[0][0]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One `tracker serve` per database for this module (stopped and checked at the end)."""
    run_dir: Path = tmp_path_factory.mktemp(f"callbacks-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{run_dir / 'tracker.sqlite3'}"
    else:
        url = request.getfixturevalue("pg_database_url")
        reset_postgres(url)
    with SkycoreStandIn(api_key=SKYCORE["api_key"]) as sky, tracker_serve(
        run_dir, database_url=url, skycore_url=sky.url, callback_max_bytes=LIMIT, web_workers=4,
    ) as server:
        yield Served(server, sky, server.create_api_key("callbacks"))


def padded(document: bytes, size: int) -> bytes:
    """A postback padded with trailing whitespace (still well-formed XML) to exactly `size`."""
    assert len(document) <= size
    return document + b" " * (size - len(document))


def post_chunked(port: int, path: str, body: bytes, *, chunk: int = 1000,
                 content_type: str = "text/xml") -> tuple[int, bytes]:
    """POST `body` with Transfer-Encoding: chunked (no Content-Length) over a raw socket."""
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode("ascii")
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        # The server may answer and close before it read all of an oversized body.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head + encoded)
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
            return response.status, response.read()
        finally:
            response.close()


# -- size limits -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [LIMIT + 1, LIMIT * 3], ids=["limit+1", "3x-limit"])
def test_chunked_body_over_the_limit_is_refused_and_not_stored(served: Served, size: int) -> None:
    before = served.callback_count()
    body = padded(postback("SMS_CHUNKED_BIG"), size)
    status, answer = post_chunked(served.server.port, served.path, body)
    assert status == 413, answer
    assert served.callback_count() == before


def test_content_length_over_the_limit_is_refused_and_not_stored(served: Served) -> None:
    before = served.callback_count()
    body = padded(postback("SMS_LENGTH_BIG"), LIMIT + 1)
    response = httpx.post(served.url, content=body, headers={"Content-Type": "text/xml"},
                          timeout=TIMEOUT)
    assert response.status_code == 413, response.text
    assert served.callback_count() == before


@pytest.mark.parametrize("form", [False, True], ids=["xml-body", "xml-form-field"])
def test_a_body_cut_off_before_its_content_length_is_never_stored(served: Served,
                                                                   form: bool) -> None:
    """A whole, well-formed postback inside a request that ends before its declared length
    (the sender's connection dropped): refused with 400, nothing stored or applied."""
    document = postback("SMS_CUT_OFF", "N202")
    body = as_form(document) if form else document
    content_type = "application/x-www-form-urlencoded" if form else "text/xml"
    before = served.callback_count()
    head = (f"POST {served.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}"
            f"\r\nContent-Length: {len(body) + 200}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", served.server.port), timeout=TIMEOUT) as sock:
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)  # the rest never comes
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
            status = response.status
        except (http.client.RemoteDisconnected, ConnectionResetError):
            status = None  # dropped without an answer: also fine, as long as nothing is kept
        finally:
            response.close()
    assert status in (400, None)
    assert served.callback_count() == before
    assert served.rows("SELECT count(*) FROM event WHERE provider_message_id = 'SMS_CUT_OFF'") \
        == [(0,)]


@pytest.mark.parametrize("transfer", ["chunked", "content-length"])
def test_body_of_exactly_the_limit_is_stored(served: Served, transfer: str) -> None:
    body = padded(postback(f"SMS_EXACT_{transfer}", "N202"), LIMIT)
    last = served.last_callback_id()
    if transfer == "chunked":
        status, answer = post_chunked(served.server.port, served.path, body)
    else:
        response = httpx.post(served.url, content=body, headers={"Content-Type": "text/xml"},
                              timeout=TIMEOUT)
        status, answer = response.status_code, response.content
    assert status == 200, answer
    assert answer.strip() == b"OK orphan"  # parsed, and no message has this TRACKINGID
    rows = served.rows("SELECT body, verdict, method FROM callback WHERE id > ?", (last,))
    assert len(rows) == 1
    stored, verdict, method = rows[0]
    assert bytes(stored) == body  # verbatim, every byte
    assert (verdict, method) == ("orphan", "POST")


# -- concurrency -----------------------------------------------------------------------------


def test_same_postback_from_20_threads_applies_once(served: Served) -> None:
    with httpx.Client(base_url=served.server.base_url, timeout=TIMEOUT,
                      headers={"Authorization": f"Bearer {served.api_key}"}) as api:
        created = api.post("/api/v1/messages", json={"to": "+15551230020", "text": "race",
                                                     "provider": "skycore"})
        assert created.status_code == 202, created.text
        ident = created.json()["id"]

        def accepted() -> dict | None:
            detail = api.get(f"/api/v1/messages/{ident}").json()
            return detail if detail["status"] == "accepted" else None

        tracking_id = wait_until(accepted, timeout=15, message="message never accepted")[
            "provider_message_id"]
        body = notification_delivery(tracking_id)
        last = served.last_callback_id()

        barrier = threading.Barrier(20, timeout=TIMEOUT)
        answers: list[tuple[int, str]] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def post() -> None:
            try:
                with httpx.Client(timeout=TIMEOUT) as client:
                    barrier.wait()
                    r = client.post(served.url, content=body,
                                    headers={"Content-Type": "text/xml"})
                with lock:
                    answers.append((r.status_code, r.text.strip()))
            except BaseException as exc:
                with lock:
                    errors.append(exc)

        threads = [threading.Thread(target=post) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads), "a poster hung"
        assert not errors, errors
        assert [code for code, _ in answers] == [200] * 20, answers
        assert Counter(text for _, text in answers) == {"OK applied": 1, "OK duplicate": 19}

        verdicts = served.rows("SELECT verdict FROM callback WHERE id > ?", (last,))
        assert Counter(v for (v,) in verdicts) == {"applied": 1, "duplicate": 19}
        receipts = served.rows(
            "SELECT status, applied FROM event WHERE message_id = ? AND kind = 'receipt'",
            (ident,))
        assert [(s, bool(a)) for s, a in receipts] == [("delivered", True)]
        assert api.get(f"/api/v1/messages/{ident}").json()["status"] == "delivered"


# Every postback form Skycore documents, and the status it must lead to (PROTOCOLS.md §3.4).
POSTBACK_KINDS = [
    (lambda t: postback(t, "N201"), "sent"),
    (lambda t: postback(t, "N202"), "delivered"),
    (lambda t: postback(t, "E201"), "failed"),
    (lambda t: postback(t, "E202"), "undelivered"),
    (lambda t: postback(t, "E202", status="Message Sent/Expired"), "expired"),
    (lambda t: notification_sent(t), "sent"),
    (lambda t: notification_delivery(t, protocol="4", status="0"), "delivered"),
    (lambda t: notification_delivery(t, protocol="2", status="811"), "expired"),
    (lambda t: notification_delivery(t, protocol="4", status="100"), "rejected"),
]


def test_every_postback_kind_over_http(served: Served) -> None:
    """Half posted one by one as raw text/xml, half batched in one xml= form request."""
    with httpx.Client(base_url=served.server.base_url, timeout=TIMEOUT,
                      headers={"Authorization": f"Bearer {served.api_key}"}) as api:
        idents = []
        for i in range(len(POSTBACK_KINDS)):
            created = api.post("/api/v1/messages", json={
                "to": f"+1555124{i:04d}", "text": f"kind {i}", "provider": "skycore"})
            assert created.status_code == 202, created.text
            idents.append(created.json()["id"])

        def all_accepted() -> list[dict] | None:
            details = [api.get(f"/api/v1/messages/{i}").json() for i in idents]
            return details if all(d["status"] == "accepted" for d in details) else None

        details = wait_until(all_accepted, timeout=15, message="messages never accepted")
        documents = [make(d["provider_message_id"])
                     for (make, _), d in zip(POSTBACK_KINDS, details, strict=True)]
        half = len(documents) // 2
        for document in documents[:half]:
            answer = SkycoreStandIn.deliver(served.url, document)
            assert (answer.status_code, answer.text.strip()) == (200, "OK applied")
        answer = SkycoreStandIn.deliver(served.url, batch(*documents[half:]), form=True)
        assert (answer.status_code, answer.text.strip()) == (200, "OK applied")

        statuses = [api.get(f"/api/v1/messages/{i}").json()["status"] for i in idents]
        assert statuses == [expected for _, expected in POSTBACK_KINDS]


# -- methods and tokens ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_other_methods_get_405_and_store_nothing(served: Served, method: str) -> None:
    before = served.callback_count()
    response = httpx.request(method, served.url, content=postback("SMS_METHOD") if method == "PUT"
                             else None, timeout=TIMEOUT)
    assert response.status_code == 405, response.text
    assert "POST" in response.headers.get("Allow", "")
    assert served.callback_count() == before


@pytest.mark.parametrize("path", [
    "/callbacks/skycore/not-the-token",
    "/callbacks/skycore/" + SKYCORE["callback_token"][:-1],
    "/callbacks/skycore/" + SKYCORE["callback_token"] + "x",
    "/callbacks/nosuchprovider/" + SKYCORE["callback_token"],
], ids=["wrong", "prefix", "longer", "unknown-provider"])
def test_wrong_token_gets_404_and_stores_nothing(served: Served, path: str) -> None:
    before = served.callback_count()
    response = httpx.post(served.server.base_url + path, content=postback("SMS_TOKEN", "N202"),
                          headers={"Content-Type": "text/xml"}, timeout=TIMEOUT)
    assert response.status_code == 404, response.text
    assert SKYCORE["callback_token"] not in response.text
    assert served.callback_count() == before


# -- transports ------------------------------------------------------------------------------


def test_batched_postbacks_as_form_field_are_stored_and_parsed(served: Served) -> None:
    last = served.last_callback_id()
    document = SkycoreStandIn.batch(postback("SMS_BATCH_1"), notification_delivery("SMS_BATCH_2"))
    response = SkycoreStandIn.deliver(served.url, document, form=True)
    assert response.status_code == 200
    assert response.text.strip() == "OK orphan"
    orphans = served.rows("SELECT provider_message_id, status FROM event"
                          " WHERE callback_id > ? AND message_id IS NULL ORDER BY id", (last,))
    assert orphans == [("SMS_BATCH_1", "sent"), ("SMS_BATCH_2", "delivered")]


def test_form_field_with_non_ascii_text_is_parsed(served: Served) -> None:
    last = served.last_callback_id()
    document = postback("SMS_UNICODE", "E202", status="Message Sent/Failed",
                        status_details="Zustellung fehlgeschlagen \u2013 Empf\u00e4nger")
    body = as_form(document)
    response = httpx.post(served.url, content=body, timeout=TIMEOUT,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200
    stored = served.rows("SELECT body, verdict FROM callback WHERE id > ?", (last,))
    assert [bytes(b) for b, _ in stored] == [body]  # stored verbatim either way
    assert response.text.strip() == "OK orphan"  # fails: "OK error"
    orphans = served.rows("SELECT provider_message_id, status, detail FROM event"
                          " WHERE callback_id > ? AND message_id IS NULL", (last,))
    assert orphans == [("SMS_UNICODE", "undelivered",
                        "Zustellung fehlgeschlagen \u2013 Empf\u00e4nger")]
