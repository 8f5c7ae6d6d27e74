"""A Skycore stand-in: a real HTTP server on loopback that speaks the XML API v1.3.

It takes `sendSMS` the ways Skycore documents (PROTOCOLS.md §3.2): POST with the XML document in
the form field `xml`, the XML as the raw body (Tatango's gem), or GET with URL parameters. Every
request is recorded with the fields Skycore reads (ACTION, API_KEY, TO, FROM, TEXT, CAMPAIGNREF),
parsed with `tracker.safexml` (the project's only XML parser). The answer is
`<RESPONSE><STATUS>Success</STATUS><TRACKINGID>SMS_n</TRACKINGID><TO>…</TO></RESPONSE>` unless a
reply was scripted: a `Failure` with ERRORCODE/ERRORINFO, an HTTP error, or a slow answer.

The postback builders return the bytes Skycore would post (PROTOCOLS.md §3.3): the flat
`<POSTBACK>` (N201/N202/E201/E202, as skycore-postback-*.xml) and the legacy `<NOTIFICATION>`
sent and delivery variants (as skycore-notification-*.xml), alone or batched under a wrapper,
as a raw `text/xml` body or an `xml=` form field; and the Messaging API v2's JSON postback
(Format C: `origin`, `code`, `sent-as`, `status` Sent/Delivered/Failed/Rejected, `from`, `to`,
`tracking-id`, `operator-id`, `operator-name`, `timestamp`, optional `campaign-ref` and
`from-mask`), posted as application/json. No v2 sample is stored (PROTOCOLS.md names
skycore-v2-postback-n201-1.json, samples/ lacks it): its shape is built from §3.3's key list.

    with SkycoreStandIn() as sky:
        sky.script(Reply.failure("E106"))          # the next sendSMS is rate limited
        ...                                        # point providers.skycore.base_url at sky.url
        sky.wait_for_requests(1)[0].fields["TO"]
        sky.deliver(callback_url, sky.postback("SMS_1", "N202"))
        sky.deliver(callback_url, sky.postback_v2("SMS_1", "N202"))  # application/json
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
from urllib.parse import parse_qs, quote_plus, urlsplit
from xml.sax.saxutils import escape, quoteattr

import httpx

from tracker import safexml

from .base import StandIn, StandInHandler

SEND_PATH = "/API/wxml/1.3/index.php"
REQUEST_FIELDS = ("ACTION", "API_KEY", "TO", "FROM", "TEXT", "CAMPAIGNREF")

# Appendix B wording for the codes a test is likely to script.
ERROR_INFO = {
    "E101": " 'action' required",
    "E102": "'user' or 'api_key' required",
    "E104": "Authentication failed",
    "E106": "You can call API every 1 seconds",
    "E108": "XML parse error",
    "E110": "Invalid receiver number",
    "E111": "Invalid shortcode",
    "E201": "The receiver number is required",
    "E628": "Operator not supported",
    "E712": "'text' is required",
    "E713": "There is billing problem on your account",
}

# Postback CODE -> the STATUS text of the flat <POSTBACK> form (Appendix D).
POSTBACK_STATUS = {
    "N201": "Message Sent",
    "N202": "Message Sent/Delivered",
    "E201": "Message Failed",
    "E202": "Message Sent/Failed",
}

# Postback code -> the `status` word of the v2 JSON form (§3.3 Format C).
POSTBACK_V2_STATUS = {
    "N201": "Sent",
    "N202": "Delivered",
    "E201": "Failed",
    "E202": "Rejected",
}

DEFAULT_TO = "15551234888"
_EASTERN = dt.timezone(dt.timedelta(hours=-5))


# -- scripted answers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One answer to a sendSMS request; the default is Success with the next SMS_n."""

    kind: str = "success"  # success | failure | http
    tracking_id: str | None = None
    error_code: str | None = None
    error_info: str | None = None
    http_status: int = 200
    body: bytes = b""
    delay: float = 0.0  # seconds to wait before answering (interrupted by stop())

    @classmethod
    def success(cls, tracking_id: str | None = None, *, delay: float = 0.0) -> Reply:
        """`<STATUS>Success</STATUS>` with this TRACKINGID (default: the next SMS_n)."""
        return cls("success", tracking_id=tracking_id, delay=delay)

    @classmethod
    def failure(cls, code: str, info: str | None = None, *, delay: float = 0.0) -> Reply:
        """`<STATUS>Failure</STATUS>` with ERRORCODE/ERRORINFO (e.g. E713, E106, E110)."""
        return cls("failure", error_code=code, error_info=info or ERROR_INFO.get(code, code),
                   delay=delay)

    @classmethod
    def http_error(cls, status: int = 500, body: bytes = b"Internal Server Error", *,
                   delay: float = 0.0) -> Reply:
        """A bare HTTP error page instead of an XML answer."""
        return cls("http", http_status=status, body=body, delay=delay)

    @classmethod
    def slow(cls, seconds: float, then: Reply | None = None) -> Reply:
        """`then` (default: success), answered after `seconds`."""
        return dataclasses.replace(then or cls.success(), delay=seconds)


@dataclass(frozen=True)
class SendRequest:
    """One request the stand-in received, read the way Skycore reads it."""

    method: str
    path: str
    content_type: str
    transport: str  # "form" (xml= field), "body" (raw XML) or "query" (GET parameters)
    xml: bytes  # the XML document (empty for GET)
    fields: dict[str, str | None]  # REQUEST_FIELDS -> text as sent (None when absent)
    received_at: float = field(default_factory=time.monotonic)
    parse_error: str | None = None

    def __getitem__(self, name: str) -> str | None:
        return self.fields[name]


# -- the server --------------------------------------------------------------------------------


class _Handler(StandInHandler):
    content_type = "text/xml"

    def do_POST(self) -> None:
        body = self.read_body()
        content_type = self.headers.get("Content-Type", "")
        if "form-urlencoded" in content_type:
            self.server.stand_in._handle(self, "form", form_field(body, "xml"), content_type)
        else:
            self.server.stand_in._handle(self, "body", body, content_type)

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        params = {k.upper(): v[0] for k, v in query.items()}
        fields = {name: params.get(name) for name in REQUEST_FIELDS}
        self.server.stand_in._answer(self, SendRequest(
            method="GET", path=self.path, content_type="", transport="query", xml=b"",
            fields=fields))


class SkycoreStandIn(StandIn[SendRequest]):
    """The stand-in server; use as a context manager (or start()/stop()).

    `url` is the sendSMS endpoint, for providers.skycore.base_url."""

    handler_class = _Handler
    thread_name = "skycore-stand-in"
    url_path = SEND_PATH
    request_noun = "sendSMS requests"

    def __init__(self, *, api_key: str | None = None, default: Reply | None = None) -> None:
        super().__init__()
        self.api_key = api_key  # when set, another API_KEY gets E104
        self.default = default or Reply.success()
        # Called with each SendRequest before it is answered (e.g. to post a postback that
        # beats the send response). Exceptions are kept in hook_errors, the answer is a 500.
        self.on_request: Callable[[SendRequest], None] | None = None
        self._script: deque[Reply] = deque()
        self._ids = itertools.count(1)

    # scripting

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order, then with the default."""
        with self._lock:
            self._script.extend(replies)

    # request handling (handler threads)

    def _handle(self, handler: _Handler, transport: str, document: bytes,
                content_type: str) -> None:
        fields: dict[str, str | None] = dict.fromkeys(REQUEST_FIELDS)
        error = None
        try:
            root = safexml.parse(document)
        except safexml.XMLRefused as exc:
            error = str(exc)
        else:
            for name in REQUEST_FIELDS:
                child = safexml.find_child(root, name)
                fields[name] = None if child is None else (child.text or "")
        self._answer(handler, SendRequest(
            method="POST", path=handler.path, content_type=content_type, transport=transport,
            xml=document, fields=fields, parse_error=error))

    def _answer(self, handler: _Handler, request: SendRequest) -> None:
        refusal = self._refusal(request)
        with self._lock:
            self._requests.append(request)
            # A request real Skycore would refuse does not use up a scripted reply.
            reply = self.default if refusal or not self._script else self._script.popleft()
        if self._hook_failed(handler, self.on_request, request):
            return
        if reply.delay:
            self._stopping.wait(reply.delay)
        to = (request.fields.get("TO") or "").strip()
        if refusal is None and (request.fields.get("ACTION") or "").lower() == "getsendingstatus":
            # §3.5: a URL to the XML report file of the period (its contents are not served)
            handler.send_bytes(200, _xml("RESPONSE", [
                ("STATUS", "Success"), ("URL", f"{self.url}/reports/statistics.xml")]))
            return
        if refusal is not None:
            handler.send_bytes(200, _response_failure(*refusal, to))
        elif reply.kind == "http":
            handler.send_bytes(reply.http_status, reply.body, "text/html")
        elif reply.kind == "failure":
            handler.send_bytes(200, _response_failure(reply.error_code or "E999",
                                                      reply.error_info or "", to))
        else:
            tracking_id = reply.tracking_id or f"SMS_{next(self._ids)}"
            handler.send_bytes(200, _xml("RESPONSE", [("STATUS", "Success"),
                                                      ("TRACKINGID", tracking_id), ("TO", to)]))

    def _refusal(self, request: SendRequest) -> tuple[str, str] | None:
        """What real Skycore refuses whatever is scripted: unreadable XML, missing fields."""
        f = request.fields
        if request.parse_error is not None:
            return "E108", f"XML parse error: {request.parse_error}"
        if not (f["ACTION"] or "").strip():
            return "E101", ERROR_INFO["E101"]
        if (f["ACTION"] or "").strip().lower() not in ("sendsms", "getsendingstatus"):
            return "E101", f"unknown action {f['ACTION']!r}"
        if not (f["API_KEY"] or "").strip():
            return "E102", ERROR_INFO["E102"]
        if self.api_key is not None and f["API_KEY"] != self.api_key:
            return "E104", ERROR_INFO["E104"]
        if (f["ACTION"] or "").strip().lower() == "getsendingstatus":
            return None
        if not (f["TO"] or "").strip():
            return "E201", ERROR_INFO["E201"]
        if not (f["TEXT"] or "").strip():
            return "E712", ERROR_INFO["E712"]
        if not (f["FROM"] or "").strip():
            return "E111", ERROR_INFO["E111"]
        return None

    # postbacks: bytes builders (also usable without a running server) and delivery

    @staticmethod
    def postback(tracking_id: str, code: str = "N201", **kwargs: Any) -> bytes:
        """The flat `<POSTBACK>` form; see `postback()`."""
        return postback(tracking_id, code, **kwargs)

    @staticmethod
    def notification_sent(tracking_id: str, **kwargs: Any) -> bytes:
        """The legacy `<NOTIFICATION>` "sent" variant; see `notification_sent()`."""
        return notification_sent(tracking_id, **kwargs)

    @staticmethod
    def notification_delivery(tracking_id: str, **kwargs: Any) -> bytes:
        """The legacy `<NOTIFICATION>` delivery receipt; see `notification_delivery()`."""
        return notification_delivery(tracking_id, **kwargs)

    @staticmethod
    def postback_v2(tracking_id: str, code: str = "N201", **kwargs: Any) -> bytes:
        """The v2 JSON postback (Format C); see `postback_v2()`."""
        return postback_v2(tracking_id, code, **kwargs)

    @staticmethod
    def batch_v2(*documents: bytes) -> bytes:
        """Several v2 JSON postbacks as one JSON array; see `batch_v2()`."""
        return batch_v2(*documents)

    @staticmethod
    def batch(*documents: bytes, wrapper: str = "POSTBACKS") -> bytes:
        """Several postbacks in one request; see `batch()`."""
        return batch(*documents, wrapper=wrapper)

    @staticmethod
    def as_form(document: bytes) -> bytes:
        """The document as the `xml=` form field; see `as_form()`."""
        return as_form(document)

    @staticmethod
    def deliver(url: str, document: bytes, *, form: bool = False,
                timeout: float = 10.0) -> httpx.Response:
        """POST a postback the way Skycore does (raw text/xml, or xml= form data; a v2 JSON
        postback as application/json)."""
        return deliver(url, document, form=form, timeout=timeout)


# -- XML building (never parsing) --------------------------------------------------------------


def _xml(root: str, children: list[tuple[str, str | None]], indent: str = "\n\t") -> bytes:
    inner = "".join(f"{indent}<{k}>{escape(v)}</{k}>" for k, v in children if v is not None)
    return f"<{root}>{inner}\n</{root}>".encode()


def _response_failure(code: str, info: str, to: str) -> bytes:
    return _xml("RESPONSE", [("STATUS", "Failure"), ("ERRORCODE", code), ("ERRORINFO", info),
                             ("TO", to or None)])


def _iso(when: dt.datetime | None) -> str:
    """ISO 8601 with offset, as the <POSTBACK> form writes TIMESTAMP."""
    when = when or dt.datetime.now(dt.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(_EASTERN).isoformat(timespec="seconds")


def _pg(when: dt.datetime | None) -> str:
    """PostgreSQL style (`2011-07-26 10:22:25.262743-04`), as the legacy form writes times."""
    when = when or dt.datetime.now(dt.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    local = when.astimezone(dt.timezone(dt.timedelta(hours=-4)))
    return f"{local:%Y-%m-%d %H:%M:%S.%f}-04"


def postback(tracking_id: str, code: str = "N201", *, to: str = DEFAULT_TO,
             status: str | None = None, timestamp: dt.datetime | None = None,
             spid: str = "0001470", aggregator_id: str | None = None,
             status_details: str | None = None, origin: str = "SMS_MT") -> bytes:
    """`<POSTBACK>` (skycore-postback-n201-1.xml / -n202-1.xml) for one TRACKINGID."""
    if code == "N202" and aggregator_id is None:
        aggregator_id = "11529-64807-97508-73852-97658"
    children = [
        ("ORIGIN", origin),
        ("CODE", code),
        ("STATUS", status if status is not None else POSTBACK_STATUS.get(code, "")),
        ("TO", to),
        ("TRACKINGID", tracking_id),
        ("SPID", spid),
        ("TIMESTAMP", _iso(timestamp)),
        ("AGGREGATORID", aggregator_id),
        ("STATUSDETAILS", status_details),
    ]
    inner = "".join(f"\n  <{k}>{escape(v)}</{k}>" for k, v in children if v is not None)
    return (
        "<?xml version='1.0'?>\n"
        '<POSTBACK xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"\n'
        'xsi:noNamespaceSchemaLocation ="http://www.skycore.com/schema/postback.xsd">'
        f"{inner}\n</POSTBACK>\n"
    ).encode()


def _v2_time(when: dt.datetime | None) -> str:
    """v2 `timestamp`: ISO 8601 in UTC with microseconds (`2021-01-26T18:00:07.990498+00:00`,
    the v2 pages' example)."""
    when = when or dt.datetime.now(dt.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).isoformat(timespec="microseconds")


def postback_v2(tracking_id: str, code: str = "N201", *, to: str = DEFAULT_TO,
                status: str | None = None, timestamp: dt.datetime | None = None,
                sender: str = "60856", operator_id: str | None = "0001470",
                operator_name: str | None = "AT&T", campaign_ref: str | None = None,
                from_mask: str | None = None, origin: str = "SMS_MT",
                sent_as: str = "SMS") -> bytes:
    """The v2 JSON postback (§3.3 Format C) for one tracking id, keys in the documented order;
    `campaign-ref` and `from-mask` only when given ("sent in the postback only if it exists")."""
    fields: dict[str, str | None] = {
        "origin": origin,
        "code": code,
        "sent-as": sent_as,
        "status": status if status is not None else POSTBACK_V2_STATUS.get(code, ""),
        "from": sender,
        "to": to,
        "tracking-id": tracking_id,
        "operator-id": operator_id,
        "operator-name": operator_name,
        "timestamp": _v2_time(timestamp),
        "campaign-ref": campaign_ref,
        "from-mask": from_mask,
    }
    document = {k: v for k, v in fields.items() if v is not None}
    return json.dumps(document, indent=2).encode()


def batch_v2(*documents: bytes) -> bytes:
    """v2 postbacks as one JSON array. Skycore documents v2 postbacks as posted one at a time
    (§3.3); the tracker reads an array item by item all the same."""
    return json.dumps([json.loads(d) for d in documents]).encode()


_NOTIFICATION_IDS = itertools.count(325)


def notification_sent(tracking_id: str, *, to: str = DEFAULT_TO, history_id: str = "236990",
                      timestamp: dt.datetime | None = None, created: dt.datetime | None = None,
                      notification_id: int | None = None) -> bytes:
    """Legacy `<NOTIFICATION>` "sent" (skycore-notification-sent-1.xml): CODE N201, no STATUS."""
    ident = notification_id if notification_id is not None else next(_NOTIFICATION_IDS)
    body = _notification_body(history_id, to, tracking_id, None, timestamp)
    return (f'<NOTIFICATION  ID={quoteattr(str(ident))} CREATED={quoteattr(_pg(created))} >\n'
            f"\t<ORIGIN>SMS_MT</ORIGIN>\n\t<CODE>N201</CODE>\n{body}</NOTIFICATION>\n").encode()


def notification_delivery(tracking_id: str, *, protocol: str = "4", status: str = "0",
                          to: str = DEFAULT_TO, history_id: str = "236990",
                          timestamp: dt.datetime | None = None,
                          created: dt.datetime | None = None,
                          notification_id: int | None = None) -> bytes:
    """Legacy delivery receipt (skycore-notification-dlr-1.xml): CODE N201 plus
    `<STATUS PROTOCOL=".." STATUS=".."/>`; lower-case attributes with a leading space, as sent."""
    ident = notification_id if notification_id is not None else next(_NOTIFICATION_IDS)
    body = _notification_body(history_id, to, tracking_id, (protocol, status), timestamp)
    created_attr = quoteattr(" " + _pg(created))
    return (f"<NOTIFICATION id={quoteattr(str(ident))} created={created_attr}>\n"
            f"\t<ORIGIN>SMS_MT</ORIGIN>\n \t<CODE>N201</CODE>\n{body}</NOTIFICATION>\n").encode()


def _notification_body(history_id: str, to: str, tracking_id: str,
                       status: tuple[str, str] | None, timestamp: dt.datetime | None) -> str:
    lines = [
        "\t<BODY>",
        f"\t<HISTORYID>{escape(history_id)}</HISTORYID>",
        f" \t<TO>{escape(to)}</TO>",
        f"\t<TRACKINGID>{escape(tracking_id)}</TRACKINGID>",
    ]
    if status is not None:
        lines.append(f"\t<STATUS PROTOCOL={quoteattr(status[0])} STATUS={quoteattr(status[1])}/>")
    lines += [f"\t<TIMESTAMP>{_pg(timestamp)}</TIMESTAMP>", "\t</BODY>", ""]
    return "\n".join(lines)


def _without_declaration(document: bytes) -> bytes:
    text = document.lstrip()
    if text.startswith(b"<?xml"):
        text = text[text.index(b"?>") + 2 :].lstrip()
    return text


def batch(*documents: bytes, wrapper: str = "POSTBACKS") -> bytes:
    """Several postbacks "bulked together and wrapped with tag" (old Appendix D) in one body."""
    inner = b"".join(_without_declaration(d) for d in documents)
    return b"<" + wrapper.encode() + b">\n" + inner + b"</" + wrapper.encode() + b">\n"


def form_field(body: bytes, name: str) -> bytes:
    """The raw bytes of one url-encoded form field (latin-1 round trip: any byte survives;
    `parse_qs` on bytes cannot decode a percent-encoded non-ASCII byte)."""
    values = parse_qs(body.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    return values.get(name, [""])[0].encode("latin-1")


def as_form(document: bytes) -> bytes:
    """`xml=<url-encoded document>`, an application/x-www-form-urlencoded body."""
    return b"xml=" + quote_plus(document).encode("ascii")


def deliver(url: str, document: bytes, *, form: bool = False,
            timeout: float = 10.0) -> httpx.Response:
    """POST one postback body; the response is read completely and the connection closed.
    A JSON document (a v2 postback, or an array of them) goes as application/json."""
    if form:
        body, content_type = as_form(document), "application/x-www-form-urlencoded"
    elif document.lstrip()[:1] in (b"{", b"["):
        body, content_type = document, "application/json"
    else:
        body, content_type = document, "text/xml"
    with httpx.Client(timeout=timeout) as client:
        return client.post(url, content=body, headers={"Content-Type": content_type})

