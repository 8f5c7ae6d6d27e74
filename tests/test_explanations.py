"""Provider codes in plain words: each provider explains its documented codes, and the message
page shows the explanation beside the raw status and error of every event."""

from __future__ import annotations

from typing import Any

import pytest
from test_dashboard import PASSWORD, login

from tracker import accounts, correlation, sending
from tracker.db import write_tx
from tracker.providers import PROVIDERS
from tracker.providers.base import Receipt, SendResult
from tracker.status import Status


@pytest.mark.parametrize(("provider", "code", "words"), [
    ("skycore", "N202", "delivered to the handset (Message Sent/Delivered)"),
    ("skycore", "E713", "billing problem on the Skycore account"),
    ("mobizon", "REJECTD", "rejected by the operator (number, text or sender ID)"),
    ("mobizon", "30", "rate limit exceeded"),
    ("mobivate", "FAILED_NACK (5)", "accepted but not delivered to the handset"),
    ("alphasms", "99", "error in the number, or not in service"),
    ("skycore", "X123", None),
    ("skycore", "", None),
])
def test_providers_explain_their_codes(provider: str, code: str, words: str | None) -> None:
    # `explain` reads class tables only: no configuration (credentials) needed to ask.
    assert PROVIDERS[provider].explain(PROVIDERS[provider].__new__(PROVIDERS[provider]),
                                       code) == words


def test_message_page_explains_statuses_and_errors(app: Any, client: Any) -> None:
    accounts.create_user("ana", PASSWORD, "viewer")
    message = sending.enqueue(sending.NewMessage(to="+15551234888", text="hi",
                                                 provider="skycore"), source="test")
    sending.record_accepted(message, SendResult("SMS_5"))
    with write_tx():
        correlation.apply_receipt(Receipt(provider="skycore", status=Status.DELIVERED,
                                          provider_message_id="SMS_5", raw_status="N202",
                                          dedupe_key="SMS_5|N202"), source="test")
    login(client, "ana")
    html = client.get(f"/messages/{message.id}").get_data(as_text=True)
    assert "N202</span> — delivered to the handset (Message Sent/Delivered)" in html
