"""A Mobivate stand-in: a real HTTP server on loopback that speaks the Bulk API (seed 002).

`POST /send/single` (PROTOCOLS.md §2.2) is read the way Mobivate documents it: Bearer key, a
JSON body with `text`, `originator`, `recipient`, `reference` (and the `callbackURL` override),
every request recorded header by header and field by field. The answer is the seed's 200
`{"success":true,"record":{"id":<UUID>,…}}` unless a reply was scripted (the seed's 400
ValidationError and 403 AuthenticationError, the codes page's 401/402/403 opt-out/429/500, a bare
error page, a slow answer). A wrong key or a missing required field is refused whatever is
scripted, as the real API would.

400s: the one published is the seed's `{"success":false,"error":{"name":"ValidationError",
"statusCode":400,"object":"Missing Originator object"}}`, answered here for a missing or blank
`originator`. The API names the field at fault as "<Missing|Invalid> <Field> object";
`Reply.validation()` answers that wording for any field (e.g. `Reply.validation("Originator")`
for a sender ID the account may not use), and `_refusal` uses it for a missing `text` or
`recipient` and a recipient that is not digits. Other texts (a route, the account) are
scripted with `Reply.error(400, name, text)`.

Each accepted message also gets a 32-character upper-case hex log id and a batch id, as the
archived pages show them: receipts (`dlr()`, the archived "Delivery Receipt Notification" JSON)
carry the log id as `deliveryMessageId`, which is NOT the send answer's UUID (§2.3), and our
reference as `clientReference`. `GET /message/{id}` (§2.5, legacy host) answers the sample
shape for a log id, and for the UUID too unless `lookup_record_ids=False`.

    with MobivateStandIn(api_key="k") as mob:
        mob.script(Reply.error(402))               # the next send is out of credit
        ...                                        # point providers.mobivate.base_url at mob.url
        sent = mob.wait_for_messages(1)[0]
        mob.deliver(callback_url, sent.dlr("DELIVERED"))
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from .base import StandIn, StandInHandler

SEND_PATH = "/send/single"
MESSAGE_PATH = "/message/"
RECEIPT_WEBHOOK_PATH = "/webhooks/receipt"
REQUEST_FIELDS = ("text", "originator", "recipient", "reference", "callbackURL", "shortenUrls",
                  "excludeOptouts", "scheduleDateTime")

# The archived DLR page's list (§2.4), kept here independently of the provider module.
STATUS_CODES = {
    "DELIVERED": 1, "ACCEPTED": 2, "EXPIRED": 3, "DELETED": 4, "UNDELIVERABLE": 5, "UNKNOWN": 6,
    "REJECTED": 7, "INTERIM_QUEUED": 8, "INTERIM_ACKNOWLEDGED": 9, "RETRY": 10,
    "FAILED_NACK": 11, "FAILED_NOROUTE": 12, "FAILED_INSUFFICIENT_CREDIT": 17,
    "FAILED_ORIGINATOR_RECIPIENT_EQUAL": 18, "FAILED_RECIPIENT_BLACKLISTED": 19,
    "FAILED_ORIGINATOR_REJECTED": 20, "FAILED_ROUTE_INVALID": 21, "FAILED_LIMITS_EXCEEDED": 22,
    "FAILED_EXHAUSTED": 24, "FAILED_INTERNAL_ERROR": 28, "FAILED_UNKNOWN": 29,
}

# Error names for the HTTP codes the codes page lists; only 400 and 403 bodies are published.
ERROR_NAMES = {
    400: "ValidationError",
    401: "AuthenticationError",
    402: "InsufficientCreditError",
    403: "AuthenticationError",
    429: "RateLimitError",
    500: "InternalServerError",
}


def validation_text(field: str, problem: str = "Missing") -> str:
    """"Missing Originator object": how a 400 ValidationError names the field at fault."""
    return f"{problem} {field[:1].upper()}{field[1:]} object"


def log_id() -> str:
    """A log id as the archived pages show them: 32 upper-case hex characters."""
    return secrets.token_hex(16).upper()


def _iso_millis(when: dt.datetime | None) -> str:
    """`2023-07-28T03:23:22.000+00:00`, the DLR sample's `created` format."""
    when = when or dt.datetime.now(dt.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds")


def _iso_log(when: dt.datetime | None) -> str:
    """`2023-07-01T01:10:34+0000`, the message log sample's format."""
    when = when or dt.datetime.now(dt.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


# -- scripted answers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One answer to a request; the default is the seed's 200 with a fresh UUID."""

    kind: str = "success"  # success | error (JSON envelope) | http (bare body)
    record_id: str | None = None
    recipient_count: int = 1
    http_status: int = 200
    name: str | None = None
    object: str | None = None
    body: bytes = b""
    delay: float = 0.0  # seconds to wait before answering (interrupted by stop())

    @classmethod
    def success(cls, record_id: str | None = None, *, recipient_count: int = 1,
                delay: float = 0.0) -> Reply:
        """200 `{"success":true,"record":{…}}` with this id (default: a new UUID)."""
        return cls("success", record_id=record_id, recipient_count=recipient_count, delay=delay)

    @classmethod
    def error(cls, http_status: int, name: str | None = None, object: str | None = None, *,
              delay: float = 0.0) -> Reply:
        """`{"success":false,"error":{"name":…,"statusCode":…[,"object":…]}}` (seed shape)."""
        return cls("error", http_status=http_status,
                   name=name or ERROR_NAMES.get(http_status, "Error"), object=object, delay=delay)

    @classmethod
    def validation(cls, field: str, problem: str = "Missing", *, delay: float = 0.0) -> Reply:
        """400 ValidationError "<problem> <Field> object", the seed's wording (its published
        example is `validation("Originator")`: "Missing Originator object")."""
        return cls.error(400, "ValidationError", validation_text(field, problem), delay=delay)

    @classmethod
    def http_error(cls, status: int = 500, body: bytes = b"<html>Bad Gateway</html>", *,
                   delay: float = 0.0) -> Reply:
        """A bare error page (a proxy in front of the API) instead of the JSON envelope."""
        return cls("http", http_status=status, body=body, delay=delay)

    @classmethod
    def slow(cls, seconds: float, then: Reply | None = None) -> Reply:
        """`then` (default: success), answered after `seconds`."""
        return dataclasses.replace(then or cls.success(), delay=seconds)


@dataclass(frozen=True)
class SendRequest:
    """One request the stand-in received."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    fields: dict[str, Any]  # REQUEST_FIELDS -> JSON value as sent (None when absent)
    extra_fields: tuple[str, ...] = ()  # body keys Mobivate does not document
    parse_error: str | None = None
    received_at: float = field(default_factory=time.monotonic)

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]


@dataclass
class SentMessage:
    """A message the stand-in accepted, with the ids Mobivate gives it."""

    record_id: str  # the send answer's `record.id` (UUID)
    log_id: str  # what receipts and the message log call it
    batch_id: str
    request: SendRequest
    status: str = "ACCEPTED"  # what GET /message reports
    created: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    modified: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def dlr(self, status: str = "DELIVERED", **kwargs: Any) -> bytes:
        """A receipt for this message, echoing its reference; see `dlr()`."""
        kwargs.setdefault("client_reference", self.request.fields.get("reference"))
        kwargs.setdefault("batch_id", self.batch_id)
        return dlr(self.log_id, status, **kwargs)

    def log_entry(self) -> dict[str, Any]:
        """The `GET /message/{id}` answer (mobivate-message-get-response-1.json's shape)."""
        f = self.request.fields
        return {
            "id": self.log_id, "created": _iso_log(self.created),
            "modified": _iso_log(self.modified), "originator": f.get("originator"),
            "recipient": f.get("recipient"), "body": f.get("text"), "status": self.status,
            "direction": "MT", "inReplyTo": None, "routeId": "mglobal", "parts": 1,
            "cost": 0.01, "currency": "GBP", "senderReference": f.get("reference"),
            "campaignId": None,
        }


# -- the server --------------------------------------------------------------------------------


class _Handler(StandInHandler):
    def do_POST(self) -> None:
        self.server.stand_in._handle(self, "POST", self.read_body())

    def do_GET(self) -> None:
        self.server.stand_in._handle(self, "GET", b"")

    def send_json(self, status: int, payload: Any) -> None:
        self.send_bytes(status, json.dumps(payload).encode(), "application/json")


def _envelope(http_status: int, name: str, obj: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"name": name, "statusCode": http_status}
    if obj is not None:
        error["object"] = obj
    return {"success": False, "error": error}


class MobivateStandIn(StandIn[SendRequest]):
    """The stand-in server; use as a context manager (or start()/stop()).

    `url` is the API base URL, for providers.mobivate.base_url."""

    handler_class = _Handler
    thread_name = "mobivate-stand-in"

    def __init__(self, *, api_key: str | None = None, default: Reply | None = None,
                 lookup_record_ids: bool = True) -> None:
        super().__init__()
        self.api_key = api_key  # when set, another Bearer key gets the seed's 403
        self.default = default or Reply.success()
        self.lookup_record_ids = lookup_record_ids  # GET /message/{UUID} finds the message
        self.receipt_url: str | None = None  # what POST /webhooks/receipt registered
        # Called with each send request before it is answered (e.g. to post a receipt that
        # beats the send answer). Exceptions are kept in hook_errors, the answer is a 500.
        self.on_send: Callable[[SentMessage], None] | None = None
        self._messages: list[SentMessage] = []
        self._script: deque[Reply] = deque()
        self._lookup_script: deque[Reply] = deque()

    # scripting and inspection

    def script(self, *replies: Reply) -> None:
        """Answer the next valid sends with these replies, in order, then with the default."""
        with self._lock:
            self._script.extend(replies)

    def script_lookup(self, *replies: Reply) -> None:
        """Answer the next GET /message requests with these (error or http) replies."""
        with self._lock:
            self._lookup_script.extend(replies)

    @property
    def sends(self) -> list[SendRequest]:
        """The POST /send/single requests received so far."""
        return [r for r in self.requests if r.method == "POST"]

    @property
    def messages(self) -> list[SentMessage]:
        """Every message accepted so far."""
        with self._lock:
            return list(self._messages)

    def find(self, ident: str) -> SentMessage | None:
        """The accepted message with this log id (or record id, when looked up by UUID)."""
        with self._lock:
            for m in self._messages:
                if ident == m.log_id or (self.lookup_record_ids and ident == m.record_id):
                    return m
        return None

    def set_status(self, ident: str, status: str, when: dt.datetime | None = None) -> None:
        """What GET /message will report for this message from now on."""
        message = self.find(ident)
        assert message is not None, f"no message {ident!r}"
        message.status = status
        message.modified = when or dt.datetime.now(dt.UTC)

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[SentMessage]:
        """Block until at least `count` messages were accepted; fail after `timeout` seconds."""
        return self._wait_for(lambda: self.messages, count, timeout, lambda: (
            f"stand-in accepted {len(self.messages)} messages, expected "
            f"{count} within {timeout} s ({len(self.sends)} sends seen)"))

    # request handling (handler threads)

    def _handle(self, handler: _Handler, method: str, body: bytes) -> None:
        path = urlsplit(handler.path).path
        request = _read_request(method, handler.path, dict(handler.headers.items()), body)
        self._record(request)
        if not self._authorized(request):
            handler.send_json(403, _envelope(403, "AuthenticationError"))
        elif method == "POST" and path == SEND_PATH:
            self._answer_send(handler, request)
        elif method == "GET" and path.startswith(MESSAGE_PATH):
            self._answer_lookup(handler, unquote(path[len(MESSAGE_PATH):]))
        elif method == "POST" and path == RECEIPT_WEBHOOK_PATH:
            self._answer_webhook(handler, body)
        else:
            handler.send_json(404, _envelope(404, "NotFoundError", f"no route {path}"))

    def _answer_webhook(self, handler: _Handler, body: bytes) -> None:
        """§2.3 (legacy): `POST /webhooks/receipt {"url": …}` registers the account's DLR URL."""
        try:
            url = json.loads(body or b"{}").get("url")
        except (ValueError, AttributeError):
            url = None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            handler.send_json(400, _envelope(400, "ValidationError", "Invalid url object"))
            return
        with self._lock:
            self.receipt_url = url
        handler.send_json(200, {"message": "Webhook updated successfully"})

    def _authorized(self, request: SendRequest) -> bool:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return False
        return self.api_key is None or auth[7:] == self.api_key

    def _answer_send(self, handler: _Handler, request: SendRequest) -> None:
        refusal = _refusal(request)
        if refusal is not None:  # refused whatever is scripted; no scripted reply used up
            handler.send_json(400, _envelope(400, "ValidationError", refusal))
            return
        with self._lock:
            reply = self._script.popleft() if self._script else self.default
        if reply.delay:
            self._stopping.wait(reply.delay)
        if reply.kind == "http":
            handler.send_bytes(reply.http_status, reply.body, "text/html")
            return
        if reply.kind == "error":
            handler.send_json(reply.http_status,
                              _envelope(reply.http_status, reply.name or "Error", reply.object))
            return
        message = SentMessage(record_id=reply.record_id or str(uuid.uuid4()), log_id=log_id(),
                              batch_id=log_id(), request=request)
        if reply.recipient_count:
            with self._lock:
                self._messages.append(message)
        if self._hook_failed(handler, self.on_send, message):
            return
        handler.send_json(200, {"success": True, "record": {
            "id": message.record_id, "type": "SingleSMS",
            "scheduled": message.created.isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "recipientCount": reply.recipient_count}})

    def _answer_lookup(self, handler: _Handler, ident: str) -> None:
        with self._lock:
            reply = self._lookup_script.popleft() if self._lookup_script else None
        if reply is not None and reply.kind == "http":
            handler.send_bytes(reply.http_status, reply.body, "text/html")
            return
        if reply is not None and reply.kind == "error":
            handler.send_json(reply.http_status,
                              _envelope(reply.http_status, reply.name or "Error", reply.object))
            return
        message = self.find(ident)
        if message is None:
            handler.send_json(404, _envelope(404, "NotFoundError", f"no message {ident}"))
        else:
            handler.send_json(200, message.log_entry())

    # receipts: bytes builders (also usable without a running server) and delivery

    @staticmethod
    def dlr(delivery_message_id: str, status: str = "DELIVERED", **kwargs: Any) -> bytes:
        """A Delivery Receipt Notification body; see `dlr()`."""
        return dlr(delivery_message_id, status, **kwargs)

    @staticmethod
    def deliver(url: str, body: bytes, *, timeout: float = 10.0) -> httpx.Response:
        """POST a receipt the way Mobivate does; see `deliver()`."""
        return deliver(url, body, timeout=timeout)


def _read_request(method: str, path: str, headers: dict[str, str], body: bytes) -> SendRequest:
    lowered = {k.lower(): v for k, v in headers.items()}
    fields: dict[str, Any] = dict.fromkeys(REQUEST_FIELDS)
    extra: tuple[str, ...] = ()
    error = None
    if method == "POST":
        if "application/json" not in lowered.get("content-type", ""):
            error = f"Content-Type is {lowered.get('content-type')!r}, not application/json"
        try:
            data = json.loads(body)
        except ValueError as exc:
            error = error or f"body is not JSON: {exc}"
        else:
            if isinstance(data, dict):
                fields.update({k: data.get(k) for k in REQUEST_FIELDS})
                extra = tuple(sorted(set(data) - set(REQUEST_FIELDS)))
            else:
                error = error or "body is not a JSON object"
    return SendRequest(method=method, path=path, headers=lowered, body=body, fields=fields,
                       extra_fields=extra, parse_error=error)


def _refusal(request: SendRequest) -> str | None:
    """What real Mobivate refuses whatever is scripted: unreadable bodies, missing fields."""
    if request.parse_error is not None:
        return request.parse_error
    for name in ("text", "originator", "recipient"):
        value = request.fields[name]
        if not isinstance(value, str) or not value.strip():
            return validation_text(name)  # the seed's "Missing Originator object"
    if not request.fields["recipient"].isdigit():
        return validation_text("recipient", "Invalid")
    return None


def dlr(delivery_message_id: str | None, status: str = "DELIVERED", *,
        status_code: int | str | None = None, client_reference: str | None = None,
        batch_id: str | None = None, created: dt.datetime | str | None = None, parts: int = 1,
        hlr: dict[str, Any] | None = None, omit: tuple[str, ...] = ()) -> bytes:
    """The archived Delivery Receipt Notification (mobivate-dlr-webhook-1.json's layout).

    `status_code` defaults to the documented code of `status`; `omit` drops keys, to build the
    variants real traffic may show."""
    payload: dict[str, Any] = {
        "deliveryMessageId": delivery_message_id,
        "batchId": batch_id if batch_id is not None else log_id(),
        "clientReference": client_reference,
        "created": created if isinstance(created, str) else _iso_millis(created),
        "status": status,
        "statusCode": status_code if status_code is not None else STATUS_CODES.get(status),
        "parts": parts,
        "hlr": hlr,
    }
    for key in omit:
        payload.pop(key, None)
    lines = ",\n".join(f"   {json.dumps(k)}:{json.dumps(v)}" for k, v in payload.items())
    return ("{\n" + lines + "\n}\n").encode()


def deliver(url: str, body: bytes, *, timeout: float = 10.0) -> httpx.Response:
    """POST one receipt body as application/json; the answer is read and the connection closed."""
    with httpx.Client(timeout=timeout) as client:
        return client.post(url, content=body, headers={"Content-Type": "application/json"})
