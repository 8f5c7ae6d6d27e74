"""The callbacks page: filterable list for everyone, replay (dry run first) for admins only."""

from __future__ import annotations

from typing import Any

from test_accounts import fresh_client
from test_dashboard import PASSWORD, csrf, login
from test_replay import BODY, stored_as_invalid

from tracker import accounts, sending
from tracker.models import Callback, Message
from tracker.providers.base import SendResult


def test_viewer_lists_and_filters_but_cannot_replay(app: Any, client: Any) -> None:
    accounts.create_user("ana", PASSWORD, "viewer")
    bad = stored_as_invalid(BODY)
    login(client, "ana")
    page = client.get("/callback-log").get_data(as_text=True)
    assert f'<td class="mono">{bad.id}</td>' in page and "invalid" in page
    assert 'type="checkbox"' not in page  # no replay controls for viewers
    none = client.get("/callback-log", query_string={"verdict": "applied"})
    assert "No callbacks match." in none.get_data(as_text=True)
    for name, value in (("verdict", "bogus"), ("verdict", "\x00"), ("provider", "nosuch\x00")):
        wrong = client.get("/callback-log", query_string={name: value})
        assert wrong.status_code == 400, (name, value)  # said so, never a 500 (Postgres: NUL)
        assert f"{name}: " in wrong.get_data(as_text=True)
    token = csrf(client, "/callback-log")
    refused = client.post("/callback-log/replay", data={"id": str(bad.id), "csrf_token": token,
                                                        "action": "apply"})
    assert refused.status_code == 403
    assert Callback.get_by_id(bad.id).verdict == "invalid"


def test_admin_sees_a_dry_run_diff_then_applies(app: Any) -> None:
    accounts.create_user("boss", PASSWORD, "admin")
    message = sending.enqueue(sending.NewMessage(to="+15551234888", text="hi",
                                                 provider="skycore"), source="test")
    sending.record_accepted(message, SendResult("R1"))
    bad = stored_as_invalid(BODY)  # a postback the parser of its day could not read
    admin = fresh_client(app)
    login(admin, "boss")
    token = csrf(admin, "/callback-log")
    dry = admin.post("/callback-log/replay", data={"id": str(bad.id), "csrf_token": token,
                                                   "action": "dry-run"})
    html = dry.get_data(as_text=True)
    assert dry.status_code == 200
    assert "Replay dry run: nothing written yet" in html
    assert "invalid → applied" in html
    assert f'<span class="mono">{message.reference}</span>: accepted → delivered' in html
    assert Message.get_by_id(message.id).status == "accepted"  # nothing written
    done = admin.post("/callback-log/replay", data={"id": str(bad.id), "csrf_token": token,
                                                    "action": "apply"})
    assert "Replayed" in done.get_data(as_text=True)
    assert Message.get_by_id(message.id).status == "delivered"
    assert Callback.get_by_id(bad.id).verdict == "applied"
    listed = admin.get("/callback-log").get_data(as_text=True)
    assert f'href="/messages/{message.id}"' in listed  # the callback links to its message
