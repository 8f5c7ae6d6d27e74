"""What every provider module implements, and the values that cross its boundary.

The base owns the flow (settings, HTTP client, callback URL); each provider fills in small hooks:
`send()` turns an outbound message into a provider request and its answer into a SendResult or
a SendError, and `parse_callback()` turns one raw callback into normalized receipts.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import parse_qs

import httpx

from ..settings import ConfigError
from ..status import Status


@dataclass(frozen=True)
class Setting:
    """One key of a provider's [providers.<slug>] table."""

    kind: type
    required: bool = False
    default: Any = None
    secret: bool = False


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
    to: str  # E.164 with "+"
    text: str
    sender: str | None = None


@dataclass(frozen=True)
class SendResult:
    """The provider accepted the message."""

    provider_message_id: str
    raw: str = ""
    receipts: list[Receipt] = field(default_factory=list)  # reports known at once (fake)


class SendError(Exception):
    """The provider did not accept the message; `permanent` says whether retrying can help."""

    def __init__(self, detail: str, *, permanent: bool, status: Status = Status.FAILED,
                 code: str | None = None, raw: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.permanent = permanent
        self.status = status
        self.code = code
        self.raw = raw


class Provider:
    """Base class: settings validation, HTTP client and callback authentication."""

    slug: ClassVar[str]
    name: ClassVar[str]
    SETTINGS: ClassVar[dict[str, Setting]] = {}
    STATUS_MAP: ClassVar[dict[str, Status]] = {}
    CALLBACK_METHODS: ClassVar[tuple[str, ...]] = ("POST",)
    timeout = httpx.Timeout(15.0, connect=5.0)

    def __init__(self, config: dict[str, Any], public_base_url: str) -> None:
        self.config = self.validate(config)
        self.public_base_url = public_base_url
        self._client: httpx.Client | None = None

    @classmethod
    def validate(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Check this provider's table; the error names the dotted key."""
        out: dict[str, Any] = {}
        for key in config:
            if key not in cls.SETTINGS:
                raise ConfigError(f"providers.{cls.slug}.{key}: unknown setting")
        for key, spec in cls.SETTINGS.items():
            value = config.get(key, spec.default)
            if value is None or value == "":
                if spec.required:
                    raise ConfigError(f"providers.{cls.slug}.{key}: required but not set")
            elif spec.kind is int and isinstance(value, str) and value.isdigit():
                value = int(value)
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
            self._client = httpx.Client(timeout=self.timeout, follow_redirects=False)
        return self._client

    def token_matches(self, token: str) -> bool:
        """Constant-time check of the secret path token; no token configured = no callbacks."""
        expected = self.config.get("callback_token") or ""
        if not expected:
            return False
        return hmac.compare_digest(token.encode("utf-8"), expected.encode("utf-8"))

    def callback_url(self) -> str | None:
        """The URL to give the provider for callbacks (None when callbacks are off)."""
        token = self.config.get("callback_token")
        return f"{self.public_base_url}/callbacks/{self.slug}/{token}" if token else None

    def send(self, message: OutboundMessage) -> SendResult:
        """Submit one message; raise SendError when it was not accepted."""
        raise NotImplementedError

    def parse_callback(self, request: CallbackRequest) -> ParsedCallback:
        """Turn one authenticated callback into receipts; never raise for bad input."""
        raise NotImplementedError
