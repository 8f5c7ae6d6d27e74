"""Requests that must never become a 500: a database that cannot be reached (503 with
Retry-After on every page and API call), and ids no row can have (404).

The callback endpoint (tracker.web.callbacks) and the API blueprint answer their own 503s; this
covers everything else: the dashboard, login, exports, overview, reports. Nothing is cached
about the failure, so once the database answers again the next request works, no restart.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.routing import BaseConverter, ValidationError

from ..db import UNAVAILABLE_ERRORS
from ..reporting import as_id

log = logging.getLogger(__name__)
RETRY_AFTER = "30"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Temporarily unavailable</title></head>
<body><h1>Temporarily unavailable</h1>
<p>The database cannot be reached right now. Nothing you did caused this; try again in a
moment. This page works again as soon as the database does.</p></body></html>
"""


def init_app(app: Flask) -> None:
    for error in UNAVAILABLE_ERRORS:
        app.register_error_handler(error, _unavailable)
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


def _unavailable(exc: Exception) -> Response:
    log.warning("database unavailable for %s %s: %r", request.method, request.path, exc)
    if request.path.startswith("/api/"):
        response = jsonify({"error": {"code": "unavailable",
                                      "message": "the database is unavailable; retry later"}})
    else:
        response = Response(_PAGE, mimetype="text/html")
    response.status_code = 503
    response.headers["Retry-After"] = RETRY_AFTER
    return response
