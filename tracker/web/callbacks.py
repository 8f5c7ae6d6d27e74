"""`POST /callbacks/<provider>/<token>`: authenticate, store raw, then parse and correlate.

The raw callback is committed in the same transaction as its events, before the answer, so
anything acknowledged is stored. Anything stored gets 200 (Skycore accepts exactly 200), with a
verdict; a store that fails answers 503 + Retry-After so the provider retries.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from .. import correlation
from ..db import UNAVAILABLE_ERRORS, execute, write_tx
from ..models import utcnow
from ..providers.base import CallbackRequest, ParsedCallback, Provider
from .security import csrf

bp = Blueprint("callbacks", __name__)
csrf.exempt(bp)
log = logging.getLogger(__name__)

_REDACTED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
_INSERT_CALLBACK = (
    "INSERT INTO callback (provider, method, path, query, headers, body, remote_addr,"
    " received_at, verdict, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)


def _plain(text: str, status: int, **headers: str) -> Response:
    return Response(text + "\n", status=status, mimetype="text/plain", headers=headers)


@bp.route("/callbacks/<provider>/<token>", methods=["GET", "POST"])
def receive(provider: str, token: str) -> Response:
    """Store one provider callback and apply its receipts."""
    handler: Provider | None = current_app.extensions["providers"].get(provider)
    if handler is None or not handler.token_matches(token):
        return _plain("not found", 404)  # same answer for unknown provider and wrong token
    if request.method not in handler.CALLBACK_METHODS:
        return _plain("method not allowed", 405, Allow=", ".join(handler.CALLBACK_METHODS))
    body = _read_body(current_app.config["TRACKER"]["callback_max_bytes"])
    if body is None:
        return _plain("request body too large", 413)
    raw = CallbackRequest(method=request.method, content_type=request.content_type or "",
                          query=request.args.to_dict(flat=False), body=body,
                          headers={k.lower(): v for k, v in request.headers.items()})
    try:
        verdict = _store_and_apply(provider, raw, handler.parse_callback(raw))
    except UNAVAILABLE_ERRORS as exc:
        log.warning("callback from %s not stored: %s", provider, exc)
        return _plain("temporarily unavailable, retry later", 503, **{"Retry-After": "30"})
    except Exception:
        log.exception("callback from %s: processing failed", provider)
        try:
            row = _callback_row(provider, raw, utcnow())
            with write_tx():
                _insert_callback(row, correlation.Verdict.ERROR, "processing failed; replay it")
        except Exception:
            return _plain("temporarily unavailable, retry later", 503, **{"Retry-After": "30"})
        verdict = correlation.Verdict.ERROR
    return _plain(f"OK {verdict}", 200)


def _read_body(limit: int) -> bytes | None:
    """The body, or None past `limit` bytes; chunked bodies are measured, not trusted."""
    if request.content_length is not None and request.content_length > limit:
        return None
    # Werkzeug truncates a chunked body at max_content_length without an error: read one byte
    # more than allowed and refuse when it is there.
    request.max_content_length = limit + 1
    try:
        body = request.get_data(cache=True)
    except RequestEntityTooLarge:
        return None
    return None if len(body) > limit else body


def _store_and_apply(provider: str, raw: CallbackRequest, parsed: ParsedCallback) -> str:
    """One write transaction: the raw callback, its receipts' events and status changes."""
    received_at = utcnow()
    row = _callback_row(provider, raw, received_at)  # built before the writer lock is taken
    detail = "; ".join(parsed.errors + parsed.notes) or None
    receipts = parsed.receipts
    with write_tx():
        # A lone receipt (the usual case) is matched first, so the callback is stored with its
        # verdict in one INSERT; a batch is stored, applied in order, then given its verdict.
        first = correlation.match(receipts[0]) if len(receipts) == 1 else None
        if first is not None:
            expected = first.expected
        elif receipts:
            expected = correlation.Verdict.PENDING
        else:
            expected = correlation.Verdict.INVALID if parsed.errors else correlation.Verdict.IGNORED
        callback_id = _insert_callback(row, expected, detail)
        if first is not None:
            outcomes = [correlation.apply(first, source="callback", callback_id=callback_id,
                                          received_at=received_at)]
        else:
            outcomes = [correlation.apply_receipt(r, source="callback", callback_id=callback_id,
                                                  received_at=received_at) for r in receipts]
        verdict = correlation.callback_verdict(outcomes) if receipts else expected
        if verdict != expected:  # a concurrent writer got between match and apply
            execute("UPDATE callback SET verdict = ? WHERE id = ?", (verdict.value, callback_id))
    return verdict.value


def _callback_row(provider: str, raw: CallbackRequest, received_at: dt.datetime) -> tuple:
    """The raw request as stored; the secret token never reaches the database."""
    headers = [[k, "[redacted]" if k.lower() in _REDACTED_HEADERS else v]
               for k, v in request.headers.items()]
    path = request.path.rsplit("/", 1)[0] + "/***"
    return (provider, request.method, path, request.query_string.decode("latin-1"),
            json.dumps(headers), raw.body, request.remote_addr, received_at)


def _insert_callback(row: tuple, verdict: str, detail: str | None) -> int:
    """INSERT the raw request (inside the caller's write transaction)."""
    return execute(_INSERT_CALLBACK, (*row, verdict, detail)).fetchone()[0]
