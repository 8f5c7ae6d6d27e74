"""Wrong API keys are throttled per address: 401 up to KEY_FAILURES_ALLOWED in the window, then
429 with Retry-After; a valid key keeps working. Real HTTP, both databases."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from opsserver import serve_on
from servers import TrackerServer

from tracker import throttle
from tracker.web.api import KEY_FAILURE_WINDOW, KEY_FAILURES_ALLOWED


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackerServer]:
    # trusted_proxies = 0 (the default): X-Forwarded-For is a client's word, never believed.
    with serve_on(request, tmp_path_factory, "apithrottle") as served:
        yield served


def test_300_wrong_keys_are_mostly_refused_with_429(server: TrackerServer) -> None:
    good = server.create_api_key("good")
    statuses: list[int] = []
    retry_after: set[str] = set()
    started = time.monotonic()
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        for attempt in range(300):
            answer = client.get("/api/v1/messages/1", headers={
                "Authorization": f"Bearer dlr_guess{attempt:05d}",
                # A guesser rotating the address it claims gets nowhere: no proxy is trusted.
                "X-Forwarded-For": f"198.51.100.{attempt % 250}"})
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                retry_after.add(answer.headers["Retry-After"])
                assert answer.json()["error"]["code"] == "too_many_requests"
                assert answer.json()["error"]["retry_after"] == int(answer.headers["Retry-After"])
        took = time.monotonic() - started
        counts = Counter(statuses)
        # 401 until the address has KEY_FAILURES_ALLOWED (the server's start-up probes, sent
        # without a key, count too), then 429 only.
        assert 0 < counts[401] <= KEY_FAILURES_ALLOWED, counts
        assert statuses == [401] * counts[401] + [429] * (300 - counts[401]), counts
        assert all(0 < int(v) <= KEY_FAILURE_WINDOW.total_seconds() for v in retry_after)
        # No key at all and a key in the wrong scheme count the same while blocked.
        assert client.get("/api/v1/messages/1").status_code == 429
        assert client.post("/api/v1/messages", json={"to": "+15551234888", "text": "x"},
                           headers={"Authorization": f"Basic {good}"}).status_code == 429
        # The address's valid key still works: a guesser beside a client does not stop it.
        sent = client.post("/api/v1/messages", json={"to": "+15551234888", "text": "hi"},
                           headers={"Authorization": f"Bearer {good}"})
        assert sent.status_code == 202, sent.text
        read = client.get(f"/api/v1/messages/{sent.json()['id']}",
                          headers={"Authorization": f"Bearer {good}"})
        assert read.status_code == 200
    print(f"300 wrong keys: {dict(counts)} in {took:.2f} s")


def test_the_window_slides(app) -> None:
    """The limit counts failures in the last window only; the wait ends when the oldest of the
    last `limit` ages out (both databases, in-process: time is given, not waited for)."""
    start = dt.datetime(2026, 1, 1, 12, 0, 0)
    window = dt.timedelta(minutes=15)
    for minute in range(5):
        assert throttle.failure_wait("apikey:192.0.2.1", 5, window,
                                     start + dt.timedelta(minutes=minute)) == 0
        throttle.record_failure("apikey:192.0.2.1", window, start + dt.timedelta(minutes=minute))
    assert throttle.failure_wait("apikey:192.0.2.1", 5, window,
                                 start + dt.timedelta(minutes=5)) == 10 * 60
    assert throttle.failure_wait("apikey:192.0.2.2", 5, window,
                                 start + dt.timedelta(minutes=5)) == 0  # another address
    assert throttle.failure_wait("apikey:192.0.2.1", 5, window,
                                 start + dt.timedelta(minutes=15, seconds=1)) == 0
