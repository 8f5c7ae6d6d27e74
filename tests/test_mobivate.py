"""Mobivate: the send request on the wire, every answer and error form, the status list, every
receipt variant, polling, settings, and correlation of receipts through `clientReference`."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import make_config, running
from flask import Flask
from standins.mobivate import STATUS_CODES, MobivateStandIn, Reply, dlr

from tracker import correlation, polling, sending
from tracker.db import write_tx
from tracker.models import Callback, Event, Message
from tracker.providers.base import (
    CallbackRequest,
    OutboundMessage,
    PollError,
    PollTarget,
    Receipt,
    SendError,
    SendResult,
)
from tracker.providers.fake import FakeProvider
from tracker.providers.mobivate import MobivateProvider, map_status, read_send_response
from tracker.settings import ConfigError
from tracker.status import Status

# Verbatim copies of shared/providers/samples/mobivate-* (tests/samples/README.md).
SAMPLES = Path(__file__).resolve().parent / "samples"
KEY = "mob-api-key"
TOKEN = "mob-secret-token"
PUBLIC = "http://127.0.0.1:8000"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def settings(base_url: str = "http://127.0.0.1:9", **extra: Any) -> dict[str, Any]:
    return {"base_url": base_url, "api_key": KEY, "sender": "ACME", "callback_token": TOKEN,
            **extra}


def provider(base_url: str = "http://127.0.0.1:9", **extra: Any) -> MobivateProvider:
    return MobivateProvider(settings(base_url, **extra), PUBLIC)


def outbound(provider: MobivateProvider, **overrides: Any) -> OutboundMessage:
    fields: dict[str, Any] = {"reference": "m0123456789abcdef01234567", "to": "+4479000000001",
                              "text": "Your code is 1234 – thanks", "sender": None,  # noqa: RUF001
                              "callback_url": provider.callback_url("m0123456789abcdef01234567"),
                              "validity": dt.timedelta(minutes=2880)}
    fields.update(overrides)
    return OutboundMessage(**fields)


@pytest.fixture
def mob() -> Iterator[MobivateStandIn]:
    with MobivateStandIn(api_key=KEY) as stand_in:
        yield stand_in


def parse(body: bytes, content_type: str = "application/json"):
    return provider().parse_callback(CallbackRequest("POST", content_type, {}, body))


# -- the send request --------------------------------------------------------------------------


def test_send_request_on_the_wire(mob) -> None:
    p = provider(mob.url)
    result = p.send(outbound(p))
    [request] = mob.sends
    assert request.path == "/send/single" and request.parse_error is None
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
    assert request.fields == {
        "text": "Your code is 1234 – thanks",  # noqa: RUF001
        "originator": "ACME",  # the configured sender: the message named none
        "recipient": "4479000000001",  # international digits, no "+", as the seed's example
        "reference": "m0123456789abcdef01234567",
        "callbackURL": f"{PUBLIC}/callbacks/mobivate/{TOKEN}",
        "shortenUrls": None, "excludeOptouts": None, "scheduleDateTime": None,
    }
    assert request.extra_fields == ()  # nothing Mobivate does not document
    # Our body uses the documented names (the seed's curl body, plus the callbackURL override).
    documented = set(json.loads(sample("mobivate-send-single-request-1.json"))) | {"callbackURL"}
    assert set(json.loads(request.body)) <= documented
    [accepted] = mob.messages
    assert result.provider_message_id == accepted.record_id
    assert json.loads(result.raw)["record"]["id"] == accepted.record_id


def test_message_sender_wins_and_callback_url_can_be_left_out(mob) -> None:
    p = provider(mob.url, send_callback_url=False)
    p.send(outbound(p, sender="Shop"))
    [request] = mob.sends
    assert request["originator"] == "Shop" and request["callbackURL"] is None
    assert "callbackURL" not in json.loads(request.body)


def test_no_callback_url_when_callbacks_are_off(mob) -> None:
    p = MobivateProvider({"base_url": mob.url, "api_key": KEY, "sender": "ACME", "poll": True},
                         PUBLIC)
    p.send(outbound(p))
    assert "callbackURL" not in json.loads(mob.sends[0].body)


# -- answers and errors ------------------------------------------------------------------------


def test_published_success_answer() -> None:
    body = sample("mobivate-send-single-response-200-1.json")
    result = read_send_response(200, body, body.decode())
    assert result.provider_message_id == "e5815fee-e86e-4fd7-9cad-55444f023bbb"
    assert result.raw == body.decode()


def error_of(http_status: int, body: bytes) -> SendError:
    with pytest.raises(SendError) as caught:
        read_send_response(http_status, body, body.decode("utf-8", "replace"))
    return caught.value


def envelope(http_status: int, name: str | None = None, obj: str | None = None) -> bytes:
    error: dict[str, Any] = {"statusCode": http_status}
    if name is not None:
        error["name"] = name
    if obj is not None:
        error["object"] = obj
    return json.dumps({"success": False, "error": error}).encode()


def test_published_validation_error_is_the_providers_side() -> None:
    """The seed's only published 400 (PROTOCOLS.md §2.2, "Responses"):

        400 `{"success":false,"error":{"name":"ValidationError","statusCode":400,
        "object":"Missing Originator object"}}`

    The originator is our sender ID, i.e. our configuration, not the recipient: the message
    fails (or goes to the next provider of its route), it is not `rejected`."""
    body = sample("mobivate-send-single-response-400-1.json")
    error = error_of(400, body)
    assert (error.permanent, error.status, error.provider_side, error.outcome_unknown) == (
        True, Status.FAILED, True, False)
    assert error.code == "ValidationError" and error.raw == body.decode()
    assert "Missing Originator object" in error.detail


def test_published_authentication_error_is_the_providers_side() -> None:
    body = sample("mobivate-send-single-response-403-1.json")
    error = error_of(403, body)
    assert (error.permanent, error.status, error.provider_side) == (True, Status.FAILED, True)
    assert error.code == "AuthenticationError" and error.raw == body.decode()


@pytest.mark.parametrize(("http_status", "body", "permanent", "status", "provider_side", "code"), [
    # 403 has two meanings (seed: AuthenticationError; codes page: recipient opted out).
    (403, envelope(403, "OptOutError", "Recipient is opted out"), True, Status.REJECTED, False,
     "OptOutError"),
    (403, envelope(403, "ForbiddenError", "Opted Out - recipient is opted out"), True,
     Status.REJECTED, False, "ForbiddenError"),
    (403, envelope(403, "PermissionDenied", "Opted Out - recipient is opted out"), True,
     Status.REJECTED, False, "PermissionDenied"),  # the opt-out wins over a generic name
    (403, envelope(403, "AuthorizationError", "missing permission create:SingleSMS"), True,
     Status.FAILED, True, "AuthorizationError"),
    (403, b"", True, Status.REJECTED, False, "403"),  # unexplained: never fail an opt-out over
    # 401 key invalid/expired, 402 out of credit: another provider may work, retrying will not.
    (401, envelope(401, "AuthenticationError"), True, Status.FAILED, True, "AuthenticationError"),
    (401, b"Unauthorized", True, Status.FAILED, True, "401"),
    (402, envelope(402, "PaymentRequired", "Insufficient credit"), True, Status.FAILED, True,
     "PaymentRequired"),
    # Transient, on the provider's side.
    (429, envelope(429, "TooManyRequests"), False, Status.FAILED, True, "TooManyRequests"),
    (500, envelope(500, "InternalServerError"), False, Status.FAILED, True,
     "InternalServerError"),
    (502, b"<html>Bad Gateway</html>", False, Status.FAILED, True, "502"),
    (503, b"", False, Status.FAILED, True, "503"),
    # 400 blames the message only when it names the number or the text (ERROR_TEXTS below).
    (400, envelope(400, "ValidationError", "Invalid Recipient object"), True, Status.REJECTED,
     False, "ValidationError"),
    (400, envelope(400, "ValidationError", "Message text too long"), True, Status.REJECTED,
     False, "ValidationError"),
    (400, envelope(400, "InsufficientCreditError", "balance too low"), True, Status.FAILED,
     True, "InsufficientCreditError"),
    (400, envelope(400, "AuthenticationError"), True, Status.FAILED, True,
     "AuthenticationError"),
    (400, envelope(400, "RateLimitError"), False, Status.FAILED, True, "RateLimitError"),
    (400, b"{not json", True, Status.FAILED, True, "400"),  # unreadable: nobody blamed
    (400, b"", True, Status.FAILED, True, "400"),
    # A wrong base_url: the integration, not the message.
    (404, b"<html>Not Found</html>", True, Status.FAILED, True, "404"),
    (301, b"", True, Status.FAILED, True, "301"),
    # `success: false` under a 200: the error's own statusCode decides.
    (200, envelope(402, "InsufficientCreditError"), True, Status.FAILED, True,
     "InsufficientCreditError"),
    (200, envelope(400, "ValidationError", "Missing Text object"), True, Status.REJECTED, False,
     "ValidationError"),
    (200, b'{"success": false}', True, Status.FAILED, True, "success=false"),
    # Accepted by nobody: the recipient was excluded (opt-out).
    (200, b'{"success":true,"record":{"id":"u-1","recipientCount":0}}', True, Status.REJECTED,
     False, "NO_RECIPIENTS"),
])
def test_error_answers_are_classified(http_status, body, permanent, status, provider_side,
                                      code) -> None:
    error = error_of(http_status, body)
    assert (error.permanent, error.status, error.provider_side, error.code) == (
        permanent, status, provider_side, code)
    assert error.outcome_unknown is False
    assert error.raw == body.decode("utf-8", "replace")


# Every 400 error text PROTOCOLS.md §2 and the samples give, and whose fault it is. PROVIDER:
# permanent, provider side, `failed` (or the route's next provider); MESSAGE: `rejected`, never
# fails over. Each row quotes where its text comes from.
PROVIDER, MESSAGE = "provider", "message"
ERROR_TEXTS = [
    # The published 400 (§2.2 "Responses", samples/mobivate-send-single-response-400-1.json).
    ("ValidationError", "Missing Originator object", PROVIDER,
     '§2.2: 400 {"name":"ValidationError","statusCode":400,"object":"Missing Originator object"}'),
    # The same wording for the other fields §2.2 lists: `originator` (legacy: "at most 11
    # alphanumeric or 15 numeric characters"), `recipient` ("international format"), `text`,
    # and the legacy API's `routeId` ("e.g. mglobal").
    ("ValidationError", "Invalid Originator object", PROVIDER, "§2.2 legacy: originator"),
    ("ValidationError", "Missing RouteId object", PROVIDER, "§2.2 legacy: routeId"),
    ("ValidationError", "Missing Recipient object", MESSAGE, "§2.2: recipient, required"),
    ("ValidationError", "Invalid Recipient object", MESSAGE,
     '§2.2: recipient "international format; example 4479000000001"'),
    ("ValidationError", "Missing Text object", MESSAGE, "§2.2: text, required"),
    ("ValidationError", "Invalid Body object", MESSAGE, "§2.2 legacy: `body` (the text)"),
    # The codes page (§2.2 "HTTP codes page").
    (None, "Opted Out – recipient is opted out", MESSAGE,  # noqa: RUF001
     '§2.2 codes page: 403 "Opted Out – recipient is opted out"'),  # noqa: RUF001
    (None, "bad request", PROVIDER, '§2.2 codes page: "400 bad request" (whose fault: unsaid)'),
    (None, "key invalid/expired", PROVIDER, '§2.2 codes page: 401 "key invalid/expired"'),
    (None, "out of credit", PROVIDER, '§2.2 codes page: 402 "out of credit"'),
    ("AuthenticationError", None, PROVIDER,
     "§2.2: 403 AuthenticationError; the key needs the permission `create:SingleSMS`"),
    ("AuthenticationError", "missing permission create:SingleSMS", PROVIDER, "§2.2, as above"),
    # The delivery status list's descriptions (§2.4), should a send answer say the same.
    (None, "invalid originator", PROVIDER, '§2.4 FAILED_ORIGINATOR_REJECTED "invalid originator"'),
    (None, "originator = recipient", PROVIDER,
     '§2.4 FAILED_ORIGINATOR_RECIPIENT_EQUAL "originator = recipient"'),
    (None, "provider could not route", PROVIDER, '§2.4 FAILED_NOROUTE "provider could not route"'),
    (None, "route cannot send to recipient", PROVIDER,
     '§2.4 FAILED_ROUTE_INVALID "route cannot send to recipient"'),
    (None, "no credit", PROVIDER, '§2.4 FAILED_INSUFFICIENT_CREDIT "no credit"'),
    (None, "account limits exceeded", PROVIDER,
     '§2.4 FAILED_LIMITS_EXCEEDED "account limits exceeded"'),
    (None, "internal error", PROVIDER, '§2.4 FAILED_INTERNAL_ERROR "internal error"'),
    (None, "recipient blacklisted", MESSAGE,
     '§2.4 FAILED_RECIPIENT_BLACKLISTED "recipient blacklisted"'),
    (None, "unable to deliver (number does not exist)", MESSAGE,
     '§2.4 UNDELIVERABLE "unable to deliver (number does not exist)"'),
    # Not published anywhere: the text refused or too long (issue 11), and texts we cannot place.
    ("ValidationError", "Message text too long", MESSAGE, "unpublished: text too long"),
    ("ValidationError", "Text contains prohibited content", MESSAGE, "unpublished: text refused"),
    ("ValidationError", "Sender ID not registered for this account", PROVIDER,
     "unpublished: unregistered sender"),
    (None, "Originator is blacklisted", PROVIDER, "unpublished: our sender ID blacklisted"),
    ("ValidationError", None, PROVIDER, "unpublished: a name alone"),
    ("ValidationError", "Something went wrong", PROVIDER, "unpublished: unknown text"),
    ("ValidationError", "Missing Campaign object", PROVIDER, "unpublished: another field"),
    (None, "body is not JSON: Expecting value", PROVIDER, "unpublished: our request unreadable"),
]


@pytest.mark.parametrize(("name", "text", "fault", "source"), ERROR_TEXTS,
                         ids=[row[3][:60] for row in ERROR_TEXTS])
def test_400_error_texts(name, text, fault, source) -> None:
    """A 400 is not always the recipient's fault. PROTOCOLS.md §2.2 "Responses":

        400 `{"success":false,"error":{"name":"ValidationError","statusCode":400,
        "object":"Missing Originator object"}}`.
        HTTP codes page: 200 submitted, 400 bad request, 401 key invalid/expired, 402 out of
        credit, 403 "Opted Out – recipient is opted out", 429 rate limit, 500 internal error.

    Only a fault of the number or the text is `rejected` (permanent, provider_side False):
    another provider would refuse it too. The originator (our sender ID), the route, the key,
    credit and account limits are ours: permanent and provider side, so the message is `failed`
    or fails over. A text that blames neither is provider side: never blame the recipient
    without evidence. The raw answer is kept, and a `success: false` under a 200 with the same
    error is read the same way."""  # noqa: RUF002
    body = envelope(400, name, text)
    for http_status in (400, 200):  # 200: the envelope's own statusCode (400) decides
        error = error_of(http_status, body)
        expected = ((True, Status.REJECTED, False) if fault == MESSAGE
                    else (True, Status.FAILED, True))
        assert (error.permanent, error.status, error.provider_side) == expected, source
        assert error.outcome_unknown is False
        assert error.raw == body.decode()
        assert error.code == (name or "400")
        assert text is None or text in error.detail


@pytest.mark.parametrize(("name", "text", "fault", "source"),
                         [row for row in ERROR_TEXTS if row[0] and row[1]],
                         ids=[row[3][:60] for row in ERROR_TEXTS if row[0] and row[1]])
def test_400_error_texts_over_http(mob, name, text, fault, source) -> None:
    """The same texts as the stand-in answers them (the seed's envelope, HTTP 400)."""
    mob.script(Reply.error(400, name, text))
    p = provider(mob.url)
    with pytest.raises(SendError) as caught:
        p.send(outbound(p))
    error = caught.value
    assert (error.status, error.provider_side) == (
        (Status.REJECTED, False) if fault == MESSAGE else (Status.FAILED, True)), source
    assert json.loads(error.raw) == {"success": False, "error": {
        "name": name, "statusCode": 400, "object": text}}
    assert mob.messages == []


@pytest.mark.parametrize(("overrides", "field", "status"), [
    ({"sender": " "}, "Missing Originator object", Status.FAILED),  # our sender: ours
    ({"to": "+44 7900 000001"}, "Invalid Recipient object", Status.REJECTED),
    ({"text": ""}, "Missing Text object", Status.REJECTED),
])
def test_stand_in_refusals_are_classified(mob, overrides, field, status) -> None:
    """What the stand-in refuses whatever is scripted, in the seed's wording ("Missing
    Originator object", PROTOCOLS.md §2.2), reaches the right class over HTTP."""
    p = provider(mob.url)
    with pytest.raises(SendError) as caught:
        p.send(outbound(p, **overrides))
    assert caught.value.status == status and field in caught.value.detail
    assert caught.value.provider_side is (status == Status.FAILED)
    assert json.loads(caught.value.raw)["error"]["object"] == field


@pytest.mark.parametrize("body", [
    b"", b"<html>OK</html>", b'{"success": true}', b'{"success": true, "record": {}}',
    b'{"success": true, "record": {"id": ""}}', b'{"record": {"id": null}}', b"[]",
])
def test_unreadable_success_is_an_unknown_outcome(body) -> None:
    error = error_of(200, body)
    assert error.outcome_unknown is True and error.provider_side is True
    assert error.permanent is False and error.code == "BAD_ANSWER"


@pytest.mark.parametrize(("reply", "permanent", "status", "provider_side", "code"), [
    (Reply.validation("Originator"), True, Status.FAILED, True, "ValidationError"),
    (Reply.validation("Recipient", "Invalid"), True, Status.REJECTED, False, "ValidationError"),
    (Reply.error(401), True, Status.FAILED, True, "AuthenticationError"),
    (Reply.error(402), True, Status.FAILED, True, "InsufficientCreditError"),
    (Reply.error(403), True, Status.FAILED, True, "AuthenticationError"),
    (Reply.error(403, "OptedOut", "Opted Out - recipient is opted out"), True, Status.REJECTED,
     False, "OptedOut"),
    (Reply.error(429), False, Status.FAILED, True, "RateLimitError"),
    (Reply.error(500), False, Status.FAILED, True, "InternalServerError"),
    (Reply.http_error(502), False, Status.FAILED, True, "502"),
])
def test_scripted_errors_over_http(mob, reply, permanent, status, provider_side, code) -> None:
    mob.script(reply)
    p = provider(mob.url)
    with pytest.raises(SendError) as caught:
        p.send(outbound(p))
    error = caught.value
    assert (error.permanent, error.status, error.provider_side, error.code) == (
        permanent, status, provider_side, code)
    assert error.raw  # the answer is kept
    assert mob.messages == []


def test_wrong_key_gets_the_stand_ins_403(mob) -> None:
    p = MobivateProvider(settings(mob.url, api_key="wrong"), PUBLIC)
    with pytest.raises(SendError) as caught:
        p.send(outbound(p))
    assert (caught.value.code, caught.value.provider_side) == ("AuthenticationError", True)


def test_unreachable_is_a_transient_provider_failure(mob) -> None:
    url = mob.url
    mob.stop()
    p = provider(url)
    with pytest.raises(SendError) as caught:
        p.send(outbound(p))
    error = caught.value
    assert (error.permanent, error.provider_side, error.outcome_unknown, error.code) == (
        False, True, False, "UNREACHABLE")


def test_timeout_after_sending_is_an_unknown_outcome(mob) -> None:
    mob.script(Reply.slow(2.0))
    p = provider(mob.url)
    p.timeout = httpx.Timeout(0.3, connect=2.0)
    with pytest.raises(SendError) as caught:
        p.send(outbound(p))
    assert caught.value.outcome_unknown is True and caught.value.code == "NO_ANSWER"
    assert len(mob.sends) == 1


# -- the status list (§2.4) ---------------------------------------------------------------------

# Written out here, not imported: the test states what each documented code must become.
EXPECTED = {
    "DELIVERED": Status.DELIVERED, "ACCEPTED": Status.SENT, "EXPIRED": Status.EXPIRED,
    "DELETED": Status.UNDELIVERED, "UNDELIVERABLE": Status.UNDELIVERED,
    "UNKNOWN": Status.UNKNOWN, "REJECTED": Status.REJECTED,
    "INTERIM_QUEUED": Status.ACCEPTED, "INTERIM_ACKNOWLEDGED": Status.SENT,
    "RETRY": Status.SENT, "FAILED_NACK": Status.UNDELIVERED, "FAILED_NOROUTE": Status.FAILED,
    "FAILED_INSUFFICIENT_CREDIT": Status.FAILED,
    "FAILED_ORIGINATOR_RECIPIENT_EQUAL": Status.REJECTED,
    "FAILED_RECIPIENT_BLACKLISTED": Status.REJECTED,
    "FAILED_ORIGINATOR_REJECTED": Status.REJECTED, "FAILED_ROUTE_INVALID": Status.FAILED,
    "FAILED_LIMITS_EXCEEDED": Status.FAILED, "FAILED_EXHAUSTED": Status.FAILED,
    "FAILED_INTERNAL_ERROR": Status.FAILED, "FAILED_UNKNOWN": Status.FAILED,
}


def test_every_documented_status_is_mapped() -> None:
    assert set(EXPECTED) == set(STATUS_CODES)  # the stand-in's copy of the list agrees


@pytest.mark.parametrize(("name", "code"), sorted(STATUS_CODES.items(), key=lambda i: i[1]))
def test_every_documented_status_is_explained(name, code) -> None:
    """PROTOCOLS.md §2.4 (archived DLR page's status list): each status in words on the
    message page, as stored ("FAILED_NACK (11)") or bare; what the list lacks is shown raw."""
    p = MobivateProvider.__new__(MobivateProvider)  # explain reads class tables only
    assert p.explain(f"{name} ({code})") and p.explain(name) == p.explain(f"{name} ({code})")
    assert p.explain("FAILED_SOMETHING_NEW (99)") is None


@pytest.mark.parametrize(("name", "code"), sorted(STATUS_CODES.items(), key=lambda i: i[1]))
def test_documented_status_by_name_and_by_code(name, code) -> None:
    for status, status_code in ((name, code), (name, None), (None, code), (name.lower(), code),
                                (name, str(code))):
        [receipt] = parse(dlr("ABC", status or "", status_code=status_code,
                              omit=() if status else ("status",))).receipts
        assert receipt.status == EXPECTED[name], (status, status_code)
    [receipt] = parse(dlr("ABC", name)).receipts
    assert receipt.raw_status == f"{name} ({code})"
    in_flight = EXPECTED[name] in (Status.DELIVERED, Status.SENT, Status.ACCEPTED)
    assert receipt.error_code == (None if in_flight else name)
    assert (receipt.detail is None) == in_flight


@pytest.mark.parametrize(("name", "code", "status"), [
    ("FAILED_SPAM_FILTERED", 23, Status.FAILED),  # an undocumented FAILED_* -> failed
    ("FAILED_SOMETHING_NEW", None, Status.FAILED),
    ("FAILED_SOMETHING_NEW", 99, Status.FAILED),
    ("PENDING", 13, Status.UNKNOWN),  # anything else unknown -> unknown
    ("WHATEVER", None, Status.UNKNOWN),
    (None, 27, Status.UNKNOWN),
    (None, 30, Status.UNKNOWN),
    ("DELIVERED", 5, Status.DELIVERED),  # name and code disagree: the name wins
])
def test_undocumented_statuses(name, code, status) -> None:
    assert map_status(name, code)[0] == status
    body = dlr("ABC", name or "", status_code=code,
               omit=(() if name else ("status",)) + (() if code is not None else ("statusCode",)))
    [receipt] = parse(body).receipts
    assert receipt.status == status


# -- receipts ----------------------------------------------------------------------------------


def test_published_receipt() -> None:
    parsed = parse(sample("mobivate-dlr-webhook-1.json"))
    assert parsed.errors == []
    [receipt] = parsed.receipts
    assert receipt.provider == "mobivate"
    assert receipt.provider_message_id == "9A85B95E0A000A9D2FBD46710388AD54"
    assert receipt.reference is None  # clientReference is null in the sample
    assert (receipt.status, receipt.raw_status) == (Status.SENT, "ACCEPTED (2)")
    assert (receipt.error_code, receipt.detail) == (None, None)
    assert receipt.occurred_at == dt.datetime(2023, 7, 28, 3, 23, 22)
    assert receipt.dedupe_key == "9A85B95E0A000A9D2FBD46710388AD54|2|2023-07-28T03:23:22.000+00:00"


def test_receipt_carries_our_reference_and_the_log_id() -> None:
    body = dlr("9A85B95E0A000A9D2FBD46710388AD54", "FAILED_NOROUTE",
               client_reference="m0123456789abcdef01234567",
               created=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=1))))
    [receipt] = parse(body).receipts
    assert receipt.reference == "m0123456789abcdef01234567"
    assert receipt.provider_message_id == "9A85B95E0A000A9D2FBD46710388AD54"
    assert (receipt.status, receipt.error_code) == (Status.FAILED, "FAILED_NOROUTE")
    assert receipt.detail == "the provider could not route the message"
    assert receipt.occurred_at == dt.datetime(2026, 1, 2, 2, 4, 5)


def test_dedupe_keys() -> None:
    created = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)

    def key(status: str, **kwargs: Any) -> str | None:
        kwargs.setdefault("created", created)
        return parse(dlr("LOG1", status, batch_id="B", **kwargs)).receipts[0].dedupe_key

    assert key("DELIVERED") == key("DELIVERED")  # the same report twice
    assert key("DELIVERED") != key("ACCEPTED")
    assert key("RETRY") != key("RETRY", created=created + dt.timedelta(minutes=5))
    assert parse(dlr("LOG2", "DELIVERED", created=created)).receipts[0].dedupe_key != key(
        "DELIVERED")
    no_id = parse(dlr(None, "DELIVERED", client_reference="mREF", created=created))
    assert no_id.receipts[0].dedupe_key.startswith("ref:mREF|1|")
    assert no_id.receipts[0].provider_message_id is None


@pytest.mark.parametrize(("body", "expected"), [
    # ids as numbers, padded strings, empty reference
    (b'{"deliveryMessageId": 12345, "clientReference": "", "status": " delivered ",'
     b' "statusCode": "1"}', ("12345", None, Status.DELIVERED)),
    (b'{"deliveryMessageId": " A1 ", "clientReference": " mR ", "status": "EXPIRED"}',
     ("A1", "mR", Status.EXPIRED)),
    # reference only (id missing), and a `created` that is not a time
    (b'{"clientReference": "mR", "statusCode": 3, "created": "yesterday"}',
     (None, "mR", Status.EXPIRED)),
    (b'{"deliveryMessageId": "A1", "status": null, "statusCode": 1, "created": 5}',
     ("A1", None, Status.DELIVERED)),
])
def test_receipt_variants(body, expected) -> None:
    parsed = parse(body)
    assert parsed.errors == []
    [receipt] = parsed.receipts
    assert (receipt.provider_message_id, receipt.reference, receipt.status) == expected


def test_several_receipts_in_one_array() -> None:
    body = b"[" + dlr("A", "ACCEPTED") + b"," + dlr("A", "DELIVERED") + b"]"
    parsed = parse(body, "application/json; charset=utf-8")
    assert [r.status for r in parsed.receipts] == [Status.SENT, Status.DELIVERED]


@pytest.mark.parametrize(("body", "error"), [
    (b"", "empty body"),
    (b"   ", "empty body"),
    (b"not json", "not JSON"),
    (b"\xff\xfe\x00garbage", "not JSON"),
    (b'{"deliveryMessageId": "A"', "not JSON"),
    (b'"DELIVERED"', "not a JSON object"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"status": "DELIVERED", "statusCode": 1}', "without deliveryMessageId"),
    (b'{"deliveryMessageId": null, "clientReference": null, "status": "DELIVERED"}',
     "without deliveryMessageId"),
    (b'{"deliveryMessageId": "A"}', "without status"),
    (b'{"deliveryMessageId": "A", "status": "", "statusCode": true}', "without status"),
])
def test_unreadable_receipts_become_errors_not_exceptions(body, error) -> None:
    parsed = parse(body)
    assert parsed.receipts == []
    assert parsed.errors and error in parsed.errors[0]


def test_an_empty_array_is_noted() -> None:
    parsed = parse(b"[]")
    assert parsed.receipts == [] and parsed.errors == [] and parsed.notes


# -- polling -----------------------------------------------------------------------------------


def target(record_id: str | None, reference: str = "m0123456789abcdef01234567") -> PollTarget:
    return PollTarget(message_id=1, reference=reference, provider_message_id=record_id,
                      to="+4479000000001")


def test_polling_is_off_unless_configured() -> None:
    assert provider().POLL_BATCH == 0
    assert provider(poll=True).POLL_BATCH == 1
    assert MobivateProvider.POLL_BATCH == 0


def test_poll_reads_the_message_log(mob) -> None:
    p = provider(mob.url, poll=True)
    sent = p.send(outbound(p))
    [message] = mob.messages
    when = dt.datetime(2026, 3, 1, 12, 0, 7, tzinfo=dt.UTC)
    mob.set_status(message.log_id, "DELIVERED", when)
    answer = p.poll([target(sent.provider_message_id)])
    lookup = mob.requests[-1]
    assert (lookup.method, lookup.path) == ("GET", f"/message/{sent.provider_message_id}")
    assert lookup.headers["authorization"] == f"Bearer {KEY}"
    assert answer.errors == []
    [receipt] = answer.receipts
    assert receipt.provider_message_id == sent.provider_message_id
    assert receipt.reference == "m0123456789abcdef01234567"
    assert (receipt.status, receipt.raw_status, receipt.error_code) == (
        Status.DELIVERED, "DELIVERED", None)
    assert receipt.occurred_at == dt.datetime(2026, 3, 1, 12, 0, 7)
    assert receipt.dedupe_key == f"poll|{message.log_id}|DELIVERED|2026-03-01T12:00:07+0000"
    assert json.loads(answer.raw)["id"] == message.log_id
    mob.set_status(message.log_id, "FAILED_EXHAUSTED")
    [failed] = p.poll([target(sent.provider_message_id)]).receipts
    assert (failed.status, failed.error_code) == (Status.FAILED, "FAILED_EXHAUSTED")
    assert failed.dedupe_key != receipt.dedupe_key


def test_poll_of_an_id_the_api_does_not_know_is_left_out() -> None:
    with MobivateStandIn(api_key=KEY, lookup_record_ids=False) as mob:
        p = provider(mob.url, poll=True)
        sent = p.send(outbound(p))
        answer = p.poll([target(sent.provider_message_id)])
    assert answer.receipts == [] and answer.errors == []
    assert "NotFoundError" in answer.raw


def test_poll_without_a_provider_id_asks_nothing(mob) -> None:
    answer = provider(mob.url, poll=True).poll([target(None)])
    assert answer.receipts == [] and answer.errors and mob.requests == []


def test_published_message_log_answer() -> None:
    published = json.loads(sample("mobivate-message-get-response-1.json"))
    p = provider(poll=True)
    answer = _poll_with_body(p, sample("mobivate-message-get-response-1.json"), "ref-001")
    assert answer.errors == []
    [receipt] = answer.receipts
    assert (receipt.status, receipt.raw_status) == (Status.DELIVERED, published["status"])
    assert receipt.reference == published["senderReference"]
    assert receipt.occurred_at == dt.datetime(2023, 7, 1, 1, 10, 39)  # `modified`
    assert receipt.dedupe_key == f"poll|{published['id']}|DELIVERED|{published['modified']}"
    # senderReference names another message: not taken as this one's status.
    wrong = _poll_with_body(p, sample("mobivate-message-get-response-1.json"), "m-other")
    assert wrong.receipts == [] and "ref-001" in wrong.errors[0]


def _poll_with_body(p: MobivateProvider, body: bytes, reference: str):
    """Poll against a one-shot server that answers `body` (the published answer verbatim)."""
    with _OneAnswer(body) as url:
        p.base_url = url
        return p.poll([target("9A0C23DD0A000A9D2FBD4671D780AFDA", reference=reference)])


class _OneAnswer:
    """A loopback server that answers every GET with the same 200 JSON body."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def __enter__(self) -> str:
        body = self.body

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.mark.parametrize("body", [
    b'{"id": "X", "status": "DELIVERED", "direction": "MO", "senderReference": null}',
    b'{"id": "X", "direction": "MT"}',
])
def test_poll_answers_that_are_not_a_status(body) -> None:
    answer = _poll_with_body(provider(poll=True), body, "m1")
    assert answer.receipts == [] and answer.errors


def test_poll_accepts_a_record_wrapper() -> None:
    body = b'{"success": true, "record": {"id": "X", "status": "EXPIRED"}}'
    [receipt] = _poll_with_body(provider(poll=True), body, "m1").receipts
    assert receipt.status == Status.EXPIRED and receipt.error_code == "EXPIRED"


@pytest.mark.parametrize("reply", [Reply.error(401), Reply.error(403), Reply.error(429),
                                   Reply.error(500), Reply.http_error(502)])
def test_poll_failures_raise_poll_error(mob, reply) -> None:
    p = provider(mob.url, poll=True)
    sent = p.send(outbound(p))
    mob.script_lookup(reply)
    with pytest.raises(PollError):
        p.poll([target(sent.provider_message_id)])


def test_poll_unreadable_answer_and_unreachable(mob) -> None:
    with pytest.raises(PollError):
        _poll_with_body(provider(poll=True), b"<html>maintenance</html>", "m1")
    url = mob.url
    mob.stop()
    with pytest.raises(PollError):
        provider(url, poll=True).poll([target("X")])


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("config", "key"), [
    ({"api_key": KEY, "sender": "A", "callback_token": TOKEN}, "base_url"),  # no default
    ({"base_url": "https://x", "sender": "A", "callback_token": TOKEN}, "api_key"),
    ({"base_url": "https://x", "api_key": KEY, "callback_token": TOKEN}, "sender"),
    ({"base_url": "api.example", "api_key": KEY, "sender": "A", "callback_token": TOKEN},
     "base_url"),
    ({"base_url": "https://x", "api_key": KEY, "sender": "A"}, "callback_token"),
    ({**settings(), "poll": "yes"}, "poll"),
    ({**settings(), "reference": "x"}, "reference"),
])
def test_settings_are_checked(config, key) -> None:
    with pytest.raises(ConfigError, match=f"providers.mobivate.{key}"):
        MobivateProvider(config, PUBLIC)


def test_polling_alone_is_enough_and_secrets_are_marked() -> None:
    p = MobivateProvider({"base_url": "https://api.example/", "api_key": KEY, "sender": "A",
                          "poll": True}, PUBLIC)
    assert p.base_url == "https://api.example" and p.callback_url() is None
    assert {k for k, s in MobivateProvider.SETTINGS.items() if s.secret} == {
        "api_key", "callback_token"}


# -- correlation through clientReference, over the callback endpoint ------------------------------

URL = f"/callbacks/mobivate/{TOKEN}"


@pytest.fixture
def mob_app(database_url: str) -> Iterator[Flask]:
    config = make_config(database_url)
    config["providers"]["mobivate"] = settings()
    with running(config) as flask_app:
        yield flask_app


def new_message() -> Message:
    return sending.enqueue(sending.NewMessage(to="+4479000000001", text="hi",
                                              provider="mobivate"), source="test")


LOG = "9A85B95E0A000A9D2FBD46710388AD54"  # the published receipt's deliveryMessageId
UUID = "e5815fee-e86e-4fd7-9cad-55444f023bbb"  # the published send answer's record.id


def post(client, body: bytes) -> bytes:
    return client.post(URL, data=body, content_type="application/json").data


def receipt_events(message: Message) -> list[tuple[str, str | None, str | None, bool | None]]:
    return [(e.status, e.provider_message_id, e.reference, e.applied)
            for e in Event.select().where((Event.message == message.id)
                                          & (Event.kind == "receipt")).order_by(Event.id)]


def test_receipt_with_another_id_is_matched_by_reference(mob_app) -> None:
    """The receipt's deliveryMessageId matches no message; clientReference finds it, and the
    message keeps that log id from then on (PROTOCOLS.md §2.3: "Always send a unique `reference`
    and correlate on `clientReference`. Store `deliveryMessageId` from the first DLR for later
    polling.")."""
    client = mob_app.test_client()
    message = new_message()
    sending.record_accepted(message, SendResult(UUID))
    created = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    delivered = dlr(LOG, "DELIVERED", client_reference=message.reference, created=created)
    answers = [post(client, body) for body in (
        dlr(LOG, "ACCEPTED", client_reference=message.reference,
            created=created - dt.timedelta(seconds=3)),
        delivered, delivered)]
    assert answers == [b"OK applied\n", b"OK applied\n", b"OK duplicate\n"]
    stored = Message.get_by_id(message.id)
    assert stored.status == "delivered"
    assert stored.provider_message_id == LOG  # the log id, kept from the first receipt
    submitted = Event.get((Event.message == message.id) & (Event.kind == "submitted"))
    assert submitted.provider_message_id == UUID  # the send answer's id stays on its event
    assert receipt_events(message) == [("sent", LOG, message.reference, True),
                                       ("delivered", LOG, message.reference, True)]


def test_later_receipts_carrying_only_the_log_id_match_by_it(mob_app) -> None:
    """Receipts: keep `deliveryMessageId`. PROTOCOLS.md §2.3, "Correlation caveat":

        the DLR/log ids are 32-character uppercase hex (`9A85B95E…`), but the send response
        `record.id` is a UUID (`e5815fee-…`) … So the send id may **not** equal
        `deliveryMessageId`. → Always send a unique `reference` and correlate on
        `clientReference`. Store `deliveryMessageId` from the first DLR for later polling.

    and §6: "Mobivate: our unique `reference` (→ `clientReference`), plus `record.id`, plus
    `deliveryMessageId` once seen." A later receipt whose `clientReference` is null (as in the
    published sample) finds the message by the log id the first one brought."""
    client = mob_app.test_client()
    message = new_message()
    sending.record_accepted(message, SendResult(UUID))
    t0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert post(client, dlr(LOG, "ACCEPTED", client_reference=message.reference,
                            created=t0)) == b"OK applied\n"
    assert Message.get_by_id(message.id).provider_message_id == LOG
    delivered = dlr(LOG, "DELIVERED", client_reference=None, created=t0 + dt.timedelta(seconds=4))
    assert post(client, delivered) == b"OK applied\n"  # matched by the log id alone
    assert post(client, delivered) == b"OK duplicate\n"
    stored = Message.get_by_id(message.id)
    assert (stored.status, stored.provider_message_id) == ("delivered", LOG)
    assert receipt_events(message) == [("sent", LOG, message.reference, True),
                                       ("delivered", LOG, None, True)]
    assert [c.verdict for c in Callback.select().order_by(Callback.id)] == [
        "applied", "applied", "duplicate"]


def test_a_message_without_a_provider_id_gets_the_log_id(mob_app) -> None:
    """A send that timed out left the message `unknown` with no provider id (README "unknown
    outcome": "settled by a receipt matched by our reference"). That receipt also gives it the
    log id, so the receipts after it need no reference."""
    client = mob_app.test_client()
    message = new_message()
    sending.record_unknown(message, SendError("Mobivate gave no answer", permanent=False,
                                              provider_side=True, outcome_unknown=True,
                                              code="NO_ANSWER"))
    assert Message.get_by_id(message.id).provider_message_id is None
    t0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert post(client, dlr(LOG, "ACCEPTED", client_reference=message.reference,
                            created=t0)) == b"OK applied\n"
    assert Message.get_by_id(message.id).provider_message_id == LOG
    assert post(client, dlr(LOG, "FAILED_NACK",
                            created=t0 + dt.timedelta(seconds=9))) == b"OK applied\n"
    stored = Message.get_by_id(message.id)
    assert (stored.status, stored.error_code) == ("undelivered", "FAILED_NACK")


def test_receipts_that_came_first_under_the_log_id_are_applied_when_it_is_kept(mob_app) -> None:
    """A receipt carrying only the log id before any carried our reference is an orphan (no
    message has that id yet); the first receipt with our reference gives the message the id and
    applies it at once."""
    client = mob_app.test_client()
    message = new_message()
    sending.record_accepted(message, SendResult(UUID))
    t0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert post(client, dlr(LOG, "DELIVERED", created=t0 + dt.timedelta(seconds=5))) == (
        b"OK orphan\n")
    assert Message.get_by_id(message.id).status == "accepted"
    # The earlier report, with our reference, arrives late: the orphan applies first, so this
    # one is older than the delivery and changes nothing.
    assert post(client, dlr(LOG, "ACCEPTED", client_reference=message.reference,
                            created=t0)) == b"OK ignored\n"
    stored = Message.get_by_id(message.id)
    assert (stored.status, stored.provider_message_id) == ("delivered", LOG)
    assert receipt_events(message) == [("delivered", LOG, None, True),
                                       ("sent", LOG, message.reference, False)]
    assert Event.select().where(Event.message.is_null()).count() == 0


def test_unknown_reference_and_unknown_id_stay_orphans(mob_app) -> None:
    """Never guessed: a receipt whose reference is no message's and whose id no message has
    stays an orphan, and changes no message's id."""
    client = mob_app.test_client()
    message = new_message()
    sending.record_accepted(message, SendResult(UUID))
    assert post(client, dlr(LOG, "ACCEPTED", client_reference=message.reference)) == (
        b"OK applied\n")
    other = "0123456789ABCDEF0123456789ABCDEF"
    assert post(client, dlr(other, "DELIVERED", client_reference="m-no-such-message")) == (
        b"OK orphan\n")
    assert post(client, dlr(other, "DELIVERED", created="2026-01-01T00:00:00.000+00:00")) == (
        b"OK orphan\n")
    assert post(client, dlr(None, "DELIVERED", client_reference="m-no-such-message")) == (
        b"OK orphan\n")
    stored = Message.get_by_id(message.id)
    assert (stored.status, stored.provider_message_id) == ("sent", LOG)
    assert Event.select().where(Event.message.is_null()).count() == 3


def test_only_providers_that_report_under_other_ids_adopt_them(mob_app) -> None:
    """Keeping a receipt's id is Mobivate's (ADOPTS_RECEIPT_ID): another provider's receipt
    matched by our reference leaves the message's id alone."""
    message = sending.enqueue(sending.NewMessage(to="+4479000000001", text="hi", provider="fake"),
                              source="test")
    sending.record_accepted(message, SendResult("fake-id"))
    with write_tx():
        outcome = correlation.apply_receipt(
            Receipt(provider="fake", status=Status.SENT, provider_message_id="another-id",
                    reference=message.reference, dedupe_key="another-id|sent"),
            source="test")
    assert outcome.message_id == message.id
    assert Message.get_by_id(message.id).provider_message_id == "fake-id"
    assert getattr(FakeProvider, "ADOPTS_RECEIPT_ID", False) is False
    assert MobivateProvider.ADOPTS_RECEIPT_ID is True


def test_polls_ask_by_the_kept_log_id(database_url: str) -> None:
    """PROTOCOLS.md §2.3 "Store `deliveryMessageId` from the first DLR for later polling"; §2.7:
    "Whether `record.id` can be used with `GET /message/:id`" is open. With a message log that
    knows log ids only, a poll learns nothing until a receipt brought the log id, then works."""
    with MobivateStandIn(api_key=KEY, lookup_record_ids=False) as mob:
        config = make_config(database_url)
        config["providers"]["mobivate"] = settings(mob.url, poll=True)
        with running(config) as app:
            p = app.extensions["providers"]["mobivate"]
            message = new_message()
            sent = p.send(outbound(p, reference=message.reference))
            sending.record_accepted(message, sent, p)
            [accepted] = mob.messages
            later = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(days=1)
            assert polling.poll_provider(p, later) == 0  # GET /message/{UUID}: 404
            assert mob.requests[-1].path == f"/message/{sent.provider_message_id}"
            answer = post(app.test_client(), accepted.dlr("ACCEPTED"))
            assert answer == b"OK applied\n"
            assert Message.get_by_id(message.id).provider_message_id == accepted.log_id
            mob.set_status(accepted.log_id, "DELIVERED")
            assert polling.poll_provider(p, later + dt.timedelta(days=1)) == 1
            assert mob.requests[-1].path == f"/message/{accepted.log_id}"
            assert Message.get_by_id(message.id).status == "delivered"


def test_receipt_before_the_send_answer_is_matched_by_reference(mob_app) -> None:
    """No orphan: the message row (with our reference) exists before Mobivate is called."""
    client = mob_app.test_client()
    message = new_message()
    answer = client.post(URL, data=dlr("LOG", "ACCEPTED", client_reference=message.reference),
                         content_type="application/json")
    assert answer.data == b"OK applied\n"
    sending.record_accepted(Message.get_by_id(message.id), SendResult("uuid-1"))
    assert Message.get_by_id(message.id).status == "sent"  # `accepted` ranks below `sent`


def test_receipt_without_a_reference_is_an_orphan(mob_app) -> None:
    """The published sample (clientReference null) can only wait: its log id is no message's."""
    client = mob_app.test_client()
    new_message()
    answer = client.post(URL, data=sample("mobivate-dlr-webhook-1.json"),
                         content_type="application/json")
    assert answer.data == b"OK orphan\n"
    assert [c.verdict for c in Callback.select()] == ["orphan"]
