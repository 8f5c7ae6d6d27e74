"""The overview against a small data set whose every figure is computed by hand (docstrings).

Runs on SQLite and, with TRACKER_TEST_DATABASE_URL, on Postgres: the live queries and the
rollups are dialect-specific SQL, so both must give the same hand-computed figures.
"""

from __future__ import annotations

import datetime as dt
import math
import re

import pytest

from tracker import accounts, correlation
from tracker import overview as ov
from tracker.models import Callback, Event, Message, RollupPeriod
from tracker.status import Status, order_key

NOW = dt.datetime(2026, 3, 10, 12, 0, 0)
PASSWORD = "correct horse battery"
_seq = iter(range(1, 10_000))


def msg(provider: str, created: dt.datetime, status: str, *, latency: float | None = None,
        submitted: bool = True, inferred: bool = False, error: str | None = None,
        poll_at: dt.datetime | None = None) -> Message:
    """A message as the tracker leaves it; `latency` = status_at - submitted_at in seconds."""
    sub = created + dt.timedelta(seconds=2) if submitted else None
    status_at = (sub + dt.timedelta(seconds=latency) if latency is not None
                 else created + dt.timedelta(minutes=1))
    rank = {"queued": 0, "accepted": 1}.get(status, 3)
    return Message.create(
        reference=f"ref{next(_seq)}", provider=provider, recipient="+15550000001", text="hi",
        status=status, status_rank=rank, status_order=order_key(status, status_at),
        status_inferred=inferred, status_at=status_at, error_code=error, submitted_at=sub,
        created_at=created, poll_at=poll_at)


@pytest.fixture
def data(app) -> None:
    """Last 24 h (created 2026-03-09 12:00 .. 2026-03-10 12:00):

    fake, 10:xx on 03-10 (8 messages): delivered in 4 s, 10 s and 65 s; undelivered F1; expired
    (inferred); accepted (in flight); canceled (never submitted); rejected F2 before submission.
      submitted 6, delivered 3 -> 50.0 %, receipted 4 (not the inferred expiry) -> 66.7 %,
      latencies 4, 10, 65 -> buckets 4, 10, 75: p50 (2nd) 10 s, p95 (3rd) 75 s, in flight 1.
    skycore, 20:xx on 03-09 (5): delivered in 1.5 s and -3 s (skew: 0); failed E710 twice;
    queued.  submitted 4, delivered 2 -> 50 %, receipted 4 -> 100 %, buckets 2, 1: p50 1 s,
      p95 2 s.
    All: 13 messages, 10 submitted, 5 delivered -> 50 %, 8 receipted -> 80 %,
      buckets 1, 2, 4, 10, 75: p50 (3rd) 4 s, p95 (5th) 75 s.
    Errors: skycore E710 2, fake F1 1, fake F2 1.

    Outside the 24 h, inside 30 days: fake on 03-05, delivered in 30 s and 120 s, undelivered F1
    and accepted (its receipt comes later in a test); fake at 11:00 on 03-09 (24 h and 1 min
    ago), delivered in 500 s. Outside 30 days: skycore on 2026-02-01, delivered.
    """
    at = dt.datetime(2026, 3, 10, 10, 0)
    for lat in (4, 10, 65):
        msg("fake", at, "delivered", latency=lat)
    msg("fake", at, "undelivered", error="F1")
    msg("fake", at, "expired", inferred=True)
    msg("fake", at, "accepted")
    msg("fake", at, "canceled", submitted=False)
    msg("fake", at, "rejected", submitted=False, error="F2")
    sky = dt.datetime(2026, 3, 9, 20, 30)
    msg("skycore", sky, "delivered", latency=1.5)
    msg("skycore", sky, "delivered", latency=-3)
    msg("skycore", sky, "failed", error="E710")
    msg("skycore", sky, "failed", error="E710")
    msg("skycore", sky, "queued", submitted=False,
        poll_at=NOW + dt.timedelta(minutes=10))  # polls are not due yet: no lag
    day = dt.datetime(2026, 3, 5, 9, 0)
    msg("fake", day, "delivered", latency=30)
    msg("fake", day, "delivered", latency=120)
    msg("fake", day, "undelivered", error="F1")
    msg("fake", day, "accepted")
    msg("fake", dt.datetime(2026, 3, 9, 11, 59), "delivered", latency=500)
    msg("skycore", dt.datetime(2026, 2, 1, 8, 0), "delivered", latency=3)


def test_24_hours_per_provider_and_per_hour(data) -> None:
    o = ov.overview("24h", providers=["fake", "skycore"], now=NOW)
    t, fake, sky = o.total, o.providers["fake"], o.providers["skycore"]
    assert (t.messages, t.submitted, t.delivered, t.receipted) == (13, 10, 5, 8)
    assert (t.delivery_rate, t.coverage, t.p50, t.p95) == (0.5, 0.8, 4, 75)
    assert (fake.messages, fake.submitted, fake.delivered, fake.receipted) == (8, 6, 3, 4)
    assert (fake.p50, fake.p95, fake.in_flight) == (10, 75, 1)
    assert fake.coverage == pytest.approx(4 / 6)
    assert (sky.submitted, sky.delivered, sky.coverage, sky.p50, sky.p95) == (4, 2, 1.0, 1, 2)
    assert o.top_errors() == [("skycore", "E710", 2), ("fake", "F1", 1), ("fake", "F2", 1)]
    hours = {start: tally.messages for start, tally in o.timeline() if tally.messages}
    assert hours == {dt.datetime(2026, 3, 9, 20): 5, dt.datetime(2026, 3, 10, 10): 8}
    assert len(o.timeline()) == 24  # the hours 12:00 on 03-09 .. 11:00 on 03-10

    def figures(o: ov.Overview) -> list:
        return [(name, t.messages, t.submitted, t.delivered, t.receipted, t.p50, t.p95,
                 t.in_flight) for name, t in [("all", o.total), *sorted(o.providers.items())]]

    ov.roll_up(NOW)  # the same from the hourly rollups, edges live
    rolled = ov.overview("24h", providers=["fake", "skycore"], now=NOW)
    assert rolled.live_periods == 0 and figures(rolled) == figures(o)
    assert rolled.top_errors() == o.top_errors()
    late = ov.overview("24h", now=NOW + dt.timedelta(minutes=30))  # 12:30..12:30: edges live
    assert late.live_periods == 0 and late.total.messages == 13


def test_one_provider_only(data) -> None:
    o = ov.overview("24h", providers=["fake", "skycore"], provider="skycore", now=NOW)
    assert list(o.providers) == ["skycore"] and o.total.messages == 5
    assert [h.provider for h in o.health] == ["skycore"]


def test_30_days_live_then_rolled_up_then_a_late_receipt(data) -> None:
    """30 days (02-09 .. 03-10 so far): the 24 h above plus the 03-05 four and the 03-09 11:59
    one. Submitted 10 + 4 + 1 = 15, delivered 5 + 2 + 1 = 8, receipted 8 + 3 + 1 = 12;
    buckets 1, 2, 4, 10, 30, 75, 120, 600: p50 (4th) 10 s, p95 (8th) 600 s."""
    live = ov.overview("30d", now=NOW)
    assert live.live_periods == 29
    expected = (18, 15, 8, 12, 10, 600)

    def figures(o: ov.Overview) -> tuple:
        t = o.total
        return (t.messages, t.submitted, t.delivered, t.receipted, t.p50, t.p95)

    assert figures(live) == expected
    day = dt.datetime(2026, 3, 5)
    assert live.periods[day].messages == 4 and live.periods[day].delivery_rate == 0.5

    # Every closed day the 30-day window shows, and the hours the 24-hour one does.
    assert ov.roll_up(NOW) == ov.MAX_DAYS + ov.HOURS_KEPT == 56
    assert RollupPeriod.select().where(RollupPeriod.step == "day").count() == 30
    rolled = ov.overview("30d", now=NOW)
    assert rolled.live_periods == 0 and figures(rolled) == expected
    assert rolled.top_errors() == [("fake", "F1", 2), ("skycore", "E710", 2), ("fake", "F2", 1)]
    assert ov.roll_up(NOW) == 0  # nothing changed: nothing re-rolled

    # A receipt for the 03-05 message still in flight arrives today: that closed day changes.
    late = Message.get((Message.created_at == day.replace(hour=9)) &
                       (Message.status == "accepted"))
    occurred = late.submitted_at + dt.timedelta(seconds=7)
    assert correlation.set_status(late.id, Status.DELIVERED, occurred_at=occurred)
    Event.create(message=late.id, kind="receipt", source="callback", status="delivered",
                 applied=True)
    assert ov.roll_up(NOW) == 1
    after = ov.overview("30d", now=NOW)
    assert after.live_periods == 0
    assert after.periods[day].delivered == 3 and after.total.receipted == 13
    # Buckets now 1, 2, 4, 7, 10, 30, 75, 120, 600: p50 is the 5th, p95 the 9th.
    assert (after.total.delivered, after.total.p50, after.total.p95) == (9, 10, 600)
    assert ov.roll_up(NOW) == 1  # seen by two runs (an id may commit late on Postgres) ...
    assert ov.roll_up(NOW) == 0  # ... then left alone


def callback(provider: str, verdict: str, at: dt.datetime, method: str = "POST") -> None:
    Callback.create(provider=provider, method=method, path=f"/callbacks/{provider}/***",
                    body=b"x", verdict=verdict, received_at=at)


def test_provider_health(data) -> None:
    """fake: pushed callbacks 1 h (applied) and 2 h ago (duplicate), one 30 h ago (orphan,
    outside 24 h); its accepted message's poll was due 5 min ago, another 1 min ago: lag 5 min.
    skycore: one poll answer 3 h ago (applied; not a callback), its last pushed callback on
    03-01, which only the rollup of that day remembers; no poll due. mobizon: nothing, ever."""
    hour = dt.timedelta(hours=1)
    callback("fake", "applied", NOW - hour)
    callback("fake", "duplicate", NOW - 2 * hour)
    callback("fake", "orphan", NOW - 30 * hour)
    callback("skycore", "applied", NOW - 3 * hour, method="POLL")
    callback("skycore", "applied", dt.datetime(2026, 3, 1, 7, 0))
    msg("fake", NOW - hour, "accepted", poll_at=NOW - dt.timedelta(minutes=5))
    msg("fake", NOW - hour, "sent", poll_at=NOW - dt.timedelta(minutes=1))
    msg("fake", NOW - hour, "delivered", latency=3, poll_at=NOW - 9 * hour)  # final: not due

    def by_name() -> dict[str, ov.Health]:
        found = ov.overview("24h", providers=["fake", "skycore", "mobizon"], now=NOW)
        return {h.provider: h for h in found.health}

    h = by_name()
    assert h["fake"].last_callback == NOW - hour
    assert h["fake"].verdicts == {"applied": 1, "duplicate": 1}
    assert h["fake"].poll_lag(NOW) == dt.timedelta(minutes=5)
    assert h["skycore"].verdicts == {"applied": 1} and h["skycore"].last_callback is None
    assert h["skycore"].poll_lag(NOW) == dt.timedelta(0)
    assert h["mobizon"].last_callback is None and not h["mobizon"].verdicts
    ov.roll_up(NOW)  # the 24 h from the hourly rollups now, the same
    h = by_name()
    assert h["fake"].verdicts == {"applied": 1, "duplicate": 1}
    assert h["fake"].last_callback == NOW - hour
    assert h["skycore"].last_callback == dt.datetime(2026, 3, 1, 7, 0)  # from 03-01's rollup


@pytest.fixture
def viewer(client, monkeypatch) -> object:
    monkeypatch.setattr(ov, "clock", lambda: NOW)
    accounts.create_user("ana", PASSWORD, "viewer")
    page = client.get("/auth/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    client.post("/auth/login", data={"username": "ana", "password": PASSWORD,
                                     "csrf_token": token})
    return client


def test_page_needs_a_login(client) -> None:
    response = client.get("/overview")
    assert response.status_code == 302 and "/auth/login" in response.headers["Location"]


def test_page_shows_the_figures_as_server_side_svg(data, viewer) -> None:
    response = viewer.get("/overview")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    summary = re.search(r'<dd id="delivery-rate">(.*?)</dd>', html, re.S).group(1)
    assert "50.0 %" in summary and "(5 / 10)" in summary
    assert "80.0 %" in re.search(r'<dd id="coverage">(.*?)</dd>', html, re.S).group(1)
    assert "p50 ≤ 4 s, p95 ≤ 75 s" in html
    fake = re.search(r'<tr class="provider" data-provider="fake">(.*?)</tr>', html, re.S)
    assert "66.7 %" in fake.group(1) and '<td data-label="p95">75 s</td>' in fake.group(1)
    errors = re.findall(r'<tr class="error"><td[^>]*>(\w+)</td>\s*<td class="mono"[^>]*>'
                        r'<a [^>]*>(\w+)<', html)
    assert errors == [("skycore", "E710"), ("fake", "F1"), ("fake", "F2")]
    # The charts are SVG drawn here; the only script is the auto-refresh, a file of our own
    # (the CSP allows no inline script or style).
    assert html.count("<svg") >= 10 and " style=" not in html
    assert re.findall(r"<script[^>]*>", html) == [
        '<script src="/static/refresh.js" defer>']
    assert "Messages per hour by outcome" in html
    assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    month = viewer.get("/overview", query_string={"window": "30d", "provider": "skycore"})
    assert month.status_code == 200 and "Messages per day by outcome" in month.get_data(
        as_text=True)
    assert viewer.get("/overview", query_string={"window": "1y"}).status_code == 404


def test_percentile_is_nearest_rank_over_bucket_bounds() -> None:
    t = ov.Tally()
    assert t.p50 is None and t.delivery_rate is None
    t.add("delivered", False, True, None, 1, bucket=len(ov.LATENCY_BOUNDS))
    assert t.p95 == math.inf  # over a day


def test_the_worker_job_rolls_up_each_closed_day_once(app) -> None:
    from tracker import jobs

    assert jobs.roll_up(app) == ov.MAX_DAYS + ov.HOURS_KEPT  # a new install: all it shows
    assert jobs.roll_up(app) == 0


def test_a_receipt_without_a_provider_time_is_timed_by_its_arrival(app, viewer) -> None:
    """The offline provider's receipts (and some hooks) carry no time: status_at stays empty,
    and the latency is measured to when the receipt was received (7 s after submission), live
    and rolled up alike; the message page says which time it shows, and status_at keeps the
    provider's time where there is one."""
    from tracker import statustime
    from tracker.providers.base import Receipt

    created = dt.datetime(2026, 3, 10, 10, 0)
    sub = created + dt.timedelta(seconds=2)
    m = Message.create(reference="notime", provider="fake", provider_message_id="fake-1",
                       recipient="+15550000001", text="hi", status="accepted", status_rank=1,
                       status_order=order_key("accepted", None), submitted_at=sub,
                       created_at=created)
    receipt = Receipt(provider="fake", status=Status.DELIVERED, provider_message_id="fake-1",
                      raw_status="delivered", dedupe_key="fake-1|delivered")
    outcome = correlation.apply_receipt(receipt, source="callback",
                                        received_at=sub + dt.timedelta(seconds=7))
    assert outcome.verdict.value == "applied"
    stored = Message.get_by_id(m.id)
    assert stored.status == "delivered" and stored.status_at is None  # no provider time kept
    shown = statustime.of(stored)
    assert (shown.at, shown.source) == (sub + dt.timedelta(seconds=7), "received")

    live = ov.overview("24h", providers=["fake"], now=NOW)
    assert (live.total.delivered, live.total.p50) == (1, 7)
    ov.roll_up(NOW)
    rolled = ov.overview("24h", providers=["fake"], now=NOW)
    assert rolled.live_periods == 0 and (rolled.total.delivered, rolled.total.p50) == (1, 7)

    key = accounts.create_api_key("support-tool")
    api = viewer.get(f"/api/v1/messages/{m.id}", headers={"Authorization": f"Bearer {key}"})
    assert (api.json["status_at"], api.json["status_at_source"]) == (
        "2026-03-10T10:00:09.000Z", "received")

    page = viewer.get(f"/messages/{m.id}").get_data(as_text=True)
    assert re.search(r"Status since</dt><dd[^>]*>2026-03-10 10:00:09\.000 UTC <small>\("
                     r"received; the provider gave no time\)</small>", page)
    assert "Expires" not in page  # final: nothing left to expire

    timed = msg("fake", created, "delivered", latency=4)  # the provider gave a time
    assert statustime.of(timed).source == "provider"
    assert "(the provider&#39;s time)" in viewer.get(f"/messages/{timed.id}").get_data(
        as_text=True)
