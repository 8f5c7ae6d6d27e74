"""Hostile callback bodies, posted to every provider's callback path: stored, and never the
verdict `error` (our failure) nor a 5xx. Recursion depth, huge numbers, out-of-range dates,
wrong JSON types and invalid UTF-8 are the sender's problem: `invalid` (or `ignored`/`orphan`
when something in them still reads as a receipt), with the reason kept."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from conftest import SKYCORE, make_config, running
from flask import Flask

from tracker.models import Callback

TOKENS = {"fake": "fake-token", "skycore": SKYCORE["callback_token"], "mobizon": "mz-token",
          "mobivate": "mv-token", "alphasms": "al-token"}

HOSTILE: list[tuple[str, bytes, str]] = [
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
        "createTs": "9999-12-31T23:59:59-05:00", "status_time": "9999-12-31T23:59:59-05:00",
        "eventId": "e1", "data": {"messageId": "1", "status": "DELIVRD",
                                  "statusUpdateTs": "0001-01-01T00:00:00+05:00"}}).encode(),
     "application/json"),
    ("wrong-types", json.dumps({"id": [1], "status": {"x": 1}, "data": "text", "messageId": None,
                                "statusCode": [], "eventId": {}}).encode(), "application/json"),
    ("json-scalar", b"12", "application/json"),
    ("invalid-utf8", b'{"status": "\xff\xfe\xfd", "id": "\xc3"}', "application/json"),
    ("invalid-utf8-form", b"status=%ff%fe&id=%c3&xml=%ff", "application/x-www-form-urlencoded"),
    ("xml-out-of-range-date", b"<POSTBACK><ORIGIN>SMS_MT</ORIGIN><CODE>N202</CODE><TRACKINGID>T1"
     b"</TRACKINGID><TIMESTAMP>9999-12-31T23:59:59-05:00</TIMESTAMP></POSTBACK>", "text/xml"),
    ("xml-deep", b"<a>" * 5_000 + b"</a>" * 5_000, "text/xml"),
]


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    providers = {
        "fake": {"callback_token": TOKENS["fake"]},
        "skycore": dict(SKYCORE),
        "mobizon": {"api_key": "kz0123456789abcdef0123456789abcdef01234567",
                    "callback_token": TOKENS["mobizon"]},
        "mobivate": {"api_key": "mv-key", "base_url": "http://127.0.0.1:9", "sender": "ACME",
                     "callback_token": TOKENS["mobivate"]},
        "alphasms": {"api_key": "al-key", "sender": "ACME", "callback_token": TOKENS["alphasms"]},
    }
    with running(make_config(database_url, providers=providers,
                             default_provider="fake")) as flask_app:
        yield flask_app


@pytest.mark.parametrize("provider", sorted(TOKENS))
def test_hostile_bodies_are_stored_and_never_an_error(app: Flask, provider: str) -> None:
    client = app.test_client()
    for name, body, content_type in HOSTILE:
        before = Callback.select().count()
        response = client.post(f"/callbacks/{provider}/{TOKENS[provider]}?ref=m1&id=%C2%B2",
                               data=body, content_type=content_type)
        assert response.status_code == 200, (name, response.status_code)
        verdict = response.get_data(as_text=True).split()[-1]
        assert verdict != "error", (name, verdict)
        stored = Callback.select().order_by(Callback.id.desc()).first()
        assert Callback.select().count() == before + 1 and stored.verdict == verdict, name


# -- generated input ---------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_SETTINGS = settings(max_examples=60, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["id", "status", "statusCode", "messageId", "eventId", "data", "code",
                         "msg_id", "timestamp", "clientReference", "deliveryMessageId",
                         "status_time", "TRACKINGID", "x"]) | st.text(max_size=8),
        inner, max_size=6),
    max_leaves=20)
_bodies = st.one_of(
    st.binary(max_size=300).map(lambda b: (b, "application/octet-stream")),
    _json_values.map(lambda v: (json.dumps(v).encode(), "application/json")),
    st.text(max_size=200).map(lambda t: (t.encode("utf-8", "surrogatepass"), "text/xml")),
    st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=5).map(
        lambda d: ("&".join(f"{k}={v}" for k, v in d.items()).encode("utf-8", "surrogatepass"),
                   "application/x-www-form-urlencoded")),
)


@pytest.mark.parametrize("provider", sorted(TOKENS))
@_SETTINGS
@given(body=_bodies, query=st.text(max_size=30))
def test_generated_bodies_are_never_an_error(app: Flask, provider: str,
                                             body: tuple[bytes, str], query: str) -> None:
    data, content_type = body
    response = app.test_client().post(f"/callbacks/{provider}/{TOKENS[provider]}",
                                      query_string={"ref": query, "id": query},
                                      data=data, content_type=content_type)
    assert response.status_code == 200
    assert response.get_data(as_text=True).split()[-1] != "error"
