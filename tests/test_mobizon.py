"""Mobizon: the send request and every answer form, the webhook and its sign, polling.

Sends and polls go over real HTTP to the loopback stand-in; the published samples (copied
verbatim into tests/samples/) are served or parsed as they are.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from standins.mobizon import MobizonStandIn, Reply, retry_of, webhook_event

from tracker.providers.base import (
    CallbackRequest,
    OutboundMessage,
    PollError,
    PollTarget,
    SendError,
)
from tracker.providers.mobizon import API_URL, MobizonProvider
from tracker.settings import ConfigError
from tracker.status import Status

SAMPLES = Path(__file__).resolve().parent / "samples"
KEY = "kz0123456789abcdef0123456789abcdef01234567"
TEXT = "Hi Jerry & co? 50% off + free/fast \\ shipping – today"  # noqa: RUF001 - en dash


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


@pytest.fixture
def mob() -> Any:
    with MobizonStandIn(api_key=KEY) as stand_in:
        yield stand_in


def provider(base_url: str = "http://127.0.0.1:9", **settings: Any) -> MobizonProvider:
    return MobizonProvider({"base_url": base_url, "api_key": KEY, **settings},
                           "http://127.0.0.1:8000")


def outbound(**fields: Any) -> OutboundMessage:
    values: dict[str, Any] = {"reference": "r1", "to": "+380737893456", "text": TEXT,
                              "validity": dt.timedelta(hours=2)}
    return OutboundMessage(**{**values, **fields})


def send_error(mob: MobizonStandIn, *replies: Reply, **settings: Any) -> SendError:
    mob.script(*replies)
    with pytest.raises(SendError) as caught:
        provider(mob.url, **settings).send(outbound())
    return caught.value


# -- settings ------------------------------------------------------------------------------------


def test_settings_defaults_and_required_key() -> None:
    config = MobizonProvider({"api_key": KEY}, "http://x").config
    assert config["base_url"] == API_URL == "https://api.mobizon.kz"
    assert config["sender"] is None and config["webhook_secret"] is None
    assert MobizonProvider.POLL_BATCH == 100
    assert {k for k, s in MobizonProvider.SETTINGS.items() if s.secret} == {
        "api_key", "callback_token", "webhook_secret"}
    with pytest.raises(ConfigError, match=r"providers\.mobizon\.api_key: required"):
        MobizonProvider({}, "http://x")
    with pytest.raises(ConfigError, match=r"providers\.mobizon\.shortcode: unknown"):
        MobizonProvider({"api_key": KEY, "shortcode": "1"}, "http://x")


def test_callback_url_needs_a_token() -> None:
    assert provider().callback_url("r1") is None
    assert provider(callback_token="tok").callback_url("r1") == (
        "http://127.0.0.1:8000/callbacks/mobizon/tok")


# -- the send request ----------------------------------------------------------------------------


def test_send_request_field_by_field(mob) -> None:
    result = provider(mob.url + "/", sender="Shop").send(outbound(sender="Promo"))
    [request] = mob.requests
    assert (request.http_method, request.path.split("?")[0]) == (
        "POST", "/service/message/sendSmsMessage")
    assert request.query == {"output": "json", "api": "v1", "apiKey": KEY}
    assert request.content_type == "application/x-www-form-urlencoded"
    assert request.fields == {"recipient": "380737893456", "text": TEXT, "from": "Promo",
                              "params[validity]": "120"}
    # form encoding: a space is '+', a literal '+' is %2B (the docs' quote_plus), brackets kept
    assert b"text=Hi+Jerry+%26+co%3F+50%25+off+%2B+free%2Ffast+%5C+shipping" in request.body
    assert b"params%5Bvalidity%5D=120" in request.body
    assert result.provider_message_id == "70000000001"
    assert json.loads(result.raw)["data"]["messageId"] == "70000000001"


def test_sender_falls_back_to_the_setting_then_to_the_account_default(mob) -> None:
    provider(mob.url, sender="Shop").send(outbound())
    provider(mob.url).send(outbound())
    first, second = mob.requests
    assert first.fields["from"] == "Shop"
    assert "from" not in second.fields


@pytest.mark.parametrize(("validity", "sent"), [
    (dt.timedelta(minutes=30), "60"),  # below the documented 60-1440: raised to 1 h
    (dt.timedelta(minutes=61, seconds=59), "61"),
    (dt.timedelta(days=2), "1440"),  # the common default (2880 min) is more than Mobizon keeps
    (None, None),
])
def test_validity_is_sent_in_minutes_within_the_documented_range(mob, validity, sent) -> None:
    provider(mob.url).send(outbound(validity=validity))
    assert mob.requests[0].fields.get("params[validity]") == sent


def test_number_goes_out_as_digits_only(mob) -> None:
    provider(mob.url).send(outbound(to="+77001234567"))
    assert mob.requests[0].fields["recipient"] == "77001234567"


# -- send answers --------------------------------------------------------------------------------


def test_published_send_answer_with_string_ids(mob) -> None:
    mob.script(Reply.raw(sample("mobizon-send-response-1.json")))
    result = provider(mob.url).send(outbound())
    assert result.provider_message_id == "7000000XXXX"
    assert result.raw == sample("mobizon-send-response-1.json").decode()


@pytest.mark.parametrize("answer", [
    {"code": 0, "data": {"campaignId": 245455096, "messageId": 169275418, "status": 1},
     "message": ""},  # the docs' types: integers; status 1 = awaiting moderation
    {"code": "0", "data": {"campaignId": "245455096", "messageId": "169275418", "status": "2"},
     "message": ""},  # everything as strings
    {"code": 0, "data": {"messageId": 169275418.0}, "message": ""},
])
def test_message_id_is_a_string_whatever_its_json_type(mob, answer) -> None:
    mob.script(Reply.raw(json.dumps(answer).encode()))
    assert provider(mob.url).send(outbound()).provider_message_id == "169275418"


@pytest.mark.parametrize(("reply", "code", "status", "permanent", "provider_side"), [
    # validation of the message itself: rejected, never failed over
    (Reply.error(1, {"recipient": ["The number must contain digits only"]}), "1",
     Status.REJECTED, True, False),
    (Reply.error(1, {"text": ["required"]}), "1", Status.REJECTED, True, False),
    (Reply.error(1, {"recipient": ["bad"], "from": ["bad"]}), "1", Status.REJECTED, True, False),
    (Reply.error(1), "1", Status.REJECTED, True, False),  # no field named: the message's
    (Reply.error(11), "11", Status.REJECTED, True, False),
    (Reply.error(12), "12", Status.REJECTED, True, False),
    # validation of our own settings (sender ID, params): this account's problem
    (Reply.error(1, {"from": ["Sender ID is not registered"]}), "1", Status.FAILED, True, True),
    (Reply.error(1, {"params[validity]": ["out of range"]}), "1", Status.FAILED, True, True),
    # account, key, configuration: permanent here, another provider may do
    (Reply.error(8), "8", Status.FAILED, True, True),
    (Reply.error(9), "9", Status.FAILED, True, True),
    (Reply.error(14), "14", Status.FAILED, True, True),
    (Reply.error(4), "4", Status.FAILED, True, True),
    (Reply.error(5), "5", Status.FAILED, True, True),
    (Reply.error(6), "6", Status.FAILED, True, True),
    (Reply.error(2), "2", Status.FAILED, True, True),
    # the service's trouble: try again later
    (Reply.error(30), "30", Status.FAILED, False, True),
    (Reply.error(999), "999", Status.FAILED, False, True),
    (Reply.error(3), "3", Status.FAILED, False, True),
    (Reply.error(10), "10", Status.FAILED, False, True),
    (Reply.error(15), "15", Status.FAILED, False, True),
    (Reply.error(77), "77", Status.FAILED, True, True),  # undocumented
    (Reply.error(99), "99", Status.FAILED, True, True),  # bulk "nothing done"
    # the HTTP status is not part of the contract: the envelope decides
    (Reply.error(30, http_status=503), "30", Status.FAILED, False, True),
    (Reply.error(1, {"recipient": ["bad"]}, http_status=400), "1", Status.REJECTED, True, False),
    (Reply.raw(b'{"code":"30","data":[],"message":"Too many requests"}'), "30", Status.FAILED,
     False, True),
])
def test_send_errors_are_classified_by_api_code(mob, reply, code, status, permanent,
                                                provider_side) -> None:
    error = send_error(mob, reply)
    assert (error.code, error.status, error.permanent, error.provider_side) == (
        code, status, permanent, provider_side)
    assert error.outcome_unknown is False
    assert json.loads(error.raw)["code"] in (code, int(code))
    assert f"code {code}" in error.detail


@pytest.mark.parametrize("named", ["api.mobizon.ua", "https://api.mobizon.ua",
                                   "API.MOBIZON.UA/", {"domain": "api.mobizon.ua"}])
def test_wrong_api_server_moves_to_the_documented_region_host(mob, caplog, named) -> None:
    """PROTOCOLS.md §1.1: "A wrong domain returns API code 13, and `data` then holds the
    correct domain"; seen hosts api.mobizon.kz, .ua, .com.br, .gmbh, .uz. The request was
    refused, so it is asked again (retryable), there, and the operator is told to set base_url."""
    mob.script(Reply.error(13, named))
    p = provider(mob.url)
    with pytest.raises(SendError) as caught:
        p.send(outbound())
    error = caught.value
    assert (error.code, error.permanent, error.provider_side) == ("13", False, True)
    assert p.endpoint("message", "sendSmsMessage") == (
        "https://api.mobizon.ua/service/message/sendSmsMessage")
    assert 'base_url = "https://api.mobizon.ua"' in error.detail
    assert any("set providers.mobizon.base_url" in r.getMessage() for r in caplog.records)
    assert KEY not in error.detail and all(KEY not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("named", ["evil.example.com", "api.mobizon.ua.evil.example",
                                   "", None, ["api.mobizon.ua"]])
def test_wrong_api_server_naming_an_unknown_host_is_a_configuration_error(mob, named) -> None:
    """§1.1: only the documented region hosts; our key travels in the query string, so an
    answer naming any other host is never followed."""
    mob.script(Reply.error(13, named))
    p = provider(mob.url)
    with pytest.raises(SendError) as caught:
        p.send(outbound())
    error = caught.value
    assert (error.code, error.permanent, error.provider_side) == ("13", True, True)
    assert "not one of its documented region hosts" in error.detail
    assert p.endpoint("message", "sendSmsMessage").startswith(mob.url)


def test_a_poll_told_the_wrong_server_moves_too(mob) -> None:
    mob.script(Reply.error(13, "api.mobizon.uz"), method="getSMSStatus")
    p = provider(mob.url)
    with pytest.raises(PollError) as caught:
        p.poll([PollTarget(message_id=1, reference="r1", provider_message_id="7", to="+1")])
    assert "api.mobizon.uz" in str(caught.value)
    assert p.endpoint("message", "getSMSStatus").startswith("https://api.mobizon.uz/")


def test_a_campaign_awaiting_moderation_is_kept_on_the_timeline(mob) -> None:
    """PROTOCOLS.md §1.3: success `data.status` is 1 = campaign awaiting moderation, 2 = sent
    without moderation. Status 1 gives a `queued` receipt named MODERATION, explained."""
    mob.script(Reply(message_id="70000000042", status=1))
    result = provider(mob.url).send(outbound())
    [receipt] = result.receipts
    assert (receipt.status, receipt.raw_status, receipt.provider_message_id) == (
        Status.QUEUED, "MODERATION", "70000000042")
    assert "moderation" in provider().explain(receipt.raw_status)
    mob.script(Reply(message_id="70000000043", status=2))
    assert provider(mob.url).send(outbound()).receipts == []


def test_validation_errors_are_shown(mob) -> None:
    error = send_error(mob, Reply.error(1, {"recipient": ["Invalid phone number"]}))
    assert "Invalid phone number" in error.detail and "validation" in error.detail


def test_a_wrong_key_is_refused_by_the_stand_in_as_mobizon_does(mob) -> None:
    with pytest.raises(SendError) as caught:
        MobizonProvider({"base_url": mob.url, "api_key": "wrong"}, "http://x").send(outbound())
    assert (caught.value.code, caught.value.permanent, caught.value.provider_side) == (
        "8", True, True)


@pytest.mark.parametrize("body", [
    b'{"code":0,"data":{"campaignId":"1","status":2},"message":""}',
    b'{"code":0,"data":[],"message":""}',
    b'{"code":100,"data":"task-123","message":""}',  # a background task: no message id
])
def test_accepted_without_a_message_id_is_an_unknown_outcome(mob, body) -> None:
    error = send_error(mob, Reply.raw(body))
    assert (error.permanent, error.provider_side, error.outcome_unknown) == (False, True, True)


@pytest.mark.parametrize(("reply", "code", "permanent", "unknown"), [
    (Reply.http_error(502), "HTTP_502", False, False),
    (Reply.http_error(500, b"oops"), "HTTP_500", False, False),
    (Reply.http_error(429, b"slow down"), "HTTP_429", False, False),
    (Reply.http_error(404, b"<html>Not Found</html>"), "HTTP_404", True, False),
    (Reply.raw(b"<html>OK</html>"), "HTTP_200", False, True),  # it may have been sent
    (Reply.raw(b'{"data":{}}'), "HTTP_200", False, True),  # JSON, but no envelope
])
def test_answers_without_the_envelope(mob, reply, code, permanent, unknown) -> None:
    error = send_error(mob, reply)
    assert (error.code, error.permanent, error.provider_side, error.outcome_unknown) == (
        code, permanent, True, unknown)


def test_unreachable_and_timed_out(mob) -> None:
    mobizon = provider(mob.url)
    mobizon.timeout = httpx.Timeout(0.3)
    mob.script(Reply.slow(2.0))
    with pytest.raises(SendError) as slow:
        mobizon.send(outbound())
    assert (slow.value.outcome_unknown, slow.value.provider_side) == (True, True)
    url = mob.url
    mob.stop()
    with pytest.raises(SendError) as down:
        provider(url).send(outbound())
    assert (down.value.code, down.value.permanent, down.value.outcome_unknown) == (
        "UNREACHABLE", False, False)


# -- the webhook ---------------------------------------------------------------------------------


def parse(mobizon: MobizonProvider, body: bytes, content_type: str = "application/json"):
    return mobizon.parse_callback(CallbackRequest("POST", content_type, {}, body))


def request(body: bytes) -> CallbackRequest:
    return CallbackRequest("POST", "application/json", {}, body)


def test_published_webhook_sample() -> None:
    parsed = parse(provider(), sample("mobizon-webhook-sms-delivery-report-1.json"))
    assert parsed.errors == [] and parsed.notes == []
    [receipt] = parsed.receipts
    assert receipt.provider == "mobizon"
    assert receipt.provider_message_id == "169275418"  # an int on the wire
    assert (receipt.status, receipt.raw_status, receipt.error_code, receipt.detail) == (
        Status.DELIVERED, "DELIVRD", None, None)
    assert receipt.occurred_at == dt.datetime(2026, 1, 15, 11, 42, 8)  # statusUpdateTs, UTC
    assert receipt.reference is None
    assert receipt.dedupe_key == "event:1:26"


@pytest.mark.parametrize(("raw", "status", "error_code"), [
    ("NEW", Status.ACCEPTED, None),
    ("ENQUEUD", Status.ACCEPTED, None),
    ("ACCEPTD", Status.SENT, None),
    ("PDLIVRD", Status.SENT, None),
    ("DELIVRD", Status.DELIVERED, None),
    ("UNDELIV", Status.UNDELIVERED, "UNDELIV"),
    ("REJECTD", Status.REJECTED, "REJECTD"),
    ("EXPIRED", Status.EXPIRED, "EXPIRED"),
    ("DELETED", Status.UNDELIVERED, "DELETED"),
    ("SOMENEW", Status.UNKNOWN, "SOMENEW"),
    (" delivrd ", Status.DELIVERED, None),
])
def test_every_documented_status(raw, status, error_code) -> None:
    """PROTOCOLS.md §1.6 (`_other/smsStatus.md`): NEW, ENQUEUD, ACCEPTD, PDLIVRD, DELIVRD,
    UNDELIV, REJECTD, EXPIRED, DELETED, each mapped and explained in words; "anything else:
    unknown (keep raw)", and no made-up explanation for it."""
    body = json.dumps(webhook_event("169275418", raw)).encode()
    [receipt] = parse(provider(), body).receipts
    assert (receipt.status, receipt.raw_status, receipt.error_code) == (
        status, raw.strip().upper(), error_code)
    explained = provider().explain(receipt.raw_status)
    assert (explained is None) == (status == Status.UNKNOWN), explained
    if status in (Status.REJECTED, Status.EXPIRED):
        assert receipt.detail


def test_string_ids_and_int_ids_give_the_same_receipt() -> None:
    as_int = webhook_event(169275418, "DELIVRD", event_id=7, created=dt.datetime(2026, 1, 2))
    as_str = webhook_event("169275418", "DELIVRD", event_id=7, created=dt.datetime(2026, 1, 2),
                           as_strings=True)
    as_str["eventId"], as_str["webhookId"] = "7", "1"
    assert isinstance(as_int["data"]["messageId"], int)
    assert isinstance(as_str["data"]["messageId"], str)
    first = parse(provider(), json.dumps(as_int).encode()).receipts
    second = parse(provider(), json.dumps(as_str).encode()).receipts
    assert first == second and first[0].provider_message_id == "169275418"


def test_dedupe_keys() -> None:
    mobizon = provider()
    event = webhook_event("5", "DELIVRD", event_id=26, secret="s")

    def key(e: dict[str, Any]) -> str | None:
        return parse(mobizon, json.dumps(e).encode()).receipts[0].dedupe_key

    # a retry is the same report: same eventId, attempt counts up
    assert key(retry_of(event, "s")) == key(event) == "event:1:26"
    # another event, another webhook: different reports
    assert key({**event, "eventId": 27}) == "event:1:27"
    assert key({**event, "webhookId": 2}) == "event:2:26"
    # without eventId (or webhookId): message id + status (+ its time)
    bare = {k: v for k, v in event.items() if k != "eventId"}
    undelivered = {**bare, "data": {**bare["data"], "status": "UNDELIV"}}
    assert key(bare) == f"5|DELIVRD|{event['data']['statusUpdateTs']}"
    assert key(undelivered) != key(bare)
    assert key({k: v for k, v in event.items() if k != "webhookId"}) == "event:26"


@pytest.mark.parametrize("event_type", ["form-submission", "form-contact-confirmation",
                                        "form-contact-unsubscribe"])
def test_form_events_are_ignored(event_type) -> None:
    parsed = parse(provider(), json.dumps(webhook_event("5", event_type=event_type)).encode())
    assert parsed.receipts == [] and parsed.errors == []
    assert event_type in parsed.notes[0]


def test_event_without_event_type_is_still_read() -> None:
    event = webhook_event("5", "UNDELIV")
    del event["eventType"]
    assert [r.status for r in parse(provider(), json.dumps(event).encode()).receipts] == [
        Status.UNDELIVERED]


@pytest.mark.parametrize("body", [
    b"", b"not json", b"[1, 2]", b"null", b"\xff\xfe\x00", b"<xml><status>DELIVRD</status></xml>",
    b"eventId=26&data=x",  # the undocumented raw format
    b'{"eventType": "sms-delivery-report"}',
    b'{"eventType": "sms-delivery-report", "data": "DELIVRD"}',
    b'{"data": {"status": "DELIVRD"}}',
    b'{"data": {"messageId": 5}}',
    b'{"data": {"messageId": true, "status": "DELIVRD"}}',
    b'{"data": {"messageId": 5, "status": 3}}',
    b"[" * 60000 + b"]" * 60000,  # nesting deeper than the JSON parser's recursion limit
])
def test_unreadable_bodies_become_errors_not_exceptions(body) -> None:
    parsed = parse(provider(), body)
    assert parsed.receipts == [] and parsed.errors
    assert provider(webhook_secret="s").verify(request(body)) is not None


def test_bad_status_update_time_keeps_the_receipt() -> None:
    event = webhook_event("5", "DELIVRD")
    event["data"]["statusUpdateTs"] = "yesterday"
    [receipt] = parse(provider(), json.dumps(event).encode()).receipts
    assert receipt.status == Status.DELIVERED and receipt.occurred_at is None


# -- the webhook sign ----------------------------------------------------------------------------

DOC_SAMPLE = "mobizon-webhook-sms-delivery-report-1.json"
VECTOR_1 = "5cdebbb611d765bad163d765e8637830b6fd4060"  # 26|1|2026-01-15 11:42:28|secret123
VECTOR_2 = "a80090cf6edc623e7f4f68a36aa30de403e7766a"  # 99|2|2026-02-01 00:00:00|topsecret


def signed_sample(sign: str = VECTOR_1, **changes: Any) -> bytes:
    """The doc sample re-signed with "secret123" (PROTOCOLS.md's ...-2-signed-secret123)."""
    event = json.loads(sample(DOC_SAMPLE))
    event.update(sign=sign, **changes)
    return json.dumps(event, indent=2).encode()


def test_without_a_secret_nothing_is_checked() -> None:
    mobizon = provider()
    for body in (sample(DOC_SAMPLE), b"not json", b"{}"):
        assert mobizon.verify(request(body)) is None


def test_vector_1_the_doc_sample_signed_with_secret123() -> None:
    mobizon = provider(webhook_secret="secret123")
    assert mobizon.verify(request(signed_sample())) is None
    assert mobizon.verify(request(signed_sample(VECTOR_1.upper()))) is None
    # the published sample was signed with another, unknown secret
    assert mobizon.verify(request(sample(DOC_SAMPLE))) == "sign does not match"
    assert provider(webhook_secret="secret124").verify(request(signed_sample())) == (
        "sign does not match")


def test_vector_2_from_mobizon_net() -> None:
    event = {"eventId": 99, "eventType": "sms-delivery-report",
             "eventCreateTs": "2026-02-01 00:00:00", "webhookId": 3, "attempt": 2,
             "data": {"messageId": 1, "status": "DELIVRD"}, "sign": VECTOR_2}
    mobizon = provider(webhook_secret="topsecret")
    assert mobizon.verify(request(json.dumps(event).encode())) is None
    as_strings = {**event, "eventId": "99", "attempt": "2"}
    assert mobizon.verify(request(json.dumps(as_strings).encode())) is None
    assert mobizon.verify(request(json.dumps({**event, "attempt": 3}).encode())) == (
        "sign does not match")


@pytest.mark.parametrize("changes", [
    {"eventId": 27}, {"attempt": 2}, {"eventCreateTs": "2026-01-15 11:42:29"},
    {"eventCreateTs": "2026-01-15T11:42:28"},  # same instant, other text: the raw text counts
    {"sign": VECTOR_1[:-1] + "1"}, {"sign": VECTOR_1[:20]}, {"sign": "é" * 40},
])
def test_tampered_signed_fields_fail(changes) -> None:
    assert provider(webhook_secret="secret123").verify(request(signed_sample(**changes))) == (
        "sign does not match")


def test_tampered_data_is_not_covered_by_the_sign() -> None:
    """Documented limitation: `data` is not signed, so this cannot be caught (PROTOCOLS §1.4)."""
    event = json.loads(signed_sample())
    event["data"]["status"] = "UNDELIV"
    assert provider(webhook_secret="secret123").verify(request(json.dumps(event).encode())) is None


@pytest.mark.parametrize(("body", "reason"), [
    (sample(DOC_SAMPLE).replace(b'"sign"', b'"sig"'), "sign missing"),
    (signed_sample(sign=""), "sign missing"),
    (signed_sample(sign=None), "sign missing"),
    (b"not json", "not a JSON object"),
    (b'["x"]', "not a JSON object"),
    (signed_sample(eventId=None), "cannot be checked"),
    (signed_sample(eventCreateTs=12), "cannot be checked"),
])
def test_unsignable_bodies_fail_with_a_reason(body, reason) -> None:
    result = provider(webhook_secret="secret123").verify(request(body))
    assert result is not None and reason in result


def test_stand_in_signs_as_documented() -> None:
    event = webhook_event("5", event_id=26, attempt=1, secret="secret123",
                          created=dt.datetime(2026, 1, 15, 11, 42, 28))
    assert event["sign"] == VECTOR_1
    assert "sign" not in webhook_event("5")


# -- polling -------------------------------------------------------------------------------------


def target(pmid: str | None, n: int = 1) -> PollTarget:
    return PollTarget(message_id=n, reference=f"r{n}", provider_message_id=pmid,
                      to="+380737893456")


def test_poll_reads_known_ids_and_leaves_out_unknown_ones(mob) -> None:
    mobizon = provider(mob.url)
    first = mobizon.send(outbound()).provider_message_id
    second = mobizon.send(outbound()).provider_message_id
    mob.set_status(first, "DELIVRD", dt.datetime(2026, 3, 1, 10, 0, 5))
    answer = mobizon.poll([target(first, 1), target(second, 2), target("999", 3),
                           target(None, 4)])
    [call] = mob.calls("getSMSStatus")
    assert call.path.split("?")[0] == "/service/message/getSMSStatus"
    assert call.query == {"output": "json", "api": "v1", "apiKey": KEY}
    assert call.fields == {"ids[0]": first, "ids[1]": second, "ids[2]": "999"}
    by_id = {r.provider_message_id: r for r in answer.receipts}
    assert sorted(by_id) == [first, second]
    assert (by_id[first].status, by_id[first].occurred_at) == (
        Status.DELIVERED, dt.datetime(2026, 3, 1, 10, 0, 5))
    assert (by_id[second].status, by_id[second].raw_status, by_id[second].occurred_at) == (
        Status.ACCEPTED, "NEW", None)  # not sent yet: statusUpdateTs is null
    assert answer.errors == ["r4: no provider message id to ask about"]
    assert json.loads(answer.raw)["code"] == 0


def test_published_poll_answer(mob) -> None:
    mob.script(Reply.raw(sample("mobizon-getsmsstatus-response-1.json")), method="getSMSStatus")
    answer = provider(mob.url).poll([target("70000000008")])
    [receipt] = answer.receipts
    assert (receipt.provider_message_id, receipt.status, receipt.raw_status) == (
        "70000000008", Status.SENT, "ACCEPTD")
    assert receipt.occurred_at == dt.datetime(2026, 6, 24, 23, 13, 16)
    assert receipt.dedupe_key == "70000000008|ACCEPTD|2026-06-24 23:13:16"
    assert answer.errors == []


def test_poll_twice_unchanged_is_the_same_report(mob) -> None:
    mobizon = provider(mob.url)
    pmid = mobizon.send(outbound()).provider_message_id
    mob.set_status(pmid, "ACCEPTD", dt.datetime(2026, 3, 1, 10, 0, 0))
    first = mobizon.poll([target(pmid)]).receipts[0].dedupe_key
    again = mobizon.poll([target(pmid)]).receipts[0].dedupe_key
    mob.set_status(pmid, "DELIVRD", dt.datetime(2026, 3, 1, 10, 0, 9))
    later = mobizon.poll([target(pmid)]).receipts[0].dedupe_key
    assert first == again != later


def test_poll_asks_at_most_100_ids_per_request(mob) -> None:
    mobizon = provider(mob.url)
    ids = [mobizon.send(outbound()).provider_message_id for _ in range(3)]
    targets = [target(str(n), n) for n in range(1, 248)] + [target(i) for i in ids]
    answer = mobizon.poll(targets)
    calls = mob.calls("getSMSStatus")
    assert [len(c.ids()) for c in calls] == [100, 100, 50]
    assert calls[2].ids()[-3:] == ids
    assert sorted(r.provider_message_id for r in answer.receipts) == ids
    assert len(answer.raw.splitlines()) == 3


def test_poll_with_nothing_to_ask_makes_no_request(mob) -> None:
    answer = provider(mob.url).poll([target(None)])
    assert answer.receipts == [] and mob.requests == []


@pytest.mark.parametrize("body", [
    b'{"code":0,"data":[],"message":""}',
    b'{"code":2,"data":[],"message":"Record not found"}',
])
def test_poll_of_unknown_ids_is_an_empty_answer(mob, body) -> None:
    mob.script(Reply.raw(body), method="getSMSStatus")
    answer = provider(mob.url).poll([target("1")])
    assert answer.receipts == [] and answer.errors == []


def test_poll_answer_quirks(mob) -> None:
    body = {"code": "0", "message": "", "data": {
        "0": {"id": 11, "status": "UNDELIV", "segNum": 2, "startSendTs": "2026-01-01 00:00:00",
              "statusUpdateTs": "2026-01-01 00:01:00"},
        "1": "garbage", "2": {"id": 12}}}
    mob.script(Reply.raw(json.dumps(body).encode()), method="getSMSStatus")
    answer = provider(mob.url).poll([target("11"), target("12")])
    assert [(r.provider_message_id, r.status) for r in answer.receipts] == [
        ("11", Status.UNDELIVERED)]
    assert len(answer.errors) == 2


@pytest.mark.parametrize("reply", [
    Reply.error(8), Reply.error(30), Reply.error(999), Reply.error(12),
    Reply.http_error(502), Reply.raw(b"<html/>"),
    Reply.raw(b'{"code":0,"data":"x","message":""}'),
])
def test_poll_failures_raise_poll_error(mob, reply) -> None:
    mob.script(reply, method="getSMSStatus")
    with pytest.raises(PollError):
        provider(mob.url).poll([target("1")])


def test_poll_unreachable_raises_poll_error(mob) -> None:
    url = mob.url
    mob.stop()
    with pytest.raises(PollError, match="unreachable"):
        provider(url).poll([target("1")])


def test_stand_in_refuses_more_than_100_ids(mob) -> None:
    fields = {f"ids[{n}]": str(n) for n in range(101)}
    answer = httpx.post(f"{mob.url}/service/message/getsmsstatus",
                        params={"output": "json", "api": "v1", "apiKey": KEY}, data=fields)
    assert answer.json()["code"] == 12


# -- the sign through the callback endpoint, stored and replayed --------------------------------


def test_a_bad_sign_is_stored_unauthorized_not_applied_and_replayable(database_url: str) -> None:
    from conftest import build_app, make_config

    from tracker import replay
    from tracker.db import db
    from tracker.models import Callback, Event

    mobizon = {"api_key": KEY, "callback_token": "mz-token", "webhook_secret": "secret123"}
    app = build_app(make_config(database_url, providers={"mobizon": mobizon},
                                default_provider="mobizon"))
    client = app.test_client()
    path = "/callbacks/mobizon/mz-token"
    forged = signed_sample(VECTOR_1[:-1] + "1")
    answers = [client.post(path, data=body, content_type="application/json")
               for body in (forged, signed_sample())]
    assert [(a.status_code, a.get_data(as_text=True).strip()) for a in answers] == [
        (200, "OK unauthorized"), (200, "OK orphan")]  # no message with that id here
    with db.connection_context():
        stored = list(Callback.select().order_by(Callback.id))
        assert [(c.verdict, c.detail) for c in stored] == [
            ("unauthorized", "sign does not match"), ("orphan", None)]
        assert bytes(stored[0].body) == forged  # kept verbatim
        assert Event.select().count() == 1  # only the signed one became a receipt
        # Replay checks the sign again: still forged, still unauthorized, nothing applied.
        again = replay.replay(stored[0], app.extensions["providers"], dry_run=False)
        assert (again.new_verdict, Event.select().count()) == ("unauthorized", 1)


def test_moderation_is_an_event_on_the_message_timeline(mob, database_url: str) -> None:
    """§1.3 status 1 through the sending core: the message is accepted (Mobizon holds it) and
    its timeline carries the MODERATION event with its explanation."""
    from conftest import make_config, running

    from tracker import sending
    from tracker.models import Event, Message

    config = make_config(database_url, providers={"mobizon": {"api_key": KEY,
                                                              "base_url": mob.url}},
                         default_provider="mobizon")
    with running(config) as app:
        p = app.extensions["providers"]["mobizon"]
        message = sending.enqueue(sending.NewMessage(to="+380737893456", text="hi",
                                                     provider="mobizon"), source="api")
        mob.script(Reply(message_id="70000000044", status=1))
        sending.record_accepted(message, p.send(outbound()), p)
        message = Message.get_by_id(message.id)
        events = [(e.kind, e.raw_status) for e in Event.select().where(
            Event.message == message.id).order_by(Event.id)]
        assert message.status == Status.ACCEPTED
        assert ("receipt", "MODERATION") in events
        assert "moderation" in p.explain("MODERATION")
