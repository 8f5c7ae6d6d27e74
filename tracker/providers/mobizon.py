"""Mobizon (seeds 000/001, PROTOCOLS.md §1): form-encoded `message/sendSmsMessage`, a JSON
webhook signed with SHA1, and `message/getSMSStatus` polling.

Send: `POST {base_url}/service/message/sendSmsMessage?output=json&api=v1&apiKey=…` with the
form fields `recipient` (digits only), `text`, `from` and `params[validity]`. Every answer is the
envelope `{"code", "data", "message"}`; the HTTP status is not part of the contract, so the
envelope decides. Ids arrive as JSON strings (live capture) or numbers (docs, webhook) and are
kept as strings, so the webhook's `messageId: 169275418` matches the send answer's `"169275418"`.

Receipts: the account's webhook (set up in the control panel, not per message; its URL is
`Provider.callback_url()`) posts one JSON event per message when a *final* status arrives,
retrying up to 10 times with the same `eventId`. Its `sign` is
`sha1(eventId|attempt|eventCreateTs|secret)`, checked by `verify()` when `webhook_secret` is
set; the signature does not cover `data`. Polling asks `message/getSMSStatus` about up to 100
ids; ids the provider does not know are left out of its answer.

Scheduling: with `provider_scheduling = true`, a message scheduled 61 minutes to 14 days ahead
is submitted at once with `params[deferredToTs]` and Mobizon holds it (sent as UTC: the docs
give the format, not the time zone); otherwise the core holds it until due. Not used:
`params[name]` (nothing we read echoes it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
from typing import Any

import httpx

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

log = logging.getLogger(__name__)

# The API host depends on the region the account was registered in (api.mobizon.kz, .ua,
# .com.br, .gmbh, .uz; api.mobizon.com is deprecated). A wrong one answers code 13 naming the
# right one. The default is the host of the live captures PROTOCOLS.md cites.
API_URL = "https://api.mobizon.kz"
# The only hosts a code 13 answer may move us to (PROTOCOLS.md §1.1): the key goes in the query
# string, so following any host an answer names would hand it to whoever that is.
REGION_HOSTS = frozenset({"api.mobizon.kz", "api.mobizon.ua", "api.mobizon.com.br",
                          "api.mobizon.gmbh", "api.mobizon.uz"})
VALIDITY_MINUTES = (60, 1440)  # params[validity] accepts 1 h to 24 h
# params[deferredToTs]: "no earlier than one hour and no later than 14 days" (seed 000); a
# minute of margin at the near end, as the request takes time to arrive.
DEFER = (dt.timedelta(minutes=61), dt.timedelta(days=14))
DELIVERY_REPORT = "sms-delivery-report"

# _other/smsStatus.md (PROTOCOLS.md §1.6). NEW/ENQUEUD are the provider's queue: the provider
# has the message, which is our `accepted` (our `queued` means "not submitted yet" and ranks
# below `accepted`, so such a receipt could never apply). PDLIVRD is not final: some segments
# are still on their way.
STATUS_MAP: dict[str, Status] = {
    "NEW": Status.ACCEPTED,
    "ENQUEUD": Status.ACCEPTED,
    "ACCEPTD": Status.SENT,
    "PDLIVRD": Status.SENT,
    "DELIVRD": Status.DELIVERED,
    "UNDELIV": Status.UNDELIVERED,
    "REJECTD": Status.REJECTED,
    "EXPIRED": Status.EXPIRED,
    "DELETED": Status.UNDELIVERED,
}
STATUS_MEANING = {
    "PDLIVRD": "not all segments delivered yet",
    "UNDELIV": "not delivered",
    "REJECTD": "rejected by the operator (number, text or sender ID)",
    "EXPIRED": "validity expired (phone off, out of coverage or memory full)",
    "DELETED": "deleted because of operator-side restrictions",
    # Not a status of smsStatus.md: the send answer's `status` 1 (§1.3), kept under this name.
    "MODERATION": "the campaign is awaiting Mobizon's moderation; sent once approved",
}
MODERATION = "MODERATION"

# API codes (_other/apiCode.md, PROTOCOLS.md §1.3) for a send that did not succeed. Validation
# rejects the message unless it names only our own fields (sender, params); service trouble and
# the rate limit are retried; the rest (bad key 8, no access 9, wrong server 13, account blocked
# 14, bad module/method/format 4-6, undocumented codes) means this account cannot send now.
REQUEST_CODES = frozenset({"1", "11", "12"})
RETRY_CODES = frozenset({"3", "10", "15", "30", "999"})
API_CODE_MEANING = {
    "1": "validation error", "2": "record not found", "3": "unknown application error",
    "4": "bad module", "5": "bad method", "6": "bad output format",
    "8": "login error (bad API key)", "9": "no access to this method", "10": "save error",
    "11": "required parameters missing", "12": "a parameter breaks a limit",
    "13": "wrong API server for this account", "14": "account blocked or deleted",
    "15": "operation error", "30": "rate limit exceeded", "98": "partly done",
    "99": "nothing done", "100": "queued as a background task", "999": "general service error",
}
# Fields whose validation error is the recipient's or the text's, not this account's.
REQUEST_FIELDS = frozenset({"recipient", "text"})


class MobizonProvider(Provider):
    """Mobizon API v1 (JSON output)."""

    slug = "mobizon"
    name = "Mobizon"
    SETTINGS = {
        "base_url": Setting(str, default=API_URL),
        "api_key": Setting(str, required=True, secret=True),
        "sender": Setting(str),  # registered sender ID; unset = the account's default
        "callback_token": Setting(str, secret=True),  # unset = no webhook, polling only
        "webhook_secret": Setting(str, secret=True),  # the webhook's "secret key", if set
    }
    STATUS_MAP = STATUS_MAP
    POLL_BATCH = 100  # getSMSStatus takes at most 100 ids (code 12 beyond)
    EXPLANATIONS = {
        "NEW": "new, not yet queued at Mobizon", "ENQUEUD": "queued at Mobizon",
        "ACCEPTD": "handed to the operator", "DELIVRD": "delivered to the handset",
        **STATUS_MEANING, **API_CODE_MEANING,
    }
    DEFER_WINDOW = DEFER
    _region_url: str | None = None  # the host a code 13 moved this process to

    def endpoint(self, module: str, method: str) -> str:
        """The URL of one API method, without the query string."""
        base = self._region_url or self.config["base_url"]
        return f"{base.rstrip('/')}/service/{module}/{method}"

    def _wrong_server(self, data: Any) -> tuple[bool, str]:
        """Code 13: move to the account's region host when Mobizon names a documented one
        (for this process; the request was refused, so asking again there sends nothing
        twice). (moved?, what the operator should configure)."""
        named = str(data if not isinstance(data, dict) else
                    data.get("domain") or data.get("host") or data.get("server") or "")
        host = named.strip().lower().removeprefix("https://").removeprefix("http://")
        host = host.split("/", 1)[0]
        if host not in REGION_HOSTS:
            return False, (f"Mobizon says this account's API server is {named[:100]!r}, which "
                           f"is not one of its documented region hosts "
                           f"({', '.join(sorted(REGION_HOSTS))}): set "
                           f"providers.{self.slug}.base_url yourself if it is right")
        self._region_url = f"https://{host}"
        log.warning("Mobizon: this account's API server is %s; using it for now, set "
                    "providers.%s.base_url = \"https://%s\"", host, self.slug, host)
        return True, (f"this account's API server is {host}: switched to it for this process (set "
                f"providers.{self.slug}.base_url = \"https://{host}\")")

    def _call(self, module: str, method: str, fields: dict[str, str]) -> httpx.Response:
        """POST one form-encoded API call; the key goes in the query, as documented."""
        params = {"output": "json", "api": "v1", "apiKey": self.config["api_key"]}
        return self.request("POST", self.endpoint(module, method), params=params, data=fields)

    # -- sending -------------------------------------------------------------------------

    def send_fields(self, message: OutboundMessage) -> dict[str, str]:
        """The sendSmsMessage form fields for one message."""
        fields = {"recipient": wire_number(message.to, plus=False), "text": message.text}
        sender = message.sender or self.config.get("sender")
        if sender:
            fields["from"] = sender
        if message.validity is not None:
            low, high = VALIDITY_MINUTES
            minutes = int(message.validity.total_seconds() // 60)
            fields["params[validity]"] = str(min(max(minutes, low), high))
        if message.send_at is not None:
            # The docs give the format, not the time zone: UTC is what we send.
            fields["params[deferredToTs]"] = message.send_at.strftime("%Y-%m-%d %H:%M:%S")
        return fields

    def send(self, message: OutboundMessage) -> SendResult:
        """POST message/sendSmsMessage and read `data.messageId`, or classify the error."""
        response = self._call("message", "sendSmsMessage", self.send_fields(message))
        return self.read_send_answer(response.status_code, response.content, response.text)

    def read_send_answer(self, http_status: int, content: bytes, raw: str) -> SendResult:
        """The send answer -> SendResult, or a SendError classified by the API code."""
        envelope = _envelope(content)
        if envelope is None:
            raise _bad_http_answer(http_status, raw)
        code, data, text = envelope
        if code in ("0", "100"):  # mobizon-php counts 100 (background task) as success too
            message_id = _id(data.get("messageId")) if isinstance(data, dict) else None
            if message_id:
                return SendResult(provider_message_id=message_id, raw=raw,
                                  receipts=self._moderation(data, message_id))
            # Accepted, but without an id we can neither track it nor safely send it again.
            raise SendError(f"Mobizon code {code} without a messageId", permanent=False,
                            provider_side=True, outcome_unknown=True, code=code, raw=raw)
        detail = f"code {code} ({API_CODE_MEANING.get(code, 'undocumented')})"
        if text:
            detail += f": {text}"
        if code == "13":
            moved, advice = self._wrong_server(data)
            detail += "; " + advice
            if moved:  # refused, not sent: ask again, there
                raise SendError(detail, permanent=False, provider_side=True, code=code,
                                raw=raw)
            raise SendError(detail, permanent=True, provider_side=True, code=code, raw=raw)
        if code == "1" and data:
            detail += f"; {json.dumps(data, ensure_ascii=False)[:300]}"
        if code in REQUEST_CODES and not _only_account_fields(data):
            raise SendError(detail, permanent=True, status=Status.REJECTED, code=code, raw=raw)
        if code in RETRY_CODES:  # the provider's trouble, likely to pass
            raise SendError(detail, permanent=False, provider_side=True, code=code, raw=raw)
        # Auth, account, configuration, our own settings, undocumented codes (98 and 99 are
        # for bulk calls): retrying here will not help, another provider may.
        raise SendError(detail, permanent=True, provider_side=True, code=code, raw=raw)

    def _moderation(self, data: dict[str, Any], message_id: str) -> list[Receipt]:
        """Send answer `status` 1: the campaign waits for a moderator (§1.3). Kept as an event
        on the message's timeline; the message stays accepted, Mobizon holds it."""
        if str(data.get("status", "")).strip() != "1":
            return []
        return [Receipt(provider=self.slug, status=Status.QUEUED, provider_message_id=message_id,
                        raw_status=MODERATION, detail=STATUS_MEANING[MODERATION],
                        dedupe_key=f"{message_id}|{MODERATION}")]

    # -- webhook -------------------------------------------------------------------------

    def verify(self, request: CallbackRequest) -> str | None:
        """Check `sign` = sha1(eventId|attempt|eventCreateTs|secret) when a secret is set."""
        secret = self.config.get("webhook_secret")
        if not secret:
            return None
        event = _json(request.body)
        if not isinstance(event, dict):
            return "body is not a JSON object, so its sign cannot be checked"
        sign = event.get("sign")
        if not isinstance(sign, str) or not sign:
            return "sign missing (a webhook secret is configured)"
        parts = [_id(event.get(k)) for k in ("eventId", "attempt")]
        stamp = event.get("eventCreateTs")
        if not all(parts) or not isinstance(stamp, str):
            return "eventId, attempt or eventCreateTs missing: sign cannot be checked"
        expected = webhook_sign(str(parts[0]), str(parts[1]), stamp, secret)
        if not hmac.compare_digest(sign.strip().lower().encode(), expected.encode()):
            return "sign does not match"
        return None

    def parse_callback(self, request: CallbackRequest) -> ParsedCallback:
        """One JSON webhook event -> one receipt (form events are noted and ignored)."""
        parsed = ParsedCallback()
        event = _json(request.body)
        if not isinstance(event, dict):
            parsed.errors.append("not a JSON object (is the webhook's data format set to json?)")
            return parsed
        kind = event.get("eventType")
        if kind is not None and kind != DELIVERY_REPORT:
            parsed.notes.append(f"ignored eventType {kind!r}")
            return parsed
        data = event.get("data")
        if not isinstance(data, dict):
            parsed.errors.append("event without a data object")
            return parsed
        receipt = self._receipt(data, parsed.errors, event_key=_event_key(event))
        if receipt is not None:
            parsed.receipts.append(receipt)
        return parsed

    def _receipt(self, item: dict[str, Any], errors: list[str], *, id_field: str = "messageId",
                 event_key: str | None = None) -> Receipt | None:
        """A receipt from a webhook's `data` or one getSMSStatus item; None (noted) if unusable."""
        message_id = _id(item.get(id_field))
        raw_status = item.get("status")
        if not message_id or not isinstance(raw_status, str) or not raw_status.strip():
            errors.append(f"report without {id_field} or status: {json.dumps(item)[:200]}")
            return None
        raw_status = raw_status.strip().upper()
        status = self.STATUS_MAP.get(raw_status, Status.UNKNOWN)
        stamp = item.get("statusUpdateTs")
        stamp = stamp if isinstance(stamp, str) else None
        failed = status in (Status.UNDELIVERED, Status.REJECTED, Status.EXPIRED, Status.UNKNOWN)
        return Receipt(
            provider=self.slug,
            status=status,
            provider_message_id=message_id,
            raw_status=raw_status,
            error_code=raw_status if failed else None,
            detail=STATUS_MEANING.get(raw_status),
            occurred_at=parse_timestamp(stamp),  # no zone given; Mobizon.Net assumes UTC
            # eventId is the same across a webhook's retries; without it (and for polls) the
            # report itself is the key, so asking twice about an unchanged message dedupes.
            dedupe_key=event_key or f"{message_id}|{raw_status}|{stamp or ''}",
        )

    # -- checking ------------------------------------------------------------------------

    def check(self) -> list[Finding]:
        """getSMSStatus for an id that does not exist: code 2 (not found) means the host and
        the key are right; 8 a refused key; 13 the wrong region host (§1.3)."""
        host = self.endpoint("message", "getSMSStatus").split("/service/")[0]
        response, problems = self.reach(
            "POST", self.endpoint("message", "getSMSStatus"),
            params={"output": "json", "api": "v1", "apiKey": self.config["api_key"]},
            data={"ids[0]": "0"})
        if response is None:
            return problems
        envelope = _envelope(response.content)
        if envelope is None:
            return [Finding("host", False, f"{host} answered HTTP {response.status_code} "
                                           "without Mobizon's JSON envelope")]
        code, data, text = envelope
        sender = Finding("sender", None, "Mobizon has no documented way to check a sender "
                                         "without sending")
        if code in ("0", "2"):
            return [Finding("host", True, f"{host} answers"),
                    Finding("key", True, "accepted (a status query for an unknown id)"), sender]
        if code == "13":
            return [Finding("host", False, f"code 13: {self._wrong_server(data)[1]}")]
        meaning = API_CODE_MEANING.get(code, "undocumented")
        return [Finding("host", True, f"{host} answers"),
                Finding("key", False, f"code {code} ({meaning}){': ' + text if text else ''}")]

    # -- polling -------------------------------------------------------------------------

    def poll(self, targets: list[PollTarget]) -> PollAnswer:
        """POST message/getSMSStatus with `ids[n]`, at most POLL_BATCH ids per request."""
        answer = PollAnswer()
        ids = list(dict.fromkeys(t.provider_message_id for t in targets if t.provider_message_id))
        for target in targets:
            if not target.provider_message_id:
                answer.errors.append(f"{target.reference}: no provider message id to ask about")
        raws: list[str] = []
        for start in range(0, len(ids), self.POLL_BATCH):
            batch = ids[start : start + self.POLL_BATCH]
            fields = {f"ids[{n}]": value for n, value in enumerate(batch)}
            try:
                response = self._call("message", "getSMSStatus", fields)
            except SendError as exc:
                raise PollError(exc.detail) from exc
            raws.append(response.text)
            self._read_poll(response.status_code, response.content, answer)
        answer.raw = "\n".join(raws)
        return answer

    def _read_poll(self, http_status: int, content: bytes, answer: PollAnswer) -> None:
        envelope = _envelope(content)
        if envelope is None:
            raise PollError(f"Mobizon getSMSStatus answered HTTP {http_status} without the "
                            f"JSON envelope: {content[:200]!r}")
        code, data, text = envelope
        if code == "2":
            return  # "record not found": none of these ids is known here
        if code != "0":
            meaning = API_CODE_MEANING.get(code, "undocumented")
            extra = f"; {self._wrong_server(data)[1]}" if code == "13" else ""
            raise PollError(f"Mobizon getSMSStatus code {code} ({meaning}): {text}{extra}")
        if isinstance(data, dict):  # a PHP array with gaps serializes as an object
            data = list(data.values())
        if not isinstance(data, list):
            raise PollError(f"Mobizon getSMSStatus data is not a list: {data!r:.200}")
        for item in data:
            if not isinstance(item, dict):
                answer.errors.append(f"status item is not an object: {item!r:.100}")
                continue
            receipt = self._receipt(item, answer.errors, id_field="id")
            if receipt is not None:
                answer.receipts.append(receipt)


def webhook_sign(event_id: str, attempt: str, event_create_ts: str, secret: str) -> str:
    """The webhook `sign`: a plain SHA1 (not an HMAC) of the fields joined with '|'."""
    text = f"{event_id}|{attempt}|{event_create_ts}|{secret}"
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: hostile nesting, e.g. [[[[…
        return None


def _id(value: Any) -> str | None:
    """An id or counter as a string, whether it came as a JSON number or a string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _envelope(content: bytes) -> tuple[str, Any, str] | None:
    """(code, data, message) of an API answer; None when it is not the JSON envelope."""
    answer = _json(content)
    if not isinstance(answer, dict):
        return None
    code = _id(answer.get("code"))
    if code is None:
        return None
    message = answer.get("message")
    return code, answer.get("data"), message if isinstance(message, str) else ""


def _event_key(event: dict[str, Any]) -> str | None:
    """The dedupe key of a webhook event: eventId (scoped by webhookId when present)."""
    event_id = _id(event.get("eventId"))
    if event_id is None:
        return None
    webhook_id = _id(event.get("webhookId"))
    return f"event:{webhook_id}:{event_id}" if webhook_id else f"event:{event_id}"


def _only_account_fields(data: Any) -> bool:
    """True when a validation error names only fields of ours (sender, params), none of the
    recipient's or the text's: this account's configuration, not this message, is at fault."""
    if not isinstance(data, dict) or not data:
        return False
    names = {str(k).split("[", 1)[0].lower() for k in data}
    return not names & REQUEST_FIELDS


def _bad_http_answer(http_status: int, raw: str) -> SendError:
    """A send answer without the JSON envelope, classified by its HTTP status."""
    detail = f"Mobizon answered HTTP {http_status} without the JSON envelope: {raw[:200]}"
    code = f"HTTP_{http_status}"
    if 200 <= http_status < 300:
        # Something answered "OK" in a form we cannot read: the message may have gone out.
        return SendError(detail, permanent=False, provider_side=True, outcome_unknown=True,
                         code=code, raw=raw)
    if http_status >= 500 or http_status == 429:
        return SendError(detail, permanent=False, provider_side=True, code=code, raw=raw)
    return SendError(detail, permanent=True, provider_side=True, code=code, raw=raw)
