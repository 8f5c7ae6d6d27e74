"""Skycore parsing: every published postback shape (XML and v2 JSON), the send answer
classification, and the one-SMS text limit."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from standins.skycore import SkycoreStandIn

from tracker.providers.base import CallbackRequest, OutboundMessage, SendError
from tracker.providers.skycore import SkycoreProvider, protocol_status
from tracker.segments import segment
from tracker.status import Status

# Verbatim copies of shared/providers/samples/skycore-* (tests/samples/README.md).
SAMPLES = Path(__file__).resolve().parent / "samples"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


@pytest.fixture
def sky() -> SkycoreProvider:
    return SkycoreProvider({"api_key": "k", "shortcode": "60856", "callback_token": "t"},
                           "http://127.0.0.1:8000")


def parse(sky: SkycoreProvider, body: bytes, content_type: str = "text/xml"):
    return sky.parse_callback(CallbackRequest("POST", content_type, {}, body))


@pytest.mark.parametrize(("name", "status", "tracking", "raw", "occurred"), [
    ("skycore-notification-sent-1.xml", Status.SENT, "SMS_12345", "N201",
     dt.datetime(2011, 7, 26, 14, 22, 25, 262743)),
    ("skycore-notification-dlr-1.xml", Status.DELIVERED, "SMS_12345", "N201 P4:0",
     dt.datetime(2011, 7, 26, 14, 22, 25, 262743)),
    ("skycore-postback-n201-1.xml", Status.SENT, "U01TXzgwNjc4", "N201 Message Sent",
     dt.datetime(2013, 11, 5, 10, 41, 8)),
    ("skycore-postback-n202-1.xml", Status.DELIVERED, "U01TXzgwNjc4",
     "N202 Message Sent/Delivered", dt.datetime(2013, 11, 5, 10, 41, 15)),
])
def test_published_samples(sky, name, status, tracking, raw, occurred) -> None:
    parsed = parse(sky, sample(name))
    assert parsed.errors == []
    [receipt] = parsed.receipts
    assert (receipt.status, receipt.provider_message_id, receipt.raw_status) == (
        status, tracking, raw)
    assert receipt.occurred_at == occurred
    assert receipt.provider == "skycore" and receipt.dedupe_key


POSTBACK = (b"<POSTBACK><ORIGIN>SMS_MT</ORIGIN><CODE>%s</CODE><STATUS>%s</STATUS>"
            b"<TO>16503333058</TO><TRACKINGID>T1</TRACKINGID>%s"
            b"<TIMESTAMP>2013-11-05T05:41:15-05:00</TIMESTAMP></POSTBACK>")


@pytest.mark.parametrize(("code", "text", "status", "error"), [
    (b"N201", b"Message Sent", Status.SENT, None),
    (b"N202", b"Message Sent/Delivered", Status.DELIVERED, None),
    (b"E201", b"Message Failed", Status.FAILED, "E201"),
    (b"E202", b"Message Sent/Failed", Status.UNDELIVERED, "E202"),
    (b"E202", b"Message Sent/Expired", Status.EXPIRED, "E202"),
    (b"E202", b"Message Sent/Rejected", Status.REJECTED, "E202"),
    (b"E202", b"Message Sent/NotSupported", Status.REJECTED, "E202"),
    (b"N299", b"Something new", Status.UNKNOWN, None),
])
def test_postback_codes(sky, code, text, status, error) -> None:
    extra = b"<STATUSDETAILS>?smpp?deliver_sm=4&amp;</STATUSDETAILS>" if code == b"E202" else b""
    [receipt] = parse(sky, POSTBACK % (code, text, extra)).receipts
    assert receipt.status == status and receipt.error_code == error
    if extra:
        assert receipt.detail == "?smpp?deliver_sm=4&"


@pytest.mark.parametrize(("protocol", "code", "status"), [
    ("4", "0", Status.DELIVERED), ("4", "100", Status.REJECTED), ("4", "5", Status.UNDELIVERED),
    ("2", "4", Status.DELIVERED), ("2", "3", Status.SENT), ("2", "811", Status.EXPIRED),
    ("2", "2011", Status.EXPIRED), ("2", "565", Status.REJECTED), ("2", "1010", Status.FAILED),
    ("2", "508", Status.UNDELIVERED), ("3", "1", Status.DELIVERED), ("3", "16", Status.REJECTED),
    ("3", "8", Status.SENT), ("1", "92101", Status.FAILED), ("9", "0", Status.UNKNOWN),
    ("x", "0", Status.UNKNOWN),
    # Appendix B's other listed failures stay final ...
    ("2", "404", Status.UNDELIVERED), ("2", "810", Status.UNDELIVERED),
    ("2", "2019", Status.UNDELIVERED), ("4", "50", Status.UNDELIVERED),
    ("4", "250", Status.UNDELIVERED),
    # ... and what the tables do not list is unknown, never a guessed final status
    ("2", "6", Status.UNKNOWN), ("2", "700", Status.UNKNOWN), ("2", "3000", Status.UNKNOWN),
    ("4", "17", Status.UNKNOWN), ("4", "118", Status.UNKNOWN), ("4", "300", Status.UNKNOWN),
])
def test_protocol_tables(protocol, code, status) -> None:
    """PROTOCOLS.md §3.3, Appendix B "SMS Protocol code look up": protocol 2 success 0-5,
    unsuccessful 4xx, 507-514, 561-569, 810, 811, 815, 1000-1030, 2011, 2017, 2019, 2023;
    protocol 4 success 0, failures 1-16, 50, 99, 100-117, 200-299. Values outside the tables
    are `unknown` (the raw value is kept in the event), not a final `undelivered`."""
    assert protocol_status(protocol, code) == status


def test_case_and_whitespace_variants(sky) -> None:
    body = (b'<notification Id=" 7 " Created=" 2011-07-26 10:22:27.146582-04">'
            b"<origin> SMS_MT </origin><code> n201 </code><body>"
            b"<TrackingId>\n  SMS_9  \n</TrackingId>"
            b'<status protocol=" 2 " status=" 4 "/></body></notification>')
    [receipt] = parse(sky, body).receipts
    assert receipt.provider_message_id == "SMS_9"
    assert receipt.status == Status.DELIVERED
    assert receipt.occurred_at == dt.datetime(2011, 7, 26, 14, 22, 27, 146582)  # from CREATED


def test_batched_under_a_wrapper_and_as_form_field(sky) -> None:
    batch = (b"<POSTBACKS>" + sample("skycore-postback-n201-1.xml").split(b"?>", 1)[1]
             + b"<POSTBACK>" + sample("skycore-notification-dlr-1.xml") + b"</POSTBACK>"
             + b"</POSTBACKS>")
    for body, ctype in ((batch, "application/xml"),
                        (urlencode({"xml": batch}).encode(), "application/x-www-form-urlencoded")):
        parsed = parse(sky, body, ctype)
        assert parsed.errors == []
        assert [r.status for r in parsed.receipts] == [Status.SENT, Status.DELIVERED]


def test_malformed_published_example_is_recovered(sky) -> None:
    body = POSTBACK % (b"N202", b"Message Sent/Delivered", b"<FROM_MASK>ACME<FROM_MASK>")
    parsed = parse(sky, body)
    assert [r.status for r in parsed.receipts] == [Status.DELIVERED]
    assert parsed.notes and "repaired" in parsed.notes[0]


@pytest.mark.parametrize("body", [
    b"<POSTBACK><CODE>N202", b"not xml at all", b'{"json": true}', b"",
    b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><POSTBACK>&e;</POSTBACK>',
])
def test_unreadable_bodies_become_errors_not_exceptions(sky, body) -> None:
    parsed = parse(sky, body)
    assert parsed.receipts == [] and parsed.errors


def test_mo_and_mms_postbacks_are_ignored(sky) -> None:
    body = (b"<POSTBACK><ORIGIN>MMS_MT</ORIGIN><CODE>N102</CODE>"
            b"<TRACKINGID>M1</TRACKINGID></POSTBACK>")
    parsed = parse(sky, body)
    assert parsed.receipts == [] and parsed.errors == [] and parsed.notes


def test_postback_without_tracking_id_is_an_error(sky) -> None:
    parsed = parse(sky, b"<POSTBACK><ORIGIN>SMS_MT</ORIGIN><CODE>N202</CODE></POSTBACK>")
    assert parsed.receipts == [] and "TRACKINGID" in parsed.errors[0]


@pytest.mark.parametrize(("code", "permanent", "status"), [
    ("E110", True, Status.REJECTED), ("E712", True, Status.REJECTED),
    ("E628", True, Status.REJECTED), ("E713", True, Status.FAILED),
    ("E104", True, Status.FAILED), ("E106", False, Status.FAILED),
    ("E555", True, Status.FAILED),
])
def test_send_failures_are_classified(sky, code, permanent, status) -> None:
    answer = (f"<RESPONSE><STATUS>Failure</STATUS><ERRORCODE>{code}</ERRORCODE>"
              f"<ERRORINFO>info</ERRORINFO><TO>15551234888</TO></RESPONSE>").encode()
    with pytest.raises(SendError) as caught:
        sky._read_send_response(answer, answer.decode())
    assert (caught.value.permanent, caught.value.status, caught.value.code) == (
        permanent, status, code)


def test_send_success_reads_the_tracking_id(sky) -> None:
    answer = sample("skycore-send-response-success-1.xml")
    assert sky._read_send_response(answer, "").provider_message_id == "SMS_12345"


# -- v2 JSON postbacks (PROTOCOLS.md §3.3 Format C) --------------------------------------------


def v2(tracking: str = "U01TXzgwNjc4", code: str | None = "N201", status: str | None = None,
       timestamp: str | None = "2021-01-26T18:00:07.990498+00:00", **extra: Any) -> bytes:
    """A v2 JSON postback built from §3.3's key list (no v2 sample is stored)."""
    body: dict[str, Any] = {"origin": "SMS_MT", "code": code, "sent-as": "SMS",
                            "status": status if status is not None else V2_WORD.get(code or ""),
                            "from": "60856", "to": "16503333058", "tracking-id": tracking,
                            "operator-id": "0001470", "operator-name": "AT&T",
                            "timestamp": timestamp, **extra}
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


V2_WORD = {"N201": "Sent", "N202": "Delivered", "E201": "Failed", "E202": "Rejected"}


@pytest.mark.parametrize(("code", "word", "status", "error", "raw"), [
    ("N201", "Sent", Status.SENT, None, "N201 Sent"),
    ("N202", "Delivered", Status.DELIVERED, None, "N202 Delivered"),
    ("E201", "Failed", Status.FAILED, "E201", "E201 Failed"),
    ("E202", "Rejected", Status.REJECTED, "E202", "E202 Rejected"),
    # E202 in the v1 words, should an account mix them: read as for the XML form
    ("E202", "Message Sent/Expired", Status.EXPIRED, "E202", "E202 Message Sent/Expired"),
    ("E202", "Message Sent/Failed", Status.UNDELIVERED, "E202", "E202 Message Sent/Failed"),
    ("N299", "Something new", Status.UNKNOWN, None, "N299 Something new"),
])
def test_v2_json_postback_codes(sky, code, word, status, error, raw) -> None:
    """PROTOCOLS.md §3.3 Format C: "`POST content-type: application/json` with keys `origin`,
    `code`, `sent-as`, `status` (Sent/Delivered/Failed/Rejected), … `tracking-id`, …
    `timestamp`". §3.4: "postback N201 / v2 `Sent` → sent", "E201 / v2 `Failed` → failed",
    "N202 / v2 `Delivered` → delivered", "E202 "…/Rejected", "…/NotSupported", v2 `Rejected`
    → rejected"; E202 "Message Sent/Failed" → undelivered, "…/Expired" → expired."""
    parsed = parse(sky, v2("T1", code, word), "application/json")
    assert parsed.errors == []
    [receipt] = parsed.receipts
    assert (receipt.status, receipt.provider_message_id, receipt.raw_status,
            receipt.error_code) == (status, "T1", raw, error)
    assert receipt.occurred_at == dt.datetime(2021, 1, 26, 18, 0, 7, 990498)
    assert receipt.provider == "skycore"


@pytest.mark.parametrize(("word", "status"), [
    ("Sent", Status.SENT), ("Delivered", Status.DELIVERED), ("Failed", Status.FAILED),
    ("Rejected", Status.REJECTED), ("delivered", Status.DELIVERED), ("Queued", Status.UNKNOWN),
])
def test_v2_json_postback_without_code_is_read_by_its_status_word(sky, word, status) -> None:
    """PROTOCOLS.md §3.4: "postback N201 / v2 `Sent` → sent", "postback E201 / v2 `Failed` →
    failed", "postback N202 / v2 `Delivered` → delivered", "v2 `Rejected` → rejected": the v2
    word maps on its own when a postback carries no `code`; a word not in the table is
    unknown (raw kept), never a guess."""
    [receipt] = parse(sky, v2("T1", None, word), "application/json").receipts
    assert (receipt.status, receipt.raw_status) == (status, word)
    assert receipt.error_code == (None if status in (Status.SENT, Status.DELIVERED) else word)


def test_v2_json_dedupe_key_is_the_xml_forms(sky) -> None:
    """PROTOCOLS.md §3.2 (Appendix A): "`TRACKINGID` is … a "temporary" internal reference,
    yet postbacks carry it so they can be matched"; §3.3: Skycore retries a postback "every 5
    minutes up to a total of 5 times". A resent v2 postback has the same key (tracking id, raw
    status, provider time, as the XML forms' key); another status or another time does not."""
    first = parse(sky, v2("T1", "N202"), "application/json").receipts[0]
    resent = parse(sky, v2("T1", "N202"), "application/json").receipts[0]
    sent = parse(sky, v2("T1", "N201"), "application/json").receipts[0]
    later = parse(sky, v2("T1", "N202", timestamp="2021-01-27T18:00:07+00:00"),
                  "application/json").receipts[0]
    assert first.dedupe_key == resent.dedupe_key == (
        "T1|N202 Delivered|2021-01-26T18:00:07.990498+00:00")
    assert len({first.dedupe_key, sent.dedupe_key, later.dedupe_key}) == 3
    xml = parse(sky, POSTBACK % (b"N202", b"Message Sent/Delivered", b"")).receipts[0]
    assert xml.dedupe_key == "T1|N202 Message Sent/Delivered|2013-11-05T05:41:15-05:00"


def test_v2_json_array_is_read_item_by_item(sky) -> None:
    """PROTOCOLS.md §3.3: v2 postbacks are documented one per request ("Newer README /
    apidocs.skycore.com: "Postback notifications are forwarded to your server individually
    every second""), old Appendix D bulks them. An array is read all the same, item by item:
    each good item is a receipt, each bad one an error beside them."""
    body = b"[" + b",".join([v2("A", "N201"), b"12", v2("B", "N202"),
                             json.dumps({"code": "N202"}).encode()]) + b"]"
    parsed = parse(sky, body, "application/json")
    assert [(r.provider_message_id, r.status) for r in parsed.receipts] == [
        ("A", Status.SENT), ("B", Status.DELIVERED)]
    assert parsed.errors == ["v2 postback 1 is a JSON number, not an object",
                             "v2 postback 3 (N202) without tracking-id"]
    empty = parse(sky, b"[]", "application/json")
    assert (empty.receipts, empty.errors, empty.notes) == ([], [], ["empty JSON array"])


@pytest.mark.parametrize(("body", "why"), [
    (b"12", "a JSON number, not a postback object"),
    (b'"N202"', "a JSON string, not a postback object"),
    (b"null", "a JSON null, not a postback object"),
    (b'{"json": true}', "without tracking-id"),
    (json.dumps({"code": "N202", "status": "Delivered", "tracking-id": ""}).encode(),
     "without tracking-id"),
    (json.dumps({"code": "N202", "tracking-id": ["T1"]}).encode(), "without tracking-id"),
    (json.dumps({"code": "N202", "tracking-id": 1.5}).encode(), "without tracking-id"),
    (json.dumps({"tracking-id": "T1", "status": {"x": 1}}).encode(), "without code or status"),
    (b'{"code": "N202", "tracking-id": "T1"', "unreadable JSON"),
    (b'{"code": "N202", "tracking-id": "\xff\xfe"}', "unreadable JSON"),
    (b'{"code": "N202", "tracking-id": "T1", "n": ' + b"9" * 4400 + b"}", "unreadable JSON"),
    (b"[" * 60_000, "JSON nested too deeply"),
    (b'{"a":' * 5_000 + b"1" + b"}" * 5_000, "JSON nested too deeply"),
])
def test_v2_json_that_is_no_postback_is_an_error_not_an_exception(sky, body, why) -> None:
    """PROTOCOLS.md §3.3 Format C: a v2 postback is a JSON object whose `tracking-id` is the
    "Tracking ID generated in the API Response passed back in the postback to link API Request
    to Postback". Not an object, or no tracking id: an error (stored `invalid`, replayable);
    hostile nesting and numbers past Python's digit limit are errors too, never exceptions."""
    parsed = parse(sky, body, "application/json")
    assert parsed.receipts == []
    assert len(parsed.errors) == 1 and why in parsed.errors[0]


def test_v2_json_mo_and_mms_postbacks_are_ignored(sky) -> None:
    """PROTOCOLS.md §3.3: "MMS: N101, N102, E101, E102 … N211 SMS MO": not SMS MT delivery
    reports, so noted and ignored, as in the XML forms."""
    for body in (v2("smsmo09ea1b9215", "N211", "", origin="SMS_MO"),
                 v2("M1", "N102", "Message Sent/Delivered", origin="MMS_MT")):
        parsed = parse(sky, body, "application/json")
        assert parsed.receipts == [] and parsed.errors == [] and parsed.notes


def test_v2_json_is_told_from_xml_by_its_body(sky) -> None:
    """PROTOCOLS.md §3.3: v2 postbacks are "`POST content-type: application/json`", the XML
    forms come "as the raw body or a form field" on the same Postback URL. The body decides
    (an object or array is JSON, `<` is XML, whatever the header says); the header only for a
    body that opens with neither."""
    cases = [
        (v2("T1", "N202"), "text/plain"),
        (b"\xef\xbb\xbf  " + v2("T1", "N202"), "application/json; charset=utf-8"),
        (POSTBACK % (b"N202", b"Message Sent/Delivered", b""), "application/json"),
        (urlencode({"xml": POSTBACK % (b"N202", b"Message Sent/Delivered", b"")}).encode(),
         "application/x-www-form-urlencoded"),
    ]
    for body, ctype in cases:
        parsed = parse(sky, body, ctype)
        assert parsed.errors == [], (body[:20], ctype)
        assert [(r.provider_message_id, r.status) for r in parsed.receipts] == [
            ("T1", Status.DELIVERED)]
    assert "unreadable JSON" in parse(sky, b"N202", "application/json").errors[0]


def test_stand_in_v2_postbacks_parse(sky) -> None:
    """PROTOCOLS.md §3.3 Format C: what the stand-in posts as a v2 postback (and an array of
    them) is read as the documented codes say."""
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=dt.UTC)
    one = SkycoreStandIn.postback_v2("SMS_7", "N202", timestamp=when)
    both = SkycoreStandIn.batch_v2(SkycoreStandIn.postback_v2("SMS_7", "N201"), one)
    [receipt] = parse(sky, one, "application/json").receipts
    assert (receipt.status, receipt.raw_status, receipt.occurred_at) == (
        Status.DELIVERED, "N202 Delivered", dt.datetime(2026, 1, 2, 3, 4, 5, 600000))
    assert [r.status for r in parse(sky, both, "application/json").receipts] == [
        Status.SENT, Status.DELIVERED]


# -- one SMS only: GSM-7 units and UCS-2's 70 (PROTOCOLS.md §3.6) ------------------------------


@pytest.fixture
def sky_online() -> Iterator[tuple[SkycoreProvider, SkycoreStandIn]]:
    with SkycoreStandIn() as stand_in:
        yield SkycoreProvider({"api_key": "k", "shortcode": "60856", "callback_token": "t",
                               "base_url": stand_in.url}, "http://127.0.0.1:8000"), stand_in


CYRILLIC = "д"  # a character outside GSM 03.38: the text goes as UCS-2
EMOJI = "\U0001F600"  # outside the BMP: two UTF-16 code units
GSM_NON_ASCII = "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉÄÖÑÜ§¿äöñüà"  # 40 characters, none ASCII


@pytest.mark.parametrize(("text", "fits", "units"), [
    ("a" * 160, True, "160 GSM-7"),
    ("a" * 161, False, "161 GSM-7"),
    ("€" * 80, True, "160 GSM-7"),  # extension characters: ESC + char, 2 units each
    ("€" * 80 + "a", False, "161 GSM-7"),
    ("a" * 158 + "[", True, "160 GSM-7"),
    ("a" * 159 + "[", False, "161 GSM-7"),
    (GSM_NON_ASCII + "a" * 120, True, "160 GSM-7"),  # in GSM 03.38's basic table: 1 each
    (GSM_NON_ASCII + "a" * 121, False, "161 GSM-7"),
    (CYRILLIC * 70, True, "70 UCS-2"),
    (CYRILLIC * 71, False, "71 UCS-2"),  # 71 characters: far under 160, still two SMS
    ("a" * 69 + CYRILLIC, True, "70 UCS-2"),
    ("a" * 70 + CYRILLIC, False, "71 UCS-2"),
    (EMOJI * 35, True, "70 UCS-2"),
    (EMOJI * 35 + "a", False, "71 UCS-2"),
], ids=["160-ascii", "161-ascii", "80-euro", "80-euro+1", "158+bracket", "159+bracket",
        "160-gsm-non-ascii", "161-gsm-non-ascii", "70-cyrillic", "71-cyrillic",
        "69+cyrillic", "70+cyrillic", "35-emoji", "35-emoji+1"])
def test_text_must_fit_one_sms_in_its_encoding(sky_online, text, fits, units) -> None:
    """PROTOCOLS.md §3.6: "SMS message limited to 160 characters". "A text message
    limit of 160 characters is imposed to prevent the splitting of messages into multiple
    texts" → reject … longer text before sending. One SMS holds 160 GSM-7 septets (an
    extension character `^{}\\[~]|€` takes two) or 70 UCS-2 code units (tracker.segments), so
    that is the limit, not 160 Python characters. A longer text never reaches Skycore."""
    provider, stand_in = sky_online
    message = OutboundMessage(reference="r1", to="+15551234888", text=text)
    shape = segment(text)
    assert f"{shape.units} {shape.encoding}" == units
    if fits:
        assert provider.send(message).provider_message_id == "SMS_1"
        assert [r.fields["TEXT"] for r in stand_in.requests] == [text]
        return
    with pytest.raises(SendError) as caught:
        provider.send(message)
    error = caught.value
    assert (error.permanent, error.status, error.code, error.provider_side) == (
        True, Status.REJECTED, "TEXT_TOO_LONG", False)
    assert f"{units} units" in error.detail
    assert stand_in.requests == []


EXPLAINED = [
    # postback codes (§3.3) and send errors (§3.2), raw as stored
    ("N201 Message Sent", "sent to the carrier"), ("N202", "delivered to the handset"),
    ("E201", "could not send"), ("E202 Message Sent/Failed", "could not deliver"),
    ("E104", "authentication failed"), ("E106", "rate limit"), ("E110", "invalid receiver"),
    ("E713", "billing problem"), ("E999", "queue processing error"),
    # Appendix B, every listed protocol value or range (§3.3), as error codes and raw statuses
    ("P1:92100", "no route"), ("P1:92101", "no credits"), ("P1:92102", "overspending"),
    ("P1:92110", "no program ID"), ("P1:92111", "missing reference ID"),
    ("P2:0", "sent"), ("P2:1", "processing"), ("P2:2", "queued"), ("P2:3", "buffered"),
    ("N202 P2:4", "delivered"), ("P2:5", "transferred"), ("P2:404", "recipient not found"),
    ("P2:508", "absent subscriber"), ("P2:512", "carrier error"),
    ("P2:565", "blocked or not provisioned"), ("P2:810", "delivery failed"),
    ("P2:811", "expired by the carrier"), ("P2:815", "not acknowledged"),
    ("P2:1010", "system error"), ("P2:2011", "delivery expired"),
    ("P2:2017", "deleted by the carrier"), ("P2:2019", "undeliverable"),
    ("P2:2023", "user not found"), ("P3:1", "delivered"), ("P3:2", "delivery failed"),
    ("P3:4", "buffered"), ("P3:8", "submitted"), ("P3:16", "rejected by the SMSC"),
    ("N202 P4:0", "successfully executed"), ("P4:7", "account, consumer or capability"),
    ("P4:50", "partially delivered"), ("P4:99", "internal error"),
    ("P4:100", "invalid destination address"), ("P4:107", "alphanumeric originating"),
    ("P4:111", "invalid message length"), ("P4:113", "data coding"),
    ("P4:115", "an invalid field"), ("P4:250", "integration error"),
]


@pytest.mark.parametrize(("code", "words"), EXPLAINED)
def test_every_documented_code_is_explained(sky, code, words) -> None:
    """PROTOCOLS.md §3.2 (send errors), §3.3 (postback codes; Appendix B "SMS Protocol code look
    up" for every protocol): each in plain words on the message page and the overview."""
    assert words in (sky.explain(code) or ""), sky.explain(code)


@pytest.mark.parametrize("code", ["P2:6", "P2:700", "P4:118", "P9:1", "X123", "N999", ""])
def test_what_the_tables_do_not_list_is_shown_raw(sky, code) -> None:
    assert sky.explain(code) is None
