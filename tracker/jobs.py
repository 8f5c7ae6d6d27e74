"""Job bodies the worker runs on a schedule. Each is idempotent and safe to run twice."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from flask import Flask

from . import correlation, expiry, export_jobs, overview, polling, reports, retention
from .db import db, write_tx
from .dispatcher import new_owner
from .models import Lease, utcnow

log = logging.getLogger(__name__)


def rematch_orphans(app: Flask) -> int:
    """Apply orphan receipts whose message has since got its provider id."""
    applied = 0
    with db.connection_context():
        for provider, provider_message_id, message_id in correlation.pending_orphans():
            with write_tx():
                applied += correlation.rematch_orphans(provider, provider_message_id, message_id)
    if applied:
        log.info("re-matched %d orphan receipts", applied)
    return applied


def poll(app: Flask) -> int:
    """Ask providers with a status API about messages still not final."""
    applied = 0
    with db.connection_context():
        for provider in app.extensions["providers"].values():
            applied += polling.poll_provider(provider)
    if applied:
        log.info("polling applied %d receipt(s)", applied)
    return applied


def expire(app: Flask) -> int:
    """Mark messages past their validity as expired (inferred)."""
    with db.connection_context():
        count = expiry.expire_overdue()
    if count:
        log.info("expired %d message(s)", count)
    return count


def roll_up(app: Flask) -> int:
    """Refresh the overview's rollups (closed hours and days missing or changed since)."""
    with db.connection_context():
        periods = overview.roll_up()
    if periods:
        log.info("rolled up %d period(s) for the overview", periods)
    return periods


def write_reports(app: Flask) -> int:
    """Write the scheduled reports whose latest closed period has no file yet."""
    cfg = app.config["TRACKER"]
    directory = Path(cfg["reports_dir"])
    now = utcnow()
    if not reports.due(cfg["reports"], now, directory):
        return 0  # the usual minute: one stat per report, no database connection
    with db.connection_context():
        written = reports.run_due(cfg["reports"], now, directory=directory,
                                  default_region=cfg["default_region"],
                                  mask=cfg["mask_phone_numbers"])
    return len(written)


def disable_failing_webhooks(app: Flask) -> int:
    """Disable webhook endpoints that have failed for days without a success."""
    from . import outbox

    with db.connection_context():
        disabled = outbox.disable_failing()
    if disabled:
        log.warning("disabled failing webhook endpoint(s) %s", ", ".join(map(str, disabled)))
    return len(disabled)


def run_export_jobs(app: Flask, owner: str | None = None,
                    stopping: threading.Event | None = None) -> int:
    """Write the export jobs waiting (started from the messages page), oldest first, until
    none is left; return how many were written. Every worker runs this (not only the lease
    holder): jobs are claimed one by one, never written twice."""
    with db.connection_context():
        return export_jobs.run_waiting(owner or new_owner(), export_jobs.folder_of(app),
                                       default_region=app.config["TRACKER"]["default_region"],
                                       stopping=stopping)


def clean_exports(app: Flask) -> int:
    """Delete export jobs and files older than export_jobs.KEEP_SECONDS."""
    with db.connection_context():
        deleted = export_jobs.clean(export_jobs.folder_of(app))
    if deleted:
        log.info("deleted %d old export job(s) and their files", deleted)
    return deleted


def apply_retention(app: Flask, stop: Callable[[float], bool] | None = None) -> int:
    """Delete callbacks, and final messages with their events, past `retention_days`, in
    small batches (tracker.retention); `stop(pause)` waits between batches and may end it."""
    days = app.config["TRACKER"]["retention_days"]
    if not retention.enabled(days):
        return 0
    with db.connection_context():
        return sum(retention.purge(days, stop=stop).values())


def hold_lease(name: str, owner: str, ttl_seconds: float) -> bool:
    """Take or renew the named lease; True while this owner holds it."""
    now = utcnow()
    expires = now + dt.timedelta(seconds=ttl_seconds)
    with db.connection_context(), write_tx():
        renewed = (Lease.update(owner=owner, expires_at=expires)
                   .where((Lease.name == name)
                          & ((Lease.owner == owner) | (Lease.expires_at < now)))
                   .execute())
        if renewed:
            return True
        inserted = (Lease.insert(name=name, owner=owner, expires_at=expires)
                    .on_conflict(conflict_target=[Lease.name], action="NOTHING").execute())
        return bool(inserted) and Lease.get_by_id(name).owner == owner


def release_lease(name: str, owner: str) -> None:
    """Give up the named lease now (a graceful stop), if this owner holds it."""
    with db.connection_context(), write_tx():
        Lease.delete().where((Lease.name == name) & (Lease.owner == owner)).execute()
