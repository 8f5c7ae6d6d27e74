"""What every provider module implements, and the values that cross its boundary.

The base owns the flow (settings, HTTP client, callback URL); each provider fills in small hooks:
`send()` turns an outbound message into a provider request and its answer into a SendResult or
a SendError, `parse_callback()` turns one raw callback into normalized receipts, and `poll()`
(providers with a status API) asks about messages still not final.

Every provider also takes the common settings in `COMMON_SETTINGS` (validity, polling delay,
rate limit); the sending core reads them, provider modules need not.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import parse_qs

import httpx

from .. import __version__
from ..callback_access import CallbackAccess
from ..errors import ConfigError
from ..status import Status

USER_AGENT = f"dlr-tracker/{__version__}"


@dataclass(frozen=True)
class Setting:
    """One key of a provider's [providers.<slug>] table."""

    kind: type
    required: bool = False
    default: Any = None
    secret: bool = False


def without_nul(text: str) -> str:
    """`text` with NUL characters replaced by U+FFFD (Postgres text holds no NUL)."""
    return text.replace("\x00", "\ufffd")


@dataclass(frozen=True)
class Receipt:
    """One normalized status report for one message, from a callback or a poll."""

    provider: str
    status: Status
    provider_message_id: str | None = None
    reference: str | None = None
    raw_status: str | None = None  # the provider's own code, kept beside the mapping
    error_code: str | None = None
    detail: str | None = None
    occurred_at: datetime | None = None  # provider's clock, naive UTC
    dedupe_key: str | None = None  # provider-unique key of this report; None = never deduped

    def __post_init__(self) -> None:
        # What a sender can put in a receipt must fit where it is stored, for every provider at
        # once: a NUL cannot be stored in a Postgres text column (psycopg2 refuses the
        # parameter), and Postgres refuses a value longer than its column.
        for name, value in vars(self).items():
            if isinstance(value, str) and not isinstance(value, Status):
                fitted = _clipped(without_nul(value), RECEIPT_FIELD_LIMITS.get(name))
                if fitted != value:
                    object.__setattr__(self, name, fitted)


# The event table's column sizes. A clipped value ends in "…": it can never equal a reference
# of ours or a provider id we stored, so it matches nothing and stays an orphan.
RECEIPT_FIELD_LIMITS = {"provider_message_id": 128, "reference": 32, "raw_status": 128,
                        "error_code": 64, "dedupe_key": 200}


def _clipped(value: str, limit: int | None) -> str:
    if limit is None or len(value) <= limit:
        return value
    if limit == RECEIPT_FIELD_LIMITS["dedupe_key"]:  # still unique: its hash, not its prefix
        return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return value[:limit - 1] + "…"


@dataclass
class ParsedCallback:
    """What a provider made of one callback: receipts, and why parts were not understood."""

    receipts: list[Receipt] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. "repaired malformed XML"


@dataclass(frozen=True)
class CallbackRequest:
    """The raw callback as the provider module sees it (already authenticated)."""

    method: str
    content_type: str
    query: dict[str, list[str]]
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def form(self) -> dict[str, list[bytes]]:
        """The body as url-encoded form fields; values stay bytes, so an XML document's own
        encoding declaration still applies (latin-1 maps every percent-decoded byte 1:1)."""
        fields = parse_qs(self.body.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
        return {k: [v.encode("latin-1") for v in values] for k, values in fields.items()}


@dataclass(frozen=True)
class OutboundMessage:
    """What a provider needs to submit one message."""

    reference: str
    to: str  # E.164 with "+"; `wire_number()` gives a provider's own format
    text: str
    sender: str | None = None
    callback_url: str | None = None  # this message's callback URL (Provider.callback_url)
    validity: timedelta | None = None  # how long the provider should keep trying
    send_at: datetime | None = None  # naive UTC: the provider holds it until then (DEFER_WINDOW)
    message_id: int | None = None  # our message's numeric id (APIs that want a number of ours)


# Poll answers are stored beside callbacks (so the timeline links every receipt to the raw text
# behind it) with this pseudo-method; replay skips them.
POLL_METHOD = "POLL"


@dataclass(frozen=True)
class PollTarget:
    """One message a poll asks about."""

    message_id: int
    reference: str
    provider_message_id: str | None
    to: str


@dataclass
class PollAnswer:
    """What one status request returned: receipts, and the raw answer kept beside them."""

    receipts: list[Receipt] = field(default_factory=list)
    raw: str = ""
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SendResult:
    """The provider accepted the message."""

    provider_message_id: str
    raw: str = ""
    receipts: list[Receipt] = field(default_factory=list)  # reports known at once (fake)


class SendError(Exception):
    """The provider did not accept the message.

    `permanent`: retrying with this provider cannot help. `provider_side`: the fault is the
    provider's or our account's (unreachable, 5xx, out of credit, no route, bad credentials),
    so another provider may succeed; a recipient-side rejection leaves it False and never fails
    over. `outcome_unknown`: the request may have reached the provider (timed out waiting for
    the answer), so the message must not be resent blindly.
    """

    def __init__(self, detail: str, *, permanent: bool, status: Status = Status.FAILED,
                 code: str | None = None, raw: str = "", provider_side: bool = False,
                 outcome_unknown: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.permanent = permanent
        self.status = status
        self.code = code
        self.raw = raw
        self.provider_side = provider_side
        self.outcome_unknown = outcome_unknown


@dataclass(frozen=True)
class Finding:
    """One thing `tracker providers check` found: is the host, the key or the sender accepted?
    `ok` None: the provider offers no way to tell without sending a message."""

    subject: str  # "host", "key", "sender"
    ok: bool | None
    detail: str


class PollError(Exception):
    """A status request failed as a whole (unreachable, refused, unreadable); try again later."""


# Keys every [providers.<slug>] table accepts beside the provider's own.
COMMON_SETTINGS: dict[str, Setting] = {
    "validity_minutes": Setting(int, default=2880),  # not final after this -> expired (inferred)
    "poll_after_seconds": Setting(int, default=900),  # first poll this long after submission
    "poll_interval_seconds": Setting(int, default=1800),  # then at most this often
    "rate_limit_per_second": Setting(float, default=0.0),  # 0 = no limit
    # Requests to this provider under way at once, per dispatcher process (each worker host).
    "max_in_flight": Setting(int, default=16),
    # Longest wait for each step of a request (connect at most 5 s of it): a send that gets no
    # answer becomes `unknown`, and a send lost with its process is declared so within about
    # three times this (tracker.dispatcher's send lease).
    "timeout_seconds": Setting(float, default=15.0),
    # Hand scheduled messages to the provider at once (for providers with DEFER_WINDOW) instead
    # of holding them here until due; they can then no longer be canceled here.
    "provider_scheduling": Setting(bool, default=False),
    # Callback access rules (tracker.callback_access): the provider's networks (CIDR list; from
    # the environment comma-separated), and Basic credentials put in its callback URL.
    "callback_allow_from": Setting(list),
    "callback_username": Setting(str),
    "callback_password": Setting(str, secret=True),
}


def wire_number(e164: str, *, plus: bool) -> str:
    """A phone number in a provider's wire format: E.164 with or without the leading '+'."""
    digits = e164.lstrip("+")
    return f"+{digits}" if plus else digits


class Provider:
    """Base class: settings validation, HTTP client and callback authentication."""

    slug: ClassVar[str]
    name: ClassVar[str]
    SETTINGS: ClassVar[dict[str, Setting]] = {}
    STATUS_MAP: ClassVar[dict[str, Status]] = {}
    CALLBACK_METHODS: ClassVar[tuple[str, ...]] = ("POST",)
    # Provider status and error codes in plain words (PROTOCOLS.md tables), for the dashboard.
    EXPLANATIONS: ClassVar[dict[str, str]] = {}
    POLL_BATCH: ClassVar[int] = 0  # how many messages one poll request may ask about; 0 = none
    # (least, most) lead time the provider accepts for a deferred send; None = no deferral.
    DEFER_WINDOW: ClassVar[tuple[timedelta, timedelta] | None] = None

    def defers(self, send_at: datetime | None, now: datetime) -> bool:
        """True when this message should go to the provider now, to be sent at `send_at`."""
        if send_at is None or self.DEFER_WINDOW is None or not self.config["provider_scheduling"]:
            return False
        least, most = self.DEFER_WINDOW
        return least <= send_at - now <= most
    timeout = httpx.Timeout(15.0, connect=5.0)

    # Messages one send request may carry (providers with a batch API override send_batch).
    SEND_BATCH: ClassVar[int] = 1

    def __init__(self, config: dict[str, Any], public_base_url: str) -> None:
        self.config = self.validate(config)
        self.access = CallbackAccess.from_config(self.slug, self.config)
        if self.config["max_in_flight"] < 1:
            raise ConfigError(f"providers.{self.slug}.max_in_flight: must be at least 1")
        if self.config["timeout_seconds"] <= 0:
            raise ConfigError(f"providers.{self.slug}.timeout_seconds: must be more than 0")
        seconds = self.config["timeout_seconds"]
        self.timeout = httpx.Timeout(seconds, connect=min(5.0, seconds))
        self.public_base_url = public_base_url
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    @classmethod
    def validate(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Check this provider's table; the error names the dotted key."""
        out: dict[str, Any] = {}
        settings = {**COMMON_SETTINGS, **cls.SETTINGS}
        for key in config:
            if key not in settings:
                raise ConfigError(f"providers.{cls.slug}.{key}: unknown setting")
        for key, spec in settings.items():
            value = config.get(key, spec.default)
            if value is None or value == "":
                if spec.required:
                    raise ConfigError(f"providers.{cls.slug}.{key}: required but not set")
            elif (spec.kind is int and isinstance(value, str) and value.isascii()
                  and value.isdigit()):
                value = int(value)
            elif spec.kind is list and isinstance(value, str):  # from the environment
                value = [item.strip() for item in value.split(",") if item.strip()]
            elif spec.kind is float and type(value) in (int, str):
                try:
                    value = float(value)
                except ValueError:
                    raise ConfigError(f"providers.{cls.slug}.{key}: expected a number, "
                                      f"got {value!r}") from None
            elif not isinstance(value, spec.kind) or isinstance(value, bool) != (spec.kind is bool):
                raise ConfigError(
                    f"providers.{cls.slug}.{key}: expected {spec.kind.__name__}, got {value!r}"
                )
            out[key] = value
        return out

    @property
    def client(self) -> httpx.Client:
        """One pooled HTTP client per provider per process, created on first use."""
        if self._client is None:
            with self._client_lock:  # the dispatcher's send threads share it
                if self._client is None:
                    size = self.config["max_in_flight"]
                    self._client = httpx.Client(
                        timeout=self.timeout, follow_redirects=False,
                        headers={"User-Agent": USER_AGENT},
                        limits=httpx.Limits(max_connections=size,
                                            max_keepalive_connections=size))
        return self._client

    def request_deadline(self) -> float:
        """Seconds a send request may take at most: connect, write, then wait for the answer.
        (httpx's read timeout bounds each wait for data, so an answer trickled byte by byte
        could outlast it; a send outlasting its lease is declared lost, never resent, and its
        late answer, if any, is still recorded.)"""
        t = self.timeout
        return sum(x or 0.0 for x in (t.connect, t.write, t.read))

    def explain(self, code: str | None) -> str | None:
        """What a raw status or error code of this provider means, in words; None if unknown.

        Raw statuses may carry a suffix ("DELIVERED (1)", "N202 Message Sent/Delivered"): the
        whole value is tried first, then its first word."""
        if not code:
            return None
        text = code.strip()
        for key in (text, text.split(" ")[0], text.upper(), text.split(" ")[0].upper()):
            if key in self.EXPLANATIONS:
                return self.EXPLANATIONS[key]
        return None

    def token_matches(self, token: str) -> bool:
        """Constant-time check of the secret path token; no token configured = no callbacks."""
        expected = self.config.get("callback_token") or ""
        if not expected:
            return False
        return hmac.compare_digest(token.encode("utf-8"), expected.encode("utf-8"))

    def callback_url(self, reference: str | None = None) -> str | None:
        """The URL to give the provider for callbacks (None when callbacks are off).

        `reference` is the message's; a provider whose callbacks carry no id of ours (AlphaSMS's
        per-message `hook`) overrides this to put it in the URL."""
        token = self.config.get("callback_token")
        if not token:
            return None
        scheme, _, rest = self.public_base_url.partition("://")
        return f"{scheme}://{self.access.url_userinfo()}{rest}/callbacks/{self.slug}/{token}"

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One HTTP request to the provider, with transport failures classified for sending.

        Not connected: nothing reached the provider, so retry (and fail over). Connected but no
        complete answer: the provider may have acted on it, so the outcome is unknown."""
        try:
            return self.client.request(method, url, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise SendError(f"{self.name} unreachable: {exc!r}", permanent=False,
                            provider_side=True, code="UNREACHABLE") from exc
        except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise SendError(f"{self.name} gave no answer: {exc!r}", permanent=False,
                            provider_side=True, outcome_unknown=True, code="NO_ANSWER") from exc
        except httpx.HTTPError as exc:
            raise SendError(f"{self.name} request failed: {exc!r}", permanent=False,
                            provider_side=True, code="HTTP_ERROR") from exc

    def check(self) -> list[Finding]:
        """Ask the provider's cheapest authenticated endpoint (a balance, or the status of an id
        that does not exist) whether our host, key and sender are accepted. Never sends."""
        return [Finding("host", None, "no check for this provider yet")]

    def reach(self, method: str, url: str, **kwargs: Any) -> tuple[httpx.Response | None,
                                                                    list[Finding]]:
        """A check's request: the answer, or the finding that the host could not be reached."""
        try:
            return self.request(method, url, **kwargs), []
        except SendError as exc:
            return None, [Finding("host", False, exc.detail)]

    def verify(self, request: CallbackRequest) -> str | None:
        """Check a callback's own signature, for providers that sign (the path token is already
        checked): None when it holds, else why not. A failing callback is stored with the
        verdict `unauthorized` and not applied; replay checks it again."""
        return None

    def send(self, message: OutboundMessage) -> SendResult:
        """Submit one message; raise SendError when it was not accepted."""
        raise NotImplementedError

    def send_batch(self, messages: list[OutboundMessage]) -> list[SendResult | SendError]:
        """Submit up to SEND_BATCH messages in one request; one outcome per message, in order.
        Raise SendError when the request as a whole failed (the same outcome for every one)."""
        if len(messages) != 1:
            raise NotImplementedError(f"{self.slug} sends one message per request")
        return [self.send(messages[0])]

    def parse_callback(self, request: CallbackRequest) -> ParsedCallback:
        """Turn one authenticated callback into receipts; never raise for bad input."""
        raise NotImplementedError

    def poll(self, targets: list[PollTarget]) -> PollAnswer:
        """Ask the provider about at most POLL_BATCH messages; raise PollError on failure.

        Messages the provider does not know are left out of the answer, not reported failed."""
        raise NotImplementedError(f"{self.slug} has no status API")
