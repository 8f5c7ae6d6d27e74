"""gunicorn settings used by `tracker serve` and by config/gunicorn.conf.py.

Threaded workers whose event loop reads each request whole before a thread runs it
(tracker.web.worker): a stalled or slow client costs a socket, not a worker, and a request not
complete within `request_timeout_seconds` is dropped unread. Threads also let callbacks that
arrive together share one commit (tracker.intake). No --preload: database connections must
never cross fork(). No access log by default: the request line carries the secret callback
token.
"""

import os

workers = int(os.environ.get("TRACKER_WEB_WORKERS", "2"))
threads = int(os.environ.get("TRACKER_WEB_THREADS", "8"))
worker_class = "tracker.web.worker.BufferingWorker"
# Connections per worker, most of them idle or stalled ones; the worker lowers it to what the
# process may open.
worker_connections = 4000
timeout = 30
graceful_timeout = 20
keepalive = 2
preload_app = False
# gunicorn believes X-Forwarded-Proto (and friends) from 127.0.0.1 by default, whatever the app
# says: any local client could then claim https. The app alone decides, by `trusted_proxies`
# (tracker.web.security).
forwarded_allow_ips = ""
# gunicorn's own header limits bound what a sender can make us buffer before the app runs.
limit_request_line = 4094
limit_request_fields = 100
# gunicorn 24+ opens a control socket at one fixed path per user; several instances on one
# machine (tests, benchmarks, two services) would fight over it, and we do not use it.
control_socket_disable = True
# Secrets masked in gunicorn's own log lines ("Error handling request POST /callbacks/…/<token>").
logger_class = "tracker.logmask.Logger"


def post_worker_init(_worker: object) -> None:
    """The app is loaded in this worker: freeze it out of the collector's way (tracker.gctune)."""
    from tracker.gctune import tune_for_serving

    tune_for_serving()


def child_exit(_server: object, worker: object) -> None:
    """A web worker is gone: prometheus_client's multiprocess mode drops its live gauges (its
    counters stay counted; tracker.metrics)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
