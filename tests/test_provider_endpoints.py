"""The callback endpoint, for every registered provider, on every test database.

Guarantees, each checked for every slug in `tracker.providers.PROVIDERS` (through the WSGI app,
on SQLite and, when TRACKER_TEST_DATABASE_URL is set, on Postgres):

- a wrong token or an unknown provider is answered 404 and stores nothing;
- a method the provider does not call with is answered 405 with `Allow`, storing nothing;
- a body over `callback_max_bytes` (by Content-Length or chunked) is 413 and stores nothing;
  one of exactly the limit is stored, verbatim;
- a body cut off before its end (shorter than its Content-Length, or a broken chunked stream)
  is 400: nothing stored, the message's status unchanged;
- hostile bodies are answered 200 and stored with a verdict that is never `error`;
- receipts for a sent message are applied in order (verdict `applied`), with each method the
  provider calls with; the same receipt again is a `duplicate` and adds no event; an earlier
  status posted after `delivered` is kept as an event but `ignored`, the status stays;
- a receipt for an unknown provider message id is stored as an `orphan` and applied once a
  message gets that id.

The wire details of each provider are in tests/provider_cases.py; a registered provider without
a case there fails `test_every_registered_provider_has_a_case`, and every other test for it.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import make_config, running
from flask import Flask
from flask.testing import FlaskClient
from provider_cases import CASES, Call, Case
from werkzeug.test import EnvironBuilder, TestResponse, run_wsgi_app
from werkzeug.wrappers import Request

from tracker import sending
from tracker.models import Callback, Event, Message
from tracker.providers import PROVIDERS
from tracker.providers.base import SendResult

SLUGS = sorted(PROVIDERS)
XML_ATTACKS = Path(__file__).resolve().parent / "xml_attacks"
_NUMBERS = itertools.count(1)


def test_every_registered_provider_has_a_case() -> None:
    missing = sorted(set(PROVIDERS) - set(CASES))
    assert not missing, (f"registered providers without a case in tests/provider_cases.py: "
                         f"{', '.join(missing)} (add how each calls back to CASES)")
    unknown = sorted(set(CASES) - set(PROVIDERS))
    assert not unknown, f"cases for providers that are not registered: {', '.join(unknown)}"
    for slug, case in CASES.items():
        accepted = set(PROVIDERS[slug].CALLBACK_METHODS)
        assert set(case.methods) == accepted, (
            f"{slug}: the endpoint accepts {sorted(accepted)}, the case builds "
            f"{sorted(case.methods)}: it must show a receipt for each")


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture(params=SLUGS)
def slug(request: pytest.FixtureRequest) -> str:
    """Every registered provider."""
    return request.param


@pytest.fixture
def case(slug: str) -> Case:
    """The provider's wire details."""
    if slug not in CASES:
        pytest.fail(f"provider {slug!r} is registered but has no case in tests/provider_cases.py")
    return CASES[slug]


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    """The app with every provider that has a case configured."""
    providers = {s: dict(CASES[s].settings) for s in SLUGS if s in CASES}
    default = "fake" if "fake" in providers else next(iter(providers))
    with running(make_config(database_url, providers=providers,
                             default_provider=default)) as flask_app:
        yield flask_app


@dataclass
class Endpoint:
    """One provider's callback endpoint, called through the WSGI app."""

    app: Flask
    client: FlaskClient
    slug: str
    case: Case

    @property
    def path(self) -> str:
        return f"/callbacks/{self.slug}/{self.case.token}"

    @property
    def limit(self) -> int:
        return self.app.config["TRACKER"]["callback_max_bytes"]

    def call(self, call: Call, path: str | None = None) -> TestResponse:
        return self.client.open(path or self.path, method=call.method, query_string=call.query,
                                data=call.body, content_type=call.content_type)

    def environ(self, call: Call) -> dict[str, Any]:
        """The WSGI environ of `call`, to be altered before it is run with `run`."""
        return EnvironBuilder(path=self.path, method=call.method, query_string=call.query,
                              data=call.body, content_type=call.content_type).get_environ()

    def run(self, environ: dict[str, Any]) -> TestResponse:
        """Run the app on `environ` as it is (the test client would rebuild it, recomputing
        Content-Length from the input and dropping `wsgi.input_terminated`)."""
        body, status, headers = run_wsgi_app(self.app, environ, buffered=True)
        return TestResponse(body, status, headers, request=Request(environ))

    def post(self, status: str, *, pmid: str, reference: str | None = None,
             method: str | None = None) -> str:
        """Send one receipt; the verdict it was answered and stored with."""
        response = self.call(self.case.receipt(status, pmid=pmid, reference=reference,
                                               method=method))
        assert response.status_code == 200, response.get_data(as_text=True)
        verdict = response.get_data(as_text=True).removeprefix("OK ").strip()
        assert last_callback().verdict == verdict
        return verdict

    def sent_message(self) -> Message:
        """A message this provider accepted, with the provider message id it gave."""
        message = sending.enqueue(sending.NewMessage(to="+15551234888", text="hi",
                                                     provider=self.slug), source="test")
        sending.record_accepted(message, SendResult(self.case.message_id(next(_NUMBERS))))
        return Message.get_by_id(message.id)

    def delivered(self, message: Message, method: str | None = None) -> Call:
        """A `delivered` receipt for `message`."""
        return self.case.receipt("delivered", pmid=message.provider_message_id,
                                 reference=message.reference, method=method)


@pytest.fixture
def endpoint(app: Flask, slug: str, case: Case) -> Endpoint:
    return Endpoint(app, app.test_client(), slug, case)


def stored() -> tuple[int, int]:
    """(callbacks, receipt events) in the database."""
    return Callback.select().count(), Event.select().where(Event.kind == "receipt").count()


def last_callback() -> Callback:
    return Callback.select().order_by(Callback.id.desc()).get()


def status_of(message: Message) -> str:
    return Message.get_by_id(message.id).status


def receipts_of(message: Message) -> list[Event]:
    return list(Event.select().where((Event.message == message.id) & (Event.kind == "receipt"))
                .order_by(Event.id))


# -- refused before anything is stored ---------------------------------------------------------


def test_wrong_token_or_unknown_provider_is_404_and_stores_nothing(endpoint: Endpoint) -> None:
    token, slug = endpoint.case.token, endpoint.slug
    others = sorted({c.token for s, c in CASES.items() if s != slug} - {token})
    paths = [
        f"/callbacks/{slug}/not-the-token",
        f"/callbacks/{slug}/{token[:-1]}",
        f"/callbacks/{slug}/{token}x",
        f"/callbacks/{slug}/{token.upper()}",
        f"/callbacks/{slug}/",
        f"/callbacks/{slug}",
        f"/callbacks/{slug}/{token}/extra",
        *(f"/callbacks/{slug}/{other}" for other in others),  # another provider's token
        f"/callbacks/{slug}x/{token}",
        f"/callbacks/no-such-provider/{token}",
    ]
    message = endpoint.sent_message()
    before = stored()
    for method in endpoint.case.methods:
        call = endpoint.delivered(message, method)
        for path in paths:
            response = endpoint.call(call, path)
            assert response.status_code == 404, (method, path, response.status_code)
            assert token not in response.get_data(as_text=True)
    assert stored() == before
    assert status_of(message) == "accepted"


def test_other_methods_are_405_with_allow_and_store_nothing(endpoint: Endpoint) -> None:
    message = endpoint.sent_message()
    body = endpoint.delivered(message)
    before = stored()
    others = [m for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD")
              if m not in endpoint.case.methods]
    assert others
    for method in others:
        response = endpoint.call(Call(method, body.body, body.content_type, body.query))
        assert response.status_code == 405, (method, response.status_code)
        allowed = {m.strip() for m in response.headers.get("Allow", "").split(",")}
        assert allowed == set(endpoint.case.methods), (method, response.headers.get("Allow"))
    assert stored() == before
    assert status_of(message) == "accepted"


def padded(call: Call, size: int) -> Call:
    """`call` with its body padded by trailing whitespace to `size` bytes."""
    assert len(call.body) <= size
    return Call(call.method, call.body + b" " * (size - len(call.body)), call.content_type,
                call.query)


@pytest.mark.parametrize("over", [1, 100_000], ids=["limit+1", "limit+100k"])
def test_body_over_the_limit_is_413_and_stores_nothing(endpoint: Endpoint, over: int) -> None:
    message = endpoint.sent_message()
    call = padded(endpoint.delivered(message), endpoint.limit + over)
    before = stored()
    assert endpoint.call(call).status_code == 413
    assert stored() == before
    assert status_of(message) == "accepted"


def chunked(environ: dict[str, Any]) -> dict[str, Any]:
    """`environ` as a server that decoded a chunked body hands it on: no Content-Length,
    `Transfer-Encoding: chunked`, and the input terminated by the server."""
    del environ["CONTENT_LENGTH"]
    environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    environ["wsgi.input_terminated"] = True
    return environ


@pytest.mark.parametrize("over", [1, 100_000], ids=["limit+1", "limit+100k"])
def test_chunked_body_over_the_limit_is_413_and_stores_nothing(endpoint: Endpoint,
                                                               over: int) -> None:
    message = endpoint.sent_message()
    call = padded(endpoint.delivered(message), endpoint.limit + over)
    before = stored()
    assert endpoint.run(chunked(endpoint.environ(call))).status_code == 413
    assert stored() == before
    assert status_of(message) == "accepted"


@pytest.mark.parametrize("transfer", ["content-length", "chunked"])
def test_body_of_exactly_the_limit_is_stored_verbatim(endpoint: Endpoint, transfer: str) -> None:
    pmid = endpoint.case.message_id(next(_NUMBERS))  # no message has it: an orphan
    call = padded(endpoint.case.receipt("delivered", pmid=pmid), endpoint.limit)
    environ = endpoint.environ(call)
    response = endpoint.run(chunked(environ) if transfer == "chunked" else environ)
    assert (response.status_code, response.get_data()) == (200, b"OK orphan\n")
    stored_callback = last_callback()
    assert bytes(stored_callback.body) == call.body
    assert stored_callback.verdict == "orphan"


class BrokenStream(io.RawIOBase):
    """A request body whose connection breaks after `data` (gunicorn raises on a chunked
    stream that ends before its last chunk)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.data:
            raise ConnectionResetError("the client went away mid-body")
        n = min(len(buffer), len(self.data))
        buffer[:n] = self.data[:n]
        self.data = self.data[n:]
        return n


@pytest.mark.parametrize("transfer", ["content-length", "chunked"])
def test_cut_off_body_is_400_stores_nothing_and_changes_nothing(endpoint: Endpoint,
                                                                 transfer: str) -> None:
    """A whole, valid receipt that ends before the request does (the sender's connection
    dropped): what came looks complete but is not what was sent."""
    message = endpoint.sent_message()
    call = endpoint.delivered(message)
    environ = endpoint.environ(call)
    if transfer == "content-length":
        environ["CONTENT_LENGTH"] = str(len(call.body) + 100)
    else:
        environ = chunked(environ)
        environ["wsgi.input"] = io.BufferedReader(BrokenStream(call.body))
    before = stored()
    response = endpoint.run(environ)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert stored() == before
    assert status_of(message) == "accepted"


# -- hostile bodies ----------------------------------------------------------------------------

# Bodies no provider sends: (name, body, content type); each is also posted with odd query
# parameters, as a provider whose fields may come in the query would read them.
HOSTILE: list[tuple[str, bytes, str]] = [
    ("empty", b"", "application/octet-stream"),
    ("deep-json-list", b"[" * 60_000, "application/json"),
    ("deep-json-object", b'{"a":' * 5_000 + b"1" + b"}" * 5_000, "application/json"),
    ("huge-number", b'{"statusCode": ' + b"9" * 4400 + b', "status": "DELIVERED"}',
     "application/json"),
    ("huge-number-string", json.dumps({"statusCode": "9" * 4400, "id": "1",
                                       "status": "DELIVERED"}).encode(), "application/json"),
    ("superscript-digits", json.dumps({"statusCode": "²", "code": "²", "id": "²",
                                       "status": "²"}).encode(), "application/json"),
    ("date-out-of-range", json.dumps({
        "id": "1", "messageId": "1", "status": "DELIVERED", "deliveryMessageId": "X",
        "statusCode": 2, "timestamp": "9999-12-31T23:59:59-05:00",
        "created": "9999-12-31T23:59:59-05:00", "createTs": "9999-12-31T23:59:59-05:00",
        "status_time": "9999-12-31T23:59:59-05:00",
        "eventId": "e1", "data": {"messageId": "1", "status": "DELIVRD",
                                  "statusUpdateTs": "0001-01-01T00:00:00+05:00"}}).encode(),
     "application/json"),
    ("wrong-types", json.dumps({"id": [1], "status": {"x": 1}, "data": "text", "messageId": None,
                                "statusCode": [], "eventId": {}, "deliveryMessageId": 1.5,
                                "clientReference": True}).encode(), "application/json"),
    ("json-scalar", b"12", "application/json"),
    ("invalid-utf8-json", b'{"status": "\xff\xfe\xfd", "id": "\xc3"}', "application/json"),
    ("invalid-utf8-form", b"status=%ff%fe&id=%c3&xml=%ff", "application/x-www-form-urlencoded"),
    ("invalid-utf8-xml", b"<POSTBACK><CODE>N202\xff</CODE><TRACKINGID>\xc3</TRACKINGID>"
     b"</POSTBACK>", "text/xml"),
    ("nul-bytes", b'{"id": "a\\u0000b", "status": "deliv\\u0000ered"}', "application/json"),
    ("xml-billion-laughs", (XML_ATTACKS / "billion_laughs.xml").read_bytes(), "text/xml"),
    ("xml-external-entity", (XML_ATTACKS / "xxe_local_file.xml").read_bytes(), "text/xml"),
    ("xml-out-of-range-date", b"<POSTBACK><ORIGIN>SMS_MT</ORIGIN><CODE>N202</CODE><TRACKINGID>T1"
     b"</TRACKINGID><TIMESTAMP>9999-12-31T23:59:59-05:00</TIMESTAMP></POSTBACK>", "text/xml"),
    ("xml-deep", b"<a>" * 5_000 + b"</a>" * 5_000, "text/xml"),
    ("status-300-chars-json", json.dumps({
        "id": "1", "status": "Z" * 300, "deliveryMessageId": "1", "eventId": 7,
        "data": {"messageId": 1, "status": "Z" * 300}}).encode(), "application/json"),
    ("status-300-chars-xml", b"<POSTBACK><ORIGIN>SMS_MT</ORIGIN><CODE>N202</CODE><STATUS>"
     + b"Z" * 300 + b"</STATUS><TRACKINGID>T1</TRACKINGID></POSTBACK>", "text/xml"),
    ("binary", bytes(range(256)) * 4, "application/octet-stream"),
]
HOSTILE_QUERY = {"ref": "m1", "id": "²", "status": "\x00"}

# The provider's own receipt, with ids no provider would send: (name, provider id, reference).
HOSTILE_IDS: list[tuple[str, str, str | None]] = [
    ("id-300-chars", "9" * 300, None),
    ("reference-300-chars", "1", "r" * 300),
    ("id-4400-digits", "9" * 4400, None),
    ("id-with-nul", "T\x001", "ref\x00"),
    ("id-non-ascii", "²³¹", "€"),
    ("id-blank", " ", None),
]


def test_hostile_bodies_are_stored_and_never_an_error(endpoint: Endpoint) -> None:
    case = endpoint.case
    attempts: list[tuple[str, Call]] = [
        (name, Call(case.body_method, body, content_type, HOSTILE_QUERY))
        for name, body, content_type in HOSTILE
    ]
    attempts += [(f"{name}-{method}", case.receipt("delivered", pmid=pmid, reference=reference,
                                                   method=method))
                 for name, pmid, reference in HOSTILE_IDS for method in case.methods]
    failures = []
    for name, call in attempts:
        before, _ = stored()
        response = endpoint.call(call)
        answer = response.get_data(as_text=True).strip()
        verdict = answer.removeprefix("OK ")
        if response.status_code != 200 or verdict == "error":
            failures.append(f"{name}: {response.status_code} {answer!r}")
            continue
        if stored()[0] != before + 1 or last_callback().verdict != verdict:
            failures.append(f"{name}: answered {verdict!r}, stored "
                            f"{stored()[0] - before} callback(s)")
    assert not failures, "\n".join(failures)


# -- receipts ----------------------------------------------------------------------------------


def test_receipts_in_order_are_applied(endpoint: Endpoint) -> None:
    for method in endpoint.case.methods:
        message = endpoint.sent_message()
        for status in ("sent", "delivered"):
            verdict = endpoint.post(status, pmid=message.provider_message_id,
                                    reference=message.reference, method=method)
            assert verdict == "applied", (method, status)
            assert status_of(message) == status, method
        events = receipts_of(message)
        assert [(e.status, e.applied) for e in events] == [("sent", True), ("delivered", True)]
        assert all(e.callback_id is not None for e in events)


def test_the_same_receipt_twice_is_a_duplicate(endpoint: Endpoint) -> None:
    message = endpoint.sent_message()
    call = endpoint.delivered(message)
    verdicts = []
    for _ in range(2):
        response = endpoint.call(call)
        assert response.status_code == 200
        verdicts.append(response.get_data(as_text=True).strip())
    assert verdicts == ["OK applied", "OK duplicate"]
    assert [c.verdict for c in Callback.select().order_by(Callback.id)] == ["applied", "duplicate"]
    assert [(e.status, e.applied) for e in receipts_of(message)] == [("delivered", True)]
    assert status_of(message) == "delivered"


def test_an_earlier_status_after_delivered_is_kept_but_not_applied(endpoint: Endpoint) -> None:
    message = endpoint.sent_message()
    ids = {"pmid": message.provider_message_id, "reference": message.reference}
    assert endpoint.post("delivered", **ids) == "applied"
    assert endpoint.post("sent", **ids) == "ignored"
    assert status_of(message) == "delivered"
    late = receipts_of(message)[-1]
    assert (late.status, late.applied) == ("sent", False)
    assert late.reason == "message is already final (delivered)"


def test_orphan_is_stored_then_applied_when_a_message_gets_its_id(endpoint: Endpoint) -> None:
    """The receipt beat the send answer: the message is stored, but has no provider id yet."""
    message = sending.enqueue(sending.NewMessage(to="+15551234888", text="hi",
                                                 provider=endpoint.slug), source="test")
    pmid = endpoint.case.message_id(next(_NUMBERS))
    assert endpoint.post("delivered", pmid=pmid) == "orphan"
    orphan = Event.get((Event.kind == "receipt") & (Event.provider == endpoint.slug))
    assert (orphan.message_id, orphan.applied, orphan.provider_message_id) == (None, None, pmid)
    assert status_of(message) == "queued"

    sending.record_accepted(Message.get_by_id(message.id), SendResult(pmid))
    assert status_of(message) == "delivered"
    orphan = Event.get_by_id(orphan.id)
    assert (orphan.message_id, orphan.applied) == (message.id, True)
