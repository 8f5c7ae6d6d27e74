"""`POST /callbacks/<provider>/<token>`: authenticate, store raw, then parse and correlate.

The raw callback is committed in the same transaction as its events, before the answer, so
anything acknowledged is stored. Anything stored gets 200 (Skycore accepts exactly 200), with a
verdict; a store that fails answers 503 + Retry-After so the provider retries.

This endpoint is a small WSGI application in front of Flask, not a Flask view: providers post
at the highest rate of any client, and Flask's per-request machinery (session, CSRF and login
hooks, routing) cost as much CPU as the whole bare request while serving none of it here.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Request, Response

from .. import correlation, ingest
from ..db import UNAVAILABLE_ERRORS, db, is_sqlite, write_tx
from ..models import utcnow
from ..providers.base import CallbackRequest, ParsedCallback, Provider, without_nul

PREFIX = "/callbacks/"
log = logging.getLogger(__name__)

_REDACTED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
_SECURITY_HEADERS = [("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-store")]


def init_app(app: Flask) -> None:
    """Serve PREFIX before Flask sees the request; everything else goes on to Flask."""
    app.wsgi_app = CallbackEndpoint(app, app.wsgi_app)  # type: ignore[method-assign]


class CallbackEndpoint:
    """WSGI middleware answering /callbacks/<provider>/<token>."""

    def __init__(self, app: Flask, next_app: Callable[..., Iterable[bytes]]) -> None:
        self.next_app = next_app
        self.providers: dict[str, Provider] = app.extensions["providers"]
        self.limit: int = app.config["TRACKER"]["callback_max_bytes"]

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        if not environ.get("PATH_INFO", "").startswith(PREFIX):
            return self.next_app(environ, start_response)
        return self.receive(Request(environ))(environ, start_response)

    def receive(self, request: Request) -> Response:
        """Store one provider callback and apply its receipts."""
        parts = request.path[len(PREFIX):].split("/")
        handler = self.providers.get(parts[0]) if len(parts) == 2 else None
        if handler is None or not handler.token_matches(parts[1]):
            return _plain("not found", 404)  # same answer for unknown provider and wrong token
        if request.method not in handler.CALLBACK_METHODS:
            return _plain("method not allowed", 405, Allow=", ".join(handler.CALLBACK_METHODS))
        body = _read_body(request, self.limit)
        if body is None:
            return _plain("request body too large", 413)
        if len(body) < (request.content_length or 0) or (
                not body and request.content_length is None
                and "chunked" in request.headers.get("Transfer-Encoding", "").lower()):
            # The connection ended before the body did: what came may look complete (a
            # whole XML postback inside a longer declared body) but is not what was sent.
            log.warning("callback from %s cut off after %d bytes (Content-Length %s); not stored",
                        handler.slug, len(body), request.content_length)
            return _plain("request body shorter than its Content-Length", 400)
        raw = CallbackRequest(method=request.method, content_type=request.content_type or "",
                              query=request.args.to_dict(flat=False), body=body,
                              headers={k.lower(): v for k, v in request.headers.items()})
        try:
            db.connect(reuse_if_open=True)
            return _acknowledge(handler.slug, request, raw, handler)
        except UNAVAILABLE_ERRORS as exc:
            log.warning("callback from %s not stored: %s", handler.slug, exc)
            return _plain("temporarily unavailable, retry later", 503, **{"Retry-After": "30"})
        except Exception:  # not even the raw callback could be stored: the sender must retry
            log.exception("callback from %s not stored", handler.slug)
            return _plain("temporarily unavailable, retry later", 503, **{"Retry-After": "30"})
        finally:
            if not is_sqlite() and not db.is_closed():
                db.close()  # Postgres: back to the pool. SQLite keeps its per-thread connection.


def _acknowledge(provider: str, request: Request, raw: CallbackRequest,
                 handler: Provider) -> Response:
    problem = handler.verify(raw)
    if problem:  # kept (a wrong secret on our side can be fixed, then the callback replayed)
        row = _callback_row(provider, request, raw, utcnow())
        with write_tx():
            ingest.insert_callback(row, correlation.Verdict.UNAUTHORIZED, problem)
        log.warning("callback from %s failed its signature check: %s", provider, problem)
        return _plain(f"OK {correlation.Verdict.UNAUTHORIZED.value}", 200)
    try:
        verdict = _store_and_apply(provider, request, raw, handler.parse_callback(raw))
    except UNAVAILABLE_ERRORS:
        raise
    except Exception:
        log.exception("callback from %s: processing failed", provider)
        row = _callback_row(provider, request, raw, utcnow())
        with write_tx():
            ingest.insert_callback(row, correlation.Verdict.ERROR, "processing failed; replay it")
        verdict = correlation.Verdict.ERROR.value
    return _plain(f"OK {verdict}", 200)


def _plain(text: str, status: int, **headers: str) -> Response:
    response = Response(text + "\n", status=status, mimetype="text/plain", headers=headers)
    response.headers.extend(_SECURITY_HEADERS)
    return response


def _read_body(request: Request, limit: int) -> bytes | None:
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
    except Exception:  # the connection broke mid-body (gunicorn's NoMoreData, a reset, …)
        return b""  # shorter than its Content-Length, or than any body: refused, never stored
    return None if len(body) > limit else body


def _store_and_apply(provider: str, request: Request, raw: CallbackRequest,
                     parsed: ParsedCallback) -> str:
    """Store the raw callback with its receipts' events and status changes, atomically."""
    received_at = utcnow()
    row = _callback_row(provider, request, raw, received_at)  # built before the lock is taken
    detail = without_nul("; ".join(parsed.errors + parsed.notes)) or None
    receipts = parsed.receipts
    if len(receipts) == 1:  # the usual case: matched outside the write transaction
        found = correlation.match(receipts[0])
        return ingest.store_and_apply(row, detail, found, received_at).value
    # A batch (or nothing understood): stored, applied in order, then given its verdict.
    with write_tx():
        if receipts:
            expected = correlation.Verdict.PENDING
        else:
            expected = correlation.Verdict.INVALID if parsed.errors else correlation.Verdict.IGNORED
        callback_id = ingest.insert_callback(row, expected, detail)
        outcomes = [correlation.apply_receipt(r, source="callback", callback_id=callback_id,
                                              received_at=received_at) for r in receipts]
        verdict = correlation.callback_verdict(outcomes) if receipts else expected
        if verdict != expected:  # a batch's verdict is known once its receipts are applied
            ingest.set_verdict(callback_id, verdict)
    return verdict.value


def _callback_row(provider: str, request: Request, raw: CallbackRequest,
                  received_at: dt.datetime) -> tuple:
    """The raw request as stored; the secret token never reaches the database."""
    headers = [[k, "[redacted]" if k.lower() in _REDACTED_HEADERS else v]
               for k, v in request.headers.items()]
    path = f"/callbacks/{provider}/***"
    return (provider, request.method, path, request.query_string.decode("latin-1"),
            json.dumps(headers), raw.body, request.remote_addr, received_at)
