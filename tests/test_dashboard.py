"""The first dashboard: login, the messages list with filters and search, the message page."""

from __future__ import annotations

import re

import pytest

from tracker import accounts, sending
from tracker.models import Message
from tracker.providers.base import SendResult

PASSWORD = "correct horse battery"


@pytest.fixture
def staff(app) -> str:
    accounts.create_user("ana", PASSWORD, "viewer")
    return "ana"


def csrf(client, path: str) -> str:
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def login(client, username: str, password: str = PASSWORD):
    token = csrf(client, "/auth/login")
    return client.post("/auth/login", data={"username": username, "password": password,
                                            "csrf_token": token})


def test_pages_need_a_login(client) -> None:
    for path in ("/messages", "/messages/1"):
        response = client.get(path)
        assert response.status_code == 302 and "/auth/login" in response.headers["Location"]


def test_login_rejects_wrong_password_and_missing_csrf(client, staff) -> None:
    assert login(client, staff, "wrong password!").status_code == 401
    no_token = client.post("/auth/login", data={"username": staff, "password": PASSWORD})
    assert no_token.status_code == 400
    assert client.get("/messages").status_code == 302


def test_logout_revokes_the_old_cookie(client, staff) -> None:
    assert login(client, staff).status_code == 302
    cookie = client.get_cookie("session").value
    client.post("/auth/logout", data={"csrf_token": csrf(client, "/messages")})
    client.set_cookie("session", cookie)  # replay the cookie from before the logout
    assert client.get("/messages").status_code == 302


def test_list_filter_search_and_message_page(client, staff) -> None:
    def make(to: str, provider: str, tracking: str | None) -> Message:
        m = sending.enqueue(sending.NewMessage(to=to, text="<script>alert(1)</script>",
                                               provider=provider), source="test")
        if tracking:
            sending.record_accepted(m, SendResult(tracking))
        return Message.get_by_id(m.id)

    kz = make("+77011234567", "skycore", "SMS_777")
    us = make("+15551234888", "skycore", None)
    login(client, staff)
    listing = client.get("/messages").get_data(as_text=True)
    assert kz.reference in listing and us.reference in listing
    assert listing.index(us.reference) < listing.index(kz.reference)  # newest first
    for q in ("+7 701 123 45 67", "0077011234567", "77011234567", kz.reference, "SMS_777"):
        found = client.get("/messages", query_string={"q": q}).get_data(as_text=True)
        assert kz.reference in found and us.reference not in found, q
    queued = client.get("/messages", query_string={"status": "queued"}).get_data(as_text=True)
    assert us.reference in queued and kz.reference not in queued

    callback = client.post("/callbacks/skycore/sky-secret-token", content_type="text/xml",
                           data=b"<POSTBACK><ORIGIN>SMS_MT</ORIGIN><CODE>N202</CODE>"
                                b"<STATUS>Message Sent/Delivered</STATUS><TRACKINGID>SMS_777"
                                b"</TRACKINGID></POSTBACK>")
    assert callback.status_code == 200
    client.post("/callbacks/skycore/sky-secret-token", content_type="text/xml",
                data=b"<POSTBACK><ORIGIN>SMS_MT</ORIGIN><CODE>N201</CODE>"
                     b"<TRACKINGID>SMS_777</TRACKINGID></POSTBACK>")
    page = client.get(f"/messages/{kz.id}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    assert "<dt>Encoding</dt><dd>GSM-7, 1 segment</dd>" in html
    assert "Message Sent/Delivered" in html  # the raw callback behind the event
    assert "Why not applied: message is already final (delivered)" in html
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/messages/999999").status_code == 404
