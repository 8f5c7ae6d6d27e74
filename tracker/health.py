"""Readiness: is the database reachable, is its schema current, is a worker alive?

A worker is alive when the job lease (tracker.scheduler) was renewed within its length: the
lease holder renews it every 10 s and hands it over at a graceful stop, and a standby takes it
within 10 s when it runs out, so a lease that ran out means no worker has been running the jobs
for that long. Two primary-key reads in all, cheap enough to be probed every second. What a
check says is for the probe: nothing in it names a host, a user or a setting.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from .db import UNAVAILABLE_ERRORS, execute
from .migrations import MIGRATIONS

CHECKS = ("database", "migrations", "worker")


@dataclass
class Readiness:
    """Each check's result; ready when every check asked for holds."""

    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def failing(self) -> list[str]:
        return [name for name, result in self.checks.items() if not result["ok"]]

    @property
    def ready(self) -> bool:
        return not self.failing

    def as_json(self) -> dict[str, Any]:
        """The probe's answer."""
        return {"status": "ready" if self.ready else "not ready", "failing": self.failing,
                "checks": self.checks}


def readiness(now: dt.datetime, exclude: frozenset[str] = frozenset()) -> Readiness:
    """Run the checks not in `exclude`; a database that cannot be reached fails the others."""
    result = Readiness()
    try:
        applied = {row[0] for row in execute("SELECT version FROM schema_migration").fetchall()}
        lease = _lease_expiry()
    except UNAVAILABLE_ERRORS:
        result.checks["database"] = {"ok": False, "error": "cannot be reached"}
        for name in CHECKS[1:]:
            if name not in exclude:
                result.checks[name] = {"ok": False, "error": "database cannot be reached"}
        return result
    result.checks["database"] = {"ok": True}
    if "migrations" not in exclude:
        pending = [m.VERSION for m in MIGRATIONS if m.VERSION not in applied]
        result.checks["migrations"] = {"ok": not pending, "pending": len(pending)}
    if "worker" not in exclude:
        result.checks["worker"] = _worker(now, lease)
    return result


def _lease_expiry() -> dt.datetime | None:
    from .scheduler import LEASE_NAME  # the names only: nothing of the scheduler starts here

    row = execute("SELECT expires_at FROM lease WHERE name = ?", (LEASE_NAME,)).fetchone()
    if row is None:
        return None
    value = row[0]
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value


def _worker(now: dt.datetime, expires: dt.datetime | None) -> dict[str, Any]:
    from .scheduler import LEASE_SECONDS

    if expires is None:
        return {"ok": False, "error": "no worker holds the job lease"}
    renewed = now - (expires - dt.timedelta(seconds=LEASE_SECONDS))
    seconds = round(max(0.0, renewed.total_seconds()), 1)
    if expires < now:
        return {"ok": False, "error": "the job lease ran out: no worker renewed it",
                "lease_renewed_seconds_ago": seconds}
    return {"ok": True, "lease_renewed_seconds_ago": seconds}
