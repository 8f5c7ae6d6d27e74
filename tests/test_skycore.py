"""Skycore parsing: every published postback shape, and the send answer classification."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tracker.providers.base import CallbackRequest, SendError
from tracker.providers.skycore import SkycoreProvider, protocol_status
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
