"""The poll job: ask providers with a status API about messages still not final.

A message becomes due for polling `poll_after_seconds` after submission and then every
`poll_interval_seconds` while it is not final. Every status API here asks by the provider's
message id, so a send whose outcome is unknown (no id came back) cannot be polled: a receipt
matched by our reference or expiry settles it. Answers go through
the same correlation path as callbacks (source `poll`), and each raw answer is stored beside
the callbacks (method POLL), so the timeline shows what every polled receipt came from.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

from . import correlation, ingest
from .correlation import Verdict
from .db import write_tx
from .models import Message, utcnow
from .providers.base import (
    POLL_METHOD,
    PollAnswer,
    PollError,
    PollTarget,
    Provider,
    without_nul,
)

log = logging.getLogger(__name__)

MAX_REQUESTS_PER_RUN = 20  # per provider and run: a backlog drains over several runs


def poll_provider(provider: Provider, now: dt.datetime | None = None) -> int:
    """Poll every due message of one provider, in its batch size; returns receipts applied."""
    if provider.POLL_BATCH <= 0:
        return 0
    now = now or utcnow()
    targets = due(provider.slug, now, provider.POLL_BATCH * MAX_REQUESTS_PER_RUN)
    applied = 0
    for start in range(0, len(targets), provider.POLL_BATCH):
        batch = targets[start:start + provider.POLL_BATCH]
        # Rescheduled before asking: a provider that fails is asked again next interval, not
        # at every run of the job.
        later = now + dt.timedelta(seconds=provider.config["poll_interval_seconds"])
        with write_tx():
            Message.update(poll_at=later).where(
                Message.id.in_([t.message_id for t in batch])).execute()
        try:
            answer = provider.poll(batch)
        except PollError as exc:
            log.warning("poll %s (%d messages) failed: %s", provider.slug, len(batch), exc)
            continue
        applied += store(provider.slug, batch, answer)
    return applied


def due(provider: str, now: dt.datetime, limit: int) -> list[PollTarget]:
    """Messages of this provider due a poll, oldest due first."""
    rows = (Message.select(Message.id, Message.reference, Message.provider_message_id,
                           Message.recipient)
            .where((Message.provider == provider) & (Message.status_rank < 3)
                   & (Message.poll_at <= now) & Message.provider_message_id.is_null(False))
            .order_by(Message.poll_at).limit(limit).tuples())
    return [PollTarget(message_id=i, reference=ref, provider_message_id=pmid, to=to)
            for i, ref, pmid, to in rows]


def store(provider: str, batch: list[PollTarget], answer: PollAnswer) -> int:
    """Keep the raw answer and apply its receipts, in one transaction; receipts applied."""
    now = utcnow()
    asked = ",".join(t.provider_message_id or t.reference for t in batch)
    row = (provider, POLL_METHOD, f"poll:{provider}", f"ids={asked}"[:4000],
           json.dumps([]), answer.raw.encode("utf-8"), None, now)
    detail = without_nul("; ".join(answer.errors)) or None
    with write_tx():
        callback_id = ingest.insert_callback(row, Verdict.PENDING, detail)
        outcomes = [correlation.apply_receipt(r, source="poll", callback_id=callback_id,
                                              received_at=now) for r in answer.receipts]
        if outcomes:
            verdict = correlation.callback_verdict(outcomes)
        else:
            verdict = Verdict.INVALID if answer.errors else Verdict.IGNORED
        ingest.set_verdict(callback_id, verdict)
    return sum(o.verdict == Verdict.APPLIED for o in outcomes)
