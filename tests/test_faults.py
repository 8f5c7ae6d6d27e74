"""Nothing acknowledged is lost: gunicorn workers are SIGKILLed every 0.1 s while a retrying
sender posts distinct postbacks (reliability.md §6.3, E1), on both databases."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import SKYCORE
from servers import _parents, cmdline, db_rows, reset_postgres, tracker_serve
from standins.skycore import SkycoreStandIn, postback

EVENTS = 800
SENDERS = 8
# The run has no fixed deadline: a loaded machine is slow, not wrong. It fails only when no
# callback at all is acknowledged for this long while senders still have some to deliver.
STALL_SECONDS = 30.0


def gunicorn_workers(serve_pid: int) -> list[int]:
    """The gunicorn worker processes (children of the gunicorn master under `tracker serve`)."""
    parents = _parents()
    masters = [p for p, parent in parents.items()
               if parent == serve_pid and "gunicorn" in cmdline(p)]
    return [p for p, parent in parents.items() if parent in masters]


def wait_while_progressing(threads: list[threading.Thread], progress: Callable[[], int]) -> float:
    """Wait for `threads` as long as `progress()` keeps rising; give up after STALL_SECONDS
    without a rise. Returns how long the last stall lasted."""
    seen, since = progress(), time.monotonic()
    while any(thread.is_alive() for thread in threads):
        time.sleep(0.2)
        now, count = time.monotonic(), progress()
        if count != seen:
            seen, since = count, now
        elif now - since > STALL_SECONDS:
            break
    return time.monotonic() - since


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_sigkilled_workers_lose_no_acknowledged_callback(kind: str, request: pytest.FixtureRequest,
                                                         tmp_path: Path) -> None:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'faults.sqlite3'}"
    else:
        url = request.getfixturevalue("pg_database_url")
        reset_postgres(url)
    acknowledged: set[str] = set()
    attempts = [0]
    lock = threading.Lock()
    pending = [f"K{i:05d}" for i in range(EVENTS)]
    stop = threading.Event()
    kills = [0]

    with SkycoreStandIn(api_key=SKYCORE["api_key"]) as sky, tracker_serve(
        tmp_path / "run", database_url=url, skycore_url=sky.url, web_workers=4,
    ) as server:
        url_cb = server.callback_url()

        def sender() -> None:
            with httpx.Client(timeout=5.0) as client:
                while not stop.is_set():
                    with lock:
                        if not pending:
                            return
                        tracking = pending.pop()
                    body = postback(tracking, "N202")
                    while not stop.is_set():  # retry until acknowledged, as providers do
                        with lock:
                            attempts[0] += 1
                        try:
                            answer = client.post(url_cb, content=body,
                                                 headers={"Content-Type": "text/xml"})
                        except httpx.HTTPError:
                            time.sleep(0.02)
                            continue
                        if answer.status_code == 200:
                            with lock:
                                acknowledged.add(tracking)
                            break
                        time.sleep(0.02)

        def chaos() -> None:
            # A kill every 0.1 s, but only once a callback was acknowledged since the last
            # one: on a loaded machine, where a worker takes longer to boot than 0.1 s, kills
            # at a fixed pace would leave no worker alive long enough to answer anything.
            rng = random.Random(7)
            acked_at_last_kill = -1
            while not stop.wait(0.1):
                with lock:
                    acked = len(acknowledged)
                if acked == acked_at_last_kill:
                    continue
                workers = gunicorn_workers(server.proc.pid)
                if workers:
                    acked_at_last_kill = acked
                    try:
                        os.kill(rng.choice(workers), signal.SIGKILL)
                        kills[0] += 1
                    except ProcessLookupError:
                        pass

        threads = [threading.Thread(target=sender) for _ in range(SENDERS)]
        killer = threading.Thread(target=chaos)
        for thread in [*threads, killer]:
            thread.start()
        stalled = wait_while_progressing(threads, lambda: len(acknowledged))
        stop.set()
        killer.join(timeout=5)
        for thread in threads:
            thread.join(timeout=10)

    stored = {row[0] for row in db_rows(
        url, "SELECT provider_message_id FROM event WHERE kind = 'receipt'")}
    per_id = db_rows(url, "SELECT provider_message_id, count(*) FROM event WHERE kind = 'receipt'"
                          " GROUP BY provider_message_id HAVING count(*) > 1")
    assert kills[0] >= 5, "the chaos thread should have killed workers"
    assert len(acknowledged) == EVENTS, (
        f"only {len(acknowledged)} acknowledged; none for {stalled:.0f} s before the test gave up")
    assert acknowledged <= stored, f"acknowledged but lost: {sorted(acknowledged - stored)[:10]}"
    assert per_id == []  # retries after a kill are folded as duplicates, never stored twice
    assert attempts[0] >= EVENTS
    if kind == "sqlite":
        assert db_rows(url, "PRAGMA integrity_check") == [("ok",)]
