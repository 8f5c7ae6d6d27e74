"""`POST /callbacks/<provider>/<token>`: the front door of the intake (tracker.intake).

This endpoint checks the token, the method and the size, and maps what the intake did to an
answer: anything stored gets 200 (Skycore accepts exactly 200) with its verdict; a store that
fails answers 503 + Retry-After so the provider retries. Verifying, storing, parsing and
correlating are the intake's.

It is a small WSGI application in front of Flask, not a Flask view: providers post at the
highest rate of any client, and Flask's per-request machinery (session, CSRF and login hooks,
routing) cost as much CPU as the whole bare request while serving none of it here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Request, Response

from .. import callback_access, intake, metrics
from ..db import UNAVAILABLE_ERRORS, db, is_sqlite
from ..models import utcnow
from ..providers.base import CallbackRequest, Provider

PREFIX = "/callbacks/"
log = logging.getLogger(__name__)

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
        started = time.perf_counter()
        response = self.receive(Request(environ))
        _count(self.providers, environ["PATH_INFO"], response, time.perf_counter() - started)
        return response(environ, start_response)

    def receive(self, request: Request) -> Response:
        """Store one provider callback and apply its receipts."""
        parts = request.path[len(PREFIX):].split("/")
        handler = self.providers.get(parts[0]) if len(parts) == 2 else None
        if handler is None or not handler.token_matches(parts[1]):
            return _plain("not found", 404)  # same answer for unknown provider and wrong token
        refused = handler.access.refusal(request.remote_addr, request.headers.get("Authorization"))
        if refused is not None:
            return _refuse(handler.slug, refused, request.remote_addr)
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
        received_at = utcnow()
        raw = CallbackRequest(method=request.method, content_type=request.content_type or "",
                              query=request.args.to_dict(flat=False), body=body,
                              headers={k.lower(): v for k, v in request.headers.items()})
        arrival = intake.Arrival(handler.slug, raw, path=f"{PREFIX}{handler.slug}/***",
                                 query_string=request.query_string.decode("latin-1"),
                                 headers=list(request.headers.items()),
                                 remote_addr=request.remote_addr, received_at=received_at)
        try:
            db.connect(reuse_if_open=True)
            return _plain(f"OK {intake.receive(handler, arrival).value}", 200)
        except UNAVAILABLE_ERRORS as exc:
            log.warning("callback from %s not stored: %s", handler.slug, exc)
            return _plain("temporarily unavailable, retry later", 503, **{"Retry-After": "30"})
        except Exception:  # not even the raw callback could be stored: the sender must retry
            log.exception("callback from %s not stored", handler.slug)
            return _plain("temporarily unavailable, retry later", 503, **{"Retry-After": "30"})
        finally:
            if not is_sqlite() and not db.is_closed():
                db.close()  # Postgres: back to the pool. SQLite keeps its per-thread connection.


def _refuse(slug: str, reason: str, remote_addr: str | None) -> Response:
    """A callback the provider's access rules refuse: logged, never stored (counted as
    "forbidden" with the other answers, in CallbackEndpoint.__call__). No
    credentials at all gets Basic's challenge (clients that wait for one before sending the
    URL's user:password); the wrong address or wrong credentials get 403."""
    log.warning("callback for %s from %s refused: %s", slug, remote_addr, reason)
    if reason == callback_access.NO_CREDENTIALS:
        return _plain("credentials required", 401,
                      **{"WWW-Authenticate": f'Basic realm="dlr-tracker {slug} callbacks"'})
    return _plain("forbidden", 403)


# The metrics' verdict of an answer that is not 200 (tracker.metrics.CALLBACKS).
_REFUSALS = {400: "cut_off", 401: "forbidden", 403: "forbidden", 404: "not_found",
             405: "method_not_allowed", 413: "too_large", 503: "unavailable"}
# (provider, status, answer) -> the metric children it bumps: looked up once each, since
# prometheus_client's labels() costs more than the increments. Bounded: configured providers
# (any other name is "unknown") times the few answers this endpoint gives.
_COUNTED: dict[tuple[str, int, bytes], tuple[Any, ...]] = {}


def _count(providers: dict[str, Provider], path: str, response: Response,
           seconds: float) -> None:
    """Count one answered callback by provider and verdict, and time it (a few µs)."""
    slug = path[len(PREFIX):].partition("/")[0]
    key = (slug if slug in providers else "unknown",  # never a label a stranger chooses
           response.status_code, response.get_data())
    children = _COUNTED.get(key) or _COUNTED.setdefault(key, _children(*key))
    children[0].inc()
    children[1].observe(seconds)
    if len(children) > 2:
        children[2].inc()


def _children(provider: str, status: int, answer: bytes) -> tuple[Any, ...]:
    verdict = (answer.decode()[3:].strip() if status == 200  # "OK <verdict>"
               else _REFUSALS.get(status, str(status)))
    children = (metrics.CALLBACKS.labels(provider, verdict),
                metrics.CALLBACK_SECONDS.labels(provider))
    if status == 503:
        return (*children, metrics.UNAVAILABLE.labels("callbacks"))
    return children


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
