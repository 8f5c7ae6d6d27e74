"""How each provider calls our callback endpoint: the table behind tests/test_provider_endpoints.py.

One `Case` per slug of the provider registry (`tracker.providers.PROVIDERS`): the provider's
settings table (it holds the secret path token, the only credential every provider sends),
the HTTP methods and content type it calls back with, the shape of its message ids, and how to
build one of its receipts for a provider message id and/or our reference, with the status
`sent` or `delivered`. Bodies are the published samples (tests/samples, copied from
shared/providers/samples; PROTOCOLS.md) with only the id, status and time changed; the `sent`
receipt of every provider is timed before its `delivered` one.

A provider added to the registry without a case here fails the suite, by name.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from xml.sax.saxutils import escape

from standins.alphasms import http_status

SAMPLES = Path(__file__).resolve().parent / "samples"
STATUSES = ("sent", "delivered")  # what a case can build; `sent` happened first


def sample(name: str) -> bytes:
    """One published sample, as stored."""
    return (SAMPLES / name).read_bytes()


@dataclass(frozen=True)
class Call:
    """One HTTP request as the provider makes it, to `/callbacks/<slug>/<token>` + `query`."""

    method: str
    body: bytes = b""
    content_type: str | None = None
    query: dict[str, str] = field(default_factory=dict)


# build(provider message id, our reference or None, status, method) -> (body, query fields)
Builder = Callable[[str, str | None, str, str], tuple[bytes, dict[str, str]]]


@dataclass(frozen=True)
class Case:
    """The wire details of one provider's callbacks."""

    settings: dict[str, Any]  # [providers.<slug>]; `callback_token` is the path token
    methods: tuple[str, ...]  # every method the provider calls back with
    content_type: str  # of a body-carrying callback
    ids: str  # a provider message id, from the message number `n`
    build: Builder

    @property
    def token(self) -> str:
        """The secret path token."""
        return self.settings["callback_token"]

    @property
    def body_method(self) -> str:
        """The method that carries a body (for size and cut-off cases)."""
        return next(m for m in self.methods if m != "GET")

    def message_id(self, n: int) -> str:
        """The provider message id of our n-th message, in the provider's own shape."""
        return self.ids.format(n=n)

    def receipt(self, status: str, *, pmid: str, reference: str | None = None,
                method: str | None = None) -> Call:
        """A receipt reporting `status` for the message with this provider id (and reference,
        for providers whose receipts echo it; None = a receipt for no message of ours)."""
        assert status in STATUSES, status
        method = method or self.body_method
        body, query = self.build(pmid, reference, status, method)
        return Call(method, body, self.content_type if body else None, query)


# -- fake: JSON `{"id", "status"}` test callbacks (README, tracker/providers/fake.py) ----------


def _fake(pmid: str, _reference: str | None, status: str, _method: str
          ) -> tuple[bytes, dict[str, str]]:
    return json.dumps({"id": pmid, "status": status}).encode(), {}


# -- skycore: the <POSTBACK> samples, N201 at 05:41:08 and N202 at 05:41:15 (§3.3) -------------

_SKYCORE_SAMPLES = {"sent": "skycore-postback-n201-1.xml",
                    "delivered": "skycore-postback-n202-1.xml"}
_TRACKINGID = re.compile(rb"<TRACKINGID>[^<]*</TRACKINGID>")


def _skycore(pmid: str, _reference: str | None, status: str, _method: str
             ) -> tuple[bytes, dict[str, str]]:
    element = b"<TRACKINGID>" + escape(pmid).encode() + b"</TRACKINGID>"
    document = _TRACKINGID.sub(lambda _m: element, sample(_SKYCORE_SAMPLES[status]), count=1)
    return document, {}


# -- mobizon: the sms-delivery-report webhook sample (§1.4), unsigned (no webhook_secret) --------

_MOBIZON = {  # status -> (Mobizon status, statusUpdateTs, eventCreateTs)
    "sent": ("ACCEPTD", "2026-01-15 11:41:08", "2026-01-15 11:41:28"),
    "delivered": ("DELIVRD", "2026-01-15 11:42:08", "2026-01-15 11:42:28"),
}


def _mobizon(pmid: str, _reference: str | None, status: str, _method: str
             ) -> tuple[bytes, dict[str, str]]:
    code, updated, created = _MOBIZON[status]
    event = json.loads(sample("mobizon-webhook-sms-delivery-report-1.json"))
    del event["sign"]  # "Without a secret there is no sign"
    # eventId is one per report, repeated only by Mobizon's retries of that report.
    event["eventId"] = int(hashlib.sha256(f"{pmid}|{code}".encode()).hexdigest()[:12], 16)
    event["eventCreateTs"] = created
    number = pmid.isascii() and pmid.isdigit() and len(pmid) < 16
    event["data"].update(messageId=int(pmid) if number else pmid, status=code,
                         statusUpdateTs=updated)
    return json.dumps(event, indent=2).encode(), {}


# -- mobivate: the Delivery Receipt Notification sample (§2.3); clientReference = ours -----------

_MOBIVATE = {  # status -> (status, statusCode, created)
    "sent": ("ACCEPTED", 2, "2023-07-28T03:23:22.000+00:00"),
    "delivered": ("DELIVERED", 1, "2023-07-28T03:23:40.000+00:00"),
}


def _mobivate(pmid: str, reference: str | None, status: str, _method: str
              ) -> tuple[bytes, dict[str, str]]:
    name, code, created = _MOBIVATE[status]
    receipt = json.loads(sample("mobivate-dlr-webhook-1.json"))
    receipt.update(deliveryMessageId=pmid, clientReference=reference, status=name,
                   statusCode=code, created=created)
    return json.dumps(receipt, indent=3).encode(), {}


# -- alphasms: the per-message hook, `?ref=` ours; the body is undocumented (§4.4), so http.php's
# status fields (`id status code status_time`), in the query (GET) or as form fields (POST) ------

_ALPHASMS = {"sent": 2, "delivered": 3}  # http.php status codes
_ALPHASMS_T0 = dt.datetime(2024, 11, 11, 10, 0, tzinfo=dt.UTC)


def _alphasms(pmid: str, reference: str | None, status: str, method: str
              ) -> tuple[bytes, dict[str, str]]:
    code = _ALPHASMS[status]
    fields = http_status(pmid, code, _ALPHASMS_T0 + dt.timedelta(seconds=10 * code))
    query = {"ref": reference} if reference else {}
    if method == "GET":
        return b"", {**query, **fields}
    return urlencode(fields).encode(), query


CASES: dict[str, Case] = {
    "fake": Case(settings={"callback_token": "fake-token"}, methods=("POST",),
                 content_type="application/json", ids="fake-{n}", build=_fake),
    "skycore": Case(settings={"api_key": "test-api-key", "shortcode": "60856",
                              "callback_token": "sky-secret-token"},
                    methods=("POST",), content_type="text/xml", ids="U01TXz{n:06d}",
                    build=_skycore),
    "mobizon": Case(settings={"api_key": "kz0123456789abcdef0123456789abcdef01234567",
                              "callback_token": "mz-token"},
                    methods=("POST",), content_type="application/json", ids="1692754{n:02d}",
                    build=_mobizon),
    "mobivate": Case(settings={"api_key": "mv-key", "base_url": "http://127.0.0.1:9",
                               "sender": "ACME", "callback_token": "mv-token"},
                     methods=("POST",), content_type="application/json",
                     ids="9A85B95E0A000A9D2FBD4671{n:08X}", build=_mobivate),
    "alphasms": Case(settings={"api_key": "al-key", "sender": "ACME",
                               "callback_token": "al-token"},
                     methods=("GET", "POST"), content_type="application/x-www-form-urlencoded",
                     ids="845233{n:02d}", build=_alphasms),
}
