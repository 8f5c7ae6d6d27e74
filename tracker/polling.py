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
import logging

from . import intake
from .correlation import Verdict
from .db import write_tx
from .models import Message, utcnow
from .providers.base import (
    PollAnswer,
    PollError,
    PollTarget,
    Provider,
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
    asked = ",".join(t.provider_message_id or t.reference for t in batch)
    outcomes = intake.store_poll_answer(provider, asked, answer)
    return sum(o.verdict == Verdict.APPLIED for o in outcomes)
