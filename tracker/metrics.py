"""Prometheus metrics: counters the busy paths bump, gauges read from the database at scrape.

Counters and the latency histogram are bumped where things happen (the callback endpoint, the
dispatcher, the webhook sender, the retention job, 503 answers). Under `tracker serve` every
process writes them to its own small memory-mapped file in PROMETHEUS_MULTIPROC_DIR (set by
serve to `<instance>/metrics`, emptied at each start; gunicorn's child_exit hook marks a dead
worker), and a scrape of any web worker sums every process's files: the web workers' callbacks
and the worker's sends alike (prometheus_client's multiprocess mode). Without that variable
(the tests, a single process) the counters are this process's own.

Gauges (queue depth, the oldest due message, poll lag, orphans, webhook deliveries waiting, the
worker's lease) are not kept by any process: the scraping process reads them from the database
with a few queries, each over a small partial index, so they are right whichever process
changed what, and cost nothing between scrapes.

Cost on the callback path: one labelled counter and one histogram bucket per callback, each a
dict lookup and a write under a lock (about 2 µs together, against 1.3 ms per callback).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from .db import UNAVAILABLE_ERRORS, execute
from .models import utcnow

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REGISTRY = CollectorRegistry(auto_describe=False)  # this process's own (no multiprocess dir)
disable_created_metrics()  # a *_created series beside each counter says nothing we need

CALLBACKS = Counter(
    "tracker_callbacks", "Provider callbacks by provider and verdict; refused ones by why "
    "(not_found, method_not_allowed, too_large, cut_off, forbidden, unavailable).",
    ["provider", "verdict"], registry=REGISTRY)
CALLBACK_SECONDS = Histogram(
    "tracker_callback_seconds", "Time to handle a provider callback, from its whole request "
    "to the answer (stored and applied, or refused).", ["provider"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY)
SENDS = Counter(
    "tracker_sends", "Messages handed to a provider, by provider and what its answer was: "
    "accepted, rejected (the recipient or text), failed (provider side, permanent), error "
    "(passing: retried or failed over), unknown (may have reached it; never resent).",
    ["provider", "outcome"], registry=REGISTRY)
UNAVAILABLE = Counter(
    "tracker_unavailable_answers", "Requests answered 503 because the database could not be "
    "reached or took too long, by area (callbacks, api, dashboard).", ["area"],
    registry=REGISTRY)
WORKER_DATABASE_ERRORS = Counter(
    "tracker_worker_database_errors", "Worker steps that found the database unavailable, by "
    "part (dispatcher); each is retried.", ["part"], registry=REGISTRY)
WEBHOOK_ATTEMPTS = Counter(
    "tracker_webhook_attempts", "Status webhook HTTP tries recorded, by outcome: delivered "
    "(2xx) or failed (anything else; retried with backoff until given up).", ["outcome"],
    registry=REGISTRY)
RETENTION_DELETED = Counter(
    "tracker_retention_deleted_rows", "Rows the retention job deleted, by table (message rows "
    "take their events with them).", ["table"], registry=REGISTRY)


def send_outcome(outcome: Any) -> str:
    """The `outcome` label of a send's answer (a SendResult, or a SendError)."""
    if not hasattr(outcome, "permanent"):
        return "accepted"
    if outcome.outcome_unknown:
        return "unknown"
    if not outcome.permanent:
        return "error"
    return "failed" if outcome.provider_side else "rejected"


def count_sends(provider: str, outcomes: Iterable[Any]) -> None:
    """Count the recorded answers of one request to `provider`."""
    for outcome in outcomes:
        SENDS.labels(provider, send_outcome(outcome)).inc()


def count_webhook_attempts(tries: Iterable[Any]) -> None:
    """Count recorded webhook tries (tracker.outbox.Try) by outcome."""
    for done in tries:
        WEBHOOK_ATTEMPTS.labels("delivered" if done.ok else "failed").inc()


def multiprocess_dir() -> str | None:
    """The folder every process writes its counters to, when set."""
    return os.environ.get(MULTIPROC_ENV) or None


def fresh_multiprocess_dir(instance_dir: str) -> str:
    """The folder `tracker serve` hands its children: PROMETHEUS_MULTIPROC_DIR if set, else
    `<instance>/metrics`; emptied of earlier runs' files (their pids may come again)."""
    folder = Path(multiprocess_dir() or Path(instance_dir) / "metrics")
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink(missing_ok=True)
    return str(folder)


def exposition(providers: Iterable[str]) -> bytes:
    """The text format of every process's counters and the database's gauges."""
    return generate_latest(_Scrape(list(providers)))  # type: ignore[arg-type]


class _Scrape:
    """What one scrape collects: the counters (every process's, or this one's), then the
    gauges read from the database."""

    def __init__(self, providers: list[str]) -> None:
        self.providers = providers

    def collect(self) -> Iterator[Metric]:
        folder = multiprocess_dir()
        counters = MultiProcessCollector(None, path=folder) if folder else REGISTRY
        yield from counters.collect()
        yield from database_gauges(self.providers, utcnow())


def database_gauges(providers: list[str], now: dt.datetime) -> list[Metric]:
    """The gauges read from the database; only `tracker_database_up` 0 when it cannot be."""
    up = GaugeMetricFamily("tracker_database_up",
                           "1 when this scrape could read the database, else 0.")
    try:
        gauges = [*_queue(now), _poll_lag(providers, now), _orphans(), *_webhooks(now),
                  *_lease(now)]
    except UNAVAILABLE_ERRORS as exc:
        log.warning("metrics: database unavailable: %r", exc)
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    return [up, *gauges]


def _age(now: dt.datetime, since: Any) -> float:
    """Seconds from `since` (a naive UTC datetime, or its text on SQLite) to now, never < 0."""
    if since is None:
        return 0.0
    if isinstance(since, str):
        since = dt.datetime.fromisoformat(since)
    return max(0.0, (now - since).total_seconds())


def _queue(now: dt.datetime) -> list[Metric]:
    depth = GaugeMetricFamily("tracker_queue_due_messages",
                              "Messages due to be sent now and not yet started, by provider.",
                              labels=["provider"])
    oldest = GaugeMetricFamily("tracker_queue_oldest_due_seconds",
                               "How long the oldest message due has been waiting, by provider.",
                               labels=["provider"])
    # The (provider, due_at) partial index holds only messages with a due time.
    for provider, count, first in execute(
            "SELECT provider, count(*), min(due_at) FROM message WHERE due_at IS NOT NULL"
            " AND due_at <= ? AND status IN ('queued', 'scheduled')"
            " AND send_started_at IS NULL GROUP BY provider", (now,)).fetchall():
        depth.add_metric([provider], count)
        oldest.add_metric([provider], _age(now, first))
    return [depth, oldest]


def _poll_lag(providers: list[str], now: dt.datetime) -> Metric:
    lag = GaugeMetricFamily("tracker_poll_lag_seconds",
                            "How long the oldest status poll due has been waiting, by provider "
                            "(0: none overdue).", labels=["provider"])
    for provider in providers:  # one probe of the partial (provider, poll_at) index each
        first = execute("SELECT min(poll_at) FROM message WHERE provider = ?"
                        " AND status_rank < 3 AND poll_at IS NOT NULL",
                        (provider,)).fetchone()[0]
        lag.add_metric([provider], _age(now, first))
    return lag


def _orphans() -> Metric:
    orphans = GaugeMetricFamily("tracker_orphans_waiting",
                                "Receipts waiting for their message (orphans), by provider.",
                                labels=["provider"])
    # The partial orphan index holds these rows alone.
    for provider, count in execute(
            "SELECT provider, count(*) FROM event WHERE message_id IS NULL"
            " GROUP BY provider").fetchall():
        orphans.add_metric([provider or ""], count)
    return orphans


def _webhooks(now: dt.datetime) -> list[Metric]:
    pending = GaugeMetricFamily("tracker_webhook_deliveries_pending",
                                "Status webhook deliveries not delivered or given up yet.")
    oldest = GaugeMetricFamily("tracker_webhook_oldest_due_seconds",
                               "How long the oldest webhook delivery due has been waiting.")
    count, first = execute(  # the partial index of pending deliveries
        "SELECT count(*), min(next_at) FROM webhook_delivery WHERE state = 'pending'"
    ).fetchone()
    pending.add_metric([], count)
    oldest.add_metric([], _age(now, first))
    return [pending, oldest]


def _lease(now: dt.datetime) -> list[Metric]:
    from .scheduler import LEASE_NAME, LEASE_SECONDS

    row = execute("SELECT expires_at FROM lease WHERE name = ?", (LEASE_NAME,)).fetchone()
    if row is None:
        return []  # no worker holds it: the series is absent (alert on absent())
    renewed = GaugeMetricFamily("tracker_worker_lease_age_seconds",
                                "Seconds since a worker last renewed the job lease (renewed "
                                f"every {LEASE_SECONDS / 3:g} s; it runs out at "
                                f"{LEASE_SECONDS:g}).")
    expires = row[0]
    if isinstance(expires, str):
        expires = dt.datetime.fromisoformat(expires)
    renewed.add_metric([], _age(now, expires - dt.timedelta(seconds=LEASE_SECONDS)))
    return [renewed]
