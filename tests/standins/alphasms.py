"""An AlphaSMS stand-in: a real HTTP server on loopback that speaks `/api/json.php` and
`/api/http.php`.

json.php (PROTOCOLS.md §4.3) takes `{"auth", "data": [items]}` POSTed as JSON and answers each
"sms" item on its own (`msg_id`, or `success: false` with the error: sender `BADNAME` is refused
as "Error in Alpha-name"), the request as a whole only for a wrong key ("Access denied") or a
body that is not JSON; it stores each message with the `hook` URL its item carried.

http.php takes requests the ways the seed allows (PROTOCOLS.md §4.2): GET with URL parameters
or POST with form fields, and records every field as sent (version, key or login/pass, command,
from, to, message, hook, id…). `command=send` answers `id:N sms_count:K` (space-separated as in the
seed; newline- or comma-separated on request, as SDKs show) and stores the message with the
`hook` URL it carried; `command=receive&id=` answers `status:<text> code:<n> status_time:<t>`
(docs/api/http/status.md) or `errors:SMS not found`. What real AlphaSMS refuses whatever is
scripted (wrong credentials, unknown command, no recipient) gets its `errors:` line; other
failures are scripted: an `errors:` answer, an HTTP error, a raw body, a slow answer.

The hook payload is undocumented (§4.4), so `call_hook()` sends the plausible shapes, built from
the vocabularies AlphaSMS publishes: http.php fields (`id status code status_time`) or the JSON
status item (`msg_id type status date_completed`), as GET query parameters (appended with `&`,
or naively with a second `?`), a JSON body or form fields.

    with AlphaSmsStandIn(api_key="k") as alpha:
        alpha.script(Reply.error("Not enough money"))    # the next http.php send fails
        ...                                               # point providers.alphasms.base_url here
        [item] = alpha.wait_for_json_items(1); item["hook"]   # json.php (the default)
        [req] = alpha.wait_for_requests(1); req["hook"]       # http.php
        alpha.call_hook(req.gateway_id, alpha.json_status(req.gateway_id, "DELIVERED"))
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit
from zoneinfo import ZoneInfo

import httpx

from .base import StandIn, StandInHandler

SEND_PATH = "/api/http.php"
JSON_PATH = "/api/json.php"
FIRST_ID = 84523377  # the seed's example id

# http.php status codes and their texts (docs/api/http/status.md).
STATUS_TEXT = {0: "Pending", 1: "Sending", 2: "Sent", 3: "Delivered", 5: "Out of touch",
               10: "Deleted", 50: "Partially delivered",
               96: "Network failure during SMS delivery", 99: "Error in the number",
               116: "Read (Viber only)"}

# `errors:` texts: the seed's two, the JSON API's "Error in Alpha-name", and the Perl SDK's
# (Net::SMS::AlphaSMS test mode) for a missing recipient and an unknown id.
WRONG_LOGIN = "Wrong login/password"
UNKNOWN_COMMAND = "Unknown command"
BAD_SENDER = "Error in Alpha-name"
BAD_RECIPIENT = "Please enter valid receiver phone number"
NOT_FOUND = "SMS not found"

_KYIV = ZoneInfo("Europe/Kyiv")  # the provider's own clock
_GSM = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRS"
           "TUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")


# -- scripted answers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One answer to a request; the default is success (send) or the stored status (receive)."""

    kind: str = "success"  # success | errors | http | raw
    gateway_id: str | None = None
    errors: tuple[str, ...] = ()
    http_status: int = 200
    body: bytes = b""
    separator: str = " "
    delay: float = 0.0  # seconds to wait before answering (interrupted by stop())

    @classmethod
    def success(cls, gateway_id: str | None = None, *, separator: str = " ",
                delay: float = 0.0) -> Reply:
        """`id:N sms_count:K` (default id: the next one), tokens joined by `separator`."""
        return cls("success", gateway_id=gateway_id, separator=separator, delay=delay)

    @classmethod
    def error(cls, *texts: str, separator: str = "\n", delay: float = 0.0) -> Reply:
        """One `errors:<text>` line per text."""
        return cls("errors", errors=texts, separator=separator, delay=delay)

    @classmethod
    def http_error(cls, status: int = 500, body: bytes = b"Internal Server Error", *,
                   delay: float = 0.0) -> Reply:
        """A bare HTTP error page instead of a text answer."""
        return cls("http", http_status=status, body=body, delay=delay)

    @classmethod
    def raw(cls, body: bytes, status: int = 200, *, delay: float = 0.0) -> Reply:
        """Exactly these bytes (e.g. a verbatim sample, or junk)."""
        return cls("raw", body=body, http_status=status, delay=delay)

    @classmethod
    def slow(cls, seconds: float, then: Reply | None = None) -> Reply:
        """`then` (default: success), answered after `seconds`."""
        return dataclasses.replace(then or cls.success(), delay=seconds)


@dataclass(frozen=True)
class ApiRequest:
    """One request the stand-in received, with every parameter as sent."""

    method: str
    path: str
    content_type: str
    transport: str  # "query" (GET parameters) or "form" (POST body)
    fields: dict[str, str]
    received_at: float = field(default_factory=time.monotonic)
    gateway_id: str | None = None  # the id a successful send got

    def __getitem__(self, name: str) -> str | None:
        return self.fields.get(name)

    @property
    def command(self) -> str:
        return self.fields.get("command", "")


@dataclass
class StoredMessage:
    """A message the stand-in accepted, with the status `receive` reports."""

    gateway_id: str
    to: str
    sender: str
    text: str
    hook: str | None
    code: int = 1
    status_time: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


# -- the server --------------------------------------------------------------------------------


class _Handler(StandInHandler):
    def do_GET(self) -> None:
        self.server.stand_in._handle(self, "query", _fields(urlsplit(self.path).query), "")

    def do_POST(self) -> None:
        body = self.read_body()
        content_type = self.headers.get("Content-Type", "")
        if urlsplit(self.path).path == JSON_PATH:
            self.server.stand_in._handle_json(self, body, content_type)
            return
        # PHP reads both: URL parameters, then the form body over them.
        fields = {**_fields(urlsplit(self.path).query), **_fields(body.decode("utf-8"))}
        self.server.stand_in._handle(self, "form", fields, content_type)


def _fields(text: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}


class AlphaSmsStandIn(StandIn[ApiRequest]):
    """The stand-in server; use as a context manager (or start()/stop()).

    `url` is the http.php endpoint, for providers.alphasms.base_url (json.php is beside it)."""

    handler_class = _Handler
    thread_name = "alphasms-stand-in"
    url_path = SEND_PATH

    def __init__(self, *, api_key: str | None = None, login: str | None = None,
                 password: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key  # when set (or login/password), other credentials are refused
        self.login = login
        self.password = password
        # Called with each send request before it is answered (e.g. to call the hook before
        # the answer). Exceptions are kept in hook_errors, and the answer is a 500.
        self.on_request: Callable[[ApiRequest], None] | None = None
        # The same for json.php: called with each request's parsed body before it is answered.
        self.on_json_request: Callable[[dict[str, Any]], None] | None = None
        self.messages: dict[str, StoredMessage] = {}
        self._script: deque[Reply] = deque()
        self._receive_script: deque[Reply] = deque()
        self._json_script: deque[Reply] = deque()
        self.json_requests: list[dict[str, Any]] = []  # json.php bodies as parsed, in order
        self._ids = itertools.count(FIRST_ID)

    # scripting and inspection

    def script(self, *replies: Reply) -> None:
        """Answer the next `send` requests with these replies, in order, then succeed."""
        with self._lock:
            self._script.extend(replies)

    def script_receive(self, *replies: Reply) -> None:
        """Answer the next `receive` requests with these replies instead of the stored status."""
        with self._lock:
            self._receive_script.extend(replies)

    def set_status(self, gateway_id: str, code: int, at: dt.datetime | None = None) -> None:
        """What `receive` reports for this id from now on."""
        with self._lock:
            stored = self.messages[gateway_id]
            stored.code = code
            stored.status_time = at or dt.datetime.now(dt.UTC)

    def wait_for_requests(self, count: int, timeout: float = 10.0,
                          command: str = "send") -> list[ApiRequest]:
        """Block until at least `count` requests with this command arrived."""
        def seen() -> list[ApiRequest]:
            return [r for r in self.requests if r.command == command]

        return self._wait_for(seen, count, timeout, lambda: (
            f"stand-in saw {len(self.requests)} requests, expected {count} "
            f"{command!r} within {timeout} s"))

    # request handling (handler threads)

    def _handle(self, handler: _Handler, transport: str, fields: dict[str, str],
                content_type: str) -> None:
        request = ApiRequest(method=handler.command, path=handler.path, content_type=content_type,
                             transport=transport, fields=fields)
        if urlsplit(handler.path).path != SEND_PATH:
            self._record(request)
            handler.send_bytes(404, b"Not Found")
            return
        refusal = self._refusal(fields)
        command = fields.get("command", "")
        with self._lock:
            queue = self._receive_script if command == "receive" else self._script
            # A request real AlphaSMS would refuse does not use up a scripted reply.
            reply = queue.popleft() if queue and refusal is None else None
        if command == "send" and refusal is None and (reply is None or reply.kind == "success"):
            gateway_id = (reply.gateway_id if reply else None) or str(next(self._ids))
            request = dataclasses.replace(request, gateway_id=gateway_id)
        self._record(request)
        if command == "send" and self._hook_failed(handler, self.on_request, request,
                                                   "text/html"):
            return
        if reply is not None and reply.delay:
            self._stopping.wait(reply.delay)
        status, body = self._answer(request, refusal, reply)
        handler.send_bytes(status, body)

    def _answer(self, request: ApiRequest, refusal: str | None,
                reply: Reply | None) -> tuple[int, bytes]:
        if refusal is not None:
            return 200, f"errors:{refusal}\n".encode()
        if reply is not None and reply.kind in ("http", "raw"):
            return reply.http_status, reply.body
        if reply is not None and reply.kind == "errors":
            return 200, reply.separator.join(f"errors:{e}" for e in reply.errors).encode()
        if request.command == "receive":
            return 200, self._status_answer(request["id"] or "")
        if request.command == "balance":  # §4.2: key:value pairs, like every http.php answer
            return 200, b"balance:125.40 currency:UAH"
        separator = reply.separator if reply is not None else " "
        fields = request.fields
        assert request.gateway_id is not None
        with self._lock:
            self.messages[request.gateway_id] = StoredMessage(
                request.gateway_id, fields.get("to", ""), fields.get("from", ""),
                fields.get("message", ""), fields.get("hook"))
        count = sms_count(fields.get("message", ""))
        return 200, f"id:{request.gateway_id}{separator}sms_count:{count}".encode()

    def _handle_json(self, handler: _Handler, body: bytes, content_type: str) -> None:
        """json.php (§4.3): `{"auth", "data": [items]}`; each "sms" item is answered on its own
        (`msg_id`, or `success: false` with the error), the request as a whole only for a wrong
        key or a body that is not JSON. A scripted reply (raw, HTTP error) answers the whole."""
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        items = data.get("data") if isinstance(data, dict) else None
        items = [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []
        with self._lock:
            self.json_requests.append({"content_type": content_type, "body": data,
                                       "received_at": time.monotonic()})
            reply = self._json_script.popleft() if self._json_script else None
        if isinstance(data, dict) and self._hook_failed(handler, self.on_json_request, data,
                                                        "application/json"):
            return
        if reply is not None and reply.delay:
            self._stopping.wait(reply.delay)
        if reply is not None and reply.kind in ("http", "raw"):
            handler.send_bytes(reply.http_status, reply.body, "application/json")
            return
        if "application/json" not in content_type or not isinstance(data, dict):
            answer: dict[str, Any] = {"success": False, "error": "Invalid request"}
        elif self.api_key is not None and data.get("auth") != self.api_key:
            answer = {"success": False, "error": "Access denied"}
        else:
            answer = {"success": True, "data": [self._json_item(item) for item in items]}
        handler.send_bytes(200, json.dumps(answer).encode(), "application/json")

    def _json_item(self, item: dict[str, Any]) -> dict[str, Any]:
        if item.get("type") != "sms" or not isinstance(item.get("phone"), int):
            return {"success": False, "error": BAD_RECIPIENT, "data": {"id": item.get("id")}}
        if not item.get("sms_signature") or item["sms_signature"] == "BADNAME":
            return {"success": False, "error": BAD_SENDER, "data": {"id": item.get("id")}}
        gateway_id = str(next(self._ids))
        text = str(item.get("sms_message", ""))
        with self._lock:
            self.messages[gateway_id] = StoredMessage(gateway_id, str(item["phone"]),
                                                      item["sms_signature"], text,
                                                      item.get("hook"))
        return {"success": True, "data": {"id": item.get("id"), "msg_id": int(gateway_id),
                                          "data": 1, "parts": sms_count(text)}}

    def script_json(self, *replies: Reply) -> None:
        """Answer the next json.php requests with these (raw bodies, HTTP errors)."""
        with self._lock:
            self._json_script.extend(replies)

    def json_items(self) -> list[dict[str, Any]]:
        """Every sms item json.php received, in order."""
        with self._lock:
            return [item for r in self.json_requests if isinstance(r["body"], dict)
                    for item in r["body"].get("data") or []]

    def wait_for_json_items(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until json.php received at least `count` items."""
        return self._wait_for(self.json_items, count, timeout, lambda: (
            f"stand-in saw {len(self.json_items())} json.php items, expected {count} "
            f"within {timeout} s"))

    def _status_answer(self, gateway_id: str) -> bytes:
        with self._lock:
            stored = self.messages.get(gateway_id)
        if stored is None:
            return f"errors:{NOT_FOUND}".encode()
        text = STATUS_TEXT.get(stored.code, "Unknown")
        return (f"status:{text} code:{stored.code} "
                f"status_time:{kyiv_time(stored.status_time)}").encode()

    def _refusal(self, f: dict[str, str]) -> str | None:
        """What real AlphaSMS refuses whatever is scripted."""
        if not self._authenticated(f):
            return WRONG_LOGIN
        command = f.get("command", "")
        if command not in ("send", "receive", "balance"):
            return UNKNOWN_COMMAND
        if command == "send":
            if not f.get("to", "").isdigit():
                return BAD_RECIPIENT
            if not f.get("from"):
                return BAD_SENDER
        return None

    def _authenticated(self, f: dict[str, str]) -> bool:
        """`key`, else `login` + `pass`; checked against what the stand-in was given."""
        if f.get("key"):
            return self.api_key is None or f["key"] == self.api_key
        if not (f.get("login") and f.get("pass")):
            return False
        return self.login is None or (f["login"], f["pass"]) == (self.login, self.password)

    # hooks: payload builders (usable without a running server) and delivery

    @staticmethod
    def http_status(gateway_id: str, code: int, at: dt.datetime | None = None) -> dict[str, str]:
        """Hook fields in the http.php vocabulary: `id status code status_time`."""
        return http_status(gateway_id, code, at)

    @staticmethod
    def json_status(gateway_id: str, status: str, at: dt.datetime | None = None
                    ) -> dict[str, Any]:
        """Hook fields in the JSON API vocabulary: `msg_id type status date_completed`."""
        return json_status(gateway_id, status, at)

    def call_hook(self, gateway_id: str, payload: dict[str, Any], *, method: str = "POST",
                  encoding: str = "json", naive_query: bool = False) -> httpx.Response:
        """Call the hook URL this message was sent with; see `deliver()`."""
        with self._lock:
            hook = self.messages[gateway_id].hook
        assert hook, f"message {gateway_id} was sent without a hook"
        return deliver(hook, payload, method=method, encoding=encoding, naive_query=naive_query)


def sms_count(text: str) -> int:
    """Parts used: 160/153 GSM characters, 70/67 otherwise (§4.6, standard concatenation)."""
    single, part = (160, 153) if set(text) <= _GSM else (70, 67)
    return 1 if len(text) <= single else -(-len(text) // part)


def kyiv_time(when: dt.datetime) -> str:
    """`2011-11-15T17:12:33+0200`, the shape Net::SMS::AlphaSMS shows for status_time."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(_KYIV).strftime("%Y-%m-%dT%H:%M:%S%z")


def http_status(gateway_id: str, code: int, at: dt.datetime | None = None) -> dict[str, str]:
    """Hook fields as http.php names them (an assumption: the real payload is undocumented)."""
    return {"id": gateway_id, "status": STATUS_TEXT.get(code, "Unknown"), "code": str(code),
            "status_time": kyiv_time(at or dt.datetime.now(dt.UTC))}


def json_status(gateway_id: str, status: str, at: dt.datetime | None = None) -> dict[str, Any]:
    """Hook fields as the JSON API names them (status item + the XML `date_completed`)."""
    when = (at or dt.datetime.now(dt.UTC)).astimezone(_KYIV).replace(tzinfo=None)
    return {"msg_id": int(gateway_id) if gateway_id.isdigit() else gateway_id, "type": "sms",
            "status": status, "date_completed": when.isoformat(timespec="seconds")}


def deliver(url: str, payload: dict[str, Any], *, method: str = "POST", encoding: str = "json",
            naive_query: bool = False, timeout: float = 10.0) -> httpx.Response:
    """Call a hook URL: GET with the fields in the query, or POST as JSON or form fields.

    `naive_query`: append the query with "?" even though the URL has one (a sloppy caller)."""
    with httpx.Client(timeout=timeout) as client:
        if method == "GET":
            joiner = "?" if naive_query or "?" not in url else "&"
            query = urlencode({k: str(v) for k, v in payload.items()})
            return client.get(f"{url}{joiner}{query}" if payload else url)
        if encoding == "json":
            body, content_type = json.dumps(payload).encode(), "application/json"
        else:
            body = urlencode({k: str(v) for k, v in payload.items()}).encode()
            content_type = "application/x-www-form-urlencoded"
        target = url
        if naive_query:  # POST with the fields also in a second "?" query
            target = f"{url}?{urlencode({k: str(v) for k, v in payload.items()})}"
        return client.post(target, content=body, headers={"Content-Type": content_type})
