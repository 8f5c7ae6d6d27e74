"""Admin actions on the message page: cancel a scheduled message, resend a failed one as a
new message linked to the old; viewers see neither button and are refused."""

from __future__ import annotations

import datetime as dt
from typing import Any

from test_accounts import fresh_client
from test_dashboard import PASSWORD, csrf, login

from tracker import accounts, sending
from tracker.models import Event, Message, utcnow
from tracker.providers.base import SendError
from tracker.status import Status


def _failed() -> Message:
    message = sending.enqueue(sending.NewMessage(to="+15551234888", text="code 1234",
                                                 provider="fake", client_ref="o-1"),
                              source="test")
    sending.record_failure(message, SendError("no credit", permanent=True, code="E713"),
                           max_attempts=1, backoff_seconds=1)
    return Message.get_by_id(message.id)


def scheduled_message() -> Message:
    """A message due in two hours: an admin may still cancel it."""
    return sending.enqueue(sending.NewMessage(
        to="+15551234888", text="later", provider="fake",
        send_at=utcnow() + dt.timedelta(hours=2)), source="test")


def test_admin_resends_a_failed_message_linked_both_ways(app: Any) -> None:
    accounts.create_user("boss", PASSWORD, "admin")
    old = _failed()
    assert old.status == "failed"
    admin = fresh_client(app)
    login(admin, "boss")
    page = admin.get(f"/messages/{old.id}").get_data(as_text=True)
    assert "Resend as a new message" in page and "Cancel this message" not in page
    answer = admin.post(f"/messages/{old.id}/resend",
                        data={"csrf_token": csrf(admin, f"/messages/{old.id}")})
    [new] = Message.select().where(Message.resent_from == old.id)
    assert answer.headers["Location"].endswith(f"/messages/{new.id}")
    assert (new.recipient, new.text, new.client_ref, new.status) == (
        old.recipient, old.text, "o-1", "queued")
    assert Message.get_by_id(old.id).status == "failed"  # history untouched
    kinds = [e.kind for e in Event.select().where(Event.message == old.id)]
    assert kinds[-1] == "resent"
    new_page = admin.get(f"/messages/{new.id}").get_data(as_text=True)
    assert f'href="/messages/{old.id}">message #{old.id}</a>' in new_page
    # A delivered (or still pending) message is not resent.
    again = admin.post(f"/messages/{new.id}/resend",
                       data={"csrf_token": csrf(admin, f"/messages/{new.id}")})
    assert again.status_code == 302
    assert Message.select().where(Message.resent_from == new.id).count() == 0


def test_admin_cancels_a_scheduled_message(app: Any) -> None:
    accounts.create_user("boss", PASSWORD, "admin")
    message = scheduled_message()
    admin = fresh_client(app)
    login(admin, "boss")
    admin.post(f"/messages/{message.id}/cancel",
               data={"csrf_token": csrf(admin, f"/messages/{message.id}")})
    assert Message.get_by_id(message.id).status == Status.CANCELED
    page = admin.get(f"/messages/{message.id}").get_data(as_text=True)
    assert "Message canceled." in page


def test_viewers_cannot_cancel_or_resend(app: Any, client: Any) -> None:
    accounts.create_user("ana", PASSWORD, "viewer")
    old = _failed()
    login(client, "ana")
    page = client.get(f"/messages/{old.id}").get_data(as_text=True)
    assert "Resend as a new message" not in page
    token = csrf(client, f"/messages/{old.id}")
    for action in ("resend", "cancel"):
        answer = client.post(f"/messages/{old.id}/{action}", data={"csrf_token": token})
        assert answer.status_code == 403
    assert Message.select().where(Message.resent_from == old.id).count() == 0
