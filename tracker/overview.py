"""The overview's figures: delivery rate, receipt coverage, latency, error codes, provider health.

Every message figure is over the messages *created* in the window (the `created_at` index serves
it), whatever happened to them since. For a window's messages:

- **submitted**: handed to a provider (`submitted_at` set) and not `canceled`. This leaves out
  what never reached a provider: canceled, rejected or failed before submission (neither has
  `submitted_at`), still queued or scheduled.
- **delivery rate** = delivered / submitted. Messages still in flight count against it, so a
  window that has just closed reads lower until their receipts arrive (shown as "in flight").
- **receipt coverage** = receipted / submitted, where *receipted* means the current status is
  final (delivered, undelivered, expired, rejected, failed) and not inferred: an `expired` the
  tracker decided itself because no receipt came before the validity ran out is no receipt.
- **latency** = delivery time - `submitted_at` of delivered messages: the provider's delivery
  time (`status_at`) against our submission, or, for a receipt that came without a time (the
  offline provider's, some hooks), when it was received (tracker.statustime); a negative value
  from clock skew counts as 0. p50/p95 are
  nearest-rank percentiles (the ceil(q*n)-th smallest value) read from a histogram: the figure
  is the upper bound of the LATENCY_BOUNDS bucket holding that value, so it is exact to the
  bucket (1 s steps up to 10 s, then steps of 20-50 %), "95 % were delivered within X".
- **error codes**: messages whose error code is set, counted per (provider, code), since the
  same code means different things at different providers.

Provider health is always over the last 24 hours, by receipt time: the last callback a provider
pushed (poll answers are not callbacks), the verdicts of its callbacks and poll answers, and the
poll lag, how long the oldest poll due is overdue (none due: no lag).

Why rollups, and why hourly ones too. Reading a window live means one index range scan of its
messages and the timestamp arithmetic of each: ~11,000 rows a day at a million messages in 90
days, measured at 45 ms on SQLite for 24 hours, against a 25 ms goal for the 24-hour page. So
the worker's `roll_up` job stores, per closed period and provider, the finished figures (a
Tally: counters, error codes, latency histogram) in `message_rollup`, and the callback verdicts
in `callback_rollup`: closed UTC days for the 7- and 30-day windows, closed hours for the
24-hour window (kept for the last HOURS_KEPT hours). A page then reads ~150 rollup rows plus,
live, only what no closed period covers: the running hour or day, and for 24 hours the part of
the hour it starts in. Any closed period not rolled up (the worker is behind or not running) is
read live instead, so a page is never wrong when the worker lags, only slower. A closed period
still changes (a late receipt, an expiry, a replayed callback): each leaves an event, and the
job re-rolls the hours and days of the messages and callbacks behind new events (see roll_up).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from . import statustime
from .db import execute, is_sqlite, write_tx
from .models import CallbackRollup, MessageRollup, RollupPeriod, RollupState, utcnow
from .providers.base import POLL_METHOD

# Upper bounds (seconds) of the delivered-latency histogram buckets; one more bucket above.
LATENCY_BOUNDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 25, 30, 40, 50, 60, 75, 90, 120,
                  150, 180, 240, 300, 420, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200, 10800,
                  14400, 21600, 43200, 86400)
WINDOWS = {"24h": 1, "7d": 7, "30d": 30}  # days; 24h is rolling, the others UTC calendar days
MAX_DAYS = max(WINDOWS.values())
HOURS_KEPT = 26  # closed hours kept rolled up: the 24-hour window needs the last 24
STEPS = {"hour": dt.timedelta(hours=1), "day": dt.timedelta(days=1)}
FINAL = ("delivered", "undelivered", "expired", "rejected", "failed")  # canceled is not a receipt
_TOLERANCE = 0.001  # seconds: float arithmetic on timestamps must not move a bound's bucket


def clock() -> dt.datetime:
    """Now (naive UTC); the benchmark replaces it to look at a data set from its own time."""
    return utcnow()


def _empty_latency() -> list[int]:
    return [0] * (len(LATENCY_BOUNDS) + 1)


@dataclass
class Tally:
    """Figures of one slice of messages (a window, a provider, a period)."""

    messages: int = 0
    submitted: int = 0
    delivered: int = 0
    final: int = 0  # submitted and final (receipt or not)
    receipted: int = 0
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # error code -> messages
    latency: list[int] = field(default_factory=_empty_latency)

    def add(self, status: str, inferred: bool, submitted: bool, error_code: str | None, n: int,
            bucket: int = -1) -> None:
        """Count n messages of one outcome; `bucket`: their latency bucket, -1 for none."""
        self.messages += n
        self.statuses[status] += n
        if error_code:
            self.errors[error_code] += n
        if submitted and status != "canceled":
            self.submitted += n
            self.delivered += n if status == "delivered" else 0
            self.final += n if status in FINAL else 0
            self.receipted += n if status in FINAL and not inferred else 0
        if bucket >= 0:
            self.latency[bucket] += n

    def merge(self, other: Tally) -> None:
        self.messages += other.messages
        self.submitted += other.submitted
        self.delivered += other.delivered
        self.final += other.final
        self.receipted += other.receipted
        self.statuses.update(other.statuses)
        self.errors.update(other.errors)
        self.latency = [a + b for a, b in zip(self.latency, other.latency, strict=True)]

    @property
    def in_flight(self) -> int:
        """Submitted and not final yet."""
        return self.submitted - self.final

    @property
    def delivery_rate(self) -> float | None:
        return self.delivered / self.submitted if self.submitted else None

    @property
    def coverage(self) -> float | None:
        return self.receipted / self.submitted if self.submitted else None

    def percentile(self, q: float) -> float | None:
        """Nearest-rank latency percentile, as its bucket's upper bound (inf: over a day)."""
        n = sum(self.latency)
        if not n:
            return None
        rank, seen = max(1, math.ceil(q * n)), 0
        for i, count in enumerate(self.latency):
            seen += count
            if seen >= rank:
                return float(LATENCY_BOUNDS[i]) if i < len(LATENCY_BOUNDS) else math.inf
        raise AssertionError("unreachable")

    @property
    def p50(self) -> float | None:
        return self.percentile(0.5)

    @property
    def p95(self) -> float | None:
        return self.percentile(0.95)


@dataclass
class Health:
    """One provider over the last 24 hours."""

    provider: str
    last_callback: dt.datetime | None = None  # ever (rolled-up periods included); None: never
    verdicts: Counter = field(default_factory=Counter)  # callbacks and poll answers, 24 h
    oldest_due_poll: dt.datetime | None = None

    def poll_lag(self, now: dt.datetime) -> dt.timedelta:
        """How long the oldest poll due has been waiting (0 when none is due)."""
        if self.oldest_due_poll is None or self.oldest_due_poll >= now:
            return dt.timedelta(0)
        return now - self.oldest_due_poll


@dataclass
class Overview:
    """Everything the overview page shows for one window."""

    window: str
    since: dt.datetime
    until: dt.datetime
    step: str  # "hour" or "day": the width of one period
    total: Tally = field(default_factory=Tally)
    providers: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    periods: dict[dt.datetime, Tally] = field(default_factory=lambda: defaultdict(Tally))
    errors: Counter = field(default_factory=Counter)  # (provider, code) -> messages
    health: list[Health] = field(default_factory=list)
    live_periods: int = 0  # closed periods read live because they were not rolled up yet

    def add(self, provider: str, period: dt.datetime, tally: Tally) -> None:
        """Count one (provider, period) slice; `total` is summed from the providers at the end."""
        self.providers[provider].merge(tally)
        self.periods[period].merge(tally)
        for code, n in tally.errors.items():
            self.errors[(provider, code)] += n

    def timeline(self) -> list[tuple[dt.datetime, Tally]]:
        """Every period of the window in order, empty ones included."""
        start = _floor(self.since, self.step)
        out = []
        while start < self.until:
            out.append((start, self.periods.get(start) or Tally()))
            start += STEPS[self.step]
        return out

    def top_errors(self, limit: int = 10) -> list[tuple[str, str, int]]:
        """The most frequent (provider, code, messages), most first, ties by name."""
        ranked = sorted(self.errors.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(p, code, n) for (p, code), n in ranked[:limit]]


def overview(window: str, *, providers: Iterable[str] = (), provider: str = "",
             now: dt.datetime | None = None) -> Overview:
    """The figures of one window ("24h", "7d", "30d"), optionally of one provider only.

    `providers` are the configured ones: their health shows even when they are silent."""
    now = now or clock()
    if window == "24h":
        out = Overview(window, now - dt.timedelta(hours=24), now, "hour")
    else:
        out = Overview(window, _floor(now, "day") - dt.timedelta(days=WINDOWS[window] - 1), now,
                       "day")
    for (prov, period), tally in _message_tallies(out, provider):
        out.add(prov, period, tally)
    for tally in out.providers.values():
        out.total.merge(tally)
    names = sorted(set(providers) | set(out.providers)) if not provider else [provider]
    out.health = health(names, now)
    return out


# -- periods: rolled up where closed and rolled, live elsewhere ------------------------------


def _floor(when: dt.datetime, step: str) -> dt.datetime:
    return when.replace(minute=0, second=0, microsecond=0) if step == "hour" else \
        when.replace(hour=0, minute=0, second=0, microsecond=0)


def _ceil(when: dt.datetime, step: str) -> dt.datetime:
    floor = _floor(when, step)
    return floor if floor == when else floor + STEPS[step]


def _plan(since: dt.datetime, until: dt.datetime, step: str
          ) -> tuple[list[dt.datetime], list[tuple[dt.datetime, dt.datetime]]]:
    """Split [since, until) into rolled-up whole periods and the ranges to read live."""
    first, last = _ceil(since, step), _floor(until, step)
    if first >= last:
        return [], [(since, until)]
    whole = [first + i * STEPS[step] for i in range((last - first) // STEPS[step])]
    rolled = _rolled(step, whole)
    live = [(since, first)] if since < first else []
    for period in whole:
        if period in rolled:
            continue
        if live and live[-1][1] == period:  # one query per run of periods not rolled up
            live[-1] = (live[-1][0], period + STEPS[step])
        else:
            live.append((period, period + STEPS[step]))
    if last < until:
        live.append((last, until))
    return sorted(rolled), live


def _message_tallies(out: Overview, provider: str
                     ) -> Iterator[tuple[tuple[str, dt.datetime], Tally]]:
    """Whole closed periods from the rollup of the window's step; what is left (the running
    day, days not rolled up) from the hourly rollup where it covers whole hours; the rest live.
    """
    rolled, live = _plan(out.since, out.until, out.step)
    out.live_periods = sum((b - a) // STEPS[out.step] for a, b in live)
    yield from _rolled_tallies(out.step, rolled, out.step, provider)
    for since, until in live:
        hours, rest = _plan(since, until, "hour") if out.step == "day" else ([], [(since, until)])
        yield from _rolled_tallies("hour", hours, out.step, provider)
        for a, b in rest:
            yield from live_tallies(a, b, out.step, provider).items()


_ROLLUP_COLUMNS = (MessageRollup.period, MessageRollup.provider, MessageRollup.messages,
                   MessageRollup.submitted, MessageRollup.delivered, MessageRollup.final,
                   MessageRollup.receipted, MessageRollup.statuses, MessageRollup.errors,
                   MessageRollup.latency)


def _rolled_tallies(step: str, periods: list[dt.datetime], into_step: str, provider: str
                    ) -> Iterator[tuple[tuple[str, dt.datetime], Tally]]:
    """The rollup rows of these periods, each keyed by the `into_step` period holding it."""
    if not periods:
        return
    query = MessageRollup.select(*_ROLLUP_COLUMNS).where(
        (MessageRollup.step == step) & MessageRollup.period.between(periods[0], periods[-1]))
    if provider:
        query = query.where(MessageRollup.provider == provider)
    wanted = set(periods)
    for period, prov, n, submitted, delivered, final, receipted, statuses, errors, latency \
            in query.tuples():
        period = _parse(period)
        if period in wanted:
            yield (prov, _floor(period, into_step)), Tally(
                n, submitted, delivered, final, receipted, Counter(json.loads(statuses)),
                Counter(json.loads(errors)), json.loads(latency))


def _rolled(step: str, periods: list[dt.datetime]) -> set[dt.datetime]:
    if not periods:
        return set()
    rows = RollupPeriod.select(RollupPeriod.period).where(
        (RollupPeriod.step == step) & RollupPeriod.period.between(periods[0], periods[-1]))
    return {_parse(period) for (period,) in rows.tuples()} & set(periods)


# -- reading live --------------------------------------------------------------------------


def _param(when: dt.datetime) -> dt.datetime | str:
    """SQLite compares the text peewee stored (str(datetime)); Postgres takes the datetime."""
    return str(when) if is_sqlite() else when


def _parse(value: object) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))


def _bucket_sql() -> str:
    """SQL: the latency bucket index of a row of `m` (-1 when not a delivered latency)."""
    whens = " ".join(f"WHEN lat <= {bound + _TOLERANCE} THEN {i}"
                     for i, bound in enumerate(LATENCY_BOUNDS))
    return f"CASE WHEN lat IS NULL THEN -1 {whens} ELSE {len(LATENCY_BOUNDS)} END"


def _message_sql(step: str, one_provider: bool) -> str:
    delivered_at = statustime.SHOWN_SQL  # status_at, else when its receipt came
    if is_sqlite():
        period = f"substr(created_at, 1, {13 if step == 'hour' else 10})"
        seconds = f"(julianday({delivered_at}) - julianday(submitted_at)) * 86400.0"
    else:
        period = f"to_char(created_at, '{'YYYY-MM-DD HH24' if step == 'hour' else 'YYYY-MM-DD'}')"
        seconds = f"EXTRACT(EPOCH FROM {delivered_at} - submitted_at)"
    # MATERIALIZED: computed once per row; a flattened subquery would repeat the timestamp
    # arithmetic in every WHEN of the bucket CASE. Only constants are spliced in.
    return (
        "WITH m AS MATERIALIZED (SELECT provider, " + period + " AS period, status,"  # noqa: S608
        " status_inferred AS inferred, submitted_at IS NOT NULL AS submitted, error_code,"
        " CASE WHEN status = 'delivered' AND submitted_at IS NOT NULL"
        " THEN " + seconds + " END AS lat"
        " FROM message WHERE created_at >= ? AND created_at < ?"
        + (" AND provider = ?" if one_provider else "") + ")"
        " SELECT provider, period, status, inferred, submitted, error_code, "
        + _bucket_sql() + " AS bucket, count(*) FROM m"
        " GROUP BY provider, period, status, inferred, submitted, error_code, bucket"
    )


def live_tallies(since: dt.datetime, until: dt.datetime, step: str, provider: str = ""
                 ) -> dict[tuple[str, dt.datetime], Tally]:
    """The messages created in [since, until), per (provider, period start), read live."""
    params = (_param(since), _param(until), *((provider,) if provider else ()))
    fmt = "%Y-%m-%d %H" if step == "hour" else "%Y-%m-%d"
    out: dict[tuple[str, dt.datetime], Tally] = defaultdict(Tally)
    periods: dict[str, dt.datetime] = {}
    for prov, period, status, inferred, submitted, error, bucket, n in execute(
            _message_sql(step, bool(provider)), params).fetchall():
        if period not in periods:
            periods[period] = dt.datetime.strptime(period, fmt)
        out[(prov, periods[period])].add(status, bool(inferred), bool(submitted), error, n,
                                         bucket)
    return out


_CALLBACKS_SQL = (
    "SELECT provider, verdict, count(*), max(CASE WHEN method <> ? THEN received_at END)"
    " FROM callback WHERE received_at >= ? AND received_at < ? GROUP BY provider, verdict"
)


def live_callbacks(since: dt.datetime, until: dt.datetime
                   ) -> dict[str, tuple[Counter, dt.datetime | None]]:
    """Callbacks received in [since, until) per provider: (verdict counts, last pushed one)."""
    out: dict[str, tuple[Counter, dt.datetime | None]] = {}
    for prov, verdict, n, last in execute(
            _CALLBACKS_SQL, (POLL_METHOD, _param(since), _param(until))).fetchall():
        verdicts, before = out.get(prov, (Counter(), None))
        verdicts[verdict] += n
        out[prov] = (verdicts, _latest(before, _parse(last)))
    return out


def _latest(a: dt.datetime | None, b: dt.datetime | None) -> dt.datetime | None:
    return max((x for x in (a, b) if x is not None), default=None)


# -- provider health -----------------------------------------------------------------------


def health(providers: Iterable[str], now: dt.datetime) -> list[Health]:
    """Each provider's last callback, 24-hour verdict counts and poll lag."""
    out = {name: Health(name) for name in providers}
    rolled, live = _plan(now - dt.timedelta(hours=24), now, "hour")
    found: list[tuple[str, Counter, dt.datetime | None]] = []
    if rolled:
        wanted = set(rolled)
        for period, prov, verdicts, last in CallbackRollup.select(
                CallbackRollup.period, CallbackRollup.provider, CallbackRollup.verdicts,
                CallbackRollup.last_callback).where(
                (CallbackRollup.step == "hour")
                & CallbackRollup.period.between(rolled[0], rolled[-1])).tuples():
            if _parse(period) in wanted:
                found.append((prov, Counter(json.loads(verdicts)), _parse(last)))
    for since, until in live:
        found += [(p, v, last) for p, (v, last) in live_callbacks(since, until).items()]
    for prov, verdicts, last in found:
        if prov in out:
            out[prov].verdicts.update(verdicts)
            out[prov].last_callback = _latest(out[prov].last_callback, last)
    for item in out.values():
        if item.last_callback is None:  # silent for a day: the rollups know the last one
            item.last_callback = _parse(
                CallbackRollup.select(CallbackRollup.last_callback)
                .where((CallbackRollup.provider == item.provider)
                       & CallbackRollup.last_callback.is_null(False))
                .order_by(CallbackRollup.last_callback.desc()).limit(1).scalar())
        # min() over the partial (provider, poll_at) index: one index probe per provider.
        item.oldest_due_poll = _parse(execute(
            "SELECT min(poll_at) FROM message WHERE provider = ? AND status_rank < 3"
            " AND poll_at IS NOT NULL", (item.provider,)).fetchone()[0])
    return [out[name] for name in sorted(out)]


# -- the rollup job ------------------------------------------------------------------------


def roll_up(now: dt.datetime | None = None) -> int:
    """Write the rollups of closed periods not rolled up yet or changed since; periods written.

    Kept rolled up: the last HOURS_KEPT closed hours and MAX_DAYS closed days (what the windows
    show). A period changes when one of its messages gets an event (a late receipt, an expiry,
    a replay) or a callback received in it is replayed: both leave an event. The job reads the
    events newer than its bookmark from two runs ago, not the last run's: on Postgres an event
    id is taken before its transaction commits, so an id below the last run's maximum can
    still appear after it. Each change is thus seen by two runs (re-rolled twice), none missed.
    """
    now = now or clock()
    wanted = {step: [_floor(now, step) - i * STEPS[step] for i in range(count, 0, -1)]
              for step, count in (("hour", HOURS_KEPT), ("day", MAX_DAYS))}
    top = execute("SELECT max(id) FROM event").fetchone()[0] or 0
    marks = dict(RollupState.select(RollupState.name, RollupState.value).tuples())
    changed = _changed(marks["event_id_before"]) if "event_id_before" in marks else []
    todo = []
    for step, periods in wanted.items():
        stale = set(periods) - _rolled(step, periods)
        stale |= {_floor(when, step) for when in changed} & set(periods)
        todo += [(step, period) for period in sorted(stale)]
    for step, period in todo:
        _roll(step, period)
    with write_tx():
        # Hours no window shows any more. Old days stay: tiny, and CallbackRollup's days keep
        # each provider's last callback however long it has been silent.
        for model in (RollupPeriod, MessageRollup, CallbackRollup):
            model.delete().where((model.step == "hour")
                                 & (model.period < wanted["hour"][0])).execute()
        for name, value in (("event_id_before", marks.get("event_id", top)), ("event_id", top)):
            (RollupState.insert(name=name, value=value)
             .on_conflict(conflict_target=[RollupState.name],
                          update={RollupState.value: value}).execute())
    return len(todo)


def _changed(after_event_id: int) -> list[dt.datetime]:
    """When the messages and callbacks behind the events after this id were created/received."""
    rows = execute(
        "SELECT m.created_at, c.received_at FROM event e"
        " LEFT JOIN message m ON m.id = e.message_id LEFT JOIN callback c ON c.id = e.callback_id"
        " WHERE e.id > ?", (after_event_id,)).fetchall()
    return [_parse(value) for row in rows for value in row if value is not None]


def _roll(step: str, period: dt.datetime) -> None:
    """Replace one period's rollup rows; its messages and callbacks are read before the write."""
    end = period + STEPS[step]
    messages = [{"step": step, "period": period, "provider": prov, "messages": t.messages,
                 "submitted": t.submitted, "delivered": t.delivered, "final": t.final,
                 "receipted": t.receipted, "statuses": json.dumps(t.statuses),
                 "errors": json.dumps(t.errors), "latency": json.dumps(t.latency)}
                for (prov, _), t in live_tallies(period, end, step).items()]
    callbacks = [{"step": step, "period": period, "provider": prov,
                  "verdicts": json.dumps(verdicts), "last_callback": last}
                 for prov, (verdicts, last) in live_callbacks(period, end).items()]
    with write_tx():
        for model in (MessageRollup, CallbackRollup):
            model.delete().where((model.step == step) & (model.period == period)).execute()
        if messages:
            MessageRollup.insert_many(messages).execute()
        if callbacks:
            CallbackRollup.insert_many(callbacks).execute()
        RollupPeriod.delete().where((RollupPeriod.step == step)
                                    & (RollupPeriod.period == period)).execute()
        RollupPeriod.create(step=step, period=period, rolled_at=utcnow())
