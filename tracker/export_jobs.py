"""Export jobs: an export started from the messages page is a row of `export_job` (m0008),
written by a worker, watched on its status page, downloaded once done (no Flask here).

    queued --claim--> running --> done | failed
                         |
                         +-- lease ran out, or its writer is gone --> claimed again

- `create` stores the job: who asked, the format, the filter as the page shows it, and whether
  phone numbers are masked (decided by the requester's role when asking).
- Every worker (`tracker worker`, tracker/scheduler.py) looks for work each LOOK_SECONDS and
  `claim`s the oldest job waiting, in one statement (Postgres: `FOR UPDATE SKIP LOCKED`; SQLite:
  the writer lock), so two workers never write the same job. A claim is a lease, as for sends
  (tracker/dispatcher.py): the writer renews it with every progress write, and a job whose
  lease ran out (its worker died or hangs), or whose worker on this host is gone, is claimed
  again and written from the start.
- `run` counts the rows (exact, up to the highest id at the start: what the file will hold, but
  for messages deleted or changing status meanwhile), then writes the file through
  `exports.export` into the exports folder under a name of this claim's own, renamed to
  `<token>.<ext>` when complete. `rows_written` is written at most once per PROGRESS_SECONDS
  (one small UPDATE, not fsynced: a lost progress figure is harmless); the status page
  computes the percentage and the time left from it.
- A small export (up to `export_inline_rows`) is claimed by the web request that asks for it
  and written within that request, so the click downloads the file at once, as before jobs
  existed, and works with no worker running.
- `clean` deletes jobs older than KEEP_SECONDS with their files, and files no job owns.

Only the requester (or an admin) sees a job; its token is random besides.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import exports, reporting
from .db import execute, is_sqlite, write_tx
from .dispatcher import owner_is_gone
from .models import ExportJob, Lease, utcnow

log = logging.getLogger(__name__)

LEASE_SECONDS = 60.0  # a writer silent this long has died or hangs: the job is claimed again
PROGRESS_SECONDS = 1.0  # rows_written is written at most this often (and the lease renewed)
LOOK_SECONDS = 1.0  # a worker's look for a job waiting, when it found none the last time
KEEP_SECONDS = 24 * 3600  # jobs and their files are deleted after this long
MAX_UNDER_WAY = 4  # queued or running per user: more waits for one to finish
WORKER_LEASE = "worker"  # scheduler.LEASE_NAME: held while a worker runs
STATES = ("queued", "running", "done", "failed")
# What `clean` may delete in the folder: a job's file, or the temp file of a claim.
_OURS = re.compile(r"\.?[0-9a-f]{32}\.(?:[0-9a-f]{8}\.)?[a-z]+(?:\.part)?")
_WAITING = "(state = 'queued' OR (state = 'running' AND (claimed_until < ?{gone})))"

class JobLost(Exception):
    """Another writer took the job over (this one's lease ran out): stop writing it."""


class Stopped(Exception):
    """The worker is stopping: the job goes back to the queue."""


def folder_of(app: Any) -> Path:
    """The exports folder of an app: EXPORTS_DIR in its config, else <instance>/exports."""
    path = Path(app.config.get("EXPORTS_DIR") or Path(app.instance_path) / "exports")
    path.mkdir(parents=True, exist_ok=True)
    return path


def page_filters(flt: reporting.MessageFilter) -> dict[str, str]:
    """The filter as the messages page names its fields (paging dropped)."""
    return {"status": flt.status, "provider": flt.provider, "q": flt.q,
            "error_code": flt.error_code,
            "created_from": flt.created_from.isoformat() if flt.created_from else "",
            "created_to": flt.created_to.isoformat() if flt.created_to else ""}


def message_filter(job: ExportJob) -> reporting.MessageFilter:
    """The job's filter."""
    return reporting.MessageFilter.from_args(json.loads(job.filters))


# -- asking --------------------------------------------------------------------------------


def under_way(username: str) -> int:
    """How many of the user's jobs are queued or running."""
    return (ExportJob.select().where((ExportJob.requested_by == username)
                                     & ExportJob.state.in_(("queued", "running"))).count())


def create(fmt: str, flt: reporting.MessageFilter, requested_by: str, *, masked: bool,
           owner: str | None = None) -> ExportJob:
    """Store a job; `owner`: already claimed by that writer (the web request writing a small
    export itself), else queued for a worker."""
    exports.get_format(fmt)  # ValueError for an unknown name, before anything is stored
    now = utcnow()
    claimed = {"state": "running", "claimed_by": owner, "started_at": now,
               "claimed_until": now + dt.timedelta(seconds=LEASE_SECONDS)} if owner else {
        "state": "queued"}
    with write_tx():
        return ExportJob.create(token=secrets.token_hex(16), requested_by=requested_by,
                                format=fmt, filters=json.dumps(page_filters(flt)),
                                masked=masked, created_at=now, **claimed)


def visible(token: str, username: str, is_admin: bool) -> ExportJob | None:
    """The job with that token, if this user may see it (theirs, or any for an admin)."""
    if not (token.isascii() and token.isalnum()):
        return None
    job = ExportJob.get_or_none(ExportJob.token == token)
    if job is None or (job.requested_by != username and not is_admin):
        return None
    return job


def worker_running(now: dt.datetime | None = None) -> bool:
    """True while a worker holds its lease (it renews it every few seconds)."""
    now = now or utcnow()
    return Lease.select().where((Lease.name == WORKER_LEASE) & (Lease.expires_at >= now)).exists()


# -- writing -------------------------------------------------------------------------------


def _gone_owners(me: str) -> list[str]:
    """Writers of running jobs that are processes of this host no longer running."""
    owners = [r[0] for r in execute(
        "SELECT DISTINCT claimed_by FROM export_job WHERE state = 'running'").fetchall() if r[0]]
    return [owner for owner in owners if owner_is_gone(owner, me)]


def claim(owner: str, now: dt.datetime | None = None) -> ExportJob | None:
    """Take the oldest job waiting (queued, or running under a lease that ran out or a writer
    that is gone) for `owner`; None when there is none."""
    now = now or utcnow()
    gone = _gone_owners(owner)
    waiting = _WAITING.format(gone=" OR claimed_by = ?" * len(gone))
    params = (now, *gone)
    if execute(f"SELECT 1 FROM export_job WHERE {waiting} LIMIT 1",  # noqa: S608
               params).fetchone() is None:
        return None  # the usual answer: one read, no write transaction
    lock = "" if is_sqlite() else " FOR UPDATE SKIP LOCKED"
    with write_tx():
        row = execute(
            "UPDATE export_job SET state = 'running', claimed_by = ?, claimed_until = ?,"  # noqa: S608
            " started_at = ?, progress_at = NULL, rows_written = 0, rows_expected = NULL"
            f" WHERE id = (SELECT id FROM export_job WHERE {waiting}"
            f" ORDER BY id LIMIT 1{lock}) RETURNING id",
            (owner, now + dt.timedelta(seconds=LEASE_SECONDS), now, *params),
        ).fetchone()
    return ExportJob.get_by_id(row[0]) if row else None


class _Tracker:
    """The progress callback of one claim: writes rows_written and renews the lease at most
    once per PROGRESS_SECONDS; raises JobLost when the claim is no longer this writer's, and
    Stopped when its worker is stopping."""

    def __init__(self, job: ExportJob, owner: str, stopping: threading.Event | None) -> None:
        self.job_id, self.owner, self.stopping = job.id, owner, stopping
        self.written_at = time.monotonic()

    def __call__(self, rows: int) -> None:
        if self.stopping is not None and self.stopping.is_set():
            raise Stopped
        if time.monotonic() - self.written_at >= PROGRESS_SECONDS:
            self.write(rows_written=rows)

    def write(self, **values: Any) -> None:
        now = utcnow()
        with write_tx(durable=False):
            updated = (ExportJob.update(progress_at=now, claimed_until=now + dt.timedelta(
                seconds=LEASE_SECONDS), **values)
                       .where((ExportJob.id == self.job_id) & (ExportJob.claimed_by == self.owner)
                              & (ExportJob.state == "running")).execute())
        self.written_at = time.monotonic()
        if not updated:
            raise JobLost(f"export job {self.job_id} was taken over by another writer")


def run(job: ExportJob, owner: str, folder: Path, *, default_region: str = "",
        stopping: threading.Event | None = None) -> ExportJob:
    """Write a job claimed by `owner`; return it as it ended (done, failed, back in the queue
    when stopping, or as another writer left it when this one lost its claim)."""
    fmt = exports.get_format(job.format)
    tracker = _Tracker(job, owner, stopping)
    temp = folder / f".{job.token}.{secrets.token_hex(4)}.{fmt.extension}"  # this claim's own
    final = folder / fmt.file_name(job.token)
    try:
        top = exports.top_id()
        flt = message_filter(job)
        tracker.write(rows_expected=exports.expected_rows(flt, default_region, top))
        count = exports.export(job.format, flt, temp, default_region=default_region,
                               masked=job.masked, progress=tracker, top=top)
        os.replace(temp, final)
        _finish(job, owner, state="done", rows_written=count, file_name=final.name)
    except JobLost:
        log.warning("export job %s: taken over by another writer; this one stops", job.id)
    except Stopped:
        _finish(job, owner, state="queued", rows_written=0, started_at=None, claimed_by=None)
        log.info("export job %s: back in the queue (the worker is stopping)", job.id)
    except Exception as exc:
        log.exception("export job %s failed", job.id)
        _finish(job, owner, state="failed", error=f"{type(exc).__name__}: {exc}"[:1000])
    finally:
        temp.unlink(missing_ok=True)
        temp.with_name(temp.name + ".part").unlink(missing_ok=True)
    return ExportJob.get_by_id(job.id)


def _finish(job: ExportJob, owner: str, **values: Any) -> None:
    now = utcnow()
    ended = {"finished_at": now} if values["state"] in ("done", "failed") else {}
    with write_tx():
        (ExportJob.update(claimed_until=None, progress_at=now, **ended, **values)
         .where((ExportJob.id == job.id) & (ExportJob.claimed_by == owner)).execute())


def run_waiting(owner: str, folder: Path, *, default_region: str = "",
                stopping: threading.Event | None = None) -> int:
    """Claim and write jobs until none is waiting (or `stopping`); return how many ran."""
    ran = 0
    while not (stopping is not None and stopping.is_set()):
        job = claim(owner)
        if job is None:
            break
        run(job, owner, folder, default_region=default_region, stopping=stopping)
        ran += 1
    return ran


# -- cleaning ------------------------------------------------------------------------------


def clean(folder: Path, now: dt.datetime | None = None) -> int:
    """Delete jobs older than KEEP_SECONDS with their files, and files in the folder that are
    older than that (a writer that died left its temp file); return how many jobs went."""
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=KEEP_SECONDS)
    with write_tx():
        tokens = [r[0] for r in execute(
            "DELETE FROM export_job WHERE created_at < ? RETURNING token", (cutoff,)).fetchall()]
    for token in tokens:
        for path in folder.glob(f"{token}.*"):
            path.unlink(missing_ok=True)
    oldest = cutoff.replace(tzinfo=dt.UTC).timestamp()
    for entry in os.scandir(folder):
        if (_OURS.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)
                and entry.stat(follow_symlinks=False).st_mtime < oldest):
            os.unlink(entry.path)
    return len(tokens)


# -- the status page -----------------------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    """Where a job stands, for people: percent done and the time left, when known."""

    percent: int | None
    rate: float | None  # rows per second so far
    seconds_left: float | None


def standing(job: ExportJob, now: dt.datetime | None = None) -> Standing:
    """Percent (never 100 before the file is there) and the time left at the rate so far."""
    if job.state == "done":
        return Standing(100, None, 0.0)
    if job.state != "running" or not job.rows_expected:
        return Standing(None, None, None)
    percent = min(99, job.rows_written * 100 // job.rows_expected)
    if not (job.rows_written and job.progress_at and job.started_at):
        return Standing(percent, None, None)
    elapsed = (job.progress_at - job.started_at).total_seconds()
    if elapsed <= 0:
        return Standing(percent, None, None)
    rate = job.rows_written / elapsed
    since = ((now or utcnow()) - job.progress_at).total_seconds()
    left = max(0.0, (job.rows_expected - job.rows_written) / rate - since)
    return Standing(percent, rate, left)


def say_duration(seconds: float) -> str:
    """"about 40 s", "about 3 min", "under 5 s"."""
    if seconds < 5:
        return "under 5 s"
    if seconds < 90:
        return f"about {round(seconds / 5) * 5:.0f} s"
    return f"about {round(seconds / 60):.0f} min"

