"""Skycore (seed 003, PROTOCOLS.md §3): XML `sendSMS`; postbacks in two XML forms and v2 JSON.

Send: `<REQUEST><ACTION>sendSMS</ACTION>…` POSTed in the form field `xml`; the answer is
`<RESPONSE><STATUS>Success|Failure</STATUS>…`. A text must fit one SMS (§3.6: the limit is
"imposed to prevent the splitting of messages"): 160 GSM-7 units or 70 UCS-2 units, counted by
`tracker.segments`; a longer one is refused before sending.

Postbacks, all on the account's one Postback URL (§3.3): a raw XML body or an `xml=` form field,
one or several per request: the legacy `<NOTIFICATION>` (attribute case varies, delivery
carried as `<STATUS PROTOCOL=… STATUS=…/>`) and the flat `<POSTBACK>` (N201/N202/E201/E202);
or the Messaging API v2's JSON object (Format C: `tracking-id`, `code`, `status` Sent/
Delivered/Failed/Rejected, `timestamp`), application/json, documented as posted one at a time
(an array of them is read item by item all the same). Correlation is by the tracking id only:
the postback's TO may differ from the recipient.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any
from xml.etree.ElementTree import Element

from .. import safexml
from ..segments import SINGLE, segment
from ..status import Status
from .base import (
    CallbackRequest,
    Finding,
    OutboundMessage,
    ParsedCallback,
    Provider,
    Receipt,
    SendError,
    SendResult,
    Setting,
)
from .timestamps import parse_timestamp
from .xmlbuild import xml_document

API_URL = "https://secure.skycore.com/API/wxml/1.3/index.php"
# "SMS message limited to 160 characters" (seed 003), "imposed to prevent the splitting of
# messages into multiple texts" (Appendix D): one SMS, i.e. `segments.SINGLE` of its encoding
# (160 GSM-7 septets, 70 UCS-2 code units), not 160 Python characters.

# Postback CODE -> status (Appendix D). E202 is refined by its STATUS text below.
STATUS_MAP: dict[str, Status] = {
    "N201": Status.SENT,
    "N202": Status.DELIVERED,
    "E201": Status.FAILED,
    "E202": Status.UNDELIVERED,
}
_E202_SUFFIX = {
    "failed": Status.UNDELIVERED,
    "expired": Status.EXPIRED,
    "rejected": Status.REJECTED,
    "notsupported": Status.REJECTED,
}
# v2 JSON `status` words (PROTOCOLS.md §3.3 Format C, §3.4), read when a v2 postback has no code.
V2_STATUS_MAP = {
    "sent": Status.SENT,
    "delivered": Status.DELIVERED,
    "failed": Status.FAILED,
    "rejected": Status.REJECTED,
}

# sendSMS error codes (Appendix B, PROTOCOLS.md §3.2/§3.4): permanent ones tied to the request
# reject the message, account/config ones fail it, the rate limit is retried later.
REJECT_CODES = frozenset({"E110", "E111", "E201", "E628", "E712", "E714", "E715"})
FAIL_CODES = frozenset({"E100", "E101", "E102", "E103", "E104", "E105", "E107", "E108",
                        "E109", "E713"})
RETRY_CODES = frozenset({"E106", "E999"})

# Appendix B (send errors) and Appendix D (postback codes), PROTOCOLS.md §3.2/§3.3. E201 is
# both a send error and a postback code (the docs' own clash); the postback meaning is kept, as
# that is what a timeline shows.
EXPLANATIONS = {
    "N201": "sent to the carrier (Message Sent); a delivery receipt may follow",
    "N202": "delivered to the handset (Message Sent/Delivered)",
    "E201": "Skycore could not send the message (Message Failed)",
    "E202": "sent, but the carrier could not deliver it (Message Sent/Failed, /Expired, "
            "/NotSupported)",
    "E100": "invalid request (Skycore wants GET or the xml field via POST)",
    "E101": "the action is missing or invalid", "E102": "user or api_key missing",
    "E103": "md5 password missing", "E104": "authentication failed (check api_key)",
    "E105": "this account has no API rights", "E106": "rate limit: too many API calls",
    "E107": "no rights for this action", "E108": "Skycore could not parse our XML",
    "E109": "the API is not activated on this account", "E110": "invalid receiver number",
    "E111": "invalid shortcode", "E628": "the recipient's operator is not supported",
    "E712": "the text is missing", "E713": "billing problem on the Skycore account",
    "E714": "missing or invalid campaign", "E715": "the number is not subscribed to the campaign",
    "E999": "Skycore queue processing error",
}

# Published examples close a tag with another opening tag (<FROM_MASK>x<FROM_MASK>).
_UNCLOSED = re.compile(rb"<([A-Za-z_]+)>([^<>]*)<\1>")


def protocol_status(protocol: str, code: str) -> Status:
    """Map the legacy `<STATUS PROTOCOL=p STATUS=s/>` through Appendix B's tables."""
    try:
        p, s = int(protocol), int(code)
    except ValueError:
        return Status.UNKNOWN
    if p == 1:
        return Status.FAILED  # gateway pre-send failures: no route, no credits, ...
    if p == 2:
        if s == 4:
            return Status.DELIVERED
        if s in (0, 1, 2, 3, 5):
            return Status.SENT
        if s in (811, 2011):
            return Status.EXPIRED
        if 561 <= s <= 572:
            return Status.REJECTED
        if 1000 <= s <= 1030:
            return Status.FAILED
        if any(low <= s <= high for low, high in _P2_UNDELIVERED):
            return Status.UNDELIVERED
        return Status.UNKNOWN  # not in Appendix B: the raw value is kept, nothing is final
    if p == 3:
        return {1: Status.DELIVERED, 2: Status.UNDELIVERED, 4: Status.SENT, 8: Status.SENT,
                16: Status.REJECTED}.get(s, Status.UNKNOWN)
    if p == 4:
        if s == 0:
            return Status.DELIVERED
        if 100 <= s <= 117:
            return Status.REJECTED
        if any(low <= s <= high for low, high in _P4_UNDELIVERED):
            return Status.UNDELIVERED
        return Status.UNKNOWN
    return Status.UNKNOWN


# Appendix B's other unsuccessful values (PROTOCOLS.md §3.3): protocol 2 recipient not found
# (4xx), carrier errors, failed delivery, not acknowledged, deleted by carrier, undeliverable,
# user not found; protocol 4 account/consumer/capability errors, partial, internal, integration.
_P2_UNDELIVERED = ((400, 499), (507, 514), (810, 810), (815, 815), (2017, 2017), (2019, 2019),
                   (2023, 2023))
_P4_UNDELIVERED = ((1, 16), (50, 50), (99, 99), (200, 299))

# Appendix B's words for each protocol value (PROTOCOLS.md §3.3), as (protocol, low, high).
_PROTOCOL_WORDS: tuple[tuple[int, int, int, str], ...] = (
    (1, 92100, 92100, "no route"), (1, 92101, 92101, "no credits"),
    (1, 92102, 92102, "overspending"), (1, 92110, 92110, "no program ID"),
    (1, 92111, 92111, "T-Mobile: missing reference ID"),
    (2, 0, 0, "sent"), (2, 1, 1, "processing"), (2, 2, 2, "queued"),
    (2, 3, 3, "buffered with the carrier"), (2, 4, 4, "delivered"),
    (2, 5, 5, "transferred to the carrier, awaiting its answer"),
    (2, 400, 499, "recipient not found"), (2, 508, 508, "absent subscriber"),
    (2, 507, 514, "carrier error"), (2, 561, 572, "blocked or not provisioned"),
    (2, 810, 810, "delivery failed"), (2, 811, 811, "expired by the carrier"),
    (2, 815, 815, "not acknowledged"), (2, 1000, 1030, "Skycore system error"),
    (2, 2011, 2011, "delivery expired"), (2, 2017, 2017, "deleted by the carrier"),
    (2, 2019, 2019, "undeliverable"), (2, 2023, 2023, "user not found"),
    (3, 1, 1, "delivered"), (3, 2, 2, "delivery failed"), (3, 4, 4, "buffered"),
    (3, 8, 8, "submitted to the SMSC"), (3, 16, 16, "rejected by the SMSC"),
    (4, 0, 0, "successfully executed (delivered)"),
    (4, 1, 16, "account, consumer or capability error"), (4, 50, 50, "partially delivered"),
    (4, 99, 99, "internal error at the operator"), (4, 100, 100, "invalid destination address"),
    (4, 107, 107, "invalid alphanumeric originating address"),
    (4, 111, 111, "invalid message length"), (4, 113, 113, "invalid data coding (DCS)"),
    (4, 100, 117, "an invalid field in the message"), (4, 200, 299, "integration error"),
)
_PROTOCOL_VALUE = re.compile(r"\bP(\d+):(\d+)\b")


def protocol_words(protocol: int, code: int) -> str | None:
    """Appendix B's meaning of one `<STATUS PROTOCOL STATUS>` value, or None if unlisted."""
    for p, low, high, words in _PROTOCOL_WORDS:  # exact values come before their ranges
        if p == protocol and low <= code <= high:
            return f"{words} (protocol {protocol}, status {code})"
    return None


class SkycoreProvider(Provider):
    """Skycore XML API v1.3."""

    slug = "skycore"
    name = "Skycore"
    SETTINGS = {
        "base_url": Setting(str, default=API_URL),
        "api_key": Setting(str, required=True, secret=True),
        "shortcode": Setting(str, required=True),
        "callback_token": Setting(str, required=True, secret=True),
        "campaign_ref": Setting(str),
    }
    STATUS_MAP = STATUS_MAP
    EXPLANATIONS = EXPLANATIONS

    def explain(self, code: str | None) -> str | None:
        """A postback code, or a legacy protocol value ("P2:508", "N202 P4:0") in words."""
        found = _PROTOCOL_VALUE.search(code or "")
        if found:
            return protocol_words(int(found.group(1)), int(found.group(2)))
        return super().explain(code)

    # -- sending -------------------------------------------------------------------------

    def send(self, message: OutboundMessage) -> SendResult:
        """POST sendSMS and read Success/TRACKINGID or Failure/ERRORCODE."""
        shape = segment(message.text)
        if shape.segments > 1:
            limit = SINGLE[shape.encoding]
            raise SendError(f"Skycore sends one SMS only: this text is {shape.units} "
                            f"{shape.encoding} units, at most {limit} fit",
                            permanent=True, status=Status.REJECTED, code="TEXT_TOO_LONG")
        payload = xml_document("REQUEST", [
            ("ACTION", "sendSMS"),
            ("API_KEY", self.config["api_key"]),
            ("TO", message.to.lstrip("+")),  # international format without + or 00
            ("FROM", message.sender or self.config["shortcode"]),
            ("CAMPAIGNREF", self.config.get("campaign_ref")),
            ("TEXT", message.text),
        ])
        response = self.request("POST", self.config["base_url"], data={"xml": payload})
        raw = response.text
        if response.status_code >= 500:
            raise SendError(f"Skycore HTTP {response.status_code}", permanent=False, raw=raw,
                            provider_side=True)
        return self._read_send_response(response.content, raw, response.status_code)

    def _read_send_response(self, content: bytes, raw: str, http_status: int = 200
                            ) -> SendResult:
        try:
            root = safexml.parse(content)
            outcome = (safexml.find_text(root, "STATUS") or "").lower()
        except safexml.XMLRefused as exc:
            unreadable = str(exc)
        else:
            unreadable = "" if outcome in ("success", "failure") else "no Success or Failure"
        if unreadable and 200 <= http_status < 300:
            # Something answered "OK" in a form we cannot read (an HTML page from a proxy or a
            # maintenance screen): the message may have gone out, so it is never sent again.
            raise SendError(f"Skycore HTTP {http_status}, answer unreadable: {unreadable}",
                            permanent=False, provider_side=True, outcome_unknown=True,
                            code="UNREADABLE", raw=raw)
        if unreadable:  # an error page: refused before Skycore took the message
            raise SendError(f"Skycore HTTP {http_status}, answer unreadable: {unreadable}",
                            permanent=False, raw=raw, provider_side=True,
                            code=f"HTTP_{http_status}")
        tracking_id = safexml.find_text(root, "TRACKINGID")
        if outcome == "success" and tracking_id:
            return SendResult(provider_message_id=tracking_id, raw=raw)
        if outcome == "success":
            # Accepted, but without the id we can neither track it nor safely send it again.
            raise SendError("Skycore answered Success without a TRACKINGID", permanent=False,
                            provider_side=True, outcome_unknown=True, code="NO_TRACKINGID",
                            raw=raw)
        code = (safexml.find_text(root, "ERRORCODE") or "").upper()
        info = safexml.find_text(root, "ERRORINFO") or "no ERRORINFO"
        detail = f"{code or 'no ERRORCODE'}: {info}"
        if code in REJECT_CODES:
            raise SendError(detail, permanent=True, status=Status.REJECTED, code=code, raw=raw)
        if code in RETRY_CODES:
            raise SendError(detail, permanent=False, code=code, raw=raw, provider_side=True)
        # FAIL_CODES and anything undocumented: an account/config problem, not worth a retry
        # here, but another provider may take the message.
        raise SendError(detail, permanent=True, status=Status.FAILED, code=code or None, raw=raw,
                        provider_side=True)

    # -- checking ------------------------------------------------------------------------

    def check(self) -> list[Finding]:
        """`getSendingStatus` (§3.5) for the last minute: an authenticated call that sends
        nothing. Success, or a complaint about the dates or the rate, means the key passed."""
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        payload = xml_document("REQUEST", [
            ("ACTION", "getSendingStatus"),
            ("API_KEY", self.config["api_key"]),
            ("START_DATE", (now - dt.timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S")),
            ("END_DATE", now.strftime("%Y-%m-%d %H:%M:%S")),
        ])
        response, problems = self.reach("POST", self.config["base_url"], data={"xml": payload})
        if response is None:
            return problems
        base = self.config["base_url"]
        try:
            root = safexml.parse(response.content)
            outcome = (safexml.find_text(root, "STATUS") or "").lower()
        except safexml.XMLRefused:
            outcome = ""
        if outcome not in ("success", "failure"):
            return [Finding("host", False, f"{base} answered HTTP {response.status_code} "
                                           "without Skycore's XML")]
        host = Finding("host", True, f"{base} answers")
        sender = Finding("sender", None, "Skycore has no documented way to check a shortcode "
                                         "without sending")
        if outcome == "success":
            return [host, Finding("key", True, "accepted (getSendingStatus)"), sender]
        code = (safexml.find_text(root, "ERRORCODE") or "").upper()
        info = safexml.find_text(root, "ERRORINFO") or ""
        if code in ("E106", "E506", "E507", "E508", "E509", "E510"):
            return [host, Finding("key", True, f"accepted ({code}: {info})"), sender]
        if code == "E107":  # this action only: sending may still be allowed
            return [host, Finding("key", None, f"{code}: {info} (not this action; sending "
                                               "may still be allowed)"), sender]
        return [host, Finding("key", False, f"{code or 'no ERRORCODE'}: {info}")]

    # -- postbacks -----------------------------------------------------------------------

    def parse_callback(self, request: CallbackRequest) -> ParsedCallback:
        """Accept a raw XML body or an `xml=` form field (one or many postbacks), or a v2 JSON
        postback (an object, or an array of them)."""
        parsed = ParsedCallback()
        if _is_json(request):
            self._parse_json(request.body, parsed)
            return parsed
        document = self._xml_bytes(request)
        try:
            root = safexml.parse(document)
        except safexml.XMLMalformed as exc:
            repaired = _UNCLOSED.sub(rb"<\1>\2</\1>", document)
            try:
                root = safexml.parse(repaired)
            except safexml.XMLRefused:
                parsed.errors.append(str(exc))
                return parsed
            parsed.notes.append(f"repaired malformed XML ({exc})")
        except safexml.XMLRefused as exc:
            parsed.errors.append(str(exc))
            return parsed
        for element in _postbacks(root):
            self._read_postback(element, parsed)
        if not parsed.receipts and not parsed.errors:
            parsed.notes.append(f"no SMS postback in <{_name(root)}>")
        return parsed

    def _parse_json(self, body: bytes, parsed: ParsedCallback) -> None:
        """v2 JSON postbacks (PROTOCOLS.md §3.3 Format C); never raises for bad input."""
        try:
            data = json.loads(body)  # bytes: UTF-8/16/32, a UTF-8 BOM allowed
        except RecursionError:  # hostile nesting, [[[[…
            parsed.errors.append("JSON nested too deeply")
            return
        except ValueError as exc:  # malformed, invalid UTF-8, an integer over 4,300 digits
            parsed.errors.append(f"unreadable JSON: {str(exc)[:200]}")
            return
        if isinstance(data, dict):
            self._read_v2(data, parsed, "v2 postback")
        elif isinstance(data, list):
            if not data:
                parsed.notes.append("empty JSON array")
            for n, item in enumerate(data):
                if isinstance(item, dict):
                    self._read_v2(item, parsed, f"v2 postback {n}")
                else:  # the type only: a repr of a deeply nested item could itself recurse
                    parsed.errors.append(f"v2 postback {n} is a JSON {_json_type(item)}, "
                                         f"not an object")
        else:
            parsed.errors.append(f"a JSON {_json_type(data)}, not a postback object")

    def _read_v2(self, item: dict[str, Any], parsed: ParsedCallback, where: str) -> None:
        fields = {key.lower(): value for key, value in item.items()}
        origin = (_json_text(fields.get("origin")) or "SMS_MT").upper()
        code = (_json_text(fields.get("code")) or "").upper()
        text = _json_text(fields.get("status"))
        tracking_id = _json_text(fields.get("tracking-id"))
        if origin != "SMS_MT" or (code and (not code.startswith(("N2", "E2")) or code == "N211")):
            parsed.notes.append(f"ignored {origin} {code or 'without code'}")
            return
        if not tracking_id:
            parsed.errors.append(f"{where} ({code or 'no code'}) without tracking-id")
            return
        if code:
            status = _code_status(code, text)
        elif text:
            status = V2_STATUS_MAP.get(text.lower(), Status.UNKNOWN)
        else:
            parsed.errors.append(f"{where} for {tracking_id} without code or status")
            return
        raw_status = f"{code} {text}" if code and text else code or text or ""
        if code:  # as for the XML forms: the E-code is the error
            error_code = code if code.startswith("E") else None
        else:  # the v2 word alone: a failure keeps it as its error
            error_code = None if status in (Status.SENT, Status.DELIVERED) else raw_status
        stamp = _json_text(fields.get("timestamp"))
        parsed.receipts.append(self._receipt(tracking_id, status, raw_status, error_code, None,
                                             stamp))

    @staticmethod
    def _xml_bytes(request: CallbackRequest) -> bytes:
        if "form-urlencoded" in request.content_type or request.body.startswith(b"xml="):
            values = request.form().get("xml")
            if values:
                return values[0]
        return request.body

    def _read_postback(self, el: Element, parsed: ParsedCallback) -> None:
        body = safexml.find_child(el, "BODY")
        fields = body if body is not None else el  # NOTIFICATION nests its fields in BODY
        origin = (safexml.find_text(el, "ORIGIN") or "SMS_MT").upper()
        code = (safexml.find_text(el, "CODE") or "").upper()
        tracking_id = safexml.find_text(fields, "TRACKINGID")
        if origin != "SMS_MT" or not code.startswith(("N2", "E2")) or code == "N211":
            parsed.notes.append(f"ignored {origin} {code or 'without CODE'}")
            return
        if not tracking_id:
            parsed.errors.append(f"{code} postback without TRACKINGID")
            return
        status, raw_status, error_code, detail = self._classify(el, fields, code)
        stamp = safexml.find_text(fields, "TIMESTAMP") or safexml.attr(el, "CREATED")
        parsed.receipts.append(self._receipt(tracking_id, status, raw_status, error_code,
                                             detail, stamp))

    def _receipt(self, tracking_id: str, status: Status, raw_status: str,
                 error_code: str | None, detail: str | None, stamp: str | None) -> Receipt:
        """One postback's receipt, XML or v2 JSON alike."""
        return Receipt(
            provider=self.slug,
            status=status,
            provider_message_id=tracking_id,
            raw_status=raw_status,
            error_code=error_code,
            detail=detail,
            occurred_at=parse_timestamp(stamp),
            # TRACKINGID is "temporary" (Appendix A) and may be reused: the provider's time
            # keeps a later message's reports apart from an earlier one's, while a resent copy
            # of one report is the same.
            dedupe_key=f"{tracking_id}|{raw_status}|{stamp or ''}",
        )

    def _classify(self, el: Element, fields: Element, code: str
                  ) -> tuple[Status, str, str | None, str | None]:
        """(status, raw status, error code, detail) for one postback."""
        legacy = safexml.find_child(fields, "STATUS")
        if legacy is not None and safexml.attr(legacy, "PROTOCOL") is not None:
            protocol = safexml.attr(legacy, "PROTOCOL") or ""
            value = safexml.attr(legacy, "STATUS") or ""
            status = protocol_status(protocol, value)
            raw = f"{code} P{protocol}:{value}"
            failed = status not in (Status.DELIVERED, Status.SENT)
            return status, raw, f"P{protocol}:{value}" if failed else None, None
        text = safexml.find_text(el, "STATUS")
        status = _code_status(code, text)
        details = safexml.find_text(el, "STATUSDETAILS")
        raw = f"{code} {text}" if text else code
        error = code if code.startswith("E") else None
        return status, raw, error, details


def _code_status(code: str, text: str | None) -> Status:
    """A postback CODE's status (Appendix D); E202 refined by its status text, whose last word
    says how it failed ("Message Sent/Expired"; v2's plain "Rejected")."""
    status = STATUS_MAP.get(code, Status.UNKNOWN)
    if code == "E202" and text:
        suffix = text.rsplit("/", 1)[-1].replace(" ", "").lower()
        status = _E202_SUFFIX.get(suffix, Status.UNDELIVERED)
    return status


def _is_json(request: CallbackRequest) -> bool:
    """A v2 JSON postback: the body opens an object or array, or (opening with neither that
    nor XML) the content type says JSON. Form fields and XML go the XML way."""
    start = request.body.lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()[:1]
    if start in (b"{", b"["):
        return True
    if start == b"<":
        return False
    return "json" in request.content_type.lower()


def _json_type(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return "null" if value is None else "boolean"
    return {str: "string", int: "number", float: "number", list: "array"}.get(type(value),
                                                                            "value")


def _json_text(value: Any) -> str | None:
    """A JSON string field, stripped (an integer as its digits); anything else is absent."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # json.loads already refused integers past 4,300 digits
    return None


def _name(el: Element) -> str:
    return el.tag.rsplit("}", 1)[-1].upper()


def _postbacks(root: Element) -> list[Element]:
    """Every postback element: the root itself, or those under a wrapper (any depth)."""
    found: list[Element] = []
    stack = [root]
    while stack:
        el = stack.pop()
        if _name(el) in ("NOTIFICATION", "POSTBACK") and safexml.find_child(el, "CODE") is not None:
            found.append(el)
        else:
            stack.extend(reversed(list(el)))
    return found
