"""GET /metrics: off without metrics_token, a Bearer token when on, and what it counts.

In-process (one registry, the counters of this pytest process: every assertion is a change
from before) on SQLite and Postgres; then through `tracker serve` over HTTP, where two web
workers and the worker process each count their own and every scrape shows the sum.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import make_config, running
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from servers import cmdline, db_rows, descendants, reset_postgres, tracker_serve, wait_until

from tracker import db as dbmod
from tracker import jobs, sending
from tracker.models import Event, utcnow
from tracker.scheduler import LEASE_NAME

TOKEN = "metrics-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAKE_URL = "/callbacks/fake/fake-token"


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """(sample name, its labels) -> value, from the Prometheus text format."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(scraped: dict, name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def app(database_url: str):
    with running(make_config(database_url, metrics_token=TOKEN)) as flask_app:
        yield flask_app


def scrape(client) -> dict:
    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 200, response.data
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples(response.get_data(as_text=True))


def queue_message(app: Flask, to: str = "+15551234888") -> int:
    cfg = app.config["TRACKER"]
    new = sending.validate({"to": to, "text": "hello", "provider": "fake"},
                           providers=app.extensions["providers"],
                           default_provider=cfg["default_provider"], routes=cfg["routes"])
    return sending.enqueue(new, source="test").id


def dispatch(app: Flask) -> int:
    return sending.dispatch(app.extensions["providers"], batch_size=10, max_attempts=3,
                            backoff_seconds=30)


# -- off, and the token -------------------------------------------------------------------------


def test_metrics_are_off_without_a_token(database_url: str) -> None:
    with running(make_config(database_url)) as flask_app:
        response = flask_app.test_client().get("/metrics", headers=AUTH)
    assert response.status_code == 404


def test_metrics_need_the_bearer_token(app: Flask) -> None:
    client = app.test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert b"tracker_" not in response.data
    assert client.get("/metrics", headers=AUTH).status_code == 200


def test_a_short_token_stops_start_up() -> None:
    from tracker import settings

    with pytest.raises(settings.ConfigError, match="metrics_token"):
        settings.load({"metrics_token": "short"})


# -- counters -----------------------------------------------------------------------------------


def test_callbacks_are_counted_by_provider_and_verdict_and_timed(app: Flask) -> None:
    client = app.test_client()
    before = scrape(client)
    assert client.post(FAKE_URL, json={"id": "nobody", "status": "delivered"}).data == (
        b"OK orphan\n")
    assert client.post(FAKE_URL, json={"id": "nobody", "status": "delivered"}).data == (
        b"OK duplicate\n")
    assert client.post("/callbacks/fake/wrong-token", json={}).status_code == 404
    assert client.post("/callbacks/nosuch/x", json={}).status_code == 404
    assert client.get(FAKE_URL).status_code == 405
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("tracker_callbacks_total", provider="fake", verdict="orphan") == 1
    assert delta("tracker_callbacks_total", provider="fake", verdict="duplicate") == 1
    assert delta("tracker_callbacks_total", provider="fake", verdict="not_found") == 1
    # A provider name nobody configured is never a label a stranger can choose.
    assert delta("tracker_callbacks_total", provider="unknown", verdict="not_found") == 1
    assert not any(dict(labels).get("provider") == "nosuch" for _name, labels in after)
    assert delta("tracker_callbacks_total", provider="fake",
                 verdict="method_not_allowed") == 1
    assert delta("tracker_callback_seconds_count", provider="fake") == 4
    assert delta("tracker_callback_seconds_bucket", provider="fake", le="+Inf") == 4
    assert delta("tracker_callback_seconds_sum", provider="fake") > 0


def test_sends_are_counted_by_provider_and_outcome(app: Flask) -> None:
    client = app.test_client()
    before = scrape(client)
    queue_message(app, "+15551234888")
    queue_message(app, "+15551230000")  # the fake provider refuses numbers ending 0000
    assert dispatch(app) == 2
    after = scrape(client)
    for outcome, count in (("accepted", 1), ("rejected", 1), ("failed", 0), ("unknown", 0)):
        assert (value(after, "tracker_sends_total", provider="fake", outcome=outcome)
                - value(before, "tracker_sends_total", provider="fake", outcome=outcome)
                ) == count, outcome


def test_database_errors_answered_503_are_counted(app: Flask, database_url: str) -> None:
    from tracker import accounts

    app.config["WTF_CSRF_ENABLED"] = False
    accounts.create_user("ana", "correct horse battery", "viewer")
    client = app.test_client()
    assert client.post("/auth/login", data={"username": "ana",
                                            "password": "correct horse battery"}).status_code == 302
    before = scrape(client)
    dbmod.db.initialize(dbmod.connect_database("postgresql://postgres@127.0.0.1:9/none"))
    try:
        callback = client.post(FAKE_URL, json={"id": "x", "status": "delivered"})
        api = client.get("/api/v1/messages/1", headers={"Authorization": "Bearer dlr_x"})
        page = client.get("/messages")
        down = client.get("/metrics", headers=AUTH)
    finally:
        dbmod.db.initialize(dbmod.connect_database(database_url))
    assert [callback.status_code, api.status_code, page.status_code] == [503, 503, 503]
    # The scrape itself still answers, saying the database could not be read.
    assert down.status_code == 200
    assert value(samples(down.get_data(as_text=True)), "tracker_database_up") == 0
    after = scrape(client)
    assert value(after, "tracker_database_up") == 1
    for area in ("callbacks", "api", "dashboard"):
        assert (value(after, "tracker_unavailable_answers_total", area=area)
                - value(before, "tracker_unavailable_answers_total", area=area)) == 1, area
    assert (value(after, "tracker_callbacks_total", provider="fake", verdict="unavailable")
            - value(before, "tracker_callbacks_total", provider="fake",
                    verdict="unavailable")) == 1


# -- gauges, read from the database ---------------------------------------------------------------


def test_gauges_show_the_queue_orphans_poll_lag_and_the_lease(app: Flask) -> None:
    client = app.test_client()
    empty = scrape(client)
    assert value(empty, "tracker_database_up") == 1
    assert ("tracker_queue_due_messages", frozenset({("provider", "fake")})) not in empty
    assert ("tracker_worker_lease_age_seconds", frozenset()) not in empty  # no worker
    first = queue_message(app)
    queue_message(app)
    dbmod.execute("UPDATE message SET due_at = ? WHERE id = ?",
                  (utcnow() - dt.timedelta(seconds=120), first))
    client.post(FAKE_URL, json={"id": "lost-1", "status": "delivered"})
    client.post(FAKE_URL, json={"id": "lost-2", "status": "delivered"})
    jobs.hold_lease(LEASE_NAME, "tests:1", 30)
    scraped = scrape(client)
    assert value(scraped, "tracker_queue_due_messages", provider="fake") == 2
    assert 119 <= value(scraped, "tracker_queue_oldest_due_seconds", provider="fake") < 200
    assert value(scraped, "tracker_orphans_waiting", provider="fake") == 2
    assert 0 <= value(scraped, "tracker_worker_lease_age_seconds") < 5
    assert value(scraped, "tracker_webhook_deliveries_pending") == 0
    # Skycore (configured, no message due a poll) shows no lag; sent ones leave the queue.
    assert value(scraped, "tracker_poll_lag_seconds", provider="skycore") == 0
    assert dispatch(app) == 2
    scraped = scrape(client)
    assert value(scraped, "tracker_queue_due_messages", provider="fake") == 0
    assert Event.select().where(Event.message.is_null()).count() == 2


def test_poll_lag_is_the_oldest_overdue_poll(app: Flask) -> None:
    message = queue_message(app)
    assert dispatch(app) == 1
    dbmod.execute("UPDATE message SET status = 'sent', status_rank = 2, poll_at = ?"
                  " WHERE id = ?", (utcnow() - dt.timedelta(seconds=300), message))
    scraped = scrape(app.test_client())
    assert 299 <= value(scraped, "tracker_poll_lag_seconds", provider="fake") < 400


# -- over HTTP: two web workers and the worker, summed --------------------------------------------


def post_burst(base_url: str, first: int, count: int) -> None:
    """`count` orphan callbacks at once, each on its own connection, so that the kernel hands
    them to whichever web worker is accepting."""
    def post(i: int) -> int:
        with httpx.Client(timeout=20) as client:
            return client.post(base_url + FAKE_URL,
                               json={"id": f"none-{i}", "status": "delivered"}).status_code

    with ThreadPoolExecutor(count) as pool:
        assert set(pool.map(post, range(first, first + count))) == {200}


def counting_pids(folder: Path) -> set[int]:
    """The processes that wrote a counter to the multiprocess folder."""
    return {int(p.stem.rpartition("_")[2]) for p in folder.glob("counter_*.db")}


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_every_process_counts_and_every_scrape_sums_them(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'metrics.sqlite3'}"
    else:
        url = request.getfixturevalue("pg_database_url")
        reset_postgres(url)
    folder = tmp_path / "run" / "instance" / "metrics"
    folder.mkdir(parents=True)
    (folder / "counter_1.db").write_bytes(b"an earlier run's file")  # cleaned at start
    with tracker_serve(tmp_path / "run", database_url=url, metrics_token=TOKEN,
                       providers={"fake": {"callback_token": "fake-token"}}) as server:
        assert not (folder / "counter_1.db").exists()
        family = {pid: cmdline(pid) for pid in descendants(server.proc.pid)}
        worker = next(p for p, c in family.items() if c.endswith("tracker.cli worker"))
        key = server.create_api_key("metrics")
        sent = httpx.post(server.base_url + "/api/v1/messages", timeout=10,
                          headers={"Authorization": f"Bearer {key}"},
                          json={"to": "+15551234888", "text": "hi", "provider": "fake"})
        assert sent.status_code == 202, sent.text

        def scraped() -> dict:
            with httpx.Client(timeout=10) as client:
                answer = client.get(server.base_url + "/metrics", headers=AUTH)
            assert answer.status_code == 200, answer.text
            return samples(answer.text)

        # The worker process sends; its counter shows in a web worker's scrape.
        wait_until(lambda: value(scraped(), "tracker_sends_total", provider="fake",
                                 outcome="accepted") == 1, timeout=20,
                   message="the worker's send never showed in /metrics")
        callbacks = 0
        while len(counting_pids(folder) - {worker}) < 2 and callbacks < 400:
            post_burst(server.base_url, callbacks, 8)
            callbacks += 8
        web = counting_pids(folder) - {worker}
        assert len(web) == 2 and worker in counting_pids(folder), (family, sorted(folder.iterdir()))
        assert all("gunicorn" in family.get(pid, "") for pid in web), (web, family)
        for _ in range(6):  # whichever web worker answers, the same sums
            now = scraped()
            assert value(now, "tracker_callbacks_total", provider="fake",
                         verdict="orphan") == callbacks
            assert value(now, "tracker_callback_seconds_count", provider="fake") == callbacks
            assert value(now, "tracker_orphans_waiting", provider="fake") == callbacks
            assert value(now, "tracker_sends_total", provider="fake", outcome="accepted") == 1
            assert value(now, "tracker_database_up") == 1
        assert db_rows(url, "SELECT count(*) FROM callback WHERE provider = 'fake'"
                       " AND verdict = 'orphan'")[0][0] == callbacks
