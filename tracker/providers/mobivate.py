"""Mobivate BulkSMS (seed 002, PROTOCOLS.md §2): JSON `POST /send/single`, JSON delivery receipts.

Send: `POST {base_url}/send/single` with a Bearer key and `{text, originator, recipient,
reference}`; 200 answers `{"success":true,"record":{"id":<UUID>,…}}`, errors answer
`{"success":false,"error":{"name":…,"statusCode":…,"object":…}}`. The production host is private
("provided by our team upon request"), so `base_url` has no default.

Send errors (`classify_error`): 401/402 (key, credit) are our account's and fail over; 408, 429
and 5xx pass (retried). A 403 is a bad key or permission (the seed's AuthenticationError) or an
opted-out recipient (the codes page); its `name` tells them apart, and an unexplained 403 is
taken as the opt-out. A 400 is `rejected` only when its text blames the message itself: the
number (invalid, blacklisted, opted out) or the text (refused, too long). The one published 400,
"Missing Originator object", and every fault of the originator (our sender ID), route, key,
credit or account limits is provider side: `failed`, or the next provider of the route. A 400
whose text names neither, or cannot be read, is provider side too: the recipient is never
blamed without evidence. The raw answer is kept in `SendError.raw`.

Receipts: a JSON POST on every status change (`deliveryMessageId`, `clientReference`, `status`,
`statusCode`, `created`, …). Their id is a 32-character hex log id, not the send answer's UUID
(§2.3), so they are matched through `clientReference`, which echoes the `reference` we sent. The
first receipt matched that way gives the message its log id as provider message id
(`ADOPTS_RECEIPT_ID`; the UUID stays on the `submitted` event), so later receipts carrying the
log id alone, and polls, find the message too. Polling (`GET /message/{id}`) is documented only
for the legacy host, whose message log knows the log id and may not know the UUID, hence off
unless `poll = true`.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

from ..errors import ConfigError
from ..status import Status
from .base import (
    CallbackRequest,
    Finding,
    OutboundMessage,
    ParsedCallback,
    PollAnswer,
    PollError,
    PollTarget,
    Provider,
    Receipt,
    SendError,
    SendResult,
    Setting,
    wire_number,
)
from .timestamps import parse_timestamp

# status name -> normalized status (§2.4). PROTOCOLS.md suggests `queued` for INTERIM_QUEUED and
# RETRY, but our `queued` means "stored by us, not submitted": it ranks below `accepted`, so such
# a receipt could never apply. INTERIM_QUEUED (waiting at the next-tier provider) is `accepted`;
# RETRY comes after a delivery attempt, so it stays `sent` and applies after ACCEPTED.
STATUS_MAP: dict[str, Status] = {
    "DELIVERED": Status.DELIVERED,
    "ACCEPTED": Status.SENT,
    "EXPIRED": Status.EXPIRED,
    "DELETED": Status.UNDELIVERED,
    "UNDELIVERABLE": Status.UNDELIVERED,
    "UNKNOWN": Status.UNKNOWN,
    "REJECTED": Status.REJECTED,
    "INTERIM_QUEUED": Status.ACCEPTED,
    "INTERIM_ACKNOWLEDGED": Status.SENT,
    "RETRY": Status.SENT,
    "FAILED_NACK": Status.UNDELIVERED,
    "FAILED_NOROUTE": Status.FAILED,
    "FAILED_INSUFFICIENT_CREDIT": Status.FAILED,
    "FAILED_ORIGINATOR_RECIPIENT_EQUAL": Status.REJECTED,
    "FAILED_RECIPIENT_BLACKLISTED": Status.REJECTED,
    "FAILED_ORIGINATOR_REJECTED": Status.REJECTED,
    "FAILED_ROUTE_INVALID": Status.FAILED,
    "FAILED_LIMITS_EXCEEDED": Status.FAILED,
    "FAILED_EXHAUSTED": Status.FAILED,
    "FAILED_INTERNAL_ERROR": Status.FAILED,
    "FAILED_UNKNOWN": Status.FAILED,
}

# statusCode -> status name, so a receipt whose name is missing or misspelt still maps.
STATUS_CODES: dict[int, str] = {
    1: "DELIVERED", 2: "ACCEPTED", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIVERABLE", 6: "UNKNOWN",
    7: "REJECTED", 8: "INTERIM_QUEUED", 9: "INTERIM_ACKNOWLEDGED", 10: "RETRY",
    11: "FAILED_NACK", 12: "FAILED_NOROUTE", 17: "FAILED_INSUFFICIENT_CREDIT",
    18: "FAILED_ORIGINATOR_RECIPIENT_EQUAL", 19: "FAILED_RECIPIENT_BLACKLISTED",
    20: "FAILED_ORIGINATOR_REJECTED", 21: "FAILED_ROUTE_INVALID", 22: "FAILED_LIMITS_EXCEEDED",
    24: "FAILED_EXHAUSTED", 28: "FAILED_INTERNAL_ERROR", 29: "FAILED_UNKNOWN",
}

# The archived DLR page's wording, shown to support staff beside a failed receipt.
DESCRIPTIONS: dict[str, str] = {
    "DELIVERED": "delivered to the handset", "ACCEPTED": "accepted by the carrier",
    "INTERIM_QUEUED": "queued by the next-tier provider",
    "INTERIM_ACKNOWLEDGED": "acknowledged by the next-tier provider",
    "RETRY": "delivery will be retried",
    "EXPIRED": "the SMSC could not deliver in time (handset off)",
    "DELETED": "message deleted",
    "UNDELIVERABLE": "unable to deliver (number does not exist)",
    "UNKNOWN": "unknown error",
    "REJECTED": "rejected",
    "FAILED_NACK": "accepted but not delivered to the handset",
    "FAILED_NOROUTE": "the provider could not route the message",
    "FAILED_INSUFFICIENT_CREDIT": "insufficient credit",
    "FAILED_ORIGINATOR_RECIPIENT_EQUAL": "originator and recipient are equal",
    "FAILED_RECIPIENT_BLACKLISTED": "recipient blacklisted",
    "FAILED_ORIGINATOR_REJECTED": "invalid originator",
    "FAILED_ROUTE_INVALID": "the route cannot send to this recipient",
    "FAILED_LIMITS_EXCEEDED": "account limits exceeded",
    "FAILED_EXHAUSTED": "delivery retries exhausted",
    "FAILED_INTERNAL_ERROR": "provider internal error",
    "FAILED_UNKNOWN": "message failed",
}

_IN_FLIGHT = frozenset({Status.ACCEPTED, Status.SENT, Status.DELIVERED})


def map_status(name: str | None, code: int | None) -> tuple[Status, str | None]:
    """(normalized status, canonical status name) from a receipt's `status` and `statusCode`.

    The name wins; the code stands in when the name is missing or new. Unknown `FAILED_*`
    names are failures (the list is cut off after 29); anything else unknown is `unknown`."""
    if name and name in STATUS_MAP:
        return STATUS_MAP[name], name
    if code is not None and code in STATUS_CODES:
        known = STATUS_CODES[code]
        return STATUS_MAP[known], known
    if name and name.startswith("FAILED_"):
        return Status.FAILED, name
    return Status.UNKNOWN, name


def _text(value: Any) -> str | None:
    """A JSON string (or number) as stripped text; None for null, empty or anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | str):
        return str(value).strip() or None
    return None


def _int(value: Any) -> int | None:
    """A JSON int, or a string of digits (numbers may arrive quoted)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = value.strip() if isinstance(value, str) else ""
    if text.isascii() and text.isdigit() and len(text) <= 18:  # "²", and 4,400 digits: None
        return int(text)
    return None


def _json(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[…
        return None


class MobivateProvider(Provider):
    """Mobivate Bulk API: `/send/single` with a Bearer key, JSON receipts, optional polling."""

    slug = "mobivate"
    name = "Mobivate"
    SETTINGS = {
        "base_url": Setting(str, required=True),  # private production host: no default
        "api_key": Setting(str, required=True, secret=True),
        "sender": Setting(str, required=True),  # `originator` is required by /send/single
        "callback_token": Setting(str, secret=True),
        "send_callback_url": Setting(bool, default=True),  # per-request `callbackURL`
        "poll": Setting(bool, default=False),
    }
    EXPLANATIONS = DESCRIPTIONS
    STATUS_MAP = STATUS_MAP
    # Receipts name the message by a log id the send answer never gave (§2.3): the first one
    # matched by our reference gives the message that id (tracker.correlation.match).
    ADOPTS_RECEIPT_ID = True

    def __init__(self, config: dict[str, Any], public_base_url: str) -> None:
        super().__init__(config, public_base_url)
        base = self.config["base_url"].rstrip("/")
        if not base.startswith(("https://", "http://")):
            raise ConfigError(f"providers.{self.slug}.base_url: expected an http(s) URL, "
                              f"got {self.config['base_url']!r}")
        if not self.config.get("callback_token") and not self.config["poll"]:
            raise ConfigError(f"providers.{self.slug}.callback_token: required unless "
                              "poll = true (otherwise no status would ever come back)")
        self.base_url = base
        # One message per poll request: GET /message/{id} names one id, and one request per
        # poll() call lets the core's rate limit and backoff act per request, so a failure
        # concerns exactly one message. Polling is off by default: the endpoint is documented
        # only for the legacy host, and whether it knows the send answer's UUID is open (§2.7).
        self.POLL_BATCH = 1 if self.config["poll"] else 0  # type: ignore[misc]

    @property
    def _headers(self) -> dict[str, str]:
        return {"Accept": "application/json",
                "Authorization": f"Bearer {self.config['api_key']}"}

    # -- checking and setting up ---------------------------------------------------------

    def check(self) -> list[Finding]:
        """`GET /message/{id}` for an id that cannot exist (§2.5): 404 means the host and the
        key were accepted; 401/403 a refused key; 402 an account out of credit."""
        response, problems = self.reach("GET", f"{self.base_url}/message/tracker-check",
                                        headers=self._headers)
        if response is None:
            return problems
        host = Finding("host", True, f"{self.base_url} answers")
        sender = Finding("sender", None, "Mobivate has no documented way to check an "
                                         "originator without sending")
        status = response.status_code
        if status in (200, 404):
            return [host, Finding("key", True, f"accepted (HTTP {status} for an unknown id)"),
                    sender]
        if status in (401, 403):
            return [host, Finding("key", False, f"HTTP {status}: {response.text[:200]}")]
        if status == 402:
            return [host, Finding("key", True, "accepted"),
                    Finding("account", False, "HTTP 402: out of credit")]
        return [Finding("host", False, f"{self.base_url} answered HTTP {status}: "
                                       f"{response.text[:200]!r}")]

    def setup(self) -> str:
        """Register our receipt URL as the account's Delivery Endpoint through the documented
        `POST /webhooks/receipt` (§2.3), so no one needs the control panel. Raises SendError."""
        url = self.callback_url(None)
        if url is None:
            raise SendError("no callback_token is set, so there is no receipt URL to register",
                            permanent=True, provider_side=True, code="NO_CALLBACK_TOKEN")
        response = self.request("POST", f"{self.base_url}/webhooks/receipt",
                                headers=self._headers, json={"url": url})
        if response.status_code != 200:
            raise SendError(f"Mobivate answered HTTP {response.status_code}: "
                            f"{response.text[:300]}", permanent=True, provider_side=True,
                            code=f"HTTP_{response.status_code}", raw=response.text)
        return url

    # -- sending -------------------------------------------------------------------------

    def send(self, message: OutboundMessage) -> SendResult:
        """POST /send/single; read `record.id`, or classify the error answer."""
        body: dict[str, Any] = {
            "text": message.text,
            "originator": message.sender or self.config["sender"],
            "recipient": wire_number(message.to, plus=False),  # "international format" digits
            "reference": message.reference,  # comes back as clientReference in every receipt
        }
        if message.callback_url and self.config["send_callback_url"]:
            body["callbackURL"] = message.callback_url
        # No validity or schedule is passed: the API has no validity field, and the core
        # schedules messages itself (scheduleDateTime would hide them from our queue).
        response = self.request("POST", f"{self.base_url}/send/single", json=body,
                                headers=self._headers)
        return read_send_response(response.status_code, response.content, response.text)

    # -- receipts ------------------------------------------------------------------------

    def parse_callback(self, request: CallbackRequest) -> ParsedCallback:
        """One receipt object per POST (a JSON array of them is accepted too)."""
        parsed = ParsedCallback()
        data = _json(request.body)
        if data is None:
            parsed.errors.append("body is not JSON" if request.body.strip()
                                 else "empty body")
            return parsed
        items = data if isinstance(data, list) else [data]
        for item in items:
            self._read_receipt(item, parsed)
        if not items:
            parsed.notes.append("empty list of receipts")
        return parsed

    def _read_receipt(self, item: Any, parsed: ParsedCallback) -> None:
        if not isinstance(item, dict):
            parsed.errors.append(f"receipt is not a JSON object: {str(item)[:80]}")
            return
        log_id = _text(item.get("deliveryMessageId"))
        reference = _text(item.get("clientReference"))
        name = (_text(item.get("status")) or "").upper() or None
        code = _int(item.get("statusCode"))
        if not log_id and not reference:
            parsed.errors.append("receipt without deliveryMessageId and clientReference")
            return
        if name is None and code is None:
            parsed.errors.append(f"receipt for {log_id or reference} without status")
            return
        status, known = map_status(name, code)
        stamp = item.get("created") if isinstance(item.get("created"), str) else None
        parsed.receipts.append(Receipt(
            provider=self.slug,
            status=status,
            provider_message_id=log_id,
            reference=reference,
            raw_status=_raw_status(name, code),
            error_code=None if status in _IN_FLIGHT else (known or str(code)),
            detail=None if status in _IN_FLIGHT else DESCRIPTIONS.get(known or ""),
            occurred_at=parse_timestamp(stamp),
            # Every status change is posted once per change; a resent copy repeats all three,
            # while two reports with the same status (RETRY twice) differ in `created`.
            dedupe_key=f"{log_id or 'ref:' + str(reference)}|{code if code is not None else name}"
                       f"|{stamp or ''}",
        ))

    # -- polling -------------------------------------------------------------------------

    def poll(self, targets: list[PollTarget]) -> PollAnswer:
        """GET /message/{id} for each target (POLL_BATCH = 1: normally one)."""
        answer = PollAnswer()
        raws: list[str] = []
        for target in targets:
            if not target.provider_message_id:
                answer.errors.append(f"{target.reference}: no provider message id to ask about")
                continue
            url = f"{self.base_url}/message/{quote(target.provider_message_id, safe='')}"
            try:
                response = self.request("GET", url, headers=self._headers)
            except SendError as exc:
                raise PollError(exc.detail) from exc
            raws.append(response.text)
            if response.status_code == 404:
                continue  # not known here (e.g. the UUID is not a log id): leave it out
            if response.status_code != 200:
                raise PollError(f"Mobivate GET /message answered HTTP {response.status_code}: "
                                f"{response.text[:200]}")
            self._read_poll(target, _json(response.content), answer)
        answer.raw = "\n".join(raws)
        return answer

    def _read_poll(self, target: PollTarget, data: Any, answer: PollAnswer) -> None:
        if isinstance(data, dict) and isinstance(data.get("record"), dict):
            data = data["record"]  # the new API wraps send answers in `record`; allow it here
        if not isinstance(data, dict):
            raise PollError(f"Mobivate GET /message answer is not a JSON object: {data!r:.200}")
        name = (_text(data.get("status")) or "").upper() or None
        sender_ref = _text(data.get("senderReference"))
        if name is None:
            answer.errors.append(f"{target.provider_message_id}: answer without status")
            return
        if sender_ref and sender_ref != target.reference:
            answer.errors.append(f"{target.provider_message_id}: answer is for reference "
                                 f"{sender_ref!r}, not {target.reference!r}")
            return
        direction = _text(data.get("direction"))
        if direction and direction.upper() != "MT":
            answer.errors.append(f"{target.provider_message_id}: answer is an {direction} "
                                 "message")
            return
        status, known = map_status(name, None)
        stamp = _text(data.get("modified")) or _text(data.get("created"))
        answer.receipts.append(Receipt(
            provider=self.slug,
            status=status,
            provider_message_id=target.provider_message_id,
            reference=target.reference,
            raw_status=name,
            error_code=None if status in _IN_FLIGHT else known,
            detail=None if status in _IN_FLIGHT else DESCRIPTIONS.get(known or ""),
            occurred_at=parse_timestamp(stamp),
            dedupe_key=f"poll|{_text(data.get('id')) or target.provider_message_id}|{name}"
                       f"|{stamp or ''}",
        ))


def _raw_status(name: str | None, code: int | None) -> str:
    if name and code is not None:
        return f"{name} ({code})"
    return name or str(code)


# -- send answers --------------------------------------------------------------------------------

# Whose fault an error answer is, from what its `name` and `object` (or `message`) say. Checked
# in this order; the first group that matches decides. PROTOCOLS.md §2.2 publishes one 400, the
# seed's `{"name":"ValidationError","statusCode":400,"object":"Missing Originator object"}`:
# the API names the request field at fault as "<Missing|Invalid> <Field> object".
#
# 1. The recipient opted out. The codes page's 403:
#    "Opted Out – recipient is opted out"  # noqa: RUF003
_OPTOUT = re.compile(r"opt-?out|opted[ -]?out|unsubscribed")
# 2. Passing: throttled (the codes page's 429).
_RATE = re.compile(r"rate ?limit|toomanyrequests|too many requests|throttl")
# 3. Our account, configuration or integration, whatever else the text names: the key and its
#    permission (401, the seed's 403 AuthenticationError, `create:SingleSMS`), credit (402;
#    §2.4 FAILED_INSUFFICIENT_CREDIT), account limits (§2.4 FAILED_LIMITS_EXCEEDED), the
#    originator, i.e. our sender ID (the published "Missing Originator object"; legacy: "at
#    most 11 alphanumeric or 15 numeric characters"; §2.4 FAILED_ORIGINATOR_REJECTED "invalid
#    originator", FAILED_ORIGINATOR_RECIPIENT_EQUAL), the route (legacy `routeId`; §2.4
#    FAILED_NOROUTE, FAILED_ROUTE_INVALID "route cannot send to recipient"), and a request
#    the API could not read. Another provider may take the message.
_OURS = re.compile(r"auth|permission|api ?key|\bkey\b|token|credit|balance|payment|funds|"
                   r"account|limits? exceeded|quota|originator|sender|route|"
                   r"content.?type|json|malformed|syntax|pars(?:e|ing)")
# 4. The message itself, only on evidence: its number (the published pattern naming
#    `recipient`, §2.2's required "international format" number; §2.4
#    FAILED_RECIPIENT_BLACKLISTED "recipient blacklisted") or its text (the pattern naming
#    `text`, or `body` as the legacy API calls it; a text refused or too long). Another
#    provider would refuse it too.
_MESSAGE = re.compile(
    r"\b(?:missing|invalid)\s+(?:recipient|text|body)s?\s+object\b"
    r"|\binvalid\s+(?:recipient|number|msisdn|phone|destination)"
    r"|\b(?:recipient|number|msisdn|destination)\b.{0,40}"
    r"\b(?:invalid|blacklisted|barred|blocked|not valid|does not exist)\b"
    r"|\bblacklisted\b"
    r"|\b(?:text|body|message)\b.{0,40}\b(?:too long|exceeds)\b"
    r"|\b(?:text|body|content)\b.{0,40}\b(?:refused|rejected|not allowed|prohibited|blocked)\b")


def read_send_response(http_status: int, content: bytes, raw: str) -> SendResult:
    """The send answer as a SendResult, or the SendError the dispatcher acts on."""
    data = _json(content)
    record = data.get("record") if isinstance(data, dict) else None
    if 200 <= http_status < 300 and not (isinstance(data, dict) and data.get("success") is False):
        if not isinstance(record, dict):
            record = {}
        ident = _text(record.get("id"))
        if ident is None:
            # A 2xx we cannot read may still have queued the message: never resend blindly.
            raise SendError(f"Mobivate HTTP {http_status} without record.id", permanent=False,
                            provider_side=True, outcome_unknown=True, code="BAD_ANSWER", raw=raw)
        if _int(record.get("recipientCount")) == 0:
            raise SendError("Mobivate accepted no recipient (opted out or excluded)",
                            permanent=True, status=Status.REJECTED, code="NO_RECIPIENTS",
                            raw=raw)
        return SendResult(provider_message_id=ident, raw=raw)
    error = data.get("error") if isinstance(data, dict) else None
    error = error if isinstance(error, dict) else {}
    if 200 <= http_status < 300:  # `success: false` under a 2xx: trust the error's own status
        http_status = _int(error.get("statusCode")) or 0
    raise classify_error(http_status, error, raw)


def classify_error(http_status: int, error: dict[str, Any], raw: str) -> SendError:
    """Sort one error answer into the dispatcher's classes (PROTOCOLS.md §2.2).

    400 blames the message (`rejected`) only when the text says the number or the text is at
    fault; any other 400, including one we cannot read, is provider side (fails over)."""
    name = _text(error.get("name"))
    said = error.get("object", error.get("message"))
    said = said if isinstance(said, str) or said is None else json.dumps(said)
    detail = f"Mobivate HTTP {http_status or '2xx'} {name or 'error'}"
    if said:
        detail += f": {said}"
    code = name or (str(http_status) if http_status else "success=false")
    words = f"{name or ''} {said or ''}".lower()

    def provider(permanent: bool) -> SendError:
        return SendError(detail, permanent=permanent, status=Status.FAILED, code=code, raw=raw,
                         provider_side=True)

    def recipient() -> SendError:
        return SendError(detail, permanent=True, status=Status.REJECTED, code=code, raw=raw)

    if http_status in (401, 402):  # key invalid/expired, out of credit: no retry helps soon
        return provider(permanent=True)
    if http_status in (408, 429) or http_status >= 500:
        return provider(permanent=False)
    if http_status in (400, 403):
        if _OPTOUT.search(words):
            return recipient()
        if _RATE.search(words):
            return provider(permanent=False)
        if _OURS.search(words):
            return provider(permanent=True)
        # The seed's 403 is an AuthenticationError (bad key, missing create:SingleSMS); the
        # codes page's 403 is "recipient is opted out". An unexplained 403 is taken as the
        # opt-out, so an opted-out number never fails over.
        if http_status == 403 or _MESSAGE.search(words):
            return recipient()
        # A 400 that names neither: never blamed on the recipient without evidence.
        return provider(permanent=True)
    # 404, 405, 415, redirects, ...: our base_url or integration is wrong, not the message.
    return provider(permanent=True)
