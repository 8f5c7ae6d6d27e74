"""AlphaSMS (seed 004, PROTOCOLS.md §4): `json.php` (default) or plain-text `http.php`, a
per-message `hook`, polling.

Send: by default through `/api/json.php` (§4.3): up to JSON_BATCH messages per request, each
with our numeric message id, `sms_lifetime` and the `hook` URL, and a `success` per item. The
`hook` is documented for json.php alone, so a message sent through http.php may never get one.
json.php authenticates with the API key only: an account configured with just `login` and
`password` (and no explicit `api`) sends through http.php, with a warning. `api = "http"` sends
through http.php always: `command=send` POSTed form-encoded to `/api/http.php` (the seed allows
GET or POST, and POST keeps the key and the text out of URL logs). Its answer is `key:value`
tokens, `id:84523377 sms_count:1` or `errors:…`; SDKs show them separated by spaces, newlines or
commas (§4.2), so tokens are found by their known keys, and a value may contain spaces. http.php
has no per-message lifetime, so `validity` is not sent there; `ask_date` is never sent (the
core schedules messages itself).

Status push: the `hook` payload is documented nowhere (§4.4, open question 1). Each message's
hook URL therefore carries the callback token in its path (checked by the core) and our reference
in `?ref=` (correlation), so a hook is authenticated and matched whatever its body looks like.
The body is read as JSON, XML, form fields or query parameters, and the status is taken from any
of the field names the three published vocabularies use: http.php `code`/`status`, the JSON
API's status names, the XML API's numeric codes. Polling `command=receive&id=` (one id per
request, http.php with the key or login) backs this up.

Explanations: every documented status word, status code and send error text (§4.2-4.5) has
plain words for the dashboard (`explain`); a value not listed is shown raw.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from typing import Any
from urllib.parse import parse_qs, quote
from xml.etree.ElementTree import Element
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .. import safexml
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

log = logging.getLogger(__name__)

API_URL = "https://alphasms.ua/api/http.php"  # API_URL of the alphasms.ua build (§4.1)
JSON_BATCH = 50  # messages per json.php request (the docs set no limit; a modest body)
LIFETIME_MIN, LIFETIME_MAX = 3600, 259200  # sms_lifetime bounds, seconds (§4.3)

try:  # AlphaSMS is Ukrainian; its times without an offset are taken as Kyiv time [INF]
    PROVIDER_TZ: dt.tzinfo = ZoneInfo("Europe/Kyiv")
except ZoneInfoNotFoundError:  # no tz database on this host: standard time is close enough
    PROVIDER_TZ = dt.timezone(dt.timedelta(hours=2))

# http.php `command=receive` codes (docs/api/http/status.md, §4.5). Pending and Sending: the
# message is AlphaSMS's to deliver, i.e. accepted (our `queued` means not yet handed over).
HTTP_CODES: dict[str, Status] = {
    "0": Status.ACCEPTED,  # Pending
    "1": Status.ACCEPTED,  # Sending
    "2": Status.SENT,
    "3": Status.DELIVERED,
    "5": Status.EXPIRED,  # Out of touch (subscriber unreachable) [INF]
    "10": Status.CANCELED,  # Deleted: `command=delete` of a scheduled message answers it
    "50": Status.UNDELIVERED,  # Partially delivered [INF]
    "96": Status.UNDELIVERED,  # Network failure during SMS delivery
    "99": Status.REJECTED,  # Error in the number / Number not in service
    "116": Status.DELIVERED,  # Read (Viber only)
}
# What each code and word means, in plain words for the dashboard (`explain`). http.php codes
# (§4.5) first; the XML API's numbers (§4.5) share only 1 with them, and 1 means "not with the
# operator yet" in both.
HTTP_CODE_TEXTS = {
    "0": "pending at AlphaSMS, not sent yet",
    "1": "received by AlphaSMS and being sent (not with the operator yet)",
    "2": "sent to the operator; a delivery report may follow",
    "3": "delivered to the handset",
    "5": "subscriber out of touch (unreachable) until validity ran out",
    "10": "deleted at AlphaSMS before it was sent (a scheduled message canceled)",
    "50": "partially delivered: not every part of the message arrived",
    "96": "the network failed while delivering it",
    "99": "error in the number, or not in service",
    "116": "read by the recipient (Viber)",
}
# XML API codes: message statuses (message_status_codes.md) and errors. 200-212 are also the
# request-level errors, with other meanings for 201 and 202 (§4.5), so those say both.
XML_CODE_TEXTS = {
    "100": "scheduled at AlphaSMS for a later send (SCHEDULED)",
    "101": "sent to the operator, on its way to the handset (ENROUTE)",
    "102": "delivered to the handset (DELIVERED)",
    "103": "validity ran out before it could be delivered (EXPIRED)",
    "104": "deleted at AlphaSMS; it will not be delivered (DELETED)",
    "105": "the operator could not deliver it (UNDELIVERABLE)",
    "106": "marked read on the subscriber's behalf by the operator's customer service "
           "(ACCEPTED)",
    "107": "the operator reported no clear outcome (UNKNOWN)",
    "108": "rejected by the operator's delivery interface (REJECTED)",
    "109": "discarded by AlphaSMS, never sent (DISCARDED)",
    "110": "being sent by AlphaSMS (SENDING)",
    "111": "the recipient's operator is not supported; not billed (NOT_SUPPORTED)",
    "112": "the operator (Lifecell, Ukraine) does not accept this sender name "
           "(WRONG_ALPHANAME)",
    "113": "the operator (Lifecell, Ukraine) returned it: wrong sender name "
           "(WRONG_ALPHANAME_RETURNED)",
    "200": "unknown error at AlphaSMS (ERR_UNKNOWN)",
    "201": "AlphaSMS refused the message id (ERR_ID); for a whole request: a format error",
    "202": "the sender name was refused (ERR_SENDER); for a whole request: authorization "
           "failed (check api_key)",
    "203": "the recipient's number is not valid (ERR_RECIPIENT)",
    "204": "the text is empty or too long (ERR_LENGTH)",
    "205": "the AlphaSMS user account is disabled",
    "206": "billing problem on the AlphaSMS account, e.g. not enough money (ERR_BILLING)",
    "207": "a limit of the AlphaSMS account was exceeded (ERR_OVERLIMIT)",
    "208": "this message id was already used on the account (ERR_DUPLICATE)",
    "209": "the API is disabled on the AlphaSMS account",
    "210": "AlphaSMS does not accept requests from this IP address",
    "211": "AlphaSMS could not delete the message (ERR_DELETE)",
    "212": "too many requests: AlphaSMS throttled us, so it is sent again later",
}
CODE_TEXTS = {**XML_CODE_TEXTS, **HTTP_CODE_TEXTS}
# Status words (keys as `_word()` spells them): the JSON API's statuses, the XML API's names and
# the http.php texts (§4.5), then the send error texts (§4.2, §4.3) and this module's own codes.
WORD_TEXTS = {
    # JSON API statuses (references/message_statuses.md)
    "ACCEPTED": "marked read on the subscriber's behalf by the operator's customer service",
    "DELETED": "deleted at AlphaSMS; it will not be delivered",
    "DELIVERED": "delivered to the handset",
    "EXPIRED": "validity ran out before it could be delivered",
    "FILTERED": "blocked by a filter (text or recipient); not sent",
    "INVALID DESTINATION ADDRESS": "the recipient's number is not valid",
    "INVALID SOURCE ADDRESS": "the sender name is not valid",
    "NO ROUTE": "AlphaSMS has no route to the recipient's operator",
    "PARTIALLY DELIVERED": "partially delivered: not every part of the message arrived",
    "QUEUED": "in line for sending at AlphaSMS",
    "READ": "read by the recipient (Viber)",
    "REJECTED": "rejected by the operator's delivery interface",
    "REPLIED": "the recipient replied (Viber two-way)",
    "ROUTING": "AlphaSMS is choosing a route for it",
    "SIM FULL": "the recipient's SIM card memory is full",
    "UNDELIVERABLE": "the operator could not deliver it",
    "UNKNOWN": "the operator reported no clear outcome",
    # XML API names (message_status_codes.md)
    "SCHEDULED": XML_CODE_TEXTS["100"], "ENROUTE": XML_CODE_TEXTS["101"],
    "DISCARDED": XML_CODE_TEXTS["109"], "SENDING": "being sent by AlphaSMS",
    "NOT SUPPORTED": XML_CODE_TEXTS["111"], "WRONG ALPHANAME": XML_CODE_TEXTS["112"],
    "WRONG ALPHANAME RETURNED": XML_CODE_TEXTS["113"], "ERR UNKNOWN": XML_CODE_TEXTS["200"],
    "ERR ID": "AlphaSMS refused the message id (ERR_ID)",
    "ERR SENDER": "the sender name was refused (ERR_SENDER)",
    "ERR RECIPIENT": XML_CODE_TEXTS["203"], "ERR LENGTH": XML_CODE_TEXTS["204"],
    "ERR BILLING": XML_CODE_TEXTS["206"], "ERR OVERLIMIT": XML_CODE_TEXTS["207"],
    "ERR DUPLICATE": XML_CODE_TEXTS["208"], "ERR DELETE": XML_CODE_TEXTS["211"],
    # http.php texts (docs/api/http/status.md)
    "PENDING": HTTP_CODE_TEXTS["0"], "SENT": HTTP_CODE_TEXTS["2"],
    "OUT OF TOUCH": HTTP_CODE_TEXTS["5"],
    "NETWORK FAILURE DURING SMS DELIVERY": HTTP_CODE_TEXTS["96"],
    "ERROR IN THE NUMBER": "error in the number: it is not a valid recipient",
    "NUMBER NOT IN SERVICE": "the number is not in service",
    "READ (VIBER ONLY)": HTTP_CODE_TEXTS["116"],
    # send errors: http.php (§4.2), json.php (§4.3), Net::SMS::AlphaSMS's missing recipient
    "WRONG LOGIN/PASSWORD": "AlphaSMS refused our credentials: check api_key, or login and "
                            "password",
    "UNKNOWN COMMAND": "AlphaSMS did not understand the request (unknown command): an "
                       "integration fault, so the message fails over",
    "ACCESS DENIED": "json.php refused the API key (access denied): check api_key",
    "ERROR IN ALPHA NAME": "the sender name (alpha name) is wrong or not registered for this "
                           "account",
    "PLEASE ENTER VALID RECEIVER PHONE NUMBER": "the recipient's number is not valid",
    # this module's own codes for answers that leave the outcome open
    "UNREADABLE": "AlphaSMS's answer could not be read; it may have taken the message, so it "
                  "is not sent again",
    "NO ITEM": "json.php answered without this message; it may have taken it, so it is not "
               "sent again",
    "NO MSG ID": "json.php accepted it without a message id; it is not sent again",
}
# XML API message status codes (message_status_codes.md, §4.5).
XML_CODES: dict[str, Status] = {
    "1": Status.ACCEPTED, "100": Status.QUEUED, "101": Status.SENT, "102": Status.DELIVERED,
    "103": Status.EXPIRED, "104": Status.UNDELIVERED, "105": Status.UNDELIVERED,
    "106": Status.DELIVERED, "107": Status.UNKNOWN, "108": Status.REJECTED,
    "109": Status.FAILED, "110": Status.QUEUED, "111": Status.REJECTED, "112": Status.REJECTED,
    "113": Status.REJECTED, "200": Status.FAILED, "201": Status.REJECTED,
    "202": Status.REJECTED, "203": Status.REJECTED, "204": Status.REJECTED,
    "206": Status.FAILED, "207": Status.FAILED, "208": Status.REJECTED,
}
# A number in a hook: the http.php table (the API we send through) first. The two tables share
# only 1 (Sending / received), and both mean "not sent yet".
CODES: dict[str, Status] = {**XML_CODES, **HTTP_CODES}

# Status words, upper-cased with `_`/`-` as spaces: the JSON API names (message_statuses.md),
# the XML API names and the http.php texts (§4.5). DELETED is in the JSON and the http.php
# lists; the JSON mapping (undelivered) is used for the word, the http.php one for code 10.
STATUS_MAP: dict[str, Status] = {
    # SMPP ACCEPTD: "manually read on behalf of subscriber by customer service" [INF]
    "ACCEPTED": Status.DELIVERED,
    "DELETED": Status.UNDELIVERED, "DELIVERED": Status.DELIVERED, "EXPIRED": Status.EXPIRED,
    "FILTERED": Status.REJECTED, "INVALID DESTINATION ADDRESS": Status.REJECTED,
    "INVALID SOURCE ADDRESS": Status.REJECTED, "NO ROUTE": Status.FAILED,
    "PARTIALLY DELIVERED": Status.UNDELIVERED, "QUEUED": Status.QUEUED,
    "READ": Status.DELIVERED, "REJECTED": Status.REJECTED, "REPLIED": Status.DELIVERED,
    "ROUTING": Status.QUEUED, "SIM FULL": Status.UNDELIVERED,
    "UNDELIVERABLE": Status.UNDELIVERED, "UNKNOWN": Status.UNKNOWN,
    # XML API names
    "SCHEDULED": Status.QUEUED, "ENROUTE": Status.SENT, "DISCARDED": Status.FAILED,
    "SENDING": Status.QUEUED, "NOT SUPPORTED": Status.REJECTED,
    "WRONG ALPHANAME": Status.REJECTED, "WRONG ALPHANAME RETURNED": Status.REJECTED,
    "ERR UNKNOWN": Status.FAILED, "ERR ID": Status.REJECTED, "ERR SENDER": Status.REJECTED,
    "ERR RECIPIENT": Status.REJECTED, "ERR LENGTH": Status.REJECTED,
    "ERR BILLING": Status.FAILED, "ERR OVERLIMIT": Status.FAILED,
    "ERR DUPLICATE": Status.REJECTED,
    # http.php texts
    "PENDING": Status.QUEUED, "SENT": Status.SENT, "OUT OF TOUCH": Status.EXPIRED,
    "NETWORK FAILURE DURING SMS DELIVERY": Status.UNDELIVERED,
    "ERROR IN THE NUMBER": Status.REJECTED, "NUMBER NOT IN SERVICE": Status.REJECTED,
    "READ (VIBER ONLY)": Status.DELIVERED,
}

# Field names a hook may use [INF: §4.4 recommends id / msg_id / sms_id; the rest are the names
# AlphaSMS's own APIs use for a status and its time].
STATUS_FIELDS = ("xml_code", "code", "status_code", "status", "state", "sms_status",
                 "message_status", "dlr_status", "stat")
GATEWAY_ID_FIELDS = ("msg_id", "sms_id", "message_id", "gateway_id")
TIME_FIELDS = ("status_time", "date_completed", "status_date", "done_date", "timestamp", "time",
               "date")
DETAIL_FIELDS = ("error", "errors", "description", "reason", "type")
FAILED_STATUSES = frozenset({Status.UNDELIVERED, Status.EXPIRED, Status.REJECTED, Status.FAILED})

# Send errors: (status, permanent, provider_side). http.php answers with text only; the XML API's
# request- and message-level numbers (§4.5) are understood too, request level first where they
# collide (201, 202), since http.php sends carry no message id of ours.
REJECT = (Status.REJECTED, True, False)  # the request itself: number, sender, text, duplicate
ACCOUNT = (Status.FAILED, True, True)  # auth, credit, disabled, no route: fail over
RETRY = (Status.FAILED, False, True)  # throttled: the same provider, later
ERROR_CODES = {"200": ACCOUNT, "201": ACCOUNT, "202": ACCOUNT, "203": REJECT, "204": REJECT,
               "205": ACCOUNT, "206": ACCOUNT, "207": ACCOUNT, "208": REJECT, "209": ACCOUNT,
               "210": ACCOUNT, "212": RETRY}
# Checked in this order: "Not enough money to send the message" is an account problem.
ERROR_TEXTS = [
    (re.compile(r"throttl|too many|\brate\b|try (again )?later|temporar|unavailable|"
                r"internal"), RETRY),
    (re.compile(r"login|password|\bkey\b|auth|access denied|disabled|\bip\b|balance|money|"
                r"funds|credit|billing|tariff|over ?limit|payment"), ACCOUNT),
    # No route: another provider may reach the number, so fail over (common brief).
    (re.compile(r"route|routing|operator|direction|not supported|country"), ACCOUNT),
    (re.compile(r"phone|number|recipient|receiver|destination|\bto\b|sender|alpha.?name|\bfrom\b|"
                r"signature|length|too long|empty|duplicate|spam|stop.?word|forbidden|filter|"
                r"blocked|content"), REJECT),
]
NOT_FOUND = re.compile(r"not found|unknown (sms|message|id)", re.IGNORECASE)

# http.php answer keys; a value runs to the next known key (it may hold spaces and colons).
_TOKEN = re.compile(r"(?:^|(?<=[\s,;]))(id|sms_count|smd_count|errors?|status|code|status_time|"
                    r"balance|price|currency)[ \t]*:", re.IGNORECASE)
_KEY_ALIASES = {"error": "errors", "smd_count": "sms_count"}  # the docs' own typo (§4.2)
_REFERENCE = re.compile(r"[A-Za-z0-9_.\-]{1,32}")
_DATE_ONLY = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}")


def parse_answer(text: str) -> dict[str, list[str]]:
    """`id:1 sms_count:1`, one pair per line, or comma-separated -> {key: [values]}."""
    text = text.lstrip("\ufeff")
    found = list(_TOKEN.finditer(text))
    out: dict[str, list[str]] = {}
    for i, match in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(text)
        value = text[match.end():end].strip().rstrip(",;").strip()
        key = match.group(1).lower()
        out.setdefault(_KEY_ALIASES.get(key, key), []).append(value)
    return out


def classify_error(errors: list[str], raw: str) -> SendError:
    """The SendError for an `errors:` answer: request-side, account-side or throttled."""
    given = "; ".join(e for e in errors if e)
    text = given or "errors without text"
    number = re.match(r"\s*(\d{3})\b", given)
    kind = next((k for pattern, k in ERROR_TEXTS if pattern.search(given.lower())), None)
    if kind is None and number:
        kind = ERROR_CODES.get(number.group(1))
    # Unknown text ("Unknown command", a new message): our integration with this provider is
    # at fault, not the message, so another provider may well take it.
    status, permanent, provider_side = kind or ACCOUNT
    return SendError(f"AlphaSMS: {text}", permanent=permanent, status=status,
                     code=(number.group(1) if number else text)[:64], raw=raw,
                     provider_side=provider_side)


def _word(value: str) -> str:
    """A status word or error text as the tables spell it: `sim_full` -> `SIM FULL`."""
    return " ".join(value.upper().replace("_", " ").replace("-", " ").split())


def _is_number(value: str) -> bool:
    return value.isascii() and value.isdigit()  # not "²": int() refuses what isdigit() takes


def map_status(value: str, *, xml: bool = False) -> Status | None:
    """A status word or number from any AlphaSMS vocabulary, or None when not known."""
    value = value.strip()
    if _is_number(value):
        return (XML_CODES if xml else CODES).get(str(int(value)))
    return STATUS_MAP.get(_word(value))


def explain(value: str | None) -> str | None:
    """Plain words for a raw status or error code as this module stores it, or None.

    Raw statuses are a word (`SIM FULL`, `sim_full`), a code (`99`), a poll's code and text
    (`5 Out of touch`, `3 Доставлено`), a hook's fields joined (`200 DELIVERED`); error codes
    are a code, a word or a send error text, several joined by "; ". The words decide, then a
    leading code (as when the status was mapped); a number inside other text means nothing."""
    if not value or not value.strip():
        return None
    if whole := _explain_one(value):
        return whole
    meanings = (_explain_one(part) for part in value.split(";") if ";" in value)
    return "; ".join(dict.fromkeys(m for m in meanings if m)) or None


def _explain_one(value: str) -> str | None:
    value = value.strip()
    if _is_number(value):
        return CODE_TEXTS.get(str(int(value)))
    if found := WORD_TEXTS.get(_word(value)):
        return found
    first, _, rest = value.partition(" ")
    if _is_number(first) and rest.strip():
        return WORD_TEXTS.get(_word(rest)) or CODE_TEXTS.get(str(int(first)))
    return None


def parse_time(text: str | None) -> dt.datetime | None:
    """`2011-11-15T17:12:33+0200`, `2024/10/12 10:00:00` -> naive UTC; a bare date -> None
    (it cannot order two reports of one day)."""
    if not text or _DATE_ONLY.fullmatch(text.strip()):
        return None
    return parse_timestamp(text.strip().replace("/", "-"), PROVIDER_TZ)


def _dedupe(*parts: str | None) -> str:
    key = "|".join(p or "" for p in parts)
    # The event column holds 255 characters, the core adds "alphasms:".
    return key if len(key) <= 200 else "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _summary(fields: dict[str, str], limit: int = 500) -> str:
    text = " ".join(f"{k}={v}" for k, v in fields.items())
    return text if len(text) <= limit else text[:limit] + "…"


class AlphaSmsProvider(Provider):
    """AlphaSMS: `/api/json.php` (default) or `/api/http.php` to send, hooks, polling."""

    slug = "alphasms"
    name = "AlphaSMS"
    SETTINGS = {
        "base_url": Setting(str, default=API_URL),
        "api_key": Setting(str, secret=True),  # `key`; or login + password (seed 004)
        "login": Setting(str),
        "password": Setting(str, secret=True),  # sent as `pass`
        "sender": Setting(str, required=True),
        "callback_token": Setting(str, secret=True),  # unset = no hook, polling only
        # "json": json.php, up to JSON_BATCH messages per request, with sms_lifetime and the
        # hook (§4.3); found beside base_url. "http": http.php, one message per request, no
        # documented hook. Unset: "json", or "http" when there is no api_key (login only).
        "api": Setting(str),
    }
    EXPLANATIONS = {**CODE_TEXTS, **WORD_TEXTS}  # keys as `_word()` spells them
    STATUS_MAP = STATUS_MAP
    CALLBACK_METHODS = ("GET", "POST")  # the hook's method is not documented
    POLL_BATCH = 1  # `command=receive` takes one id

    @classmethod
    def validate(cls, config: dict[str, Any]) -> dict[str, Any]:
        """The base checks, and one way to authenticate."""
        out = super().validate(config)
        if not out.get("api_key") and not (out.get("login") and out.get("password")):
            raise ConfigError(f"providers.{cls.slug}.api_key: required (or login and password)")
        if not out["api"]:  # unset (or empty): json.php, which takes the API key only
            out["api"] = "json" if out.get("api_key") else "http"
        if out["api"] not in ("http", "json"):
            raise ConfigError(f'providers.{cls.slug}.api: "http" or "json", got {out["api"]!r}')
        if out["api"] == "json" and not out.get("api_key"):
            raise ConfigError(f"providers.{cls.slug}.api_key: json.php authenticates with the "
                              "API key only")
        return out

    def __init__(self, config: dict[str, Any], public_base_url: str) -> None:
        super().__init__(config, public_base_url)
        # json.php takes several messages per request: the dispatcher sends them together.
        self.SEND_BATCH = JSON_BATCH if self.config["api"] == "json" else 1
        if self.config["api"] == "http" and not config.get("api"):
            log.warning("providers.%s: no api_key, so messages go through http.php (login and "
                        "password), for which the delivery hook is not documented: statuses "
                        "may come from polling alone. Set api_key to send through json.php, or "
                        'api = "http" to keep http.php without this warning', self.slug)

    def explain(self, code: str | None) -> str | None:
        """Plain words for a raw status or error code (module function `explain`)."""
        return explain(code)

    @property
    def json_url(self) -> str:
        """json.php beside the configured http.php (or base_url itself if it names json.php)."""
        base = self.config["base_url"]
        return base[: -len("http.php")] + "json.php" if base.endswith("http.php") else base

    def callback_url(self, reference: str | None = None) -> str | None:
        """The hook URL: the token in the path, our reference in `?ref=`."""
        base = super().callback_url()
        if base is None or not reference:
            return base
        return f"{base}?ref={quote(reference, safe='')}"

    def _auth(self) -> dict[str, str]:
        # `version=http` is required by the seed; the newer docs dropped it, SDKs still send it.
        if self.config.get("api_key"):
            return {"version": "http", "key": self.config["api_key"]}
        return {"version": "http", "login": self.config["login"], "pass": self.config["password"]}

    # -- checking ------------------------------------------------------------------------

    def check(self) -> list[Finding]:
        """http.php `command=balance` (§4.2) with our credentials: an `errors:` line names what
        was refused; a balance means the host and the credentials are right."""
        response, problems = self.reach("POST", self.config["base_url"],
                                        data={**self._auth(), "command": "balance"})
        if response is None:
            return problems
        tokens = parse_answer(response.text)
        errors = tokens.get("errors") or []
        host = Finding("host", True, f"{self.config['base_url']} answers")
        if response.status_code >= 400 or (not errors and "balance" not in tokens):
            return [Finding("host", False, f"{self.config['base_url']} answered HTTP "
                                           f"{response.status_code}: {response.text[:100]!r}")]
        if errors:
            return [host, Finding("key", False, "; ".join(errors)[:300])]
        balance = " ".join(tokens["balance"] + tokens.get("currency", []))
        return [host, Finding("key", True, f"accepted (balance {balance})"),
                Finding("sender", None, "AlphaSMS has no documented way to check a sender "
                                        "without sending")]

    # -- sending -------------------------------------------------------------------------

    def send(self, message: OutboundMessage) -> SendResult:
        """POST `command=send` and read `id:…` or `errors:…` (json.php: a batch of one)."""
        if self.config["api"] == "json":
            [outcome] = self.send_batch([message])
            if isinstance(outcome, SendError):
                raise outcome
            return outcome
        fields = {
            **self._auth(),
            "command": "send",
            "from": message.sender or self.config["sender"],
            "to": wire_number(message.to, plus=False),  # international, digits only
            "message": message.text,
        }
        if message.callback_url:
            # Documented for the JSON API only (§4.4); polling covers an http.php that ignores it.
            fields["hook"] = message.callback_url
        response = self.request("POST", self.config["base_url"], data=fields)
        return self.read_send_answer(response.status_code, response.text,
                                     response.headers.get("location"))

    def send_batch(self, messages: list[OutboundMessage]) -> list[SendResult | SendError]:
        """json.php (§4.3): `{"auth", "data": [one "sms" item per message]}`; the answer has a
        request-level `success` and one item per message, each with its own `success`."""
        if self.config["api"] != "json":
            return super().send_batch(messages)
        items = [self._json_item(m) for m in messages]
        response = self.request("POST", self.json_url,
                                json={"auth": self.config["api_key"], "data": items})
        return self.read_batch_answer(response.status_code, response.content, response.text,
                                      [item["id"] for item in items])

    def _json_item(self, message: OutboundMessage) -> dict[str, Any]:
        if message.message_id is None:
            raise SendError("AlphaSMS json.php needs our numeric message id", permanent=True,
                            provider_side=True, code="NO_ID")
        lifetime = int(message.validity.total_seconds()) if message.validity else 172800
        item: dict[str, Any] = {
            "type": "sms",
            "id": message.message_id,  # "unique message identifier in the client system"
            "phone": int(wire_number(message.to, plus=False)),  # a number, as documented
            "sms_signature": message.sender or self.config["sender"],
            "sms_message": message.text,
            "sms_lifetime": min(max(lifetime, LIFETIME_MIN), LIFETIME_MAX),
        }
        if message.callback_url:
            item["hook"] = message.callback_url
        return item

    def read_batch_answer(self, http_status: int, content: bytes, raw: str,
                          ids: list[int]) -> list[SendResult | SendError]:
        """One outcome per id, in order: the item's `msg_id`, its own error, or unknown when
        the answer says nothing of it (the request as a whole may still have been taken)."""
        if not 200 <= http_status < 300:
            return [self._http_failure(http_status, raw)] * len(ids)
        try:
            data = json.loads(content)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("success"), bool):
            unknown = SendError(f"AlphaSMS json.php answer unreadable: {raw[:200]!r}",
                                permanent=False, provider_side=True, outcome_unknown=True,
                                code="UNREADABLE", raw=raw)
            return [unknown] * len(ids)
        if data["success"] is False:  # the whole request refused ("Access denied")
            return [classify_error([str(data.get("error") or "")], raw)] * len(ids)
        answers = [a for a in data.get("data") or [] if isinstance(a, dict)]
        by_id = {str((a.get("data") or {}).get("id")): a for a in answers
                 if isinstance(a.get("data"), dict) and "id" in a["data"]}
        outcomes: list[SendResult | SendError] = []
        for position, ident in enumerate(ids):
            answer = by_id.get(str(ident))
            if answer is None and not by_id and len(answers) == len(ids):
                answer = answers[position]  # items without ids: in the order sent
            outcomes.append(self._batch_item(answer, raw))
        return outcomes

    @staticmethod
    def _batch_item(answer: dict[str, Any] | None, raw: str) -> SendResult | SendError:
        if answer is None:
            return SendError("AlphaSMS json.php answered without this message", permanent=False,
                             provider_side=True, outcome_unknown=True, code="NO_ITEM", raw=raw)
        text = json.dumps(answer, ensure_ascii=False)
        inner = answer.get("data") if isinstance(answer.get("data"), dict) else {}
        gateway_id = inner.get("msg_id")
        if answer.get("success") is True and gateway_id not in (None, ""):
            return SendResult(provider_message_id=str(gateway_id)[:128], raw=text)
        if answer.get("success") is False:
            return classify_error([str(answer.get("error") or "")], text)
        return SendError("AlphaSMS json.php item without msg_id", permanent=False,
                         provider_side=True, outcome_unknown=True, code="NO_MSG_ID", raw=text)

    @staticmethod
    def _http_failure(http_status: int, raw: str) -> SendError:
        if http_status >= 500 or http_status == 429:
            return SendError(f"AlphaSMS HTTP {http_status}", permanent=False, provider_side=True,
                             code=f"HTTP_{http_status}", raw=raw)
        return SendError(f"AlphaSMS HTTP {http_status}; check base_url", permanent=True,
                         provider_side=True, code=f"HTTP_{http_status}", raw=raw)

    def read_send_answer(self, http_status: int, raw: str,
                         location: str | None = None) -> SendResult:
        """A SendResult for `id:…`; otherwise the SendError that says who is at fault."""
        tokens = parse_answer(raw)
        gateway_id = (tokens.get("id") or [""])[0]
        if gateway_id and 200 <= http_status < 300:
            # An id means the message exists there, even beside an `errors:` line: never resend.
            return SendResult(provider_message_id=gateway_id[:128], raw=raw)
        if "errors" in tokens:
            raise classify_error(tokens["errors"], raw)
        if http_status >= 500 or http_status == 429:
            raise SendError(f"AlphaSMS HTTP {http_status}", permanent=False, provider_side=True,
                            code=f"HTTP_{http_status}", raw=raw)
        if http_status >= 300:  # wrong base_url, a redirect to https, an IP filter: config
            where = f" to {location}" if location else ""
            raise SendError(f"AlphaSMS HTTP {http_status}{where}; check base_url",
                            permanent=True, provider_side=True, code=f"HTTP_{http_status}",
                            raw=raw)
        # It answered, but not in its format: it may have taken the message.
        raise SendError(f"AlphaSMS answer unreadable: {raw[:200]!r}", permanent=False,
                        provider_side=True, outcome_unknown=True, code="UNREADABLE", raw=raw)

    # -- hook callbacks ------------------------------------------------------------------

    def parse_callback(self, request: CallbackRequest) -> ParsedCallback:
        """Any hook shape: the reference from `?ref=`, the status from whatever field holds it.

        No status field at all is an error (nothing to record; the raw callback is kept for a
        replay once the real format is known). A status we cannot map is an UNKNOWN receipt
        with every field kept in its detail."""
        parsed = ParsedCallback()
        query = {k.lower(): v[-1] for k, v in request.query.items() if v}
        ref = query.pop("ref", None)
        if ref and "?" in ref:  # the caller appended "?a=b" to a URL that already had a query
            ref, extra = ref.split("?", 1)
            query.update({k.lower(): v[-1] for k, v in parse_qs(extra).items()})
            parsed.notes.append("hook parameters appended with a second '?'")
        if ref is not None and not _REFERENCE.fullmatch(ref.strip()):
            parsed.errors.append(f"ignored malformed ref {ref[:40]!r}")
            ref = None
        try:
            reports = _body_reports(request)
        except ValueError as exc:
            parsed.errors.append(f"body not understood: {exc}")
            reports = []
        ref = ref.strip() if ref else None
        for fields in reports or [{}]:
            merged = {**query, **fields}
            # A per-message hook carrying several reports: the ref cannot be every one's, so
            # those with their own gateway id are matched by it alone.
            mine = len(reports) < 2 or not any(merged.get(f) for f in GATEWAY_ID_FIELDS)
            self._hook_receipt(merged, ref if mine else None, parsed)
        return parsed

    def _hook_receipt(self, fields: dict[str, str], ref: str | None,
                      parsed: ParsedCallback) -> None:
        gateway_id = next((fields[f] for f in GATEWAY_ID_FIELDS if fields.get(f)), None)
        if gateway_id is None and ref is None:
            # An account-level hook URL has no ref; its `id` is then the only key (the http.php
            # id is the gateway's; we never send a client id).
            gateway_id = fields.get("id") or None
        if gateway_id is None and ref is None:
            parsed.errors.append(f"hook without ref or message id: {_summary(fields) or 'empty'}")
            return
        status, raw_status, code = _status_of(fields)
        if raw_status is None:
            parsed.errors.append(f"hook for {ref or gateway_id} without a status field: "
                                 f"{_summary(fields) or 'empty'}")
            return
        stamp = next((fields[f] for f in TIME_FIELDS if fields.get(f)), None)
        if status == Status.UNKNOWN:
            detail = _summary(fields)
        else:
            detail = "; ".join(fields[f] for f in DETAIL_FIELDS if fields.get(f)) or None
        parsed.receipts.append(Receipt(
            provider=self.slug,
            status=status,
            provider_message_id=gateway_id[:128] if gateway_id else None,
            reference=ref,
            raw_status=raw_status[:128],
            error_code=code[:64] if status in FAILED_STATUSES else None,
            detail=detail,
            occurred_at=parse_time(stamp),
            dedupe_key=_dedupe("hook", ref, gateway_id, raw_status, stamp),
        ))

    # -- polling -------------------------------------------------------------------------

    def poll(self, targets: list[PollTarget]) -> PollAnswer:
        """`command=receive&id=` per target; `errors:SMS not found` leaves it out."""
        answer = PollAnswer()
        raws: list[str] = []
        for target in targets:
            if not target.provider_message_id:
                answer.errors.append(f"{target.reference}: no AlphaSMS id to ask about")
                continue
            fields = {**self._auth(), "command": "receive", "id": target.provider_message_id}
            try:
                response = self.request("POST", self.config["base_url"], data=fields)
            except SendError as exc:
                raise PollError(exc.detail) from exc
            raws.append(response.text)
            if response.status_code != 200:
                raise PollError(f"AlphaSMS receive answered HTTP {response.status_code}: "
                                f"{response.text[:200]}")
            tokens = parse_answer(response.text)
            if "errors" in tokens:
                if any(NOT_FOUND.search(e) for e in tokens["errors"]):
                    continue
                raise PollError(f"AlphaSMS receive: {'; '.join(tokens['errors'])}")
            self._poll_receipt(target.provider_message_id, tokens, answer)
        answer.raw = "\n".join(raws)
        return answer

    def _poll_receipt(self, gateway_id: str, tokens: dict[str, list[str]],
                      answer: PollAnswer) -> None:
        code = (tokens.get("code") or [""])[0]
        text = (tokens.get("status") or [""])[0]
        if not code and not text:
            answer.errors.append(f"{gateway_id}: answer without status or code")
            return
        # The code decides: the text may be localized ("Доставлено" in an SDK's fixture).
        status = HTTP_CODES.get(code) if code else map_status(text)
        stamp = (tokens.get("status_time") or [None])[0]
        answer.receipts.append(Receipt(
            provider=self.slug,
            status=status or Status.UNKNOWN,
            provider_message_id=gateway_id,
            raw_status=f"{code} {text}".strip()[:128],
            error_code=(code or text)[:64] if status in FAILED_STATUSES else None,
            detail=(text or None) if status is None else None,
            occurred_at=parse_time(stamp),
            # Repeated polls of an unchanged message give the same key: no new event each time.
            dedupe_key=_dedupe("receive", gateway_id, code or text, stamp),
        ))


def _status_of(fields: dict[str, str]) -> tuple[Status, str | None, str]:
    """(status, raw status, its code) from whichever status fields are present.

    Words first: a number is ambiguous (`code` may be an HTTP-style 200) and words are not."""
    present = [(f, fields[f].strip()) for f in STATUS_FIELDS if fields.get(f, "").strip()]
    if not present:
        return Status.UNKNOWN, None, ""
    raw = " ".join(dict.fromkeys(value for _, value in present))
    words = [(f, v) for f, v in present if not (v.isascii() and v.isdigit())]
    numbers = [(f, v) for f, v in present if v.isascii() and v.isdigit()]
    for name, value in words + numbers:
        status = map_status(value, xml=name == "xml_code")
        if status is not None:
            # The code to report: a number that says the same thing, else the word.
            agreeing = (v for f, v in numbers if map_status(v, xml=f == "xml_code") == status)
            return status, raw, next(agreeing, value)
    return Status.UNKNOWN, raw, present[0][1]


def _body_reports(request: CallbackRequest) -> list[dict[str, str]]:
    """The body as flat field dicts (one per report): JSON, XML or form; [] when empty."""
    body = request.body.strip().removeprefix(b"\xef\xbb\xbf").strip()
    if not body:
        return []
    content_type = request.content_type.lower()
    if body[:1] in (b"{", b"[") or "json" in content_type:
        try:  # ValueError (and UnicodeDecodeError) on junk
            data = json.loads(body.decode("utf-8"))
        except RecursionError:  # hostile nesting, [[[[…
            raise ValueError("JSON nested too deeply") from None
        reports = _json_reports(data)
        if not reports:
            raise ValueError(f"JSON without an object: {body[:80]!r}")
        return reports
    if body[:1] == b"<" or "xml" in content_type:
        try:
            root = safexml.parse(body)
        except safexml.XMLRefused as exc:
            raise ValueError(str(exc)) from exc
        return _xml_reports(root)
    text = body.decode("utf-8", "replace")
    if "=" not in text:
        raise ValueError(f"neither JSON, XML nor form fields: {body[:80]!r}")
    return [{k.lower(): v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}]


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 123456789.0 is the id 123456789
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _json_reports(data: Any, outer: dict[str, str] | None = None) -> list[dict[str, str]]:
    """Flatten JSON: an object, a list of them, or the API envelope `{"data": …}` at any depth
    (the JSON status answer nests twice); inner fields win over outer ones."""
    if isinstance(data, list):
        return [r for item in data for r in _json_reports(item, outer)]
    if not isinstance(data, dict):
        return []
    fields = dict(outer or {})
    for key, value in data.items():
        text = _scalar(value)
        if text is not None:
            fields[str(key).lower()] = text
    inner = data.get("data")
    if isinstance(inner, dict | list):
        return _json_reports(inner, fields) or [fields]
    return [fields]


def _xml_reports(root: Element) -> list[dict[str, str]]:
    """Each `<msg …>CODE</msg>` (the XML API's shape) or else the root: attributes and the
    text of leaf children; a msg's own numeric text is an XML API status code."""
    def name(el: Element) -> str:
        return el.tag.rsplit("}", 1)[-1].lower() if isinstance(el.tag, str) else ""

    elements = [el for el in root.iter() if name(el) == "msg"] or [root]
    reports = []
    for el in elements:
        fields = {k.rsplit("}", 1)[-1].lower(): v for k, v in el.attrib.items()}
        for child in el:
            if len(child) == 0 and (child.text or "").strip():
                fields.setdefault(name(child), (child.text or "").strip())
        own = (el.text or "").strip()
        if own.isascii() and own.isdigit() and len(el) == 0:
            fields["xml_code"] = own
        reports.append(fields)
    return reports
