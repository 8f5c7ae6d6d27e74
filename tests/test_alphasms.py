"""AlphaSMS: json.php (the default) and http.php sends and their answers, status vocabularies,
hook shapes, polling, and the plain words the dashboard shows for every documented status and
error.

Send and poll go through the loopback stand-in (real HTTP); answers and hooks are also parsed
directly. Samples are verbatim copies of shared/providers/samples/alphasms-* (tests/samples).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from conftest import make_config, running
from markupsafe import escape
from standins.alphasms import (
    BAD_RECIPIENT,
    BAD_SENDER,
    NOT_FOUND,
    WRONG_LOGIN,
    AlphaSmsStandIn,
    Reply,
    http_status,
    json_status,
)

from tracker import accounts, correlation, sending
from tracker.db import write_tx
from tracker.models import Message
from tracker.providers.alphasms import (
    HTTP_CODES,
    STATUS_MAP,
    XML_CODES,
    AlphaSmsProvider,
    classify_error,
    map_status,
    parse_answer,
    parse_time,
)
from tracker.providers.base import (
    CallbackRequest,
    OutboundMessage,
    PollError,
    PollTarget,
    Receipt,
    SendError,
    SendResult,
)
from tracker.settings import ConfigError
from tracker.status import Status, order_key

SAMPLES = Path(__file__).resolve().parent / "samples"
BASE = "http://127.0.0.1:8000"
REF = "m0123456789abcdef01234567"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def provider(**settings: object) -> AlphaSmsProvider:
    config = {"api_key": "APIKEY", "sender": "test", "callback_token": "tok", **settings}
    return AlphaSmsProvider({k: v for k, v in config.items() if v is not None}, BASE)


def outbound(p: AlphaSmsProvider, to: str = "+380501234567", text: str = "text",
             **kwargs: object) -> OutboundMessage:
    kwargs.setdefault("message_id", 7)  # our message id: json.php sends it as the item's `id`
    return OutboundMessage(reference=REF, to=to, text=text, callback_url=p.callback_url(REF),
                           **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def alpha():
    with AlphaSmsStandIn(api_key="APIKEY") as stand_in:
        yield stand_in


# -- settings and the hook URL ------------------------------------------------------------------


def test_callback_url_carries_token_and_encoded_reference() -> None:
    p = provider()
    assert p.callback_url(REF) == f"{BASE}/callbacks/alphasms/tok?ref={REF}"
    assert p.callback_url("a b/&?") == f"{BASE}/callbacks/alphasms/tok?ref=a%20b%2F%26%3F"
    assert p.callback_url() == f"{BASE}/callbacks/alphasms/tok"
    assert provider(callback_token=None).callback_url(REF) is None


@pytest.mark.parametrize(("settings", "message"), [
    ({"api_key": None}, "providers.alphasms.api_key: required"),
    ({"api_key": None, "login": "me"}, "providers.alphasms.api_key: required"),
    ({"sender": None}, "providers.alphasms.sender: required"),
    ({"pin": "1"}, "providers.alphasms.pin: unknown setting"),
])
def test_settings_are_checked(settings, message) -> None:
    with pytest.raises(ConfigError, match=message):
        provider(**settings)


LOGIN_ONLY = {"api_key": None, "login": "me", "password": "secret"}


@pytest.mark.parametrize(("settings", "api", "warned"), [
    ({}, "json", False),  # the hook is documented for json.php only (§4.3, §4.4)
    ({"api": "http"}, "http", False),  # kept for accounts that need it
    ({"api": "json"}, "json", False),
    (LOGIN_ONLY, "http", True),  # json.php takes the key only: http.php, and a warning
    ({**LOGIN_ONLY, "api": "http"}, "http", False),  # chosen: no warning
    ({"api": ""}, "json", False),  # an empty TRACKER_PROVIDERS__ALPHASMS__API is unset
])
def test_json_php_is_the_default_unless_only_login_and_password(settings, api, warned,
                                                                 caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="tracker.providers.alphasms"):
        p = provider(**settings)
    assert (p.config["api"], p.SEND_BATCH > 1) == (api, api == "json")
    warnings = [r.getMessage() for r in caplog.records if r.name == "tracker.providers.alphasms"]
    assert bool(warnings) == warned, warnings
    if warned:
        assert "http.php" in warnings[0] and "api_key" in warnings[0]
        assert "secret" not in warnings[0]


def test_default_send_goes_to_json_php_with_the_hook(alpha) -> None:
    p = provider(base_url=alpha.url)
    result = p.send(outbound(p))
    assert alpha.requests == []  # nothing to http.php
    [item] = alpha.json_items()
    assert item["hook"] == f"{BASE}/callbacks/alphasms/tok?ref={REF}"
    assert (item["id"], item["phone"], result.provider_message_id) == (7, 380501234567,
                                                                      "84523377")

# -- the send request ---------------------------------------------------------------------------


def test_http_send_request_has_the_seed_fields_and_the_hook(alpha) -> None:
    p = provider(base_url=alpha.url, api="http")
    result = p.send(outbound(p))
    [request] = alpha.requests
    # alphasms-http-send-request-1.txt: the seed's request (its line break is in the doc).
    seed = urlsplit(sample("alphasms-http-send-request-1.txt").decode().replace("\n", "")).query
    expected = {k: v[0] for k, v in parse_qs(seed).items()}
    assert (request.method, request.transport) == ("POST", "form")
    assert request.fields == {**expected, "hook": f"{BASE}/callbacks/alphasms/tok?ref={REF}"}
    assert result.provider_message_id == request.gateway_id == "84523377"
    assert result.raw == "id:84523377 sms_count:1"


def test_send_with_login_and_password_and_no_hook(alpha) -> None:
    # No api_key and no `api`: http.php, the only API that takes login and password.
    alpha.api_key, alpha.login, alpha.password = None, "me", "secret"
    p = provider(base_url=alpha.url, api_key=None, login="me", password="secret",
                 callback_token=None)
    assert p.config["api"] == "http"
    p.send(OutboundMessage(reference=REF, to="+447700900123", text="Привіт", sender="Shop.UA",
                           callback_url=p.callback_url(REF)))
    [request] = alpha.requests
    assert request.fields == {"version": "http", "login": "me", "pass": "secret",
                              "command": "send", "from": "Shop.UA", "to": "447700900123",
                              "message": "Привіт"}


def test_json_api_sample_names_the_hook_field_and_the_phone_format() -> None:
    # The hook is documented for json.php (alphasms-json-send-request-1.json); http.php gets the
    # same name, and the same international digits-only number.
    item = json.loads(sample("alphasms-json-send-request-1.json"))["data"][0]
    assert "hook" in item and str(item["phone"]).isdigit()


def test_stand_in_answers_the_seed_request_by_get(alpha) -> None:
    path = sample("alphasms-http-send-request-1.txt").decode().replace("\n", "")
    answer = httpx.get(alpha.url.replace("/api/http.php", "/api") + path)
    assert answer.text == "id:84523377 sms_count:1"
    assert alpha.requests[0].transport == "query"


# -- send answers -------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    "id:84523377 sms_count:1",  # alphasms-http-send-response-success-1.txt
    "id:84523377\nsms_count:1\n",  # Net::SMS::AlphaSMS
    "id:84523377,sms_count:1",  # MakarovIgor's splitter
    "\ufeffid: 84523377 , smd_count: 2\r\n",  # a BOM, spaces, the docs' own smd_count
    "id:84523377 sms_count:1\nerrors:Sender is deprecated",  # an id wins: never resend
])
def test_success_answers(body) -> None:
    assert provider().read_send_answer(200, body).provider_message_id == "84523377"


def test_verbatim_samples() -> None:
    p = provider()
    ok = sample("alphasms-http-send-response-success-1.txt").decode()
    assert p.read_send_answer(200, ok).provider_message_id == "84523377"
    for name, text in [("alphasms-http-send-response-error-1.txt", "Wrong login/password"),
                       ("alphasms-http-send-response-error-2.txt", "Unknown command")]:
        raw = sample(name).decode()
        with pytest.raises(SendError) as caught:
            p.read_send_answer(200, raw)
        err = caught.value
        assert (err.status, err.permanent, err.provider_side, err.code, err.raw) == (
            Status.FAILED, True, True, text, raw)
        assert not err.outcome_unknown


def test_answer_tokens_keep_spaces_and_repeat() -> None:
    assert parse_answer("status:Out of touch code:5 status_time:2011-11-15T17:12:33+0200") == {
        "status": ["Out of touch"], "code": ["5"], "status_time": ["2011-11-15T17:12:33+0200"]}
    assert parse_answer("errors:Wrong login/password\nerrors:Unknown command\n") == {
        "errors": ["Wrong login/password", "Unknown command"]}
    assert parse_answer("<html>502 Bad Gateway</html>") == {}


REJECTED = (Status.REJECTED, True, False)
ACCOUNT = (Status.FAILED, True, True)
RETRY = (Status.FAILED, False, True)


@pytest.mark.parametrize(("text", "kind"), [
    ("Wrong login/password", ACCOUNT),
    ("Unknown command", ACCOUNT),
    (json.loads(sample("alphasms-json-send-response-accessdenied-1.json"))["error"], ACCOUNT),
    (json.loads(sample("alphasms-json-send-response-alphaname-error-1.json"))["data"][0]["error"],
     REJECTED),
    (BAD_RECIPIENT, REJECTED),
    ("Not enough money to send the message", ACCOUNT),
    ("Insufficient balance", ACCOUNT),
    ("User disabled", ACCOUNT),
    ("IP address is not allowed to make requests", ACCOUNT),
    ("Operator not supported", ACCOUNT),  # no route: another provider may reach it
    ("No route to destination", ACCOUNT),
    ("Message text is too long", REJECTED),
    ("Message with the specified ID already exists (duplicate)", REJECTED),
    ("Too many requests, try again later", RETRY),
    ("Message could not be sent: internal error", RETRY),
    ("Message type is not valid", ACCOUNT),  # not ours to judge: fail over, do not reject
    ("212", RETRY), ("202", ACCOUNT), ("205", ACCOUNT), ("203", REJECTED), ("204", REJECTED),
    ("206", ACCOUNT), ("208", REJECTED),
    ("", ACCOUNT),
])
def test_error_texts_and_codes_are_classified(text, kind) -> None:
    err = classify_error([text], f"errors:{text}")
    assert (err.status, err.permanent, err.provider_side) == kind
    assert err.code == (text or "errors without text") and err.raw == f"errors:{text}"


@pytest.mark.parametrize(("status", "body", "location", "expected"), [
    (500, "Internal Server Error", None, ("HTTP_500", False, False)),
    (503, "errors:Service temporarily unavailable", None, (
        "Service temporarily unavailable", False, False)),
    (429, "", None, ("HTTP_429", False, False)),
    (404, "Not Found", None, ("HTTP_404", True, False)),
    (301, "", "https://alphasms.ua/api/http.php", ("HTTP_301", True, False)),
    (200, "<html>maintenance</html>", None, ("UNREADABLE", False, True)),
    (200, "", None, ("UNREADABLE", False, True)),
    (500, "id:5 sms_count:1", None, ("HTTP_500", False, False)),
])
def test_http_level_answers(status, body, location, expected) -> None:
    with pytest.raises(SendError) as caught:
        provider().read_send_answer(status, body, location)
    err = caught.value
    assert (err.code, err.permanent, err.outcome_unknown) == expected
    assert err.provider_side and err.status == Status.FAILED
    if location:
        assert location in err.detail


def test_http_transport_failures_through_the_stand_in(alpha) -> None:
    p = provider(base_url=alpha.url, api="http")
    alpha.script(Reply.http_error(502), Reply.error(BAD_RECIPIENT, "Error in Alpha-name"),
                 Reply.slow(2.0))
    with pytest.raises(SendError) as bad_gateway:
        p.send(outbound(p))
    assert (bad_gateway.value.code, bad_gateway.value.permanent) == ("HTTP_502", False)
    with pytest.raises(SendError) as rejected:
        p.send(outbound(p))
    assert (rejected.value.status, rejected.value.provider_side) == (Status.REJECTED, False)
    assert rejected.value.detail == f"AlphaSMS: {BAD_RECIPIENT}; Error in Alpha-name"
    p.timeout = httpx.Timeout(0.5)
    p._client = None
    with pytest.raises(SendError) as slow:
        p.send(outbound(p))
    assert (slow.value.outcome_unknown, slow.value.code) == (True, "NO_ANSWER")


def test_json_transport_failures_through_the_stand_in(alpha) -> None:
    p = provider(base_url=alpha.url)
    alpha.script_json(Reply.http_error(502))
    with pytest.raises(SendError) as bad_gateway:
        p.send(outbound(p))
    assert (bad_gateway.value.code, bad_gateway.value.permanent) == ("HTTP_502", False)
    with pytest.raises(SendError) as rejected:
        p.send(outbound(p, sender="BADNAME"))  # the stand-in refuses this item alone
    assert (rejected.value.status, rejected.value.provider_side) == (Status.REJECTED, False)
    assert rejected.value.detail == f"AlphaSMS: {BAD_SENDER}"
    alpha.script_json(Reply.slow(2.0))
    p.timeout = httpx.Timeout(0.5)
    p._client = None
    with pytest.raises(SendError) as slow:
        p.send(outbound(p))
    assert (slow.value.outcome_unknown, slow.value.code) == (True, "NO_ANSWER")


@pytest.mark.parametrize(("api", "refusal"), [("json", "Access denied"), ("http", WRONG_LOGIN)])
def test_stand_in_refuses_wrong_key_and_we_fail_over(alpha, api, refusal) -> None:
    p = provider(base_url=alpha.url, api_key="wrong", api=api)
    with pytest.raises(SendError) as caught:
        p.send(outbound(p))
    assert (caught.value.code, caught.value.provider_side, caught.value.permanent) == (
        refusal, True, True)


def test_unreachable_is_provider_side_and_retried() -> None:
    with AlphaSmsStandIn() as gone:
        url = gone.url
    p = provider(base_url=url)
    with pytest.raises(SendError) as caught:
        p.send(outbound(p))
    assert (caught.value.code, caught.value.permanent, caught.value.provider_side) == (
        "UNREACHABLE", False, True)


# -- status vocabularies -------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "status"), [
    ("0", Status.ACCEPTED), ("1", Status.ACCEPTED), ("2", Status.SENT), ("3", Status.DELIVERED),
    ("5", Status.EXPIRED), ("10", Status.CANCELED), ("50", Status.UNDELIVERED),
    ("96", Status.UNDELIVERED), ("99", Status.REJECTED), ("116", Status.DELIVERED),
])
def test_http_codes(code, status) -> None:
    """PROTOCOLS.md §4.5 (docs/api/http/status.md): `command=receive` answers codes 0 Pending
    and 1 Sending while AlphaSMS holds the message (accepted by it, not queued with us), and
    §4.2: `command=delete` of a scheduled message answers "status:Deleted code:10" (canceled)."""
    assert HTTP_CODES[code] == status
    assert map_status(code) == status  # in a hook too: http.php wins the shared code 1


@pytest.mark.parametrize(("name", "status"), [
    ("ACCEPTED", Status.DELIVERED), ("DELETED", Status.UNDELIVERED),
    ("DELIVERED", Status.DELIVERED), ("EXPIRED", Status.EXPIRED), ("FILTERED", Status.REJECTED),
    ("INVALID DESTINATION ADDRESS", Status.REJECTED), ("INVALID SOURCE ADDRESS", Status.REJECTED),
    ("NO ROUTE", Status.FAILED), ("PARTIALLY DELIVERED", Status.UNDELIVERED),
    ("QUEUED", Status.QUEUED), ("READ", Status.DELIVERED), ("REJECTED", Status.REJECTED),
    ("REPLIED", Status.DELIVERED), ("ROUTING", Status.QUEUED), ("SIM FULL", Status.UNDELIVERED),
    ("UNDELIVERABLE", Status.UNDELIVERED), ("UNKNOWN", Status.UNKNOWN),
    # spelling variants a hook may use
    ("sim_full", Status.UNDELIVERED), ("Invalid-Destination-Address", Status.REJECTED),
    (" delivered ", Status.DELIVERED),
    # XML API names and http.php texts
    ("ENROUTE", Status.SENT), ("SCHEDULED", Status.QUEUED), ("NOT_SUPPORTED", Status.REJECTED),
    ("ERR_BILLING", Status.FAILED), ("Out of touch", Status.EXPIRED), ("Sent", Status.SENT),
    ("Network failure during SMS delivery", Status.UNDELIVERED),
    ("Number not in service", Status.REJECTED), ("Read (Viber only)", Status.DELIVERED),
])
def test_status_names(name, status) -> None:
    assert map_status(name) == status


@pytest.mark.parametrize(("code", "status"), [
    ("1", Status.ACCEPTED), ("100", Status.QUEUED), ("101", Status.SENT),
    ("102", Status.DELIVERED), ("103", Status.EXPIRED), ("104", Status.UNDELIVERED),
    ("105", Status.UNDELIVERED), ("106", Status.DELIVERED), ("107", Status.UNKNOWN),
    ("108", Status.REJECTED), ("109", Status.FAILED), ("110", Status.QUEUED),
    ("111", Status.REJECTED), ("112", Status.REJECTED), ("113", Status.REJECTED),
    ("200", Status.FAILED), ("201", Status.REJECTED), ("202", Status.REJECTED),
    ("203", Status.REJECTED), ("204", Status.REJECTED), ("206", Status.FAILED),
    ("207", Status.FAILED), ("208", Status.REJECTED),
])
def test_xml_codes(code, status) -> None:
    assert map_status(code, xml=True) == status


@pytest.mark.parametrize("value", ["95", "211", "SOMETHING NEW", "", "true"])
def test_unknown_values_map_to_nothing(value) -> None:
    assert map_status(value) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("2011-11-15T17:12:33+0200", dt.datetime(2011, 11, 15, 15, 12, 33)),
    ("2024-11-11T12:00:00", dt.datetime(2024, 11, 11, 10, 0)),  # Kyiv winter time, UTC+2
    ("2024/07/12 15:00:00", dt.datetime(2024, 7, 12, 12, 0)),  # Kyiv summer time, UTC+3
    ("2024/10/12", None),  # the docs' example: a day cannot order two reports
    ("yesterday", None), (None, None),
])
def test_provider_times(text, expected) -> None:
    assert parse_time(text) == expected


# -- hook callbacks ------------------------------------------------------------------------------


def hook(body: bytes = b"", *, method: str = "POST", content_type: str = "",
         ref: str | None = REF, **query: str) -> CallbackRequest:
    params = {**({"ref": [ref]} if ref is not None else {}),
              **{k: [v] for k, v in query.items()}}
    return CallbackRequest(method, content_type, params, body)


AT = dt.datetime(2024, 10, 12, 9, 30, 5, tzinfo=dt.UTC)


def test_json_hook_in_the_http_vocabulary() -> None:
    body = json.dumps(http_status("84523377", 3, AT)).encode()
    parsed = provider().parse_callback(hook(body, content_type="application/json"))
    assert parsed.errors == []
    [r] = parsed.receipts
    assert (r.provider, r.status, r.reference, r.provider_message_id) == (
        "alphasms", Status.DELIVERED, REF, None)  # `id` is ambiguous beside a ref: unused
    assert (r.raw_status, r.error_code, r.detail) == ("3 Delivered", None, None)
    assert r.occurred_at == dt.datetime(2024, 10, 12, 9, 30, 5)
    assert r.dedupe_key == f"hook|{REF}||3 Delivered|2024-10-12T12:30:05+0300"


def test_json_hook_in_the_json_vocabulary_carries_the_gateway_id() -> None:
    body = json.dumps(json_status("84523377", "UNDELIVERABLE", AT)).encode()
    [r] = provider().parse_callback(hook(body)).receipts
    assert (r.status, r.provider_message_id, r.reference, r.raw_status, r.error_code) == (
        Status.UNDELIVERED, "84523377", REF, "UNDELIVERABLE", "UNDELIVERABLE")
    assert r.detail == "sms" and r.occurred_at == dt.datetime(2024, 10, 12, 9, 30, 5)


def test_form_hook_and_get_hook_give_the_same_report() -> None:
    fields = http_status("84523377", 2, AT)
    form = "&".join(f"{k}={v.replace('+', '%2B')}" for k, v in fields.items()).encode()
    p = provider()
    [by_form] = p.parse_callback(hook(form, content_type="application/x-www-form-urlencoded")
                                 ).receipts
    [by_get] = p.parse_callback(hook(method="GET", **fields)).receipts
    assert by_form == by_get
    assert (by_get.status, by_get.raw_status) == (Status.SENT, "2 Sent")


def test_query_appended_with_a_second_question_mark() -> None:
    # GET …/tok?ref=m…?id=84523377&code=99&status=Error in the number
    request = hook(method="GET", ref=f"{REF}?id=84523377", code="99",
                   status="Error in the number")
    parsed = provider().parse_callback(request)
    [r] = parsed.receipts
    assert (r.reference, r.status, r.error_code) == (REF, Status.REJECTED, "99")
    assert parsed.notes == ["hook parameters appended with a second '?'"]


def test_published_json_status_answer_as_a_hook_body() -> None:
    body = sample("alphasms-json-status-response-1.json")
    [with_ref] = provider().parse_callback(hook(body)).receipts
    assert (with_ref.status, with_ref.reference, with_ref.provider_message_id) == (
        Status.DELIVERED, REF, None)
    assert (with_ref.raw_status, with_ref.detail) == ("READ", "viber")
    # An account-level hook URL has no ref: the id is then the only key there is.
    [no_ref] = provider().parse_callback(hook(body, ref=None)).receipts
    assert (no_ref.reference, no_ref.provider_message_id) == (None, "10500")


def test_published_xml_status_answer_as_a_hook_body() -> None:
    body = sample("alphasms-xml-status-response-1.xml")
    parsed = provider().parse_callback(hook(body, content_type="text/xml"))
    assert parsed.errors == []
    first, second = parsed.receipts
    assert (first.provider_message_id, first.status, first.raw_status) == (
        "1234568", Status.DELIVERED, "102")
    assert first.occurred_at == dt.datetime(2024, 11, 11, 10, 0)
    assert (second.provider_message_id, second.status, second.occurred_at) == (
        "1234569", Status.ACCEPTED, None)
    # Two reports in one per-message hook: each has its own id, so the ref is given to neither.
    assert first.reference is None and second.reference is None


def test_json_list_of_reports() -> None:
    body = json.dumps([json_status("1", "SENT"), json_status("2", "DELIVERED")]).encode()
    receipts = provider().parse_callback(hook(body)).receipts
    assert [(r.provider_message_id, r.status, r.reference) for r in receipts] == [
        ("1", Status.SENT, None), ("2", Status.DELIVERED, None)]


def test_words_beat_numbers() -> None:
    body = json.dumps({"code": 200, "status": "DELIVERED"}).encode()
    [r] = provider().parse_callback(hook(body)).receipts
    assert (r.status, r.raw_status) == (Status.DELIVERED, "200 DELIVERED")


def test_unknown_status_is_kept_not_dropped() -> None:
    [r] = provider().parse_callback(hook(method="GET", status="PENDING_REVIEW")).receipts
    assert (r.status, r.raw_status, r.reference) == (Status.UNKNOWN, "PENDING_REVIEW", REF)
    assert r.detail == "status=PENDING_REVIEW" and r.error_code is None


@pytest.mark.parametrize(("request_", "error"), [
    (hook(method="GET"), "without a status field"),  # only the ref: nothing to record
    (hook(b'{"type": "sms"}'), "without a status field"),
    (hook(ref=None, status="DELIVERED"), "hook without ref or message id"),
    (hook(b"", ref=None), "hook without ref or message id"),
    (hook(b"{not json", content_type="application/json"), "body not understood"),
    (hook(b"\xff\xfe junk"), "body not understood"),
    (hook(b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><msg>&e;</msg>'),
     "body not understood"),
    (hook(b"<msg sms_id='1'>102"), "body not understood"),
    (hook(b'"DELIVERED"'), "body not understood"),
])
def test_unusable_hooks_become_errors_not_exceptions(request_, error) -> None:
    parsed = provider().parse_callback(request_)
    assert parsed.receipts == []
    assert any(error in e for e in parsed.errors), parsed.errors


def test_unreadable_body_still_uses_the_query() -> None:
    parsed = provider().parse_callback(hook(b"{oops", status="DELIVERED"))
    assert [r.status for r in parsed.receipts] == [Status.DELIVERED]
    assert parsed.errors and "body not understood" in parsed.errors[0]


def test_malformed_ref_is_ignored() -> None:
    parsed = provider().parse_callback(hook(ref="x" * 40, msg_id="7", status="SENT"))
    [r] = parsed.receipts
    assert (r.reference, r.provider_message_id) == (None, "7")
    assert "malformed ref" in parsed.errors[0]


def test_dedupe_keys() -> None:
    p = provider()

    def key(body: dict, **kw: str) -> str | None:
        [r] = p.parse_callback(hook(json.dumps(body).encode(), **kw)).receipts
        return r.dedupe_key

    delivered = json_status("5", "DELIVERED", AT)
    same_as_form = "&".join(f"{k}={v}" for k, v in delivered.items()).encode()
    [by_form] = p.parse_callback(hook(same_as_form)).receipts
    assert key(delivered) == key(delivered) == by_form.dedupe_key  # a retry, however sent
    assert key(delivered) != key(json_status("5", "EXPIRED", AT))
    assert key(delivered) != key(json_status("5", "DELIVERED", AT + dt.timedelta(seconds=1)))
    assert key(delivered) != key(delivered, ref="m999")
    huge = {"status": "X" * 300}
    assert len(key(huge)) <= 200


# -- polling -------------------------------------------------------------------------------------


def target(gateway_id: str | None) -> PollTarget:
    return PollTarget(message_id=1, reference=REF, provider_message_id=gateway_id,
                      to="+380501234567")


def test_poll_reads_the_stored_status(alpha) -> None:
    p = provider(base_url=alpha.url)
    gateway_id = p.send(outbound(p)).provider_message_id
    alpha.set_status(gateway_id, 3, AT)
    answer = p.poll([target(gateway_id)])
    request = alpha.requests[-1]
    # alphasms-http-status-request-1.txt: key, command=receive, id.
    seed = {k: v[0] for k, v in parse_qs(urlsplit(
        sample("alphasms-http-status-request-1.txt").decode().strip()).query).items()}
    assert set(request.fields) == {*seed, "version"}
    assert (request["command"], request["id"], request["key"]) == ("receive", gateway_id,
                                                                   "APIKEY")
    [r] = answer.receipts
    assert (r.status, r.provider_message_id, r.raw_status, r.reference) == (
        Status.DELIVERED, gateway_id, "3 Delivered", None)
    assert r.occurred_at == dt.datetime(2024, 10, 12, 9, 30, 5)
    assert answer.raw == "status:Delivered code:3 status_time:2024-10-12T12:30:05+0300"
    again = p.poll([target(gateway_id)]).receipts[0]
    assert again.dedupe_key == r.dedupe_key  # an unchanged status is no new event


def test_poll_published_answer_and_an_sdk_fixture(alpha) -> None:
    p = provider(base_url=alpha.url)
    alpha.script_receive(
        Reply.raw(sample("alphasms-http-status-response-1.txt")),
        # Net::SMS::AlphaSMS's test answer: one pair per line, a localized text, code 95.
        Reply.raw("status:Оператор не поддерживается\ncode:95\n"
                  "status_time:2011-11-15T17:12:33+0200\n".encode()),
        Reply.raw(b"status:Sending code:1 status_time:2024/10/12 08:00:00"),
    )
    published, localized, sending = (p.poll([target("123")]).receipts[0] for _ in range(3))
    assert (published.status, published.raw_status, published.occurred_at) == (
        Status.DELIVERED, "3 Delivered", None)
    assert (localized.status, localized.raw_status) == (Status.UNKNOWN,
                                                        "95 Оператор не поддерживается")
    assert localized.detail == "Оператор не поддерживается"
    assert localized.occurred_at == dt.datetime(2011, 11, 15, 15, 12, 33)
    assert sending.status == Status.ACCEPTED  # http.php code 1 Sending: AlphaSMS holds it


def test_poll_of_every_documented_code(alpha) -> None:
    p = provider(base_url=alpha.url)
    gateway_id = p.send(outbound(p)).provider_message_id
    for code, status in HTTP_CODES.items():
        alpha.set_status(gateway_id, int(code))
        [r] = p.poll([target(gateway_id)]).receipts
        assert r.status == status
        assert r.error_code == (code if status in (
            Status.UNDELIVERED, Status.EXPIRED, Status.REJECTED, Status.FAILED) else None)


def test_poll_leaves_out_unknown_ids_and_ids_never_given(alpha) -> None:
    p = provider(base_url=alpha.url)
    answer = p.poll([target("999")])
    assert (answer.receipts, answer.errors, answer.raw) == ([], [], f"errors:{NOT_FOUND}")
    answer = p.poll([target(None)])
    assert answer.receipts == [] and REF in answer.errors[0]
    assert [r.command for r in alpha.requests] == ["receive"]


@pytest.mark.parametrize("reply", [Reply.http_error(500), Reply.error("Wrong login/password"),
                                   Reply.raw(b"", 403)])
def test_poll_failures_raise_poll_error(alpha, reply) -> None:
    alpha.script_receive(reply)
    with pytest.raises(PollError):
        provider(base_url=alpha.url).poll([target("1")])


def test_poll_unreachable_raises_poll_error() -> None:
    with AlphaSmsStandIn() as gone:
        url = gone.url
    with pytest.raises(PollError, match="unreachable"):
        provider(base_url=url).poll([target("1")])


# -- json.php: several messages per request ----------------------------------------------------


def test_json_send_request_as_documented(alpha) -> None:
    """PROTOCOLS.md §4.3: "POST {API_URL}/api/json.php, header Content-Type: application/json
    ... Body: {"auth":"KEY","data":[{…},{…}]} — several messages per call. An SMS item has:
    type:"sms", id (number, "unique message identifier in the client system"), phone (number),
    sms_signature (sender), sms_message, sms_lifetime (seconds; min 3600, max 259200 ...),
    hook". The default API: no `api` setting."""
    p = provider(base_url=alpha.url)
    assert p.SEND_BATCH > 1 and p.json_url.endswith("/api/json.php")
    outcomes = p.send_batch([
        outbound(p, message_id=7, validity=dt.timedelta(minutes=2880)),
        outbound(p, to="+380671112233", text="second", message_id=8,
                 validity=dt.timedelta(minutes=1)),  # below the minimum lifetime
        outbound(p, text="third", message_id=9, validity=dt.timedelta(days=30)),
    ])
    [request] = alpha.json_requests
    assert request["content_type"].startswith("application/json")
    body = request["body"]
    assert body["auth"] == "APIKEY"
    assert body["data"][0] == {
        "type": "sms", "id": 7, "phone": 380501234567, "sms_signature": "test",
        "sms_message": "text", "sms_lifetime": 172800,
        "hook": f"{BASE}/callbacks/alphasms/tok?ref={REF}"}
    assert [i["sms_lifetime"] for i in body["data"]] == [172800, 3600, 259200]
    assert [o.provider_message_id for o in outcomes] == ["84523377", "84523378", "84523379"]


def test_json_answers_are_read_per_item_and_per_request() -> None:
    """PROTOCOLS.md §4.3: "Success: {"success":true,"data":[{"success":true,"data":{"id":100500,
    "msg_id":123456789,"data":1,"parts":1}}]}. Whole-request error: {"success":false,"error":
    "Access denied"}. Per-item error: {"success":true,"data":[{"success":false,"error":"Error in
    Alpha-name","data":{"id":100500}}]}. → Check both levels." """
    p = provider(api="json")
    ok = b'{"success":true,"data":[{"success":true,"data":{"id":1,"msg_id":55,"data":1,"parts":1}}'
    ok += b',{"success":false,"error":"Error in Alpha-name","data":{"id":2}}]}'
    first, second, missing = p.read_batch_answer(200, ok, ok.decode(), [1, 2, 3])
    assert first.provider_message_id == "55"
    assert (second.status, second.permanent, second.provider_side) == (
        Status.REJECTED, True, False)  # the sender name: the message's fault, as for http.php
    assert missing.outcome_unknown  # the request went through; no word of this one
    denied = sample("alphasms-json-send-response-accessdenied-1.json")
    refused = p.read_batch_answer(200, denied, denied.decode(), [1, 2])
    assert all(e.provider_side and not e.outcome_unknown for e in refused)
    alpha_name = sample("alphasms-json-send-response-alphaname-error-1.json")
    [item_error] = p.read_batch_answer(200, alpha_name, alpha_name.decode(), [100500])
    assert item_error.status == Status.REJECTED
    html = b"<html>maintenance</html>"
    assert all(o.outcome_unknown for o in p.read_batch_answer(200, html, "", [1, 2]))
    assert all(not o.outcome_unknown and not o.permanent
               for o in p.read_batch_answer(503, html, "", [1, 2]))


def test_json_api_needs_the_api_key() -> None:
    with pytest.raises(ConfigError, match="api_key"):
        provider(api="json", api_key=None, login="me", password="secret")
    with pytest.raises(ConfigError, match="api"):
        provider(api="xml")


# -- plain words for the dashboard ---------------------------------------------------------------

NOT_YET = "received by AlphaSMS and being sent (not with the operator yet)"
DELIVERED = "delivered to the handset"
UNDELIVERABLE = "the operator could not deliver it"
EXPIRED = "validity ran out before it could be delivered"
BAD_NUMBER = "the recipient's number is not valid"
BAD_NAME = "the sender name (alpha name) is wrong or not registered for this account"

# (a raw status or error code as it is stored, what the overview and message page show).
EXPLAINED = [
    # JSON API statuses (references/message_statuses.md), as hooks and json.php report them
    ("ACCEPTED", "marked read on the subscriber's behalf by the operator's customer service"),
    ("DELETED", "deleted at AlphaSMS; it will not be delivered"),
    ("DELIVERED", DELIVERED),
    ("EXPIRED", EXPIRED),
    ("FILTERED", "blocked by a filter (text or recipient); not sent"),
    ("INVALID DESTINATION ADDRESS", BAD_NUMBER),
    ("INVALID SOURCE ADDRESS", "the sender name is not valid"),
    ("NO ROUTE", "AlphaSMS has no route to the recipient's operator"),
    ("PARTIALLY DELIVERED", "partially delivered: not every part of the message arrived"),
    ("QUEUED", "in line for sending at AlphaSMS"),
    ("READ", "read by the recipient (Viber)"),
    ("REJECTED", "rejected by the operator's delivery interface"),
    ("REPLIED", "the recipient replied (Viber two-way)"),
    ("ROUTING", "AlphaSMS is choosing a route for it"),
    ("SIM FULL", "the recipient's SIM card memory is full"),
    ("UNDELIVERABLE", UNDELIVERABLE),
    ("UNKNOWN", "the operator reported no clear outcome"),
    # spelled as a hook may spell them
    ("Undeliverable", UNDELIVERABLE), ("no_route", "AlphaSMS has no route to the recipient's "
                                                   "operator"),
    ("Out-of-touch", "subscriber out of touch (unreachable) until validity ran out"),
    ("Sim full", "the recipient's SIM card memory is full"), (" expired ", EXPIRED),
    ("invalid_destination_address", BAD_NUMBER),
    # http.php `command=receive` codes (docs/api/http/status.md), alone and as a poll stores them
    ("0", "pending at AlphaSMS, not sent yet"), ("1", NOT_YET),
    ("2", "sent to the operator; a delivery report may follow"), ("3", DELIVERED),
    ("5", "subscriber out of touch (unreachable) until validity ran out"),
    ("10", "deleted at AlphaSMS before it was sent (a scheduled message canceled)"),
    ("50", "partially delivered: not every part of the message arrived"),
    ("96", "the network failed while delivering it"),
    ("99", "error in the number, or not in service"),
    ("116", "read by the recipient (Viber)"),
    ("0 Pending", "pending at AlphaSMS, not sent yet"), ("1 Sending", "being sent by AlphaSMS"),
    ("2 Sent", "sent to the operator; a delivery report may follow"), ("3 Delivered", DELIVERED),
    ("5 Out of touch", "subscriber out of touch (unreachable) until validity ran out"),
    ("10 Deleted", "deleted at AlphaSMS; it will not be delivered"),
    ("50 Partially delivered", "partially delivered: not every part of the message arrived"),
    ("96 Network failure during SMS delivery", "the network failed while delivering it"),
    ("99 Error in the number", "error in the number: it is not a valid recipient"),
    ("99 Number not in service", "the number is not in service"),
    ("116 Read (Viber only)", "read by the recipient (Viber)"),
    ("Pending", "pending at AlphaSMS, not sent yet"),
    ("Sent", "sent to the operator; a delivery report may follow"),
    ("Out of touch", "subscriber out of touch (unreachable) until validity ran out"),
    ("Network failure during SMS delivery", "the network failed while delivering it"),
    ("Error in the number", "error in the number: it is not a valid recipient"),
    ("Number not in service", "the number is not in service"),
    ("Read (Viber only)", "read by the recipient (Viber)"),
    ("3 Доставлено", DELIVERED),  # a localized text: the code says it
    ("200 DELIVERED", DELIVERED),  # a hook's HTTP-style code beside the word: the word says it
    # XML API message status codes and names (message_status_codes.md)
    ("100", "scheduled at AlphaSMS for a later send (SCHEDULED)"),
    ("101", "sent to the operator, on its way to the handset (ENROUTE)"),
    ("102", "delivered to the handset (DELIVERED)"),
    ("103", "validity ran out before it could be delivered (EXPIRED)"),
    ("104", "deleted at AlphaSMS; it will not be delivered (DELETED)"),
    ("105", "the operator could not deliver it (UNDELIVERABLE)"),
    ("106", "marked read on the subscriber's behalf by the operator's customer service "
            "(ACCEPTED)"),
    ("107", "the operator reported no clear outcome (UNKNOWN)"),
    ("108", "rejected by the operator's delivery interface (REJECTED)"),
    ("109", "discarded by AlphaSMS, never sent (DISCARDED)"),
    ("110", "being sent by AlphaSMS (SENDING)"),
    ("111", "the recipient's operator is not supported; not billed (NOT_SUPPORTED)"),
    ("112", "the operator (Lifecell, Ukraine) does not accept this sender name "
            "(WRONG_ALPHANAME)"),
    ("113", "the operator (Lifecell, Ukraine) returned it: wrong sender name "
            "(WRONG_ALPHANAME_RETURNED)"),
    ("SCHEDULED", "scheduled at AlphaSMS for a later send (SCHEDULED)"),
    ("ENROUTE", "sent to the operator, on its way to the handset (ENROUTE)"),
    ("DISCARDED", "discarded by AlphaSMS, never sent (DISCARDED)"),
    ("SENDING", "being sent by AlphaSMS"),
    ("NOT_SUPPORTED", "the recipient's operator is not supported; not billed (NOT_SUPPORTED)"),
    ("WRONG_ALPHANAME", "the operator (Lifecell, Ukraine) does not accept this sender name "
                        "(WRONG_ALPHANAME)"),
    ("WRONG_ALPHANAME_RETURNED", "the operator (Lifecell, Ukraine) returned it: wrong sender "
                                 "name (WRONG_ALPHANAME_RETURNED)"),
    # XML API errors: message level, and request level where the same number means more
    ("200", "unknown error at AlphaSMS (ERR_UNKNOWN)"),
    ("201", "AlphaSMS refused the message id (ERR_ID); for a whole request: a format error"),
    ("202", "the sender name was refused (ERR_SENDER); for a whole request: authorization "
            "failed (check api_key)"),
    ("203", "the recipient's number is not valid (ERR_RECIPIENT)"),
    ("204", "the text is empty or too long (ERR_LENGTH)"),
    ("205", "the AlphaSMS user account is disabled"),
    ("206", "billing problem on the AlphaSMS account, e.g. not enough money (ERR_BILLING)"),
    ("207", "a limit of the AlphaSMS account was exceeded (ERR_OVERLIMIT)"),
    ("208", "this message id was already used on the account (ERR_DUPLICATE)"),
    ("209", "the API is disabled on the AlphaSMS account"),
    ("210", "AlphaSMS does not accept requests from this IP address"),
    ("211", "AlphaSMS could not delete the message (ERR_DELETE)"),
    ("212", "too many requests: AlphaSMS throttled us, so it is sent again later"),
    ("ERR_UNKNOWN", "unknown error at AlphaSMS (ERR_UNKNOWN)"),
    ("ERR_ID", "AlphaSMS refused the message id (ERR_ID)"),
    ("ERR_SENDER", "the sender name was refused (ERR_SENDER)"),
    ("ERR_RECIPIENT", "the recipient's number is not valid (ERR_RECIPIENT)"),
    ("ERR_LENGTH", "the text is empty or too long (ERR_LENGTH)"),
    ("ERR_BILLING", "billing problem on the AlphaSMS account, e.g. not enough money "
                    "(ERR_BILLING)"),
    ("ERR_OVERLIMIT", "a limit of the AlphaSMS account was exceeded (ERR_OVERLIMIT)"),
    ("ERR_DUPLICATE", "this message id was already used on the account (ERR_DUPLICATE)"),
    ("ERR_DELETE", "AlphaSMS could not delete the message (ERR_DELETE)"),
    # send errors, as their text is stored for the error code
    (WRONG_LOGIN, "AlphaSMS refused our credentials: check api_key, or login and password"),
    ("Unknown command", "AlphaSMS did not understand the request (unknown command): an "
                        "integration fault, so the message fails over"),
    ("Access denied", "json.php refused the API key (access denied): check api_key"),
    (BAD_SENDER, BAD_NAME),
    (BAD_RECIPIENT, BAD_NUMBER),
    (f"{BAD_RECIPIENT}; {BAD_SENDER}", f"{BAD_NUMBER}; {BAD_NAME}"),  # several errors: lines
    # this module's own codes for answers that leave the outcome open
    ("UNREADABLE", "AlphaSMS's answer could not be read; it may have taken the message, so it "
                   "is not sent again"),
    ("NO_ITEM", "json.php answered without this message; it may have taken it, so it is not "
                "sent again"),
    ("NO_MSG_ID", "json.php accepted it without a message id; it is not sent again"),
]


@pytest.mark.parametrize(("value", "words"), EXPLAINED)
def test_every_documented_status_and_error_is_explained(value: str, words: str) -> None:
    """PROTOCOLS.md §4.5, JSON statuses (references/message_statuses.md): "ACCEPTED | accepted
    state (manually read on behalf of subscriber by customer service) ... DELETED | deleted ...
    DELIVERED | delivered ... EXPIRED | validity expired ... FILTERED | blocked by filter ...
    INVALID DESTINATION ADDRESS | invalid recipient ... INVALID SOURCE ADDRESS | invalid sender
    ... NO ROUTE | routing issue ... PARTIALLY DELIVERED | not delivered completely ... QUEUED |
    in line for sending ... READ | read (Viber) ... REJECTED | rejected by a delivery interface
    ... REPLIED | answered (Viber 2-way) ... ROUTING | route being selected ... SIM FULL | SIM
    memory full ... UNDELIVERABLE | undeliverable ... UNKNOWN | unknown".

    §4.5, http.php codes: "0 Pending, 1 Sending, 2 Sent, 3 Delivered, 5 Out of touch (subscriber
    unreachable), 10 Deleted, 50 Partially delivered, 96 Network failure during SMS delivery,
    99 Error in the number / Number not in service, 116 Read (Viber only)".

    §4.5, XML status codes: "1 received, 100 SCHEDULED, 101 ENROUTE, 102 DELIVERED, 103 EXPIRED,
    104 DELETED, 105 UNDELIVERABLE, 106 ACCEPTED, 107 UNKNOWN, 108 REJECTED, 109 DISCARDED,
    110 SENDING, 111 NOT_SUPPORTED (operator not supported, not billed), 112/113
    WRONG_ALPHANAME(_RETURNED) (Lifecell UA), 200 ERR_UNKNOWN, 201 ERR_ID, 202 ERR_SENDER,
    203 ERR_RECIPIENT, 204 ERR_LENGTH, 206 ERR_BILLING, 207 ERR_OVERLIMIT, 208 ERR_DUPLICATE (id
    already used), 211 ERR_DELETE. Request-level errors: 200 unknown, 201 format,
    202 authorization, 205 user disabled, 209 API disabled, 210 IP denied, 212 throttle. The
    same numbers mean different things at request level and message level."

    §4.2: "errors `errors:Wrong login/password`, `errors:Unknown command`"; §4.3: "Whole-request
    error: {"success":false,"error":"Access denied"}. Per-item error: ... "error":"Error in
    Alpha-name"". (And Net::SMS::AlphaSMS's missing recipient, as the stand-in answers it.)"""
    assert provider().explain(value) == words
    # Asking needs no configuration (credentials), as for every provider.
    assert AlphaSmsProvider.explain(AlphaSmsProvider.__new__(AlphaSmsProvider), value) == words


def test_the_table_covers_every_code_and_word_the_module_maps() -> None:
    """Each status the module maps, and each request-level error number (§4.5), is a row of
    EXPLAINED: nothing documented is left to show "—"."""
    rows = {" ".join(v.upper().replace("_", " ").replace("-", " ").split()) for v, _ in EXPLAINED}
    documented = {*HTTP_CODES, *XML_CODES, *STATUS_MAP, "205", "209", "210", "211", "212"}
    assert documented - rows == set()


@pytest.mark.parametrize("value", [
    "95", "95 Оператор не поддерживается",  # an SDK's code no document lists
    "PENDING_REVIEW", "Message could not be sent: internal error",  # texts not documented
    "Error 99 occurred",  # a number inside other text means nothing
    "HTTP_502", "UNREACHABLE", "", "   ", None,
])
def test_anything_unlisted_keeps_showing_the_raw_value(value) -> None:
    assert provider().explain(value) is None


@pytest.fixture
def alpha_app(database_url):
    config = make_config(database_url, providers={
        "fake": {}, "alphasms": {"api_key": "APIKEY", "sender": "ACME",
                                 "callback_token": "al-token"}})
    with running(config) as flask_app:
        yield flask_app


def test_message_page_and_overview_show_the_words(alpha_app) -> None:
    from test_dashboard import PASSWORD, login

    accounts.create_user("ana", PASSWORD, "viewer")
    message = sending.enqueue(sending.NewMessage(to="+380501234567", text="hi",
                                                 provider="alphasms"), source="test")
    sending.record_accepted(message, SendResult("84523377"))
    with write_tx():
        correlation.apply_receipt(Receipt(
            provider="alphasms", status=Status.UNDELIVERED, provider_message_id="84523377",
            raw_status="SIM FULL", error_code="SIM FULL", dedupe_key="84523377|SIM FULL"),
            source="test")
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=5)
    Message.create(reference="m-overview-1", provider="alphasms", recipient="+380501234567",
                   text="hi", status="rejected", status_rank=3,
                   status_order=order_key("rejected", now), status_at=now,
                   error_code=BAD_SENDER, submitted_at=now, created_at=now)
    client = alpha_app.test_client()
    login(client, "ana")
    page = client.get(f"/messages/{message.id}").get_data(as_text=True)
    sim_full = escape("the recipient's SIM card memory is full")
    assert f"SIM FULL</span> — {sim_full}" in page  # the provider status and the error
    assert page.count(f"SIM FULL</span> — {sim_full}") == 2
    overview = client.get("/overview").get_data(as_text=True)
    rows = re.findall(r'<tr class="error"><td[^>]*>(\w+)</td>.*?<a [^>]*>([^<]+)</a></td>\s*'
                      r"<td[^>]*>([^<]*)</td>", overview, re.S)
    assert ("alphasms", "SIM FULL", sim_full) in rows
    assert ("alphasms", BAD_SENDER, escape(BAD_NAME)) in rows
