"""The JSON API: keys, validation before any provider call, the message and its events."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracker.models import Message


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_requires_a_valid_key(client, api_key) -> None:
    for headers in ({}, {"Authorization": "Bearer dlr_wrong"}, {"Authorization": api_key}):
        response = client.post("/api/v1/messages", json={"to": "+15551234888", "text": "x"},
                               headers=headers)
        assert response.status_code == 401
        assert response.json["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert Message.select().count() == 0


@pytest.mark.parametrize("written", [
    "+1 555 123 4888", "0015551234888", "+1 (555) 123-4888", "15551234888", "+1-555-123-4888",
])
def test_phone_numbers_in_any_format_normalize(client, api_key, written) -> None:
    response = client.post("/api/v1/messages", json={"to": written, "text": "hi"},
                           headers=auth(api_key))
    assert response.status_code == 202, response.json
    assert response.json["to"] == "+15551234888"


@pytest.mark.parametrize(("body", "field"), [
    ({"to": "12", "text": "hi"}, "to"),
    ({"to": "not a number", "text": "hi"}, "to"),
    ({"to": "+15551234888"}, "text"),
    ({"to": "+15551234888", "text": "  "}, "text"),
    ({"to": "+15551234888", "text": "hi", "provider": "nope"}, "provider"),
    ({"to": "+15551234888", "text": "hi", "send_at": "tomorrow"}, "send_at"),
    ({"to": "+15551234888", "text": "hi", "send_at": "2030-01-01T09:00:00"}, "send_at"),
    ({"to": "+15551234888", "text": "hi", "client_ref": "x" * 65}, "client_ref"),
    ({"to": "+15551234888", "text": "hi", "provider": ["skycore"]}, "provider"),
    ({"to": "+15551234888", "text": "hi", "send_at": "9999-12-31T23:59:59+00:00"}, "send_at"),
    ({"to": "+15551234888", "text": "hi", "send_at": "9999-12-31T23:59:59-05:00"}, "send_at"),
    ({"to": "+15551234888", "text": "hi", "send_at": "0001-01-01T00:00:00+05:00"}, "send_at"),
])
def test_invalid_requests_are_refused_with_the_field(client, api_key, body, field) -> None:
    response = client.post("/api/v1/messages", json=body, headers=auth(api_key))
    assert response.status_code == 400
    assert response.json["error"]["field"] == field and response.json["error"]["message"]
    assert Message.select().count() == 0


def test_not_json_is_400(client, api_key) -> None:
    response = client.post("/api/v1/messages", data="to=1", headers=auth(api_key),
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400 and response.json["error"]["code"] == "invalid_json"


def test_created_message_and_its_events(client, api_key) -> None:
    response = client.post("/api/v1/messages", headers=auth(api_key), json={
        "to": "+7 701 123 45 67", "text": "Сәлем", "from": "ACME", "provider": "skycore",
        "client_ref": "order-42"})
    assert response.status_code == 202
    created = response.json
    assert response.headers["Location"].endswith(f"/api/v1/messages/{created['id']}")
    assert created["status"] == "queued" and created["provider"] == "skycore"
    assert created["reference"].startswith("m") and created["provider_message_id"] is None
    # Nothing is inferred yet, and nothing has been tried: the status is the tracker's own.
    assert (created["status_inferred"], created["attempts"]) == (False, 0)
    for ident in (str(created["id"]), created["reference"]):
        fetched = client.get(f"/api/v1/messages/{ident}", headers=auth(api_key)).json
        assert fetched["id"] == created["id"] and fetched["text"] == "Сәлем"
        [event] = fetched["events"]
        assert (event["kind"], event["status"], event["applied"]) == ("created", "queued", True)
        assert set(event) >= {"status", "applied", "reason", "occurred_at", "received_at"}


def test_scheduled_message(client, api_key) -> None:
    response = client.post("/api/v1/messages", headers=auth(api_key), json={
        "to": "+15551234888", "text": "later", "send_at": "2099-01-01T09:00:00+02:00"})
    assert response.json["status"] == "scheduled"
    assert response.json["send_at"] == "2099-01-01T07:00:00.000Z"


def test_unknown_message_is_404(client, api_key) -> None:
    for ident in ("999999", "mdoesnotexist"):
        response = client.get(f"/api/v1/messages/{ident}", headers=auth(api_key))
        assert response.status_code == 404 and response.json["error"]["code"] == "not_found"


def test_wrong_method_is_json_405(client, api_key) -> None:
    response = client.put("/api/v1/messages", headers=auth(api_key))
    assert response.status_code == 405 and response.json["error"]["code"]


# -- batches ----------------------------------------------------------------------------------


def test_a_batch_is_queued_in_order_in_one_request(client, api_key) -> None:
    items = [{"to": f"+1 555 123 {i:04d}", "text": f"batch #{i}", "client_ref": f"c{i}"}
             for i in range(250)]
    items[7]["send_at"] = "2030-01-01T09:00:00Z"
    response = client.post("/api/v1/messages/batch", json={"messages": items},
                           headers=auth(api_key))
    assert response.status_code == 202, response.json
    got = response.json["messages"]
    assert [m["text"] for m in got] == [i["text"] for i in items]
    assert [m["to"] for m in got] == [f"+1555123{i:04d}" for i in range(250)]
    assert {m["status"] for m in got[:7] + got[8:]} == {"queued"}
    assert got[7]["status"] == "scheduled"
    assert len({m["reference"] for m in got}) == 250
    for item in (got[0], got[249]):  # each readable by its id, as the API stored it
        one = client.get(f"/api/v1/messages/{item['id']}", headers=auth(api_key)).json
        assert {k: one[k] for k in item} == item
        assert [e["kind"] for e in one["events"]] == ["created", "routed"]


def test_a_batch_with_an_invalid_message_queues_none_and_names_each(client, api_key) -> None:
    items = [{"to": "+15551234888", "text": "ok"}, {"to": "12", "text": "bad number"},
             "not an object", {"to": "+15551234888", "text": "x", "provider": "nope"}]
    response = client.post("/api/v1/messages/batch", json={"messages": items},
                           headers=auth(api_key))
    assert response.status_code == 400
    error = response.json["error"]
    assert error["code"] == "invalid_messages" and "none was queued" in error["message"]
    assert [(e["index"], e["field"]) for e in error["errors"]] == [
        (1, "to"), (2, None), (3, "provider")]
    assert Message.select().count() == 0


@pytest.mark.parametrize("body", [{}, {"messages": []}, {"messages": {"to": "+1"}}, [1, 2]])
def test_a_batch_that_is_not_a_list_of_messages_is_400(client, api_key, body) -> None:
    response = client.post("/api/v1/messages/batch", json=body, headers=auth(api_key))
    assert (response.status_code, response.json["error"]["code"]) == (400, "invalid_json")


def test_a_batch_over_the_limit_is_refused_whole(client, api_key) -> None:
    items = [{"to": "+15551234888", "text": "x"}] * 1001
    response = client.post("/api/v1/messages/batch", json={"messages": items},
                           headers=auth(api_key))
    assert (response.status_code, response.json["error"]["code"]) == (400, "too_many_messages")
    assert client.post("/api/v1/messages/batch", json={"messages": items[:2]}).status_code == 401
    assert Message.select().count() == 0


@pytest.mark.parametrize("path", ["/api/v1/messages", "/api/v1/messages/batch"])
@pytest.mark.parametrize("body", [b"[" * 60_000, b'{"to": ' * 5_000, b"\xff\xfe{",
                                  b'{"to": 1e999, "text": 12}'])
def test_hostile_json_is_a_400_not_a_500(client, api_key, path, body) -> None:
    response = client.post(path, data=body, content_type="application/json",
                           headers=auth(api_key))
    assert response.status_code == 400, response.status_code
    assert response.json["error"]["code"].startswith("invalid_")


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=10)
_messages = st.fixed_dictionaries({}, optional={
    "to": _values | st.sampled_from(["+15551234888", "87015550119", "+7 701 555 01 19"]),
    "text": _values, "from": _values, "provider": _values | st.sampled_from(["fake", "skycore"]),
    "client_ref": _values, "send_at": _values | st.sampled_from(
        ["2030-01-01T00:00:00Z", "9999-12-31T23:59:59-12:00", "2030-02-30T00:00:00Z"])})


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(message=_messages, batch=st.lists(_messages | _values, max_size=3))
def test_generated_json_is_never_a_server_error(client, api_key, message, batch) -> None:
    one = client.post("/api/v1/messages", json=message, headers=auth(api_key))
    many = client.post("/api/v1/messages/batch", json={"messages": batch}, headers=auth(api_key))
    assert one.status_code in (202, 400), (message, one.json)
    assert many.status_code in (202, 400), (batch, many.json)
