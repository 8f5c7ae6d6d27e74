"""The worker: the dispatcher, the webhook sender, and one APScheduler running the periodic
jobs; never inside a web worker.

Every worker dispatches (on Postgres, any number of hosts share one queue: claims skip rows
another holds) and writes the export jobs started from the messages page (tracker/export_jobs.py:
claimed one at a time, never by two workers). The periodic jobs (poll, expiry, orphan re-match,
rollups, reports, cleaning old exports, retention) run only in the worker holding a lease row in
the database, so every job body runs once per period; the others stand by and take over when
the lease is released (at a graceful stop) or runs out.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import socket
import threading
from collections.abc import Callable

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask

from . import export_jobs, jobs, retention
from .db import db
from .dispatcher import Dispatcher, new_owner

log = logging.getLogger(__name__)
LEASE_NAME = "worker"
LEASE_SECONDS = 30.0
REPORTS_INTERVAL = 60.0  # a report is written within this long after its `at`
EXPORTS_CLEAN_INTERVAL = 600.0  # old export jobs and files go within this long after 24 h
RETENTION_INTERVAL = 600.0  # past their retention, rows go within this long (in batches)


class Worker:
    """Runs jobs while it holds the worker lease."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.is_leader = threading.Event()
        self.stopping = threading.Event()
        self.scheduler = BackgroundScheduler(
            timezone="UTC",
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
        )
        cfg = app.config["TRACKER"]
        self.scheduler.add_job(self._renew_lease, "interval", seconds=LEASE_SECONDS / 3,
                               id="lease", name="lease", next_run_time=_now())
        self._every("rematch_orphans", jobs.rematch_orphans, cfg["orphan_rematch_seconds"])
        self._every("poll", jobs.poll, cfg["poll_interval_seconds"])
        self._every("expire", jobs.expire, cfg["expire_interval_seconds"])
        # Overview rollups of closed hours and days: a period not rolled up yet is read live,
        # so a longer interval makes the overview slower for a while, never wrong.
        self._every("roll_up", jobs.roll_up, cfg["rollup_interval_seconds"])
        self._every("clean_exports", jobs.clean_exports, EXPORTS_CLEAN_INTERVAL)
        self._every("webhook_endpoints", jobs.disable_failing_webhooks, 3600.0)
        if cfg["reports"]:
            self._every("reports", jobs.write_reports, REPORTS_INTERVAL)
        if retention.enabled(cfg["retention_days"]):
            self._every("retention", functools.partial(jobs.apply_retention,
                                                       stop=self._retention_pause),
                        RETENTION_INTERVAL)

    def _every(self, name: str, job: Callable[[Flask], object], seconds: float) -> None:
        self.scheduler.add_job(self._guarded, "interval", seconds=seconds, id=name, name=name,
                               args=[name, job])

    def _retention_pause(self, seconds: float) -> bool:
        """Between two retention batches: wait, and stop at a stop or a lost lease."""
        return self.stopping.wait(seconds) or not self.is_leader.is_set()

    def _renew_lease(self) -> None:
        try:
            leader = jobs.hold_lease(LEASE_NAME, self.owner, LEASE_SECONDS)
        except Exception:
            log.exception("could not renew the worker lease")
            leader = False
        if leader != self.is_leader.is_set():
            log.info("worker %s %s the job lease", self.owner, "took" if leader else "lost")
        (self.is_leader.set if leader else self.is_leader.clear)()

    def _guarded(self, name: str, job: Callable[[Flask], object]) -> None:
        if self.stopping.is_set() or not self.is_leader.is_set():
            return
        try:
            job(self.app)
        except Exception:
            log.exception("job %s failed; it runs again at its next period", name)

    def run(self) -> None:
        """Dispatch and run the jobs until `stop()`; then let the sends under way finish and
        be recorded, wait for the jobs under way, and give up the lease at once (a standby
        worker takes over at its next renewal instead of when the lease runs out)."""
        log.info("worker %s starting", self.owner)
        dispatcher = threading.Thread(target=self._dispatch, name="dispatcher")
        dispatcher.start()
        exporter = threading.Thread(target=self._export, name="exports")
        exporter.start()
        webhooks = threading.Thread(target=self._deliver_webhooks, name="webhooks")
        webhooks.start()
        self.scheduler.start()
        while not self.stopping.wait(1.0):
            pass
        # Here, not in the signal handler: a handler runs between two bytecodes of the main
        # thread and may find it holding a scheduler or logging lock that a job thread needs
        # to finish, and waiting for that job there would wait forever.
        self.scheduler.shutdown(wait=True)
        if self.is_leader.is_set():
            try:
                jobs.release_lease(LEASE_NAME, self.owner)
            except Exception:
                log.exception("could not release the worker lease; it runs out by itself")
        dispatcher.join()
        exporter.join()
        webhooks.join()
        log.info("worker %s stopped", self.owner)

    def _dispatch(self) -> None:
        cfg = self.app.config["TRACKER"]
        providers = self.app.extensions["providers"]
        engine = Dispatcher(
            providers, max_attempts=cfg["send_max_attempts"],
            backoff_seconds=cfg["send_backoff_seconds"],
            interval=cfg["dispatch_interval_seconds"],
            claim_limit=cfg["dispatch_batch_size"])
        try:
            engine.run(self.stopping)
        finally:
            if not db.is_closed():
                db.close()

    def _deliver_webhooks(self) -> None:
        from .webhook_sender import Sender

        sender = Sender(self.app.extensions["providers"], self.app.config["TRACKER"])
        try:
            sender.run(self.stopping)
        finally:
            if not db.is_closed():
                db.close()

    def _export(self) -> None:
        """Write the export jobs started from the messages page, one at a time, on every
        worker (a thread: the dispatcher's sends wait on the network, not on this). A job
        under way when the worker stops goes back to the queue for the next worker."""
        owner = new_owner()
        while not self.stopping.is_set():
            try:
                ran = jobs.run_export_jobs(self.app, owner, self.stopping)
            except Exception:
                log.exception("export jobs: could not look for or write a job; trying again")
                ran = 0
            if not ran:
                self.stopping.wait(export_jobs.LOOK_SECONDS)

    def stop(self) -> None:
        """Ask `run()` to return; safe to call from a signal handler."""
        self.stopping.set()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
