"""The webhook sender: the worker's thread that fans the outbox out and delivers, safely.

One thread does every database write, like the dispatcher's (tracker.dispatcher): each step
records the tries that came back, fans out new outbox rows and claims what capacity allows, in
one transaction; a pool of threads does HTTP only. At most `webhook_max_in_flight` requests are
under way, and at most `webhook_max_in_flight_per_endpoint` to one origin (scheme, host,
port): a slow or dead receiver fills its own slots, never the others'.

Safe sending: connect and read timeouts; redirects are not followed (a 3xx is a failure, as
its target was never asked for); at most RESPONSE_KEEP bytes of an answer are read; the
target's host is resolved here and every address it has must be public (no private, loopback,
link-local, shared or reserved range) unless `webhooks_allow_private`, and the request goes to
the address that was checked (the name is kept for Host and TLS), so a second lookup cannot
swap in an internal address.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
import queue
import socket
import threading
import time
from collections import Counter, defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from . import metrics, outbox, webhooks
from .db import UNAVAILABLE_ERRORS, on_connection, write_tx
from .dispatcher import new_owner
from .models import utcnow
from .providers.base import USER_AGENT, Provider

log = logging.getLogger(__name__)

RESPONSE_KEEP = 1024  # bytes of an answer kept with the attempt (and all that is read)
LOOK_INTERVAL = 0.1  # seconds between two cheap looks for new outbox rows or due retries
STEP_GAP = 0.02  # seconds at least between two steps (each a transaction)
LEASE_MARGIN = 30.0  # seconds past a try's timeouts before its delivery is due again
CONNECT_TIMEOUT = 5.0


class AddressRefused(Exception):
    """The target resolves to an address webhooks may not reach."""


def public_address(host: str, port: int, *, allow_private: bool) -> str:
    """The address to connect to for `host`: every address it resolves to must be public
    (unless `allow_private`); the first is used."""
    try:
        found = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise AddressRefused(f"cannot resolve {host}: {exc}") from exc
        found = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not found:
        raise AddressRefused(f"{host} has no address")
    if not allow_private:
        for address in found:
            plain = getattr(address, "ipv4_mapped", None) or address
            if not plain.is_global or plain.is_multicast:
                raise AddressRefused(f"{host} resolves to {address}, a private, loopback,"
                                     " link-local or reserved address (webhooks_allow_private"
                                     " is off)")
    return str(found[0])


def _pinned(url: str, address: str) -> tuple[str, str, str]:
    """(URL with the checked address as host, the Host header, the TLS server name)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{address}]" if ":" in address else address
    netloc = literal + (f":{parts.port}" if parts.port else "")
    header = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc)), header, host


def deliver(client: httpx.Client, job: outbox.Job, *, allow_private: bool) -> outbox.Try:
    """One try of one delivery: resolve and check, sign, POST, keep the first bytes."""
    at = utcnow()
    started = time.monotonic()
    try:
        parts = urlsplit(job.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = public_address(parts.hostname or "", port, allow_private=allow_private)
        url, host, server_name = _pinned(job.url, address)
        headers = webhooks.headers(job.webhook_id, job.body, list(job.secrets), int(time.time()))
        request = client.build_request("POST", url, content=job.body,
                                       headers={**headers, "Host": host},
                                       extensions={"sni_hostname": server_name})
        response = client.send(request, stream=True)
        try:
            kept = _first_bytes(response)
        finally:
            response.close()
    except AddressRefused as exc:
        return outbox.Try(job, at, error=f"refused: {exc}")
    except httpx.HTTPError as exc:
        return outbox.Try(job, at, latency_ms=_ms(started),
                          error=f"{type(exc).__name__}: {exc}"[:500])
    return outbox.Try(job, at, status_code=response.status_code, latency_ms=_ms(started),
                      response=kept.decode("utf-8", "replace"))


def _first_bytes(response: httpx.Response) -> bytes:
    """At most RESPONSE_KEEP bytes of the body as sent (never decompressed): the rest is
    never read, whatever the receiver sends."""
    kept = b""
    for chunk in response.iter_raw(RESPONSE_KEEP):
        kept += chunk
        if len(kept) >= RESPONSE_KEEP:
            break
    return kept[:RESPONSE_KEEP]


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


class Sender:
    """Fans out, claims, delivers and records; `run()` until stopped, `run_once()` for tests.

    Claims run ahead of the sends by up to one more request per slot (per origin and in all),
    kept in memory per origin: a send thread that finishes takes the next claimed delivery
    of an origin with room at once, so a slot never idles while its answer waits for the next
    database step. A claim waiting there is covered by its lease like one under way."""

    def __init__(self, providers: dict[str, Provider], cfg: dict[str, Any],
                 owner: str | None = None) -> None:
        self.providers = providers
        self.owner = owner or new_owner()
        self.allow_private = bool(cfg["webhooks_allow_private"])
        self.retry_hours = float(cfg["webhook_retry_hours"])
        self.backoff = (float(cfg["webhook_backoff_seconds"]),
                        float(cfg["webhook_backoff_max_seconds"]))
        self.max_in_flight = int(cfg["webhook_max_in_flight"])
        self.per_origin = int(cfg["webhook_max_in_flight_per_endpoint"])
        timeout = float(cfg["webhook_timeout_seconds"])
        connect = min(CONNECT_TIMEOUT, timeout)
        # A claim may wait behind one request of its slot, then be one itself.
        self.lease = dt.timedelta(seconds=2 * (connect + 2 * timeout) + LEASE_MARGIN)
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=connect), follow_redirects=False,
            headers={"User-Agent": USER_AGENT}, trust_env=False,
            limits=httpx.Limits(max_connections=self.max_in_flight,
                                max_keepalive_connections=self.max_in_flight))
        self.pool = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="webhook")
        self.wake = threading.Event()
        self._lock = threading.Lock()  # guards _busy and _backlog (the send threads use them)
        self._busy: Counter[str] = Counter()  # requests under way, per origin
        self._backlog: dict[str, deque[outbox.Job]] = defaultdict(deque)  # claimed, waiting
        self._done: queue.SimpleQueue[outbox.Try] = queue.SimpleQueue()
        self._unrecorded: list[outbox.Try] = []
        self._last_step = 0.0
        self.delivered = 0

    def close(self) -> None:
        """Wait for the send threads, then close the HTTP client."""
        self.pool.shutdown(wait=True)
        self.client.close()

    def run(self, stopping: threading.Event) -> None:
        """Deliver until `stopping` is set; then wait for the tries under way (bounded by
        their timeouts) and record them; claims not started are due again at their lease's
        end."""
        log.info("webhook sender %s running", self.owner)
        try:
            with contextlib.suppress(*UNAVAILABLE_ERRORS):
                self._in_db(lambda: outbox.recover(self.owner))
            while not stopping.is_set():
                try:
                    self._in_db(self.step)
                except UNAVAILABLE_ERRORS as exc:
                    log.warning("webhook sender: database unavailable (%r); retrying", exc)
                    stopping.wait(1.0)
                except Exception:
                    log.exception("webhook sender step failed; retrying")
                    stopping.wait(1.0)
                self.wake.wait(LOOK_INTERVAL)
                self.wake.clear()
                # Answers coming back one by one would each cost a transaction: gather them.
                stopping.wait(max(0.0, self._last_step + STEP_GAP - time.monotonic()))
        finally:
            with self._lock:
                self._backlog.clear()
            try:
                self._in_db(self.drain)
            except UNAVAILABLE_ERRORS as exc:  # their leases run out: tried again, not lost
                log.error("webhook sender %s could not record its last tries: %r", self.owner,
                          exc)
            self.close()
            log.info("webhook sender %s stopped; delivered %d", self.owner, self.delivered)

    def step(self) -> None:
        """Record the tries that came back, fan out, claim and start what capacity allows."""
        self._last_step = time.monotonic()
        tries = self._collect()
        with self._lock:
            held = sum(self._busy.values()) + sum(len(b) for b in self._backlog.values())
            room = {o: 2 * self.per_origin - self._busy[o] - len(self._backlog[o])
                    for o in set(self._busy) | set(self._backlog)}
        free = 2 * self.max_in_flight - held
        if not tries and (free <= 0 or not outbox.waiting()):
            return
        try:
            with write_tx():
                self.delivered += outbox.record(self.owner, tries, backoff_base=self.backoff[0],
                                                backoff_max=self.backoff[1])
                outbox.fan_out(self.providers, retry_hours=self.retry_hours)
                jobs = outbox.claim(self.owner, room, default_room=2 * self.per_origin,
                                    limit=free, lease=self.lease) if free > 0 else []
        except BaseException:
            self._unrecorded = tries  # rolled back: record them again at the next step
            raise
        metrics.count_webhook_attempts(tries)  # recorded: counted once (tracker.metrics)
        with self._lock:
            for job in jobs:
                self._backlog[job.origin].append(job)
            starts = self._startable()
        for job in starts:
            self.pool.submit(self._send, job)
        if jobs:
            self.wake.set()  # more may be due: look again soon

    def run_once(self, timeout: float = 30.0) -> None:
        """Until nothing is waiting or under way (tests, the CLI)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.step()
            if not self._pending() and not outbox.waiting():
                return
            self.wake.wait(0.02)
            self.wake.clear()
        raise TimeoutError("webhook deliveries still under way")

    def drain(self) -> None:
        """Wait for the tries under way and record them."""
        deadline = time.monotonic() + self.lease.total_seconds()
        tries = self._collect()
        while self._pending() and time.monotonic() < deadline:
            self.wake.wait(0.2)
            self.wake.clear()
            tries += self._collect()
        if tries:
            with write_tx():
                self.delivered += outbox.record(self.owner, tries, backoff_base=self.backoff[0],
                                                backoff_max=self.backoff[1])

    def _pending(self) -> bool:
        with self._lock:
            return bool(self._busy or any(self._backlog.values()) or self._unrecorded
                        or not self._done.empty())

    def _startable(self) -> list[outbox.Job]:
        """Claimed deliveries that may start now (under the lock): each origin up to its
        share, all of them up to max_in_flight; each counted as under way."""
        starts: list[outbox.Job] = []
        total = sum(self._busy.values())
        for origin, backlog in self._backlog.items():
            while backlog and self._busy[origin] < self.per_origin and total < self.max_in_flight:
                starts.append(backlog.popleft())
                self._busy[origin] += 1
                total += 1
        return starts

    def _next_for(self, origin: str) -> outbox.Job | None:
        """A send thread is done with `origin`: the next claimed delivery to send (its origin's
        first, else any origin with room), counted under way; None frees the thread."""
        with self._lock:
            self._busy[origin] -= 1
            if not self._busy[origin]:
                del self._busy[origin]
            if self._backlog.get(origin) and self._busy[origin] < self.per_origin:
                self._busy[origin] += 1
                return self._backlog[origin].popleft()
            for other, backlog in self._backlog.items():
                if backlog and self._busy[other] < self.per_origin:
                    self._busy[other] += 1
                    return backlog.popleft()
        return None

    def _send(self, job: outbox.Job) -> None:
        """In a pool thread: HTTP only, never the database; then the next claimed delivery."""
        current: outbox.Job | None = job
        while current is not None:
            try:
                done = deliver(self.client, current, allow_private=self.allow_private)
            except Exception as exc:  # a bug here must not lose the delivery: it is retried
                log.exception("webhook delivery %s crashed", current.delivery_id)
                done = outbox.Try(current, utcnow(), error=f"internal error: {exc!r}"[:500])
            self._done.put(done)
            self.wake.set()
            current = self._next_for(current.origin)

    def _collect(self) -> list[outbox.Try]:
        tries, self._unrecorded = self._unrecorded, []
        while True:
            try:
                tries.append(self._done.get_nowait())
            except queue.Empty:
                return tries

    def _in_db(self, work) -> None:  # type: ignore[no-untyped-def]
        on_connection(work)
