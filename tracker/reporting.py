"""Query functions the API, the dashboard and the CLI share (no Flask imports)."""

from __future__ import annotations

import collections
import datetime as dt
import functools
import json
import urllib.parse
from collections import namedtuple
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import peewee as pw

from . import phones, safexml, statustime
from .db import db, execute, is_sqlite, read_snapshot
from .models import Callback, Event, Message
from .providers import PROVIDERS
from .status import Status

PAGE_SIZE = 50


def iso(value: dt.datetime | None) -> str | None:
    """Naive UTC -> ISO 8601 with Z."""
    return value.isoformat(timespec="milliseconds") + "Z" if value else None


MAX_ID = 2**63 - 1  # the largest id either database stores (SQLite INTEGER, Postgres BIGINT)


def as_id(value: str | None) -> int | None:
    """A row id from text, or None: ASCII digits only ("²".isdigit() is true, but int() refuses
    it) and no more than a 64-bit integer holds (a bigger one would not even bind)."""
    text = (value or "").strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    number = int(text)
    return number if 0 < number <= MAX_ID else None


def resolve_message_id(ident: str) -> int | None:
    """A message id from its numeric id or its reference."""
    if ident.isascii() and ident.isdigit():
        number = as_id(ident)
        if number is None:
            return None
        found = Message.select(Message.id).where(Message.id == number).first()
    else:
        found = Message.select(Message.id).where(Message.reference == ident).first()
    return found.id if found else None


def message_detail(message_id: int) -> dict[str, Any]:
    """The API representation of one message with its events."""
    with read_snapshot():  # the status and the timeline as of one moment
        events = timeline(message_id)
        message = Message.get_by_id(message_id)
    return {**message_dict(message, events), "events": [event_dict(e) for e in events]}


def message_dict(m: Message, events: list[Event] | None = None) -> dict[str, Any]:
    """The API representation of one message, without its events (`events`: its timeline,
    when the caller has it: the status time's fallback is read from it)."""
    shown = statustime.of(m, events)
    return {
        "id": m.id,
        "reference": m.reference,
        "client_ref": m.client_ref,
        "provider": m.provider,
        "provider_message_id": m.provider_message_id,
        "status": m.status,
        "status_inferred": m.status_inferred,
        "to": m.recipient,
        "from": m.sender,
        "text": m.text,
        "encoding": m.encoding,
        "segments": m.segments,
        "failover": m.route.split(",") if m.route else [],  # providers still to try
        "error_code": m.error_code,
        "error_detail": m.error_detail,
        "attempts": m.attempts,
        "send_at": iso(m.send_at),
        "created_at": iso(m.created_at),
        "submitted_at": iso(m.submitted_at),
        "status_at": iso(shown.at),  # the provider's time, else when its receipt came
        "status_at_source": shown.source,  # provider, tracker, received (statustime)
        "expires_at": iso(m.expires_at),
        "updated_at": iso(m.updated_at),
        "status_callback": m.status_callback,
    }


def event_dict(e: Event) -> dict[str, Any]:
    """The API representation of one event."""
    return {
        "id": e.id,
        "kind": e.kind,
        "source": e.source,
        "status": e.status,
        "applied": e.applied,
        "reason": e.reason,
        "raw_status": e.raw_status,
        "error_code": e.error_code,
        "detail": e.detail,
        "callback_id": e.callback_id,
        "occurred_at": iso(e.occurred_at),
        "received_at": iso(e.received_at),
    }


def timeline(message_id: int) -> list[Event]:
    """Every event of a message, in the order we recorded them."""
    return list(Event.select().where(Event.message == message_id).order_by(Event.id))


def callbacks_for(events: list[Event]) -> dict[int, Callback]:
    """The raw callbacks behind a set of events, by id."""
    ids = {e.callback_id for e in events if e.callback_id}
    if not ids:
        return {}
    return {c.id: c for c in Callback.select().where(Callback.id.in_(ids))}


@dataclass(frozen=True)
class MessageFilter:
    """What the messages list (and its counts and exports) is narrowed to.

    Dates are UTC days, both ends inclusive: created_to=2026-01-31 keeps the whole of the 31st.
    `before`/`after` only page the list (keyset on (created_at, id)); `narrow` ignores them, so
    counts and exports cover every page.
    """

    status: str = ""
    provider: str = ""
    q: str = ""  # phone number in any format, reference, provider message id or client_ref
    error_code: str = ""
    created_from: dt.date | None = None
    created_to: dt.date | None = None
    before: int | None = None  # the list: the page of messages older than this one
    after: int | None = None  # the list: the page of messages newer than this one

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> MessageFilter:
        """From query-string style arguments; anything malformed is ignored, never an error."""
        return cls(
            status=(args.get("status") or "").strip(),
            provider=(args.get("provider") or "").strip(),
            q=(args.get("q") or "").strip(),
            error_code=(args.get("error_code") or "").strip(),
            created_from=day(args.get("created_from")),
            created_to=day(args.get("created_to")),
            before=as_id(args.get("before")),
            after=as_id(args.get("after")),
        )

    def without_page(self) -> MessageFilter:
        """The same filter on its first page."""
        return replace(self, before=None, after=None)

    @property
    def active(self) -> bool:
        """True when anything narrows the list."""
        return self.without_page() != MessageFilter()


def filter_problems(args: Mapping[str, str]) -> list[str]:
    """What is wrong with a messages filter, in words for the page or the command line (an
    empty list: nothing). A value that cannot be understood is reported, not silently dropped:
    a filter that looks applied but is not would show the wrong messages."""
    problems = []
    for name in ("created_from", "created_to"):
        value = (args.get(name) or "").strip()
        if value and day(value) is None:
            problems.append(f"{name.replace('_', ' ')}: {value!r} is not a date (YYYY-MM-DD)")
    status = (args.get("status") or "").strip()
    if status and status not in {s.value for s in Status}:
        problems.append(f"status: {status!r} is not a status "
                        f"({', '.join(s.value for s in Status)})")
    if unknown := provider_problem((args.get("provider") or "").strip()):
        problems.append(unknown)
    for name in ("before", "after"):
        value = (args.get(name) or "").strip()
        if value and as_id(value) is None:
            problems.append(f"{name}: {value!r} is not a message id")
    value = (args.get("start") or "").strip()
    if value and as_id(value) is None:
        problems.append(f"start: {value!r} is not a position in the list")
    start, end = day(args.get("created_from")), day(args.get("created_to"))
    if start and end and start > end:
        problems.append("created from is after created to")
    return problems


def provider_problem(provider: str) -> str | None:
    """What is wrong with a provider filter, or None (empty, or one of our provider modules,
    configured or not: a provider no longer configured still has history)."""
    if provider and provider not in PROVIDERS:
        return f"provider: {provider!r} is not a provider ({', '.join(sorted(PROVIDERS))})"
    return None


def day(value: str | None) -> dt.date | None:
    """A UTC day, or None; the last day of the calendar counts as the one before it, so that
    "up to the end of the day" (day + 1) stays a date."""
    try:
        day = dt.date.fromisoformat((value or "").strip())
    except ValueError:
        return None
    return min(day, LAST_DAY)


LAST_DAY = dt.date.max - dt.timedelta(days=1)


@dataclass(frozen=True)
class Page:
    """One page of the list, newest first, and the keyset anchors of its neighbours."""

    rows: list[Any]  # named tuples with the LIST_COLUMNS fields
    older: int | None  # `before=` of the next page, None on the last page
    newer: int | None  # `after=` of the previous page, None on the first page
    count: MatchCount | None = None  # with `count_cap`, unless an empty later page


LIST_COLUMNS = ("id", "reference", "provider", "provider_message_id", "recipient", "status",
                "status_at", "created_at", "error_code", "client_ref", "text",
                "status_inferred", "status_received")
# The text is cut in the query: a row shows its first words, and a long text would cost its
# whole length on every row of every page. status_received is statustime's fallback, read only
# for a row without status_at: when the receipt that set its status was received.
_LIST_SELECT = ", ".join((*LIST_COLUMNS[:-3], "substr(text, 1, 80)", "status_inferred",
                          f"CASE WHEN status_at IS NULL THEN {statustime.RECEIVED_SQL} END"))
_TIME_COLUMNS = tuple(LIST_COLUMNS.index(c) for c in ("status_at", "created_at",
                                                          "status_received"))


class ListRow(namedtuple("ListRow", LIST_COLUMNS)):
    """One row of the list."""

    __slots__ = ()

    @property
    def status_time(self) -> statustime.StatusTime:
        """When its status happened, and whose clock says so (statustime)."""
        if self.status_at is not None:
            ours = self.status == Status.CANCELED or self.status_inferred
            return statustime.StatusTime(self.status_at,
                                         statustime.TRACKER if ours else statustime.PROVIDER)
        if self.status_received is not None:
            return statustime.StatusTime(self.status_received, statustime.RECEIVED)
        return statustime.StatusTime(None, None)


@dataclass(frozen=True)
class Where:
    """A filter's WHERE terms, in SQL over the message table's own columns, with parameters.

    Hand-written, not peewee expressions: the list is the dashboard's busiest page, and building
    its statement through peewee cost ~0.4 ms of the 5 ms a list request may take, as much as
    Postgres spends planning and running it. `filter_conditions` wraps it for peewee queries
    (`narrow`: exports), so every consumer filters with this one piece of code."""

    terms: tuple[str, ...] = ()
    params: tuple[Any, ...] = ()
    searching: bool = False  # a search term leads: the other columns are kept off their indexes
    checked: bool = False  # equality on a column the search's index lacks (read from each row)

    def clause(self, *extra: str) -> str:
        """` WHERE a AND b ...`, or nothing."""
        terms = (*self.terms, *extra)
        return " WHERE " + " AND ".join(terms) if terms else ""

    def equal(self, column: str, value: Any) -> Where:
        """These terms and `column = value` (see filter_where for the "+" a search puts on it)."""
        prefix = "+" if self.searching and is_sqlite() else ""
        return replace(self, terms=(*self.terms, f"{prefix}{column} = {db.obj.param}"),
                       params=(*self.params, value), checked=True)

    def status(self, status: str) -> Where:
        """Narrowed to one status; an empty or unknown one leaves it as it is (the page reports
        an unknown one: filter_problems)."""
        return self.equal("status", status) if status in _STATUSES else self


def list_messages(f: MessageFilter, default_region: str = "",
                  limit: int = PAGE_SIZE, where: Where | None = None,
                  count_cap: int | None = None) -> Page:
    """Newest first, narrowed by the filter, one page at a time.

    With `count_cap`, the page also carries the filter's count (see `count_messages`), read in
    the same statement as an uncorrelated scalar subquery, which both databases evaluate once:
    one round trip instead of two, which is a fifth of a Postgres list request. An empty page
    carries no count, except the first page of a filter (its count is 0); the caller counts.

    Order and keyset are (created_at, id), not id alone: every filter index ends in that pair
    (SQLite's rowid; Postgres since migration 0014), so each filter shape is one index range
    scan read in order with no sort, date range included, and the page stops after `limit + 1`
    entries (tests/test_list_plans.py). Ordering by id
    would need a sort (Postgres) or could not use the date range (both). Our inserts make
    created_at order equal id order, and the id breaks ties, so pages never skip or repeat.
    """
    sql, params = list_sql(f, default_region, limit + 1, where, count_cap)
    raw = db.obj.execute_sql(sql, params).fetchall()
    count = None
    if count_cap is not None and (raw or not (f.before or f.after)):
        total = raw[0][-1] if raw else 0
        count = MatchCount(min(total, count_cap), total > count_cap, count_cap)
    rows = [_list_row(r) for r in raw[:limit]]
    extra = rows[limit - 1].id if len(raw) > limit else None  # there is a further page
    if f.after:  # read oldest first from the anchor; shown newest first
        rows.reverse()
        return Page(rows, older=rows[-1].id if rows else None, newer=extra, count=count)
    return Page(rows, older=extra, newer=rows[0].id if f.before and rows else None, count=count)


def _list_row(raw: tuple[Any, ...]) -> ListRow:
    values = list(raw[:len(LIST_COLUMNS)])
    for i in _TIME_COLUMNS:  # SQLite returns text; Postgres already a datetime
        if isinstance(values[i], str):
            values[i] = dt.datetime.fromisoformat(values[i])
    return ListRow(*values)


def list_sql(f: MessageFilter, default_region: str = "", limit: int = PAGE_SIZE + 1,
             where: Where | None = None, count_cap: int | None = None
             ) -> tuple[str, list[Any]]:
    """The list's statement: newest first, or oldest first from the anchor for `after`.
    `where`: filter_where(f) already computed (the view shares it with the count)."""
    if where is None:
        where = filter_where(f, default_region)
    p = db.obj.param
    keyset: tuple[str, ...] = ()
    params: list[Any] = []
    order = "created_at DESC, id DESC"
    if f.after or f.before:
        # The anchor's created_at as a subquery: one round trip, and both databases evaluate it
        # once. A vanished anchor gives an empty page.
        anchor = f"(SELECT created_at FROM message WHERE id = {p})"  # noqa: S608 - constant
        ident = f.after or f.before
        keyset = (keyset_term(">" if f.after else "<", anchor),)
        if f.after:
            order = "created_at, id"
        params = [ident, ident]
    counted = ""
    if count_cap is not None:
        count, count_params = count_sql(where, count_cap)
        counted, params = f", ({count})", [*count_params, *where.params, *params]
    else:
        params = [*where.params, *params]
    sql = (f"SELECT {_LIST_SELECT}{counted} FROM message{where.clause(*keyset)}"  # noqa: S608
           f" ORDER BY {order} LIMIT {p}")
    return sql, [*params, limit]


def keyset_term(op: str, at: str) -> str:
    """`(created_at, id) <op> (at, ?)`: the rows after (">") or before ("<") a row in the list's
    order. One row comparison on the pair every list index ends in (SQLite's rowid; Postgres
    since 0014) is one bound of the index range, where `created_at <= at AND (created_at < at
    OR id < ?)` left a filter to run on each entry: Postgres planned the list's anchor twice
    and took 0.35 ms to plan a page, 0.17 ms with this (and ran it in 0.19 ms, not 0.26)."""
    return f"(created_at, id) {op} ({at}, {db.obj.param})"


# Counting stops here. An exact count(*) over a filter matching 800,000 of 1,000,000 rows reads
# 800,000 index entries (~100 ms), far beyond the 5 ms a list request may take, and support staff
# need "a handful, hundreds, or lots", not the exact figure of a big set. So the count reads at
# most COUNT_CAP + 1 entries of the filter's index and shows "1,000+" past it. Measured at 1 M
# messages: 10,001 entries cost 1.2-1.7 ms on Postgres (index-only scan; SQLite ~0.6 ms), a third
# of the budget, while 1,001 cost ~0.15 ms. Exact totals over history are the overview's job
# (rollups) and the exports' (every row).
COUNT_CAP = 1_000


@dataclass(frozen=True)
class MatchCount:
    """How many messages match a filter: exactly `n`, or, `capped`, at least `n` (counting
    stopped: at `cap`, or, for a big search's statuses, among its newest matches)."""

    n: int
    capped: bool
    cap: int

    @property
    def figure(self) -> str:
        """'1', '4,321', '10,000+' (a floor: counting stopped at n)."""
        return f"{self.n:,}+" if self.capped else f"{self.n:,}"

    @property
    def label(self) -> str:
        """'1 message', '4,321 messages', '10,000+ messages'."""
        return f"{self.figure} message{'' if self.n == 1 and not self.capped else 's'}"


def count_messages(f: MessageFilter, default_region: str = "", cap: int = COUNT_CAP,
                   where: Where | None = None) -> MatchCount:
    """How many messages the filter matches over every page, exact up to `cap` (see COUNT_CAP)."""
    sql, params = count_sql(where or filter_where(f, default_region), cap)
    n = db.obj.execute_sql(sql, params).fetchone()[0]
    return MatchCount(min(n, cap), n > cap, cap)


def count_sql(where: Where, cap: int = COUNT_CAP) -> tuple[str, list[Any]]:
    """SELECT COUNT(1) FROM (SELECT 1 FROM message WHERE <filter> LIMIT cap + 1)."""
    return (f"SELECT COUNT(1) FROM (SELECT 1 FROM message{where.clause()}"  # noqa: S608
            f" LIMIT {db.obj.param}) AS capped", [*where.params, cap + 1])


# A search with more than COUNT_CAP matches has its statuses counted among its newest this many:
# on SQLite each one costs a table row (a search's index has no status, or every receipt would
# rewrite it), and 1,000 of them were a third of the list's 5 ms for a QA number.
SEARCH_SAMPLE = 200


@dataclass(frozen=True)
class StatusCounts:
    """How many messages of each status a filter (its status aside) matches, and of all.

    `sample`: when set, each status was counted among the newest `sample` matches only (a big
    search): its figure is a floor, "160+". The status the list is narrowed to is always
    counted as the list's own count is."""

    by_status: dict[str, MatchCount]  # every status, in the order of the Status enum
    total: MatchCount
    sample: int | None = None

    def of(self, status: str = "") -> MatchCount:
        """The count of one status, or of all when `status` is empty (or not a status)."""
        return self.by_status.get(status, self.total)


def status_counts(base: Where, cap: int = COUNT_CAP, status: str = "",
                  known: int | None = None, sample: int = SEARCH_SAMPLE) -> StatusCounts:
    """How many messages of each status match `base` (a filter without its status: base_where).
    `status`: the one the list is narrowed to, always counted exactly up to `cap`; `known`: its
    count when the caller has it (a first page with room to spare holds all).

    Without a search, each status is counted apart, exact up to `cap` (count_sql), in one
    statement: every filter shape has an index led by status (0001, 0003), so each count reads
    at most cap + 1 index entries. A search has no such index (its own is read in created_at
    order, and a status index would be rewritten by every receipt): counting each status apart
    would read every match once per status, 33,000 rows for a QA number with 3,000 messages.
    So a search is counted once in its own index (cap + 1 entries at most), and its matches are
    grouped by status: all of them when they are no more than `cap` (every count exact), else
    the newest `sample` (floors). A search narrowed by provider or error code is grouped in one
    pass over up to cap + 1 matches (each count exact up to cap): SQLite reads an error code
    from each row anyway (its search indexes carry only the provider, m0013)."""
    given = {status: known} if status in _STATUSES and known is not None else {}
    if not base.searching:
        todo = [s.value for s in Status if s.value not in given]
        return _summed(_capped({**_each_capped(base, todo, cap), **given}, cap), cap)
    if base.checked:  # each row is read anyway: one pass over up to cap + 1 matches
        seen = _grouped(base, cap + 1)
        total, sample = sum(seen.values()), cap + 1
    else:  # the count reads the search's index alone; rows are read for the statuses only
        total = db.obj.execute_sql(*count_sql(base, cap)).fetchone()[0]
        seen = _grouped(base, total if total <= cap else sample) if total else {}
    if total <= cap:
        return _summed(_capped(seen, cap), cap)
    floors = {s.value: MatchCount(seen.get(s.value, 0), True, cap) for s in Status}
    if status in floors:
        floors[status] = _capped(given or _each_capped(base, [status], cap), cap)[status]
    return StatusCounts(floors, MatchCount(cap, True, cap), sample)


def page_status_counts(f: MessageFilter, base: Where, page: Page,
                       cap: int = COUNT_CAP) -> StatusCounts:
    """status_counts for the list's page of `f`: a first page with room to spare holds every
    match of its filter, so what it holds is counted without asking the database again."""
    held = held_status_counts(f, page, cap)
    if held is not None:
        return held
    whole = not (f.before or f.after) and len(page.rows) < PAGE_SIZE
    return status_counts(base, cap, f.status, known=len(page.rows) if whole else None)


def held_status_counts(f: MessageFilter, page: Page, cap: int = COUNT_CAP
                       ) -> StatusCounts | None:
    """The counts per status when the page itself holds them, at no cost: a first page with
    room to spare, not narrowed to a status, holds every match of its filter. Else None."""
    if f.before or f.after or f.status or len(page.rows) >= PAGE_SIZE:
        return None
    return _summed(_capped(collections.Counter(row.status for row in page.rows), cap), cap)


def _capped(numbers: dict[str, int], cap: int) -> dict[str, MatchCount]:
    return {s.value: MatchCount(min(numbers.get(s.value, 0), cap), numbers.get(s.value, 0) > cap,
                                cap) for s in Status}


def _summed(by_status: dict[str, MatchCount], cap: int) -> StatusCounts:
    """With the total: the sum, exact when every status is (even past the cap), else a floor."""
    total = sum(c.n for c in by_status.values())
    if any(c.capped for c in by_status.values()):
        return StatusCounts(by_status, MatchCount(min(total, cap), True, cap))
    return StatusCounts(by_status, MatchCount(total, False, cap))


def _grouped(base: Where, limit: int) -> dict[str, int]:
    """Statuses of the newest `limit` matches, counted."""
    return dict(db.obj.execute_sql(*grouped_sql(base, limit)).fetchall())


def grouped_sql(base: Where, limit: int = SEARCH_SAMPLE) -> tuple[str, list[Any]]:
    """The statuses of a filter's newest `limit` matches, counted (the search's index read
    backwards, as the list reads it)."""
    return (f"SELECT status, COUNT(1) FROM (SELECT status FROM message{base.clause()}"  # noqa: S608
            f" ORDER BY created_at DESC LIMIT {db.obj.param}) AS scanned GROUP BY status",
            [*base.params, limit])


def _each_capped(base: Where, statuses: list[str], cap: int) -> dict[str, int]:
    """Each status's capped count, in one statement (one round trip)."""
    if not statuses:
        return {}
    return dict(db.obj.execute_sql(*each_capped_sql(base, statuses, cap)).fetchall())


def each_capped_sql(base: Where, statuses: list[str], cap: int = COUNT_CAP
                    ) -> tuple[str, list[Any]]:
    """(status, count_sql of the filter narrowed to it) for each status: one subquery,
    correlated with a list of the statuses. Not a scalar subquery per status: Postgres planned
    eleven of them in 1.1 ms, and the statement took 2.8 ms where this one takes 1.6 (SQLite:
    the same either way, 0.7 ms), at 1 M messages."""
    p = db.obj.param
    prefix = "+" if base.searching and is_sqlite() else ""  # as Where.equal, for a search
    listed = ", ".join(f"({p})" for _ in statuses)
    sql = (f"WITH listed(s) AS (VALUES {listed}) SELECT s, (SELECT COUNT(1) FROM"  # noqa: S608
           f" (SELECT 1 FROM message{base.clause(f'{prefix}status = listed.s')} LIMIT {p})"
           " AS capped) FROM listed")
    return sql, [*statuses, *base.params, cap + 1]


def position(where: Where, page: Page, cap: int = COUNT_CAP) -> int | None:
    """The place of a page's first row in its filter (1 = the newest match), counted when the
    page was reached without one; None past `cap` (counting stops there, as for the total)."""
    if not page.rows:
        return None
    first = page.rows[0]
    # Newer than the first row: one range of the filter's index (keyset_term), read inside the
    # index (Postgres: an index-only scan; its indexes hold the id since 0014).
    newer = replace(where, terms=(*where.terms, keyset_term(">", db.obj.param)),
                    params=(*where.params, first.created_at, first.id))
    n = db.obj.execute_sql(*count_sql(newer, cap)).fetchone()[0]
    return n + 1 if n <= cap else None


def narrow(query: pw.ModelSelect, f: MessageFilter, default_region: str = "") -> pw.ModelSelect:
    """Apply a filter to any query over Message: the list, the counts and the exports all
    show exactly the same messages. Paging (`before`/`after`) is the list's, not applied here."""
    conditions = filter_conditions(f, default_region)
    return query.where(*conditions) if conditions else query


def filter_conditions(f: MessageFilter, default_region: str = "") -> list[pw.Node]:
    """`filter_where` for a peewee query over Message alone (its columns unqualified)."""
    where = filter_where(f, default_region)
    if not where.terms:
        return []
    return [pw.SQL("(" + " AND ".join(where.terms) + ")", list(where.params))]


_STATUSES = frozenset(s.value for s in Status)


def filter_where(f: MessageFilter, default_region: str = "") -> Where:
    """The WHERE terms of a filter (a search runs its probe query here, once)."""
    return base_where(f, default_region).status(f.status)


def base_where(f: MessageFilter, default_region: str = "") -> Where:
    """The WHERE terms of a filter but its status: what the status counts count in."""
    p = db.obj.param
    terms: list[str] = []
    params: list[Any] = []
    q = f.q.strip()
    if q:
        term, values = _search_where(q, default_region)
        terms.append(term)
        params += values
    if f.created_from:
        terms.append(f"created_at >= {p}")
        params.append(_midnight(f.created_from))
    if f.created_to:  # inclusive day: everything before the next midnight
        terms.append(f"created_at < {p}")
        params.append(_midnight(f.created_to + dt.timedelta(days=1)))
    # With a search, its column's index must drive the query: a search matches a few thousand
    # messages at most, a status can match 800,000. Without statistics (SQLite is never
    # ANALYZEd here) SQLite sees "status = ?" and "recipient = ?" as equally selective and
    # measured 230 ms picking the status index; `+column` keeps it off the other filters'
    # indexes (a `+column` still reads the column from the search index when it holds it:
    # m0013's SQLite search indexes carry the provider, so a provider is checked there, while
    # status and error code, which every receipt changes, cost a table row). Postgres has
    # statistics and picks the search index itself; there the plain column is better: m0006's
    # search indexes INCLUDE status, provider and error_code, so it filters inside the index.
    where = Where(tuple(terms), tuple(params), searching=bool(q))
    for name, value in (("provider", f.provider), ("error_code", f.error_code)):
        if value:
            where = where.equal(name, value)
    return where


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day)


# Parsing a number costs ~0.1 ms of a 5 ms list request, and support staff page through the
# same search; the answer depends on the text alone, so caching it is safe.
_search_number = functools.lru_cache(maxsize=1024)(phones.search_forms)


def _search_where(q: str, default_region: str) -> tuple[str, list[Any]]:
    """Equality on the columns that hold `q` (one probe query finds which ones).

    One column is the usual answer, and one equality lets the planner read that column's index
    in created_at order and stop at a page. ORing all four every time makes SQLite merge four
    index lookups and sort every match: a test number with thousands of messages, or a
    campaign client_ref, sorted on every page. A whole number found as written wins over the
    same digits read as the end of a number (they would only add other countries' numbers).
    """
    p = db.obj.param
    candidates = [(f"{name} = {p}", [q])
                  for name in ("reference", "provider_message_id", "client_ref")]
    number = _search_number(q, default_region)
    suffix = phones.search_suffix(q)
    if suffix:
        candidates.insert(0, _suffix_term(suffix))
    if number:
        candidates.insert(0, (f"recipient = {p}", [number]))
    probe = ", ".join(f"EXISTS (SELECT 1 FROM message WHERE {term})"  # noqa: S608
                      for term, _ in candidates)
    # Prepared on Postgres: each EXISTS is one lookup in its column's index whatever the
    # value, so one plan serves every search (planning it was 0.1 ms of each search).
    found = execute(f"SELECT {probe}", [v for _, values in candidates for v in values],
                    prepare=True).fetchone()
    hits = [c for c, hit in zip(candidates, found, strict=True) if hit]
    if number and suffix and found[0]:  # [0] the whole number, [1] the same digits as an end
        hits = [c for c in hits if c is not candidates[1]]
    if not hits:
        return "1 = 0", []  # nothing holds it: a constant the planner answers at once
    return ("(" + " OR ".join(f"({term})" for term, _ in hits) + ")",
            [v for _, values in hits for v in values])


# The last digits migration 0009 indexes (with created_at): a search by the end of a number
# reads that index's entries for its last 4 digits in created_at order, and checks the longer
# end on each. Written exactly as the index expression, or the database would not use it.
SUFFIX_INDEX_DIGITS = 4


def _suffix_term(digits: str) -> tuple[str, list[Any]]:
    """Numbers ending in `digits` (SUFFIX_MIN_DIGITS to 15 of them)."""
    p = db.obj.param

    def tail(n: int) -> str:
        return f"substr(recipient, -{n})" if is_sqlite() else f"right(recipient, {n})"

    term, params = f"{tail(SUFFIX_INDEX_DIGITS)} = {p}", [digits[-SUFFIX_INDEX_DIGITS:]]
    if len(digits) > SUFFIX_INDEX_DIGITS:
        term, params = f"{term} AND {tail(len(digits))} = {p}", [*params, digits]
    return term, params


def pretty_body(callback: Callback) -> str:
    """The raw body as text for display: JSON and XML indented, a form one field a line (each
    value indented in turn when it is JSON or XML), anything else decoded as it is. Display
    only: the stored body stays verbatim, and the template escapes whatever this returns."""
    text = bytes(callback.body).decode("utf-8", errors="replace")
    if "form-urlencoded" in _content_type(callback) and "=" in text:
        fields = urllib.parse.parse_qsl(text, keep_blank_values=True)
        if fields:
            return "\n".join(f"{name} = {_indented(value)}" for name, value in fields)
    return _indented(text)


def _indented(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            return json.dumps(json.loads(stripped), indent=2, ensure_ascii=False)
        except ValueError:
            return text
    if stripped.startswith("<"):
        return safexml.pretty(stripped.encode()) or text
    return text


def _content_type(callback: Callback) -> str:
    try:
        headers = json.loads(callback.headers or "[]")
    except ValueError:
        return ""
    return next((value.lower() for name, value in headers if name.lower() == "content-type"),
                "")
