"""Re-run stored callbacks through the current parser (after a parser fix, or a crash).

Receipts already applied are recognised by their dedupe key, so a replay only adds what the
first run missed. `dry_run` runs the very same code inside a transaction and rolls it back.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs

from peewee import fn

from . import correlation, intake
from .correlation import Verdict
from .db import UNAVAILABLE_ERRORS, write_tx
from .models import Callback, Message
from .providers.base import POLL_METHOD, CallbackRequest, Provider, without_nul

log = logging.getLogger(__name__)


@dataclass
class Replayed:
    """What replaying one callback did (or would do)."""

    callback_id: int
    provider: str
    old_verdict: str
    new_verdict: str
    changes: list[tuple[str, str, str]] = field(default_factory=list)  # (reference, before, after)
    note: str | None = None

    def line(self) -> str:
        """One human line for the CLI."""
        parts = [f"callback #{self.callback_id} {self.provider}:",
                 f"{self.old_verdict} -> {self.new_verdict}"]
        if self.changes:
            parts.append("[" + ", ".join(f"{r} {a} -> {b}" for r, a, b in self.changes) + "]")
        if self.note:
            parts.append(f"({self.note})")
        return " ".join(parts)


class _DryRun(Exception):
    pass


@dataclass(frozen=True)
class Selection:
    """Which stored callbacks to replay: by id, time range (received_at) and verdict, and only
    those stored when the replay started (`up_to`: the last id then), so that its total is
    known and callbacks arriving meanwhile are left to the live path."""

    ids: tuple[int, ...] = ()
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    verdict: str | None = None
    up_to: int | None = None

    def query(self) -> Any:
        """The matching callbacks as a query (unordered)."""
        query = Callback.select()
        if self.ids:
            query = query.where(Callback.id.in_(self.ids))
        if self.since:
            query = query.where(Callback.received_at >= self.since)
        if self.until:
            query = query.where(Callback.received_at < self.until)
        if self.verdict:
            query = query.where(Callback.verdict == self.verdict)
        if self.up_to is not None:
            query = query.where(Callback.id <= self.up_to)
        return query

    def frozen(self) -> Selection:
        """This selection bounded to the callbacks stored now."""
        last = Callback.select(fn.MAX(Callback.id)).scalar() or 0
        return replace(self, up_to=last if self.up_to is None else min(self.up_to, last))

    def count(self) -> int:
        """How many callbacks match (for a replay's progress: done of total)."""
        return self.query().count()

    def callbacks(self, batch: int = 500) -> Iterator[Callback]:
        """The matching callbacks, oldest first, fetched in batches (a replay rewrites their
        verdicts as it goes: paging by id, not offset, sees each once)."""
        last = 0
        while True:
            rows = list(self.query().where(Callback.id > last).order_by(Callback.id)
                        .limit(batch))
            if not rows:
                return
            yield from rows
            last = rows[-1].id


def select_callbacks(ids: list[int] | None = None, since: dt.datetime | None = None,
                     until: dt.datetime | None = None, verdict: str | None = None,
                     batch: int = 500) -> Iterator[Callback]:
    """Stored callbacks by id, time range and verdict, oldest first, fetched in batches."""
    return Selection(tuple(ids or ()), since, until, verdict).callbacks(batch)


def replay(callback: Callback, providers: dict[str, Provider], *, dry_run: bool) -> Replayed:
    """Parse one stored callback again and apply what it yields."""
    result = Replayed(callback.id, callback.provider, callback.verdict, callback.verdict)
    provider = providers.get(callback.provider)
    if provider is None:
        result.note = "provider not configured; skipped"
        return result
    if callback.method == POLL_METHOD:
        result.note = "a poll answer: the poll job asks again instead"
        return result
    try:
        return _replay_one(callback, provider, result, dry_run=dry_run)
    except UNAVAILABLE_ERRORS:
        raise  # the database, not this row: the caller stops and says so
    except Exception as exc:  # this row only: report it, leave it as it was, go on
        log.warning("replay of callback #%s failed again", callback.id, exc_info=True)
        result.new_verdict = callback.verdict
        result.note = f"failed again, left as it was: {type(exc).__name__}: {str(exc)[:200]}"
        return result


def _replay_one(callback: Callback, provider: Provider, result: Replayed, *,
                dry_run: bool) -> Replayed:
    request = _as_request(callback)
    problem = provider.verify(request)
    if problem:  # still failing its signature (with the secret configured now)
        result.new_verdict = Verdict.UNAUTHORIZED.value
        result.note = problem + ("; dry run: nothing written" if dry_run else "")
        if not dry_run:
            with write_tx():
                intake.rejudge(callback.id, Verdict.UNAUTHORIZED, problem)
        return result
    parsed = provider.parse_callback(request)
    try:
        with write_tx():
            before = _statuses(parsed.receipts)
            outcomes = [correlation.apply_receipt(r, source="replay", callback_id=callback.id)
                        for r in parsed.receipts]
            new = _new_verdict(callback.verdict, parsed.errors, outcomes)
            result.new_verdict = new
            detail = without_nul("; ".join(parsed.errors + parsed.notes)) or None
            intake.rejudge(callback.id, new, detail)
            after = _statuses(parsed.receipts)
            result.changes = [(ref, before[ref], after[ref]) for ref in after
                              if before.get(ref) != after[ref]]
            if dry_run:
                raise _DryRun
    except _DryRun:
        result.note = "dry run: nothing written"
    return result


def _new_verdict(old: str, errors: list[str], outcomes: list[correlation.Outcome]) -> str:
    new = intake.verdict_of(errors, outcomes)
    # Receipts the first run already stored come back as duplicates: that is not news.
    return old if new == Verdict.DUPLICATE and old != Verdict.INVALID else new.value


def _statuses(receipts: list) -> dict[str, str]:
    out: dict[str, str] = {}
    for receipt in receipts:
        message_id = correlation.find_message(receipt)
        if message_id:
            message = Message.get_by_id(message_id)
            out[message.reference] = message.status
    return out


def _as_request(callback: Callback) -> CallbackRequest:
    headers = {k.lower(): v for k, v in json.loads(callback.headers)}
    return CallbackRequest(method=callback.method, content_type=headers.get("content-type", ""),
                           query=parse_qs(callback.query, keep_blank_values=True),
                           body=bytes(callback.body), headers=headers)
