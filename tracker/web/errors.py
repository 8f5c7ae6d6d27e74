"""Error answers: pages a person can act on, JSON for the API, and requests that must never
become a 500 (a database that cannot be reached: 503 with Retry-After; ids no row can have: 404).

The callback endpoint (tracker.web.callbacks) is in front of Flask and answers its own errors
(plain text a provider's logs can show); the API blueprint answers its own 503s, and every
error under /api/ stays the API's JSON shape. Everything else (the dashboard, login, exports,
overview, reports, unknown URLs) gets a page in the dashboard's style, saying what happened
and what to do next. Nothing is cached about a failure, so once the database answers again the
next request works, no restart.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter, ValidationError

from ..db import UNAVAILABLE_ERRORS
from ..models import utcnow
from ..reporting import as_id
from .api import error as api_error  # the API's one error shape, as its catch-all answers

log = logging.getLogger(__name__)
RETRY_AFTER = "30"
API_PREFIX = "/api/"

# Per status: the heading and what the person reading it can do about it.
PAGES = {
    400: ("This request could not be read",
          "Something in the address or the form was not what this page expects. Go back and "
          "try again; if you followed a link, it may be out of date."),
    403: ("Not allowed for your account",
          "You are logged in, but this needs an admin account. Ask an admin to do it, or to "
          "give your account the admin role."),
    404: ("Page not found",
          "Nothing is at this address. The link may be mistyped or out of date; a message or "
          "callback that was deleted by retention is gone too."),
    405: ("Not possible this way",
          "This address does not take this kind of request. Go back and use the page's "
          "buttons and links."),
    429: ("Too many attempts",
          "Wait a moment, then try again."),
    500: ("Something went wrong on our side",
          "Nothing you did caused this, and nothing was changed by this request unless the "
          "page you come back to says so. Try again; if it keeps happening, tell whoever runs "
          "the tracker the time below."),
    503: ("Temporarily unavailable",
          "The database cannot be reached right now. Nothing you did caused this; try again "
          "in a moment. This page works again as soon as the database does."),
}
# Rendered without the signed-in navigation: that reads the user from the database, which
# may be what failed.
BARE = frozenset({500, 503})


def init_app(app: Flask) -> None:
    """The styled error pages, the 503 for a database that cannot be reached, the `id`
    converter."""
    for error in UNAVAILABLE_ERRORS:
        app.register_error_handler(error, _unavailable)
    # By code, not one HTTPException handler: these win over the API's catch-all, so the
    # /api/ case is answered here in the API's shape (api.error).
    for code in PAGES:
        app.register_error_handler(code, _http_error)
    app.url_map.converters["id"] = IdConverter


class IdConverter(BaseConverter):
    """`<id:name>`: a row id in a URL. Flask's `int` takes any Unicode digit ("²", which int()
    refuses) and any length (a 23-digit id does not even bind as a 64-bit parameter)."""

    regex = r"[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = as_id(value)
        if number is None:
            raise ValidationError  # no such URL: 404
        return number

    def to_url(self, value: object) -> str:
        return str(int(value))  # type: ignore[call-overload]


def _http_error(exc: HTTPException) -> Any:
    code = exc.code or 500
    if exc.response is not None:  # abort(response): the view chose its answer
        return exc.response
    if request.path.startswith(API_PREFIX):
        return api_error(code, (exc.name or "error").lower().replace(" ", "_"),
                     exc.description or "")
    # A view's own words (abort(400, "select at least one callback")), not werkzeug's stock text.
    custom = exc.description if exc.description != type(exc).description else None
    if isinstance(exc, CSRFError):  # most often a form left open past its token's life
        custom = (f"{exc.description} The form's security token (CSRF) was missing or out of "
                  "date: reload the page and submit it again.")
    response = page(code if code in PAGES else 500, custom)
    if getattr(exc, "retry_after", None):
        response.headers["Retry-After"] = str(exc.retry_after)  # type: ignore[attr-defined]
    return response


def page(code: int, detail: str | None = None) -> Response:
    """The styled page for an error status (PAGES), `detail` said below its explanation."""
    title, explanation = PAGES[code]
    context = {"code": code, "title": title, "explanation": explanation, "detail": detail,
               "when": utcnow(), "bare": code in BARE, "error_page": True}
    if code in BARE:
        # Straight from the Jinja environment: render_template's context processors load the
        # signed-in user from the database, which may be what failed.
        body = current_app.jinja_env.get_template("errors/page.html").render(context)
    else:
        try:
            body = render_template("errors/page.html", **context)
        except UNAVAILABLE_ERRORS:  # e.g. a 404 while the database is down
            return page(503)
    response = Response(body, status=code, mimetype="text/html")
    if code == 503:
        response.headers["Retry-After"] = RETRY_AFTER
    return response


def _unavailable(exc: Exception) -> Response:
    log.warning("database unavailable for %s %s: %r", request.method, request.path, exc)
    if request.path.startswith(API_PREFIX):
        response = jsonify({"error": {"code": "unavailable",
                                      "message": "the database is unavailable; retry later"}})
        response.status_code = 503
        response.headers["Retry-After"] = RETRY_AFTER
        return response
    return page(503)
