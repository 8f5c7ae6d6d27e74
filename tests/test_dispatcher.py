"""Sending at volume and never twice, on both databases, against stand-ins over real HTTP.

In-process: answers that leave the outcome open, a send lease that runs out, a dead
dispatcher's sends found at start, failover and retry with sends in parallel, cancel racing
dispatch. Across processes: real dispatcher processes sharing one queue and one rate limit,
`tracker serve` killed with SIGKILL mid-campaign and started again, and a graceful stop.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import MOBIZON_KEY, SKYCORE, build_app, make_config, running
from flask import Flask
from servers import (
    TrackerServer,
    cmdline,
    db_rows,
    descendants,
    start_tracker,
    tracker_command,
    wait_until,
)
from standins.mobizon import MobizonStandIn
from standins.skycore import Reply, SkycoreStandIn

from tracker import sending
from tracker.db import db
from tracker.dispatcher import Dispatcher
from tracker.models import Event, Message, utcnow


def config(database_url: str, sky_url: str, mob_url: str = "http://127.0.0.1:9",
           **skycore: Any) -> dict[str, Any]:
    return make_config(database_url, providers={
        "skycore": {**SKYCORE, "base_url": sky_url, **skycore},
        "mobizon": {"api_key": MOBIZON_KEY, "base_url": mob_url, "callback_token": "mz-token"},
    }, default_provider="skycore", routes={"+1": ["skycore", "mobizon"]})


@pytest.fixture
def app(database_url: str, sky: SkycoreStandIn, mob: MobizonStandIn) -> Iterator[Flask]:
    with running(config(database_url, sky.url, mob.url, max_in_flight=8)) as flask_app:
        yield flask_app


def queue(text: str, to: str = "+15551234888", provider: str = "skycore",
          failover: tuple[str, ...] = ()) -> Message:
    return sending.enqueue(sending.NewMessage(to=to, text=text, provider=provider,
                                              failover=failover), source="test")


def dispatch(app: Flask, *, backoff_seconds: float = 30.0, batch_size: int = 100) -> int:
    return sending.dispatch(app.extensions["providers"], batch_size=batch_size, max_attempts=3,
                            backoff_seconds=backoff_seconds)


def kinds(message_id: int) -> list[str]:
    return [e.kind for e in Event.select().where(Event.message == message_id).order_by(Event.id)]


# -- answers that leave the outcome open --------------------------------------------------------


@pytest.mark.parametrize("body", [
    b"<html><body><h1>Service</h1> Your request is being processed</body></html>",
    b"<RESPONSE><STATUS>Success</STATUS><TO>15551234888</TO></RESPONSE>",  # no TRACKINGID
], ids=["html-200", "success-without-trackingid"])
def test_a_2xx_we_cannot_read_is_unknown_and_never_sent_again(app: Flask, sky: SkycoreStandIn,
                                                              body: bytes) -> None:
    sky.script(Reply.http_error(200, body))
    message = queue("open outcome")
    assert dispatch(app) == 1
    stored = Message.get_by_id(message.id)
    assert (stored.status, stored.due_at, stored.send_started_at) == ("unknown", None, None)
    assert stored.error_code in ("UNREADABLE", "NO_TRACKINGID")
    assert kinds(message.id) == ["created", "send_unknown"]
    assert dispatch(app) == 0
    assert len(sky.requests) == 1


def test_a_refusal_we_cannot_read_is_retried(app: Flask, sky: SkycoreStandIn) -> None:
    sky.script(Reply.http_error(403, b"<html>Forbidden by the firewall</html>"))
    message = queue("refused")
    dispatch(app, backoff_seconds=0)
    assert (Message.get_by_id(message.id).status, kinds(message.id)[-1]) == ("queued", "retry")
    dispatch(app)
    assert Message.get_by_id(message.id).status == "accepted"
    assert len(sky.requests) == 2


# -- sends that never got an answer -------------------------------------------------------------


def _start(owner: str, lease: dt.timedelta) -> list[Message]:
    """What a dispatcher does up to its request: claim and record the sends as started."""
    return sending.claim_due(owner, {"skycore": 100}, start=frozenset({"skycore"}), lease=lease)


def test_a_send_whose_lease_ran_out_is_unknown_and_never_sent(app: Flask,
                                                              sky: SkycoreStandIn) -> None:
    messages = [queue(f"lost #{i}") for i in range(3)]
    other_host = "elsewhere:4242:abcdef"
    started = _start(other_host, dt.timedelta(seconds=60))  # ... and that host died
    assert sorted(m.id for m in started) == [m.id for m in messages]
    with Dispatcher(app.extensions["providers"], max_attempts=3, backoff_seconds=1) as engine:
        assert engine.reap() == 0  # its lease still runs: it may be answered yet
        assert engine.run_once(10) == 0  # and nobody else sends it meanwhile
        Message.update(claimed_until=utcnow() - dt.timedelta(seconds=1)).execute()
        assert engine.reap() == 3
        assert engine.run_once(10) == 0
    for message in messages:
        stored = Message.get_by_id(message.id)
        assert (stored.status, stored.error_code, stored.attempts) == ("unknown", "SEND_LOST", 1)
        assert (stored.send_started_at, stored.claimed_by, stored.due_at) == (None, None, None)
        last = Event.select().where(Event.message == message.id).order_by(Event.id.desc()).get()
        assert (last.kind, last.status, last.applied) == ("send_unknown", "unknown", True)
        assert last.provider == stored.provider  # the timeline says whose answer is missing
        assert "lease ran out" in last.detail and other_host in last.detail
    assert sky.requests == []


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_dead_dispatcher_of_this_host_has_its_sends_declared_lost_at_start(
        app: Flask, sky: SkycoreStandIn) -> None:
    host = socket.gethostname()
    dead, alive = queue("dead dispatcher's"), queue("live dispatcher's", "+15551234999")
    _start(f"{host}:{_dead_pid()}:a1b2c3", dt.timedelta(hours=1))
    Message.update(claimed_by=f"{host}:{os.getppid()}:d4e5f6").where(
        Message.id == alive.id).execute()  # a process of this host that still runs
    with Dispatcher(app.extensions["providers"], max_attempts=3, backoff_seconds=1) as engine:
        assert engine.recover() == 1
    assert Message.get_by_id(dead.id).status == "unknown"
    assert "dispatcher stopped" in Event.select().where(
        Event.message == dead.id, Event.kind == "send_unknown").get().detail
    assert Message.get_by_id(alive.id).status == "queued"  # its lease decides, not us
    assert sky.requests == []


def test_every_dead_dispatcher_of_this_host_is_cleaned_up_at_start(
        app: Flask, sky: SkycoreStandIn) -> None:
    host = socket.gethostname()
    first, second = (f"{host}:{_dead_pid()}:a1b2c3", f"{host}:{_dead_pid()}:d4e5f6")
    lost = [queue("first's send"), queue("second's send", "+15551234999")]
    for owner in (first, second):  # say two worker processes of a `serve` that was killed
        sending.claim_due(owner, {"skycore": 1}, start=frozenset({"skycore"}),
                          lease=dt.timedelta(hours=1))
    waiting = queue("claimed, never started", "+15551234777")
    sending.claim_due(first, {"skycore": 1})
    with Dispatcher(app.extensions["providers"], max_attempts=3, backoff_seconds=1) as engine:
        assert engine.recover() == 2
        # The claim it never started goes out now, not when the claim would have run out.
        assert engine.run_once(10) == 1
    assert [Message.get_by_id(m.id).status for m in lost] == ["unknown", "unknown"]
    assert Message.get_by_id(waiting.id).status == "accepted"
    assert [r.fields["TEXT"] for r in sky.requests] == ["claimed, never started"]


def test_an_answer_after_the_send_was_declared_lost_still_links_receipts(
        app: Flask, sky: SkycoreStandIn) -> None:
    message = queue("slow answer")
    [started] = _start("me:1:aaaaaa", dt.timedelta(seconds=60))
    assert sending.record_lost(started.id, "me:1:aaaaaa", started.send_started_at, "test")
    from tracker.db import write_tx
    from tracker.providers.base import SendResult

    with write_tx():
        sending.record_outcome(started, SendResult("SMS_77", raw="<RESPONSE/>"),
                               app.extensions["providers"], max_attempts=3, backoff_seconds=1)
    stored = Message.get_by_id(message.id)
    # The provider id is kept so its receipts find the message; the status stays `unknown`
    # (a send declared lost never goes back to the queue) until a receipt moves it on.
    assert (stored.status, stored.provider_message_id) == ("unknown", "SMS_77")
    assert kinds(message.id) == ["created", "send_unknown", "submitted"]


# -- failover, retry and cancel with sends in parallel ------------------------------------------


def test_failover_and_retry_with_backoff_under_concurrency(app: Flask, sky: SkycoreStandIn,
                                                           mob: MobizonStandIn) -> None:
    sky.default = Reply.http_error(503, b"<html>down</html>", delay=0.05)
    routed = [queue(f"routed #{i:02d}", failover=("mobizon",)) for i in range(20)]
    direct = [queue(f"direct #{i:02d}") for i in range(10)]  # skycore only: retried there
    before = utcnow()
    assert dispatch(app, backoff_seconds=30) == 30
    after = utcnow()
    assert sky.peak_concurrency > 1  # sent side by side, not one after another
    for message in direct:
        stored = Message.get_by_id(message.id)
        assert (stored.status, stored.attempts, kinds(message.id)[-1]) == ("queued", 1, "retry")
        # 30 s ± 20 % jitter from when the failure was recorded (however slow the machine).
        assert before + dt.timedelta(seconds=24) <= stored.due_at
        assert stored.due_at <= after + dt.timedelta(seconds=36)
    sky.default = Reply.success()
    assert dispatch(app) == 20  # the failovers are due at once, the retries not yet
    Message.update(due_at=utcnow()).where(  # their backoff has passed
        Message.id.in_([m.id for m in direct])).execute()
    assert dispatch(app) == 10
    for message in routed:
        stored = Message.get_by_id(message.id)
        assert (stored.status, stored.provider, stored.attempts) == ("accepted", "mobizon", 1)
        assert kinds(message.id) == ["created", "failover", "submitted"]
    for message in direct:
        stored = Message.get_by_id(message.id)
        assert (stored.status, stored.attempts) == ("accepted", 2)
    texts = Counter(r.fields["TEXT"] for r in sky.requests)
    assert texts == Counter({m.text: 1 for m in routed} | {m.text: 2 for m in direct})
    assert Counter(r["text"] for r in mob.calls()) == Counter(m.text for m in routed)


def test_cancel_racing_dispatch_is_either_canceled_or_sent_never_both(
        app: Flask, sky: SkycoreStandIn) -> None:
    sky.default = Reply.slow(0.01)
    messages = [queue(f"race #{i:03d}") for i in range(120)]
    outcome: dict[int, str] = {}
    go = threading.Event()

    def cancel_all() -> None:
        go.wait(5)
        with db.connection_context():
            for message in reversed(messages):  # meets the dispatcher halfway
                try:
                    sending.cancel(message.id, source="test")
                    outcome[message.id] = "canceled"
                except sending.NotCancelable as exc:
                    outcome[message.id] = exc.status

    canceller = threading.Thread(target=cancel_all)
    canceller.start()
    go.set()
    while dispatch(app, batch_size=8):
        pass
    canceller.join(30)
    sent = Counter(r.fields["TEXT"] for r in sky.requests)
    assert max(sent.values(), default=1) == 1
    for message in messages:
        stored = Message.get_by_id(message.id)
        if outcome[message.id] == "canceled":
            assert (stored.status, sent[message.text]) == ("canceled", 0)
        else:
            assert (stored.status, sent[message.text]) == ("accepted", 1), outcome[message.id]
    assert 0 < list(outcome.values()).count("canceled") < len(messages)


# -- dispatcher processes sharing one queue and one rate limit ----------------------------------


def _dispatcher_process(database_url: str, sky_url: str, settings: dict[str, Any], barrier: Any,
                        idle: float, sent: Any, go: Any) -> None:
    """An independent dispatcher (its own interpreter, app and connections) that runs until
    it has found nothing to do for `idle` seconds; `go`: when it started (time.monotonic())."""
    app = build_app(config(database_url, sky_url, **settings))
    providers = app.extensions["providers"]
    stopping = threading.Event()
    engine = Dispatcher(providers, max_attempts=3, backoff_seconds=30, interval=0.1)
    barrier.wait(timeout=60)
    go.value = time.monotonic()
    with app.app_context():
        runner = threading.Thread(target=engine.run, args=(stopping,))
        runner.start()
        last, quiet_since = -1, time.monotonic()
        while time.monotonic() - quiet_since < idle:
            time.sleep(0.1)
            now = sum(engine.sent.values())
            if now != last:
                last, quiet_since = now, time.monotonic()
        stopping.set()
        runner.join(60)
    sent.value = sum(engine.sent.values())


def _run_dispatchers(database_url: str, sky_url: str, count: int, settings: dict[str, Any],
                     idle: float = 2.0) -> tuple[list[int], float]:
    """How many sends each dispatcher recorded, and when the first of them started."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(count)
    sent = [ctx.Value("i", -1) for _ in range(count)]
    go = [ctx.Value("d", 0.0) for _ in range(count)]
    procs = [ctx.Process(target=_dispatcher_process,
                         args=(database_url, sky_url, settings, barrier, idle, n, g))
             for n, g in zip(sent, go, strict=True)]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join(timeout=180)
        assert [p.exitcode for p in procs] == [0] * count
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(10)
    return [n.value for n in sent], min(g.value for g in go)


def _bulk_queue(count: int, prefix: str) -> list[str]:
    texts = [f"{prefix} #{i:05d}" for i in range(count)]
    for text in texts:
        queue(text)
    return texts


def test_two_dispatcher_processes_share_a_queue_and_send_each_message_once(
        app: Flask, database_url: str, sky: SkycoreStandIn) -> None:
    sky.default = Reply.slow(0.005)
    texts = _bulk_queue(2000, "shared")
    sent, _ = _run_dispatchers(database_url, sky.url, 2, {"max_in_flight": 8})
    assert Counter(r.fields["TEXT"] for r in sky.requests) == Counter(texts)  # each once
    assert sum(sent) == 2000 and min(sent) > 0, sent
    rows = db_rows(database_url, "SELECT status, attempts, COUNT(*) FROM message"
                                 " GROUP BY status, attempts")
    assert rows == [("accepted", 1, 2000)]
    assert db_rows(database_url, "SELECT COUNT(*) FROM event WHERE kind = 'submitted'") == [
        (2000,)]


def test_the_shared_rate_limit_holds_with_sends_in_parallel(app: Flask, database_url: str,
                                                            sky: SkycoreStandIn) -> None:
    rate = 20
    _bulk_queue(70, "throttled")
    _, go = _run_dispatchers(database_url, sky.url, 2, {"max_in_flight": 16,
                                                        "rate_limit_per_second": float(rate)})
    arrivals = sorted(r.received_at for r in sky.requests)
    assert len(arrivals) == 70
    # No send leaves before its slot, and the slots of both dispatchers are at least 1/rate
    # apart from when they started: the k-th send arrives k/rate after that at the earliest,
    # however late any send left on a busy machine (a late send only arrives later), and
    # however many sends each dispatcher had in flight. Both sending at the rate each, or in
    # a burst, arrives sooner.
    early = [(k, round(t - go, 3)) for k, t in enumerate(arrivals) if t < go + k / rate]
    assert early == [], early


# -- crashes and stops of the real service ------------------------------------------------------


def _worker_pid(server: Any) -> int:
    return wait_until(lambda: next((p for p in descendants(server.proc.pid)
                                     if cmdline(p).endswith("tracker.cli worker")), None),
                      timeout=10, message="no worker process")


def _statuses(database_url: str) -> Counter[str]:
    return Counter(dict(db_rows(database_url, "SELECT status, COUNT(*) FROM message"
                                              " GROUP BY status")))


def _serve_skycore(run_dir: Path, database_url: str, sky: SkycoreStandIn,
                   **skycore: Any) -> TrackerServer:
    """`tracker serve` sending through the Skycore stand-in by default."""
    return start_tracker(run_dir, database_url=database_url, skycore_url=sky.url,
                         default_provider="skycore",
                         skycore={**SKYCORE, "base_url": sky.url, **skycore})


def _post(server: TrackerServer, key: str, texts: list[str]) -> None:
    """Queue one message per text through the API, each accepted (202)."""
    with httpx.Client(base_url=server.base_url,
                      headers={"Authorization": f"Bearer {key}"}) as client:
        for text in texts:
            response = client.post("/api/v1/messages", json={"to": "+15551234888",
                                                              "text": text})
            assert response.status_code == 202, response.text


@pytest.mark.parametrize("victim", ["worker", "process-group"])
def test_sigkill_mid_campaign_then_restart_never_sends_a_text_twice(
        tmp_path: Path, database_url: str, sky: SkycoreStandIn, victim: str) -> None:
    sky.default = Reply.slow(0.3)
    skycore = {"max_in_flight": 4, "timeout_seconds": 2.0}
    server = _serve_skycore(tmp_path / "first", database_url, sky, **skycore)
    try:
        _post(server, server.create_api_key(), [f"campaign #{i:02d}" for i in range(40)])
        sky.wait_for_requests(10, timeout=20)
        if victim == "worker":
            os.kill(_worker_pid(server), signal.SIGKILL)  # serve then stops the web app too
        else:
            os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=30)
    finally:
        server.kill()
    killed_at = time.monotonic()
    seen_before = len(sky.requests)

    again = _serve_skycore(tmp_path / "second", database_url, sky, **skycore)
    try:
        def settled() -> Counter[str] | None:
            counts = _statuses(database_url)
            return counts if set(counts) <= {"accepted", "unknown"} else None

        counts = wait_until(settled, timeout=2 * 2.0 * 3 + 20, message=lambda: (
            f"not settled: {_statuses(database_url)}\n{again.tail()}"))
        settled_in = time.monotonic() - killed_at
        again.stop()
    finally:
        again.kill()
    sent = Counter(r.fields["TEXT"] for r in sky.requests)
    assert [text for text, n in sent.items() if n > 1] == []  # never twice
    assert sum(counts.values()) == 40 and len(sent) >= seen_before
    unknown = db_rows(database_url, "SELECT text FROM message WHERE status = 'unknown'")
    # Only sends cut off by the kill are unknown (at most max_in_flight), each with the reason.
    assert 1 <= len(unknown) <= 4, counts
    assert db_rows(database_url, "SELECT COUNT(*) FROM event WHERE kind = 'send_unknown'"
                                 " AND detail LIKE ?", ("%dispatcher stopped%",)) == [
        (len(unknown),)]
    # Every message not unknown was sent exactly once and accepted.
    accepted = {r[0] for r in db_rows(database_url,
                                      "SELECT text FROM message WHERE status = 'accepted'")}
    assert accepted <= set(sent) and len(accepted) == 40 - len(unknown)
    assert settled_in < 2 * 2.0 * 3 + 20


def test_graceful_stop_lets_sends_finish_and_releases_the_lease_at_once(
        tmp_path: Path, database_url: str, sky: SkycoreStandIn) -> None:
    sky.default = Reply.slow(1.0)
    server = _serve_skycore(tmp_path, database_url, sky, max_in_flight=4)
    try:
        key = server.create_api_key()
        wait_until(lambda: db_rows(database_url, "SELECT owner FROM lease"), timeout=15,
                   message="the worker never took the lease")
        _post(server, key, [f"in flight #{i}" for i in range(8)])
        sky.wait_for_requests(4, timeout=10)
        server.stop()  # SIGTERM while 4 sends wait for their 1 s answers
    finally:
        server.kill()
    assert db_rows(database_url, "SELECT COUNT(*) FROM lease") == [(0,)]
    counts = _statuses(database_url)
    assert counts["accepted"] == len(sky.requests) >= 4  # every send in flight recorded
    assert counts["accepted"] + counts["queued"] == 8 and not counts["unknown"]
    assert db_rows(database_url, "SELECT COUNT(*) FROM message WHERE claimed_by IS NOT NULL"
                                 " OR send_started_at IS NOT NULL") == [(0,)]


def test_every_worker_dispatches_and_a_standby_takes_the_lease_when_the_leader_stops(
        tmp_path: Path, database_url: str, sky: SkycoreStandIn) -> None:
    sky.default = Reply.slow(0.05)
    server = _serve_skycore(tmp_path, database_url, sky, max_in_flight=2)
    standby_log = (tmp_path / "standby.log").open("wb")
    standby = subprocess.Popen([*tracker_command(), "worker"], env=server.env, cwd=tmp_path,
                               stdout=standby_log, stderr=subprocess.STDOUT)
    try:
        leader = wait_until(lambda: db_rows(database_url, "SELECT owner FROM lease"),
                            timeout=15, message="no worker took the lease")[0][0]
        assert leader.endswith(f":{_worker_pid(server)}")  # serve's worker started first
        _post(server, server.create_api_key(), [f"two workers #{i:02d}" for i in range(60)])
        wait_until(lambda: _statuses(database_url) == Counter(accepted=60), timeout=30,
                   message=lambda: str(_statuses(database_url)))
        server.stop()  # the leader lets go of the lease as it stops
        stopped = time.monotonic()
        taken = wait_until(lambda: db_rows(database_url, "SELECT owner FROM lease"),
                           timeout=15, message="the standby never took the lease")[0][0]
        assert taken.endswith(f":{standby.pid}")
        # The standby renews every 10 s; without the release it would wait for the 30 s lease.
        assert time.monotonic() - stopped < 11
        standby.send_signal(signal.SIGTERM)
        assert standby.wait(timeout=20) == 0
    finally:
        server.kill()
        if standby.poll() is None:
            standby.kill()
        standby_log.close()
    logs = [server.output(), (tmp_path / "standby.log").read_text()]
    counts = [int(m.group(1)) for log in logs
              for m in re.finditer(r"sends recorded: skycore (\d+)", log)]
    assert len(counts) == 2 and sum(counts) == 60 and min(counts) > 0, counts
    assert Counter(r.fields["TEXT"] for r in sky.requests).most_common(1)[0][1] == 1


# -- a provider's batch API ---------------------------------------------------------------------


def test_due_messages_for_a_batch_api_go_together_with_per_message_outcomes(
        database_url: str) -> None:
    from standins.alphasms import AlphaSmsStandIn

    with AlphaSmsStandIn(api_key="APIKEY") as alpha, running(make_config(database_url, providers={
            "alphasms": {"api_key": "APIKEY", "sender": "ACME", "base_url": alpha.url,
                         "callback_token": "al-token", "api": "json"}},
            default_provider="alphasms")) as flask_app:
        messages = [sending.enqueue(sending.NewMessage(
            to=f"+38050123456{i}", text=f"batch #{i}", provider="alphasms",
            sender="BADNAME" if i == 3 else None), source="test") for i in range(6)]
        assert dispatch(flask_app) == 6
        [request] = alpha.json_requests  # six messages, one request
        items = request["body"]["data"]
        assert [i["id"] for i in items] == [m.id for m in messages]
        assert [i["sms_message"] for i in items] == [m.text for m in messages]
        stored = [Message.get_by_id(m.id) for m in messages]
        assert [m.status for m in stored] == ["accepted"] * 3 + ["rejected"] + ["accepted"] * 2
        ids = [m.provider_message_id for m in stored]
        assert ids[3] is None and len({i for i in ids if i}) == 5
        assert all(alpha.messages[i].text == m.text for i, m in zip(ids, stored, strict=True) if i)
        assert stored[3].error_code and "Alpha-name" in stored[3].error_detail
        assert kinds(messages[3].id) == ["created", "send_failed"]


def test_one_outcome_that_cannot_be_recorded_never_loses_the_others(database_url: str) -> None:
    from tracker.providers.base import Receipt, SendResult
    from tracker.providers.fake import FakeProvider

    class Buggy(FakeProvider):
        """A provider module with a bug in one answer: a receipt whose status is no Status."""

        def send(self, message):  # type: ignore[no-untyped-def]
            result = super().send(message)
            if message.text != "bug":
                return result
            return SendResult(result.provider_message_id, receipts=[
                Receipt(provider="fake", status="not-a-status")])  # type: ignore[arg-type]

    with running(make_config(database_url, providers={"fake": {}})) as flask_app:
        flask_app.extensions["providers"]["fake"] = Buggy({}, "http://127.0.0.1:8000")
        texts = ["one", "two", "bug", "four", "five"]
        messages = [queue(text, provider="fake") for text in texts]
        assert dispatch(flask_app) == 5
        stored = {m.text: Message.get_by_id(m.id) for m in messages}
        assert {t: m.status for t, m in stored.items() if t != "bug"} == dict.fromkeys(
            ["one", "two", "four", "five"], "delivered")
        # Its send went out but its outcome is not recorded: it stays started, never resent,
        # and is declared lost (unknown) when its lease runs out.
        assert stored["bug"].status == "queued" and stored["bug"].send_started_at is not None
        assert dispatch(flask_app) == 0
