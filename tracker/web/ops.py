"""For the people and machines that run the tracker: `/healthz`, `/readyz`, `/metrics`.

No login: a load balancer, an orchestrator and Prometheus call them. The probes say nothing a
stranger could use (no host, version, user or setting); `/metrics` is off (404) until
`metrics_token` is set, and then needs `Authorization: Bearer <metrics_token>`.
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Flask, Response, abort, current_app, jsonify, request

from .. import health, metrics
from ..models import utcnow

bp = Blueprint("ops", __name__)

_NO_STORE = {"Cache-Control": "no-store"}


def init_app(app: Flask) -> None:
    """Register the endpoints, and count the 503s every other page and API call answers."""
    app.register_blueprint(bp)

    @app.after_request
    def _count_unavailable(response: Response) -> Response:
        if response.status_code == 503 and request.endpoint != "ops.readyz":
            metrics.UNAVAILABLE.labels("api" if request.path.startswith("/api/")
                                       else "dashboard").inc()
        return response


@bp.get("/healthz")
def healthz() -> Response:
    """The process answers (nothing else is asked: the database has /readyz)."""
    response = jsonify({"status": "ok"})
    response.headers.update(_NO_STORE)
    return response


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Database reachable, migrations current, a worker alive; 503 naming what fails.
    `?exclude=worker` leaves a check out (e.g. for a web process's own probe)."""
    exclude = frozenset(name.strip() for value in request.args.getlist("exclude")
                        for name in value.split(","))
    unknown = exclude - set(health.CHECKS)
    if unknown:
        return jsonify({"error": f"unknown check(s): {', '.join(sorted(unknown))}",
                        "checks": list(health.CHECKS)}), 400
    result = health.readiness(utcnow(), exclude)
    response = jsonify(result.as_json())
    response.headers.update(_NO_STORE)
    return response, 200 if result.ready else 503


@bp.get("/metrics")
def metrics_text() -> Response:
    """Prometheus text format: every process's counters, the database's gauges."""
    token = current_app.config["TRACKER"]["metrics_token"]
    if not token:
        abort(404)
    given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, f"Bearer {token}".encode()):
        return Response("metrics need Authorization: Bearer <metrics_token>\n", status=401,
                        mimetype="text/plain",
                        headers={"WWW-Authenticate": 'Bearer realm="metrics"', **_NO_STORE})
    body = metrics.exposition(current_app.extensions["providers"])
    return Response(body, headers={"Content-Type": metrics.CONTENT_TYPE, **_NO_STORE})
