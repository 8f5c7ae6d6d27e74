"""The JSON API: keys, validation before any provider call, the message and its events."""

from __future__ import annotations

import pytest

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
    for ident in (str(created["id"]), created["reference"]):
        fetched = client.get(f"/api/v1/messages/{ident}", headers=auth(api_key)).json
        assert fetched["id"] == created["id"] and fetched["text"] == "Сәлем"
        [event] = fetched["events"]
        assert event["kind"] == "created" and event["status"] == "queued"
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
