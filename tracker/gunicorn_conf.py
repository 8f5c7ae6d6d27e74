"""gunicorn settings used by `tracker serve` and by config/gunicorn.conf.py.

Sync workers: a callback is short and CPU-bound, and webhook senders rarely keep connections
alive, so sync -w 4 is the measured sweet spot on 2 cores (perf-baseline.md). No --preload:
database connections must never cross fork(). No access log by default: the request line
carries the secret callback token.
"""

import os

workers = int(os.environ.get("TRACKER_WEB_WORKERS", "4"))
worker_class = "sync"
timeout = 30
graceful_timeout = 20
keepalive = 2
preload_app = False
# gunicorn's own header limits bound what a sender can make us buffer before the app runs.
limit_request_line = 4094
limit_request_fields = 100
# gunicorn 24+ opens a control socket at one fixed path per user; several instances on one
# machine (tests, benchmarks, two services) would fight over it, and we do not use it.
control_socket_disable = True
# Secrets masked in gunicorn's own log lines ("Error handling request POST /callbacks/…/<token>").
logger_class = "tracker.logmask.Logger"
