"""The dispatcher: sends due messages concurrently, every send recorded as started before its
request leaves, every outcome recorded in batches.

Threads and their jobs:
- the dispatcher's own thread does every database write: it claims due messages (one statement
  for many), marks the sends started (one committed transaction for many), and records the
  outcomes that came back since its last step (one transaction for many);
- one thread pool per provider does HTTP only, at most `max_in_flight` requests under way, over
  the provider's pooled keep-alive client;
- a wake-up watcher (tracker.wakeup) pokes the dispatcher when a message is queued.

Never twice: a request leaves only after its `send_started_at` is committed. A send whose answer
was never recorded (the process was killed, the lease ran out) is found by `reap` in any
dispatcher, or at start by `recover` for this host's dead processes, and becomes `unknown` with
a `send_unknown` event; nothing sends it again by itself. A dispatcher that dies holding claims
it had not started only delays those messages by CLAIM_SECONDS.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import queue
import secrets
import socket
import sys
import threading
import time
from collections import Counter, defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Self

from . import metrics, sending, throttle, wakeup
from .db import UNAVAILABLE_ERRORS, on_connection, write_tx
from .models import Message, utcnow
from .providers.base import Provider, SendError, SendResult
from .status import Status

log = logging.getLogger(__name__)

# Longest a send waits for its rate-limit slot once started; a later slot puts the message
# back in the queue until then, so one throttled provider never holds up the others.
MAX_SLOT_WAIT = 2.0
# Slots are this much more than 1/rate apart: sends leave a few milliseconds after their slots
# (thread wake-up, HTTP), and with slots exactly 1/rate apart the provider would then count
# rate + 1 in some one-second windows. 2 % absorbs 20 ms of such jitter over a second.
SLOT_MARGIN = 1.02
SWITCH_INTERVAL = 0.0005  # seconds (sys.setswitchinterval; Python's default is 0.005)
REAP_INTERVAL = 2.0  # seconds between two looks for lost sends
ORPHANED_CLAIM = 50  # messages of providers no longer configured, failed per look


def new_owner() -> str:
    """This dispatcher's name in `claimed_by`: host, pid, and a nonce that tells a restarted
    process from its predecessor when both got the same pid (containers start at pid 1)."""
    return f"{socket.gethostname()[:96]}:{os.getpid()}:{secrets.token_hex(3)}"


def owner_is_gone(owner: str, me: str) -> bool:
    """True when `owner` is a dispatcher of this host that no longer runs."""
    host, _, rest = owner.partition(":")
    pid_text, _, _nonce = rest.partition(":")
    if owner == me or host != me.partition(":")[0] or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True  # an earlier process that had our pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return _zombie(pid)  # else alive (or its pid reused: then its lease decides)


def _zombie(pid: int) -> bool:
    """A process killed but not yet reaped (its parent died with it and no init reaped it)
    still answers kill(pid, 0); Linux shows it as state Z in /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:][:1] in ("Z", "X")


Outcome = SendResult | SendError


@dataclass
class _Request:
    """One request to a provider: one message, or a batch for providers with a batch API."""

    slug: str
    messages: list[Message]
    not_before: float = 0.0  # time.time() of its rate-limit slot
    outcomes: list[Outcome] = field(default_factory=list)


class Dispatcher:
    """Claims, sends and records; `run()` until stopped, or `run_once()` for one round."""

    def __init__(self, providers: dict[str, Provider], *, max_attempts: int,
                 backoff_seconds: float, interval: float = 1.0, claim_limit: int = 50,
                 owner: str | None = None) -> None:
        self.providers = providers
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.interval = interval  # longest between two looks for due messages
        self.claim_limit = claim_limit  # most messages claimed per provider per look
        self.owner = owner or new_owner()
        self.wake = threading.Event()
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._busy: Counter[str] = Counter()  # requests under way, per provider
        self._backlog: dict[str, deque[Message]] = defaultdict(deque)  # claimed, not started
        self._done: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._unrecorded: list[_Request] = []  # answers whose recording failed: try again
        self._started: list[Message] = []  # claimed and started, to send after the commit
        self.sent: Counter[str] = Counter()  # outcomes recorded, per provider (for the log)
        self._look = True  # look for due messages at the next step
        self._last_look = 0.0
        self._last_reap = 0.0
        for provider in providers.values():
            # Built now, not by the first send: a client loads its TLS context (tens of ms),
            # which would make the first sends late for their rate-limit slots.
            provider.client  # noqa: B018
        # Every send's lease: its slot wait, its request, and time to record the answer.
        self.lease = dt.timedelta(seconds=MAX_SLOT_WAIT + sending.SEND_LEASE_MARGIN + max(
            (p.request_deadline() for p in providers.values()), default=30.0))

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=True)
        self._pools.clear()

    def poke(self) -> None:
        """Something may be due now (a wake-up notification)."""
        self._look = True
        self.wake.set()

    def run(self, stopping: threading.Event) -> None:
        """Dispatch until `stopping` is set; then let the sends under way finish (each bounded
        by its request deadline), record them, and give back the claims not started."""
        # The send threads hold the GIL in short bursts of Python (HTTP framing); this thread
        # gives it up at every database call and, at the default 5 ms switch interval, waits
        # up to that long to get it back each time: a convoy that made the dispatcher thread
        # the bottleneck. A shorter interval lets it back in sooner.
        sys.setswitchinterval(SWITCH_INTERVAL)
        watcher = wakeup.Watcher(self.poke)
        watcher.start()
        log.info("dispatcher %s running", self.owner)
        try:
            with contextlib.suppress(*UNAVAILABLE_ERRORS):
                self._in_db(self.recover)
            while not stopping.is_set():
                try:
                    self._in_db(self.step)
                except UNAVAILABLE_ERRORS as exc:
                    log.warning("dispatcher: database unavailable (%r); retrying", exc)
                    metrics.WORKER_DATABASE_ERRORS.labels("dispatcher").inc()
                    stopping.wait(1.0)
                except Exception:
                    log.exception("dispatcher step failed; retrying")
                    stopping.wait(1.0)
                self.wake.wait(self._next_look())
                self.wake.clear()
        finally:
            watcher.stop()
            try:
                self._in_db(self.drain)
            except UNAVAILABLE_ERRORS as exc:  # sends left open are found by the next start
                log.error("dispatcher %s could not record its last answers: %r", self.owner, exc)
            self.close()
            log.info("dispatcher %s stopped; sends recorded: %s", self.owner,
                     ", ".join(f"{slug} {n}" for slug, n in sorted(self.sent.items())) or "none")

    def run_once(self, limit: int) -> int:
        """Claim up to `limit` due messages, send them all, record every outcome; returns how
        many were claimed."""
        try:
            with write_tx():
                claimed = self._claim({slug: limit for slug in self.providers})
        except BaseException:
            self._started = []
            raise
        self._submit_started()
        while self._pending():
            self._start_backlog()
            if self._busy:
                self.wake.wait(1.0)
                self.wake.clear()
            self._record(self._collect())
        return claimed

    def drain(self) -> None:
        """Wait for the requests under way (bounded by the lease), record them, and give back
        every claim whose send has not started."""
        deadline = time.monotonic() + self.lease.total_seconds()
        self._backlog.clear()
        while self._busy and time.monotonic() < deadline:
            self.wake.wait(0.2)
            self.wake.clear()
            self._record(self._collect())
        self._record(self._collect())
        if self._busy:
            log.error("dispatcher %s stops with %d send(s) unanswered; they will be marked "
                      "unknown", self.owner, sum(self._busy.values()))
        with contextlib.suppress(*UNAVAILABLE_ERRORS):
            sending.release_claims(self.owner)

    # -- one step ----------------------------------------------------------------------------

    def step(self) -> None:
        """Record what came back and claim what capacity allows, in one transaction (one
        fsync on SQLite, however many sends it covers); start the claims; look for lost
        sends now and then."""
        now = time.monotonic()
        if now - self._last_reap >= REAP_INTERVAL:
            self._last_reap = now
            self.reap()
        done = self._collect()
        free = {slug: min(self.claim_limit, self._room(slug) - len(self._backlog[slug]))
                for slug in self.providers}
        free = {slug: n for slug, n in free.items() if n > 0}
        look = bool(free) and (self._look or now - self._last_look >= self.interval)
        if look:
            self._look = False
            self._last_look = now
            # An idle SQLite dispatcher is woken by every commit (a callback too): a read
            # first, so it takes the writer lock only when there is something to send.
            look = bool(done) or sending.anything_due()
        if done or look:
            more = False
            try:
                with write_tx():
                    self._write_outcomes(done)
                    more = look and self._claim(free) == sum(free.values())
            except BaseException:
                self._started = []  # rolled back: not started, not ours to send
                self._unrecorded = done  # and not recorded: try again
                raise
            self._recorded(done)
            self._look = self._look or more  # likely more due: look again as capacity frees
            self._submit_started()
        self._start_backlog()

    def _next_look(self) -> float:
        """How long to sleep unless woken (a send coming back, a message queued)."""
        if self._unrecorded:
            return 0.05  # the database refused the last outcomes: try again soon
        if self._look and any(self._room(slug) > len(self._backlog[slug])
                              for slug in self.providers):
            return 0.0
        # Nothing to claim now, or no capacity to send it: sleep until woken (a send coming
        # back sets the event), at most until the next periodic look.
        return max(0.0, self.interval - (time.monotonic() - self._last_look))

    def _pending(self) -> bool:
        return bool(self._busy or self._unrecorded or any(self._backlog.values()))

    def _capacity(self, slug: str) -> int:
        provider = self.providers.get(slug)
        return provider.config["max_in_flight"] if provider else 1

    def _room(self, slug: str) -> int:
        """Messages this provider can take now: free requests times messages per request."""
        provider = self.providers.get(slug)
        return (self._capacity(slug) - self._busy[slug]) * (provider.SEND_BATCH if provider
                                                             else 1)

    def _claim(self, limits: dict[str, int]) -> int:
        """Claim due messages, at most `limits[slug]` per provider (inside the caller's
        transaction): those of providers without a rate limit start at once (`_started`, sent
        after the commit), the others wait in the backlog for their slots."""
        unthrottled = frozenset(slug for slug, p in self.providers.items()
                                if p.config["rate_limit_per_second"] <= 0)
        messages = sending.claim_due(self.owner, limits, start=unthrottled, lease=self.lease,
                                     others=ORPHANED_CLAIM, configured=tuple(self.providers))
        for message in messages:
            if message.send_started_at is not None:
                self._started.append(message)
            else:
                self._backlog[message.provider].append(message)
        return len(messages)

    def _submit_started(self) -> None:
        """Send what `_claim` started, once its transaction has committed."""
        started, self._started = self._started, []
        by_provider: dict[str, list[Message]] = defaultdict(list)
        for message in started:
            by_provider[message.provider].append(message)
        for slug, messages in by_provider.items():
            for chunk in self._chunks(slug, messages):
                self._submit(_Request(slug, chunk))

    def _chunks(self, slug: str, messages: list[Message]) -> list[list[Message]]:
        """`messages` cut into requests: one message each, or the provider's batch size."""
        provider = self.providers.get(slug)
        size = provider.SEND_BATCH if provider else 1
        return [messages[i:i + size] for i in range(0, len(messages), size)]

    # -- starting sends ----------------------------------------------------------------------

    def _start_backlog(self) -> None:
        """Start as many claimed messages as capacity allows, in one transaction."""
        now, clock = utcnow(), time.time()
        requests: list[_Request] = []
        release: dict[int, dt.datetime] = {}
        for slug, backlog in self._backlog.items():
            provider = self.providers.get(slug)
            room = self._room(slug)
            take: list[Message] = []
            while backlog and len(take) < room:
                message = backlog.popleft()
                if provider is not None and sending.too_early(message, provider, now):
                    release[message.id] = message.send_at  # held here until its send_at
                else:
                    take.append(message)
            if not take:
                continue
            slots = self._slots(provider, len(take))
            first = 0
            for chunk in self._chunks(slug, take):
                start = slots[first] if slots else 0.0
                first += len(chunk)
                if start - clock > MAX_SLOT_WAIT:
                    for message in chunk:  # its slot stays reserved: the rate is never exceeded
                        release[message.id] = now + dt.timedelta(seconds=start - clock)
                else:
                    requests.append(_Request(slug, chunk, start))
        if not requests and not release:
            return
        started = {m.id for m in sending.start_sends(
            self.owner, [m for r in requests for m in r.messages], self.lease, release)}
        for request in requests:
            # A message canceled (or claimed elsewhere) since our claim is not ours to send.
            request.messages = [m for m in request.messages if m.id in started]
            if request.messages:
                self._submit(request)

    def _slots(self, provider: Provider | None, count: int) -> list[float]:
        """Start times (time.time()) of `count` sends under the provider's shared rate limit;
        empty when it has none."""
        rate = provider.config["rate_limit_per_second"] if provider else 0
        if rate <= 0 or provider is None:
            return []
        interval = SLOT_MARGIN / rate
        first = throttle.reserve(provider.slug, interval, count=count)
        return [first + i * interval for i in range(count)]

    def _submit(self, request: _Request) -> None:
        self._busy[request.slug] += 1
        provider = self.providers.get(request.slug)
        if provider is None:
            error = SendError(f"provider {request.slug!r} is no longer configured",
                              permanent=True, status=Status.FAILED, code="NOT_CONFIGURED",
                              provider_side=True)
            request.outcomes = [error] * len(request.messages)
            self._done.put(request)
            return
        pool = self._pools.get(request.slug)
        if pool is None:
            pool = self._pools[request.slug] = ThreadPoolExecutor(
                provider.config["max_in_flight"], thread_name_prefix=f"send-{request.slug}")
        outbound = [sending.outbound_for(m, provider) for m in request.messages]
        pool.submit(self._send, provider, request, outbound)

    def _send(self, provider: Provider, request: _Request, outbound: list) -> None:
        """In a send thread: HTTP only, never the database."""
        try:
            delay = request.not_before - time.time()
            if delay > 0:
                time.sleep(delay)
            if len(outbound) == 1 and provider.SEND_BATCH == 1:
                request.outcomes = [provider.send(outbound[0])]
            else:
                request.outcomes = provider.send_batch(outbound)
                if len(request.outcomes) != len(outbound):
                    raise RuntimeError(f"{provider.slug}.send_batch gave "
                                       f"{len(request.outcomes)} outcomes for {len(outbound)}")
        except SendError as exc:
            request.outcomes = [exc] * len(outbound)
        except Exception as exc:
            # A bug after the request left would make a retry a second send: unknown, never
            # retried (only an explicit refusal, or a failure before sending, is retried).
            log.exception("provider %s crashed while sending", provider.slug)
            request.outcomes = [SendError(f"internal error while sending: {exc!r}",
                                          permanent=False, outcome_unknown=True,
                                          code="INTERNAL_ERROR")] * len(outbound)
        finally:
            self._done.put(request)
            self.wake.set()

    # -- recording outcomes ------------------------------------------------------------------

    def _collect(self) -> list[_Request]:
        """The requests answered since the last look (and any whose recording failed)."""
        batch, self._unrecorded = self._unrecorded, []
        while True:
            try:
                request = self._done.get_nowait()
            except queue.Empty:
                return batch
            self._busy[request.slug] -= 1
            if not self._busy[request.slug]:
                del self._busy[request.slug]
            batch.append(request)

    def _record(self, batch: list[_Request]) -> None:
        """Record the outcomes of these requests in one transaction of their own."""
        if not batch:
            return
        try:
            with write_tx():
                self._write_outcomes(batch)
        except BaseException:
            self._unrecorded = batch  # nothing of it was committed: try again
            raise
        self._recorded(batch)

    def _write_outcomes(self, batch: list[_Request]) -> None:
        """The statements that record the outcomes (inside the caller's transaction), under one
        savepoint; if recording one of them fails (a bug, not the database), again one by one,
        so that one message's failure never loses the others' outcomes."""
        pairs = [(message, outcome) for request in batch
                 for message, outcome in zip(request.messages, request.outcomes, strict=True)]
        if not pairs:
            return
        try:
            with write_tx():
                for message, outcome in pairs:
                    self._write_outcome(message, outcome)
            return
        except UNAVAILABLE_ERRORS:
            raise
        except Exception:
            log.warning("recording %d outcomes together failed; recording them one by one",
                        len(pairs), exc_info=True)
        for message, outcome in pairs:
            self._record_one(message, outcome)

    def _recorded(self, batch: list[_Request]) -> None:
        """After the commit: count them, and look again (capacity is free, and a retry or a
        failover may be due now)."""
        for request in batch:
            self.sent[request.slug] += len(request.messages)
            metrics.count_sends(request.slug, request.outcomes)
        if batch:
            self._look = True

    def _write_outcome(self, message: Message, outcome: Outcome) -> None:
        sending.record_outcome(message, outcome, self.providers,
                               max_attempts=self.max_attempts,
                               backoff_seconds=self.backoff_seconds)

    def _record_one(self, message: Message, outcome: Outcome) -> None:
        try:
            with write_tx():  # a savepoint: one message's bug never loses the others
                self._write_outcome(message, outcome)
        except UNAVAILABLE_ERRORS:
            raise
        except Exception:
            log.exception("could not record the send of message %s; it will be marked "
                          "unknown when its lease runs out", message.id)

    # -- lost sends --------------------------------------------------------------------------

    def recover(self) -> int:
        """At start: sends of this host's dispatchers that are gone never got their answer
        recorded. They become `unknown` now instead of when their leases run out."""
        gone = [o for o in sending.send_owners() if owner_is_gone(o, self.owner)]
        if not gone:
            return 0
        for owner in gone:  # its claims not yet started: due again now, not in CLAIM_SECONDS
            sending.release_claims(owner)
        return self._mark_lost(sending.lost_sends(owners=gone),
                               "its dispatcher stopped before the answer was recorded")

    def reap(self) -> int:
        """Sends whose lease ran out, whoever started them, become `unknown`."""
        return self._mark_lost(sending.lost_sends(), "the send lease ran out")

    def _mark_lost(self, lost: list[tuple[int, str, dt.datetime]], why: str) -> int:
        count = sum(sending.record_lost(message_id, owner, started, why)
                    for message_id, owner, started in lost)
        if count:
            log.warning("%d send(s) without a recorded answer marked unknown (%s)", count, why)
        return count

    def _in_db(self, work) -> None:  # type: ignore[no-untyped-def]
        on_connection(work)
