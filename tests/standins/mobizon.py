"""A Mobizon stand-in: a real HTTP server on loopback that speaks API v1 with JSON output.

It serves `/service/{module}/{method}` the way PROTOCOLS.md §1.2 describes: the key, `output`
and `api` in the query string, the parameters form-encoded in a POST body (or in the query of a
GET), module and method case-insensitive (mobizon-php lowercases them). Two methods:

- `message/sendSmsMessage`: checks the key (code 8), `recipient` (digits only) and `text`
  (code 1 with per-field errors) and `params[validity]` (60-1440), then answers
  `{"code":0,"data":{"campaignId":"…","messageId":"…","status":2},"message":""}` with the ids as
  JSON strings, as the live capture does. The message is remembered for getSMSStatus.
- `message/getSMSStatus`: `ids[n]=…` or `ids=a,b`; more than 100 is code 12, none is code 2;
  unknown ids are left out; items carry string ids and segNum, as captured.

Every request is recorded field by field; replies can be scripted per method (an API error
code, an HTTP error, a raw body, a slow answer). The webhook builders return the JSON event
Mobizon posts (PROTOCOLS.md §1.4) with ints where the send answer had strings, signed when given
a secret, and `deliver()` POSTs it.

    with MobizonStandIn(api_key="k") as mob:
        mob.script(Reply.error(30))                # the next sendSmsMessage is rate limited
        ...                                        # point providers.mobizon.base_url at mob.url
        mob.wait_for_requests(1)[0].fields["recipient"]
        mob.deliver(callback_url, webhook_event("70000000001", "DELIVRD", secret="s"))
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
import json
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from .base import StandIn, StandInHandler

SEND = "sendsmsmessage"
STATUS = "getsmsstatus"
MAX_IDS = 100
DEFAULT_TO = "380737893456"  # the doc webhook sample's `to`

# apiCode.md wording for the codes a test is likely to script.
API_MESSAGE = {
    1: "Validation error", 2: "Record not found", 3: "Unknown application error",
    4: "Unknown module", 5: "Unknown method", 6: "Unknown output format",
    8: "Login error: invalid apiKey", 9: "Access to the method is denied",
    10: "Data saving error", 11: "Required parameters are missing",
    12: "Parameter value is out of range", 13: "Wrong API server", 14: "Account is blocked",
    15: "Operation error", 30: "Too many requests", 999: "Service error",
}


# -- scripted answers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One answer to an API call; the default is what real Mobizon does with the request."""

    kind: str = "normal"  # normal | error | http | raw
    code: int = 0
    message: str = ""
    data: Any = None
    message_id: str | None = None
    status: int = 2  # sendSmsMessage `data.status`: 1 moderation, 2 sent
    http_status: int = 200
    body: bytes = b""
    delay: float = 0.0  # seconds to wait before answering (interrupted by stop())

    @classmethod
    def ok(cls, message_id: str | None = None, *, status: int = 2) -> Reply:
        """A normal answer; for sendSmsMessage with this messageId (default: the next one)."""
        return cls("normal", message_id=message_id, status=status)

    @classmethod
    def error(cls, code: int, data: Any = None, message: str | None = None, *,
              http_status: int = 200) -> Reply:
        """The envelope with this API code (e.g. 1 with per-field errors, 8, 13, 30, 999)."""
        return cls("error", code=code, data=data, http_status=http_status,
                   message=message if message is not None else API_MESSAGE.get(code, "Error"))

    @classmethod
    def http_error(cls, status: int = 500, body: bytes = b"<html>Bad Gateway</html>") -> Reply:
        """A bare HTTP error page instead of the JSON envelope."""
        return cls("http", http_status=status, body=body)

    @classmethod
    def raw(cls, body: bytes, http_status: int = 200) -> Reply:
        """Exactly these bytes (e.g. a verbatim sample) as a JSON answer."""
        return cls("raw", body=body, http_status=http_status)

    @classmethod
    def slow(cls, seconds: float, then: Reply | None = None) -> Reply:
        """`then` (default: a normal answer), answered after `seconds`."""
        return dataclasses.replace(then or cls.ok(), delay=seconds)


@dataclass(frozen=True)
class ApiRequest:
    """One API call the stand-in received, read the way Mobizon reads it."""

    http_method: str
    path: str
    module: str  # lowercased
    method: str  # lowercased
    content_type: str
    query: dict[str, str]  # the query string (apiKey, output, api, ...)
    fields: dict[str, str]  # form body fields (GET: the query minus apiKey/output/api)
    body: bytes
    received_at: float = field(default_factory=time.monotonic)

    def __getitem__(self, name: str) -> str | None:
        return self.fields.get(name)

    def ids(self) -> list[str]:
        """getSMSStatus `ids`: `ids[0]=…&ids[1]=…` or one comma-separated `ids`."""
        indexed = sorted((int(k[4:-1]), v) for k, v in self.fields.items()
                         if k.startswith("ids[") and k.endswith("]") and k[4:-1].isdigit())
        if indexed:
            return [v for _, v in indexed]
        return [v.strip() for v in self.fields.get("ids", "").split(",") if v.strip()]


@dataclass
class SentMessage:
    """What the stand-in remembers of one accepted message, as getSMSStatus reports it."""

    message_id: str
    campaign_id: str
    recipient: str
    text: str
    status: str = "NEW"
    seg_num: int = 1
    start_send_ts: str | None = None
    status_update_ts: str | None = None


# -- the server --------------------------------------------------------------------------------


class _Handler(StandInHandler):
    content_type = "application/json"

    def do_POST(self) -> None:
        self.server.stand_in._handle(self, "POST", self.read_body())

    def do_GET(self) -> None:
        self.server.stand_in._handle(self, "GET", b"")


class MobizonStandIn(StandIn[ApiRequest]):
    """The stand-in server; use as a context manager (or start()/stop()).

    `url` is the API host, for providers.mobizon.base_url."""

    handler_class = _Handler
    thread_name = "mobizon-stand-in"

    def __init__(self, *, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key  # when set, another apiKey gets code 8
        # Called with each ApiRequest before it is answered (e.g. to post a webhook that beats
        # the send answer). Exceptions are kept in hook_errors, the answer is then a 500.
        self.on_request: Callable[[ApiRequest], None] | None = None
        self.messages: dict[str, SentMessage] = {}
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._ids = itertools.count(70000000001)

    # scripting and inspection

    def script(self, *replies: Reply, method: str = "sendSmsMessage") -> None:
        """Answer the next calls of `method` with these replies, in order, then normally."""
        with self._lock:
            self._scripts[method.lower()].extend(replies)

    def set_status(self, message_id: str, status: str, at: dt.datetime | None = None,
                   seg_num: int | None = None) -> None:
        """Move a remembered message to a new status (what getSMSStatus will report)."""
        stamp = _ts(at)
        with self._lock:
            sent = self.messages[message_id]
            sent.status = status
            sent.start_send_ts = sent.start_send_ts or stamp
            sent.status_update_ts = stamp
            if seg_num is not None:
                sent.seg_num = seg_num

    def calls(self, method: str = "sendSmsMessage") -> list[ApiRequest]:
        """The requests for one API method."""
        return [r for r in self.requests if r.method == method.lower()]

    def wait_for_requests(self, count: int, timeout: float = 10.0,
                          method: str = "sendSmsMessage") -> list[ApiRequest]:
        """Block until at least `count` calls of `method` arrived; fail after `timeout` s."""
        return self._wait_for(lambda: self.calls(method), count, timeout, lambda: (
            f"stand-in saw {len(self.calls(method))} {method} calls, "
            f"expected {count} within {timeout} s"))

    # request handling (handler threads)

    def _handle(self, handler: _Handler, http_method: str, body: bytes) -> None:
        split = urlsplit(handler.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        content_type = handler.headers.get("Content-Type", "")
        if http_method == "POST":
            fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        else:
            fields = {k: v for k, v in query.items() if k not in ("apiKey", "output", "api")}
        parts = split.path.strip("/").split("/")
        module, method = (parts[1].lower(), parts[2].lower()) if (
            len(parts) == 3 and parts[0] == "service") else ("", "")
        request = ApiRequest(http_method=http_method, path=handler.path, module=module,
                             method=method, content_type=content_type, query=query,
                             fields=fields, body=body)
        refusal = self._refusal(request)
        with self._lock:
            self._requests.append(request)
            script = self._scripts[method]
            # A call real Mobizon would refuse does not use up a scripted reply.
            reply = Reply.ok() if refusal or not script else script.popleft()
        if self._hook_failed(handler, self.on_request, request):
            return
        if reply.delay:
            self._stopping.wait(reply.delay)
        if refusal is not None:
            handler.send_bytes(200, envelope(*refusal))
        elif reply.kind == "http":
            handler.send_bytes(reply.http_status, reply.body, "text/html")
        elif reply.kind == "raw":
            handler.send_bytes(reply.http_status, reply.body)
        elif reply.kind == "error":
            handler.send_bytes(reply.http_status,
                               envelope(reply.code, reply.data, reply.message))
        elif method == SEND:
            handler.send_bytes(200, self._accept(request, reply))
        else:
            handler.send_bytes(200, self._status(request))

    def _refusal(self, request: ApiRequest) -> tuple[int, Any, str] | None:
        """What real Mobizon refuses whatever is scripted: bad key, method, format or fields."""
        if request.module != "message" or request.method not in (SEND, STATUS):
            return 5, None, API_MESSAGE[5]
        if request.query.get("output", "json") != "json":
            return 6, None, API_MESSAGE[6]
        key = request.query.get("apiKey", "")
        if not key or (self.api_key is not None and key != self.api_key):
            return 8, None, API_MESSAGE[8]
        if request.method == STATUS:
            ids = request.ids()
            if not ids:
                return 2, None, "No ids given"
            if len(ids) > MAX_IDS:
                return 12, None, f"At most {MAX_IDS} ids"
            return None
        errors: dict[str, list[str]] = {}
        recipient = request.fields.get("recipient", "")
        if not recipient:
            errors["recipient"] = ["required"]
        elif not recipient.isdigit():
            errors["recipient"] = ["The number must contain digits only"]
        if not request.fields.get("text"):
            errors["text"] = ["required"]
        validity = request.fields.get("params[validity]")
        if validity is not None and not (validity.isdigit() and 60 <= int(validity) <= 1440):
            errors["validity"] = ["must be from 60 to 1440 minutes"]
        return (1, errors, API_MESSAGE[1]) if errors else None

    def _accept(self, request: ApiRequest, reply: Reply) -> bytes:
        with self._lock:
            message_id = reply.message_id or str(next(self._ids))
            campaign_id = str(int(message_id) + 1000) if message_id.isdigit() else message_id
            self.messages[message_id] = SentMessage(
                message_id=message_id, campaign_id=campaign_id,
                recipient=request.fields["recipient"], text=request.fields["text"])
        return envelope(0, {"campaignId": campaign_id, "messageId": message_id,
                            "status": reply.status})

    def _status(self, request: ApiRequest) -> bytes:
        with self._lock:
            known = [self.messages[i] for i in request.ids() if i in self.messages]
            items = [{"id": m.message_id, "status": m.status, "segNum": str(m.seg_num),
                      "startSendTs": m.start_send_ts, "statusUpdateTs": m.status_update_ts}
                     for m in known]
        return envelope(0, items)

    # webhook (also usable without a running server)

    @staticmethod
    def deliver(url: str, event: dict[str, Any] | bytes, *,
                content_type: str = "application/json", timeout: float = 5.0
                ) -> httpx.Response:
        """POST one webhook event; see `deliver()`."""
        return deliver(url, event, content_type=content_type, timeout=timeout)


# -- JSON building -----------------------------------------------------------------------------


def envelope(code: int, data: Any = None, message: str = "") -> bytes:
    """`{"code":…,"data":…,"message":…}`, compact like the captures."""
    return json.dumps({"code": code, "data": data if data is not None else [],
                       "message": message}, separators=(",", ":")).encode()


def _ts(when: dt.datetime | None) -> str:
    """`YYYY-MM-DD HH:MM:SS`, no zone (UTC here), as Mobizon writes times."""
    when = when or dt.datetime.now(dt.UTC)
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC)
    return f"{when:%Y-%m-%d %H:%M:%S}"


def sign(event_id: Any, attempt: Any, event_create_ts: str, secret: str) -> str:
    """sha1(eventId|attempt|eventCreateTs|secret), lowercase hex (PROTOCOLS.md §1.4)."""
    text = f"{event_id}|{attempt}|{event_create_ts}|{secret}"
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


_EVENT_IDS = itertools.count(1000)


def webhook_event(message_id: str | int, status: str = "DELIVRD", *,
                  event_id: int | None = None, attempt: int = 1,
                  created: dt.datetime | None = None, updated: dt.datetime | None = None,
                  campaign_id: str | int | None = None, seg_num: int = 1, to: str = DEFAULT_TO,
                  webhook_id: int = 1, secret: str | None = None,
                  event_type: str = "sms-delivery-report", as_strings: bool = False
                  ) -> dict[str, Any]:
    """One `sms-delivery-report` event (mobizon-webhook-sms-delivery-report-1.json's shape).

    Ids are JSON numbers as in the doc sample (`as_strings` sends them as strings); `sign` is
    present only with a secret, as documented."""
    def number(value: Any) -> Any:
        text = str(value)
        return text if as_strings or not text.isdigit() else int(text)

    event: dict[str, Any] = {
        "eventId": event_id if event_id is not None else next(_EVENT_IDS),
        "eventType": event_type,
        "eventCreateTs": _ts(created),
        "webhookId": webhook_id,
        "attempt": attempt,
        "data": {
            "campaignId": number(campaign_id if campaign_id is not None else message_id),
            "messageId": number(message_id),
            "segNum": seg_num,
            "statusUpdateTs": _ts(updated or created),
            "status": status,
            "to": to,
        },
    }
    if secret is not None:
        event["sign"] = sign(event["eventId"], attempt, event["eventCreateTs"], secret)
    return event


def retry_of(event: dict[str, Any], secret: str | None = None) -> dict[str, Any]:
    """The same event as Mobizon's next attempt: same eventId, attempt + 1, re-signed."""
    again = {**event, "attempt": int(event["attempt"]) + 1}
    again.pop("sign", None)
    if secret is not None:
        again["sign"] = sign(again["eventId"], again["attempt"], again["eventCreateTs"], secret)
    return again


def deliver(url: str, event: dict[str, Any] | bytes, *, content_type: str = "application/json",
            timeout: float = 5.0) -> httpx.Response:
    """POST one webhook body as Mobizon does (JSON; any 2xx within 5 s counts as received)."""
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    with httpx.Client(timeout=timeout) as client:
        return client.post(url, content=body, headers={"Content-Type": content_type})
