"""The JSON API for developers: send a message, read it back with its timeline."""

from __future__ import annotations

import datetime as dt
import functools
import json
from functools import wraps
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request, url_for
from werkzeug.exceptions import HTTPException

from .. import accounts, reporting, sending, throttle
from ..db import UNAVAILABLE_ERRORS
from .security import csrf

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)


def error(http_status: int, code: str, message: str, **extra: Any) -> tuple[Response, int]:
    """The one error shape: {"error": {"code", "message", ...}}."""
    return jsonify({"error": {"code": code, "message": message, **extra}}), http_status


def _json_body() -> Any:
    """The request's JSON, or None when it is not JSON: malformed, invalid UTF-8, or nested
    past Python's recursion limit (`silent=True` catches only the first two)."""
    try:
        return request.get_json(silent=True)
    except RecursionError:
        return None


# Requests without a valid key allowed per client address in a sliding window; past it they
# answer 429 until the oldest ages out. A valid key always passes (256 bits: guessing is
# hopeless anyway; the limit spares the database and tells a misconfigured client to stop),
# so a client sharing an address with a guesser keeps working.
KEY_FAILURES_ALLOWED = 30
KEY_FAILURE_WINDOW = dt.timedelta(minutes=15)


def require_key(view):  # type: ignore[no-untyped-def]
    """Reject requests without a valid `Authorization: Bearer <key>`; throttle them per
    address (trusted_proxies decides whose address that is)."""
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        scheme, _, key = (request.headers.get("Authorization") or "").partition(" ")
        # Kept for the view: a message remembers the key that sent it (its webhooks).
        g.api_key = accounts.verify_api_key(key.strip()) if scheme.lower() == "bearer" else None
        if g.api_key is None:
            return _refuse_key()
        return view(*args, **kwargs)
    return wrapper


def _refuse_key() -> tuple[Response, int]:
    """401, counted against the address; 429 + Retry-After once it has too many (no longer
    counted then: a blocked guesser costs one read per request, no write)."""
    throttle_key = f"apikey:{request.remote_addr or 'unknown'}"
    wait = throttle.failure_wait(throttle_key, KEY_FAILURES_ALLOWED, KEY_FAILURE_WINDOW)
    if wait:
        response, status = error(429, "too_many_requests", "too many requests without a valid "
                                 f"API key from this address; retry in {wait} s",
                                 retry_after=wait)
        response.headers["Retry-After"] = str(wait)
        return response, status
    throttle.record_failure(throttle_key, KEY_FAILURE_WINDOW)
    response, status = error(401, "unauthorized", "a valid API key is required")
    response.headers["WWW-Authenticate"] = 'Bearer realm="dlr-tracker"'
    return response, status


@bp.post("/messages")
@require_key
def create_message() -> Any:
    """Queue one SMS; 202 with the stored message."""
    data = _json_body()
    if not isinstance(data, dict):
        return error(400, "invalid_json", "send a JSON object with Content-Type: application/json")
    cfg = current_app.config["TRACKER"]
    try:
        new = sending.validate(data, providers=current_app.extensions["providers"],
                               default_provider=cfg["default_provider"], routes=cfg["routes"],
                               default_region=cfg["default_region"], api_key_id=g.api_key.id)
    except sending.SendRejected as exc:
        return error(400, "invalid_" + exc.field, exc.message, field=exc.field)
    message = sending.enqueue(new, source="api")
    body = reporting.message_detail(message.id)
    response = jsonify(body)
    response.status_code = 202
    response.headers["Location"] = url_for("api.get_message", ident=str(message.id))
    return response


BATCH_MAX = 1000  # messages per batch request (and the body at most 1 MiB)


@bp.post("/messages/batch")
@require_key
def create_messages() -> Any:
    """Queue up to BATCH_MAX messages in one request, all or none: 202 with every message
    (without events), in the order given; 400 listing each invalid one, none queued."""
    data = _json_body()
    items = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        return error(400, "invalid_json", 'send {"messages": [ … ]} with Content-Type: '
                     "application/json, each item as for POST /api/v1/messages")
    if len(items) > BATCH_MAX:
        return error(400, "too_many_messages",
                     f"at most {BATCH_MAX} messages per batch, got {len(items)}")
    cfg = current_app.config["TRACKER"]
    news: list[sending.NewMessage] = []
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            errors.append({"index": index, "code": "invalid_json", "field": None,
                           "message": "each message must be a JSON object"})
            continue
        try:
            news.append(sending.validate(
                item, providers=current_app.extensions["providers"],
                default_provider=cfg["default_provider"], routes=cfg["routes"],
                default_region=cfg["default_region"], api_key_id=g.api_key.id))
        except sending.SendRejected as exc:
            errors.append({"index": index, "code": "invalid_" + exc.field, "field": exc.field,
                           "message": exc.message})
    if errors:
        return error(400, "invalid_messages", f"{len(errors)} of {len(items)} messages are "
                     "invalid; none was queued", errors=errors)
    messages = sending.enqueue_many(news, source="api")
    return jsonify({"messages": [reporting.message_dict(m) for m in messages]}), 202


@bp.get("/messages/<ident>")
@require_key
def get_message(ident: str) -> Any:
    """One message by id or by reference, with its events."""
    message_id = reporting.resolve_message_id(ident)
    if message_id is None:
        return error(404, "not_found", f"no message {ident!r}")
    return jsonify(reporting.message_detail(message_id))


@bp.delete("/messages/<ident>")
@require_key
def cancel_message(ident: str) -> Any:
    """Cancel a message not yet submitted: 200 with it; 409 once a send has started."""
    message_id = reporting.resolve_message_id(ident)
    if message_id is None:
        return error(404, "not_found", f"no message {ident!r}")
    try:
        sending.cancel(message_id, source="api")
    except sending.NotCancelable as exc:
        return error(409, "not_cancelable", f"message {ident} is {exc.status}: only a queued or "
                     "scheduled message that no dispatcher is sending can be canceled",
                     status=exc.status)
    return jsonify(reporting.message_detail(message_id))


# The one description of this API (paths, fields, error codes): tests/test_openapi.py checks
# it against the OpenAPI 3.1 rules and real answers against it. Shipped as package data.
OPENAPI_PATH = Path(__file__).resolve().parent.parent / "openapi.json"


@functools.cache
def _openapi_document() -> dict[str, Any]:
    return json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI document, naming this deployment's public address as its server (no key:
    it describes the API, nothing of its data)."""
    base = current_app.config["TRACKER"]["public_base_url"]
    document = {**_openapi_document(), "servers": [{"url": f"{base}{bp.url_prefix}"}]}
    return Response(json.dumps(document, ensure_ascii=False, indent=1), mimetype="application/json",
                    headers={"Cache-Control": "public, max-age=300"})


def init_app(app: Flask) -> None:
    """Register the blueprint; HTTP errors under /api/ answer JSON, routing errors included."""
    app.register_blueprint(bp)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        if not request.path.startswith(bp.url_prefix or "/api/"):
            return exc
        return error(exc.code or 500, (exc.name or "error").lower().replace(" ", "_"),
                     exc.description or "")


def _db_down(_exc: Exception) -> Any:
    response, status = error(503, "unavailable", "the database is unavailable; retry later")
    response.headers["Retry-After"] = "30"
    return response, status


for _unavailable in UNAVAILABLE_ERRORS:
    bp.register_error_handler(_unavailable, _db_down)
