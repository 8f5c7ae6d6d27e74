"""`fake`: a provider that needs no network, for local use and tests.

Every message is accepted at once and a delivery receipt follows through the normal
correlation path. Numbers ending in 0000 are refused, ending in 0001 go undelivered, so the
dashboard can show every outcome without a real provider.
"""

from __future__ import annotations

import json

from ..status import Status
from .base import (
    CallbackRequest,
    Finding,
    OutboundMessage,
    ParsedCallback,
    Provider,
    Receipt,
    SendError,
    SendResult,
    Setting,
)


class FakeProvider(Provider):
    """Accepts everything locally; JSON callbacks `{"id": ..., "status": ...}` for tests."""

    slug = "fake"
    name = "Fake (offline)"
    SETTINGS = {"callback_token": Setting(str, secret=True)}
    STATUS_MAP = {s.value: s for s in Status}

    def check(self) -> list[Finding]:
        """Nothing to ask: the fake provider lives in this process."""
        return [Finding("host", True, "in this process; nothing leaves it")]

    def send(self, message: OutboundMessage) -> SendResult:
        """Accept, and report the outcome at once."""
        if message.to.endswith("0000"):
            raise SendError("fake: number refused", permanent=True, status=Status.REJECTED,
                            code="FAKE_REFUSED")
        pmid = f"fake-{message.reference}"
        final = Status.UNDELIVERED if message.to.endswith("0001") else Status.DELIVERED
        receipt = Receipt(provider=self.slug, status=final, provider_message_id=pmid,
                          raw_status=final.value, dedupe_key=f"{pmid}|{final.value}")
        return SendResult(provider_message_id=pmid, raw='{"ok": true}', receipts=[receipt])

    def parse_callback(self, request: CallbackRequest) -> ParsedCallback:
        """Parse `{"id": "...", "status": "delivered"}` (or a list of them)."""
        parsed = ParsedCallback()
        try:
            data = json.loads(request.body)
        except (ValueError, RecursionError) as exc:  # RecursionError: hostile nesting [[[[…
            parsed.errors.append(f"not JSON: {exc}")
            return parsed
        for item in data if isinstance(data, list) else [data]:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                parsed.errors.append("item without a string 'id'")
                continue
            raw = str(item.get("status", ""))
            status = self.STATUS_MAP.get(raw, Status.UNKNOWN)
            parsed.receipts.append(Receipt(
                provider=self.slug, status=status, provider_message_id=item["id"],
                raw_status=raw, dedupe_key=f"{item['id']}|{raw}",
            ))
        return parsed
