"""Generated callback bodies (hypothesis), posted to every provider's callback path: stored,
and never the verdict `error` (our failure) nor a 5xx. The hand-picked hostile bodies (recursion
depth, huge numbers, out-of-range dates, wrong JSON types, invalid UTF-8, XML attacks) are in the
shared endpoint suite, tests/test_provider_endpoints.py."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from conftest import SKYCORE, make_config, running
from flask import Flask

TOKENS = {"fake": "fake-token", "skycore": SKYCORE["callback_token"], "mobizon": "mz-token",
          "mobivate": "mv-token", "alphasms": "al-token"}


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
