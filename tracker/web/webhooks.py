"""The webhooks pages: each endpoint's success rate and last error, re-delivery, enabling a
disabled endpoint; a message's deliveries with every attempt (on the message page) and the
overview's notice of disabled endpoints (both through template functions)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import login_required

from .. import outbox
from ..models import Outbox, WebhookDelivery, utcnow
from .auth import admin_required

bp = Blueprint("webhooks", __name__)
WINDOW = dt.timedelta(days=7)  # the success rate's period


@bp.get("/webhooks")
@login_required
def index() -> Any:
    """Every endpoint: key, URL, events, state, deliveries of the last 7 days, last error."""
    now = utcnow()
    return render_template("dashboard/webhooks.html", rows=outbox.endpoints_page(now - WINDOW),
                           since_default=(now - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"))


@bp.post("/webhooks/endpoints/<id:endpoint_id>/redeliver")
@admin_required
def redeliver_endpoint(endpoint_id: int) -> Any:
    """Admin: every failed delivery of an endpoint since a time (UTC), again now."""
    try:
        since = dt.datetime.fromisoformat(request.form.get("since", ""))
    except ValueError:
        flash("Not re-delivered: give the time as YYYY-MM-DDTHH:MM (UTC).")
        return redirect(url_for("webhooks.index"))
    count = outbox.redeliver(outbox.failed_since(endpoint_id, since.replace(tzinfo=None)),
                             retry_hours=_retry_hours())
    flash(f"{count} failed deliver{'y' if count == 1 else 'ies'} of endpoint {endpoint_id} "
          "due again now.")
    return redirect(url_for("webhooks.index"))


@bp.post("/webhooks/endpoints/<id:endpoint_id>/enable")
@admin_required
def enable(endpoint_id: int) -> Any:
    """Admin: enable an endpoint disabled after failing."""
    if not outbox.enable(endpoint_id):
        abort(404)
    flash(f"Endpoint {endpoint_id} enabled; re-deliver what it missed below.")
    return redirect(url_for("webhooks.index"))


@bp.post("/webhooks/deliveries/<id:delivery_id>/redeliver")
@admin_required
def redeliver(delivery_id: int) -> Any:
    """Admin: one delivery again now (same webhook-id), back to its message."""
    delivery = WebhookDelivery.get_or_none(WebhookDelivery.id == delivery_id)
    if delivery is None:
        abort(404)
    message_id = Outbox.get_by_id(delivery.outbox_id).message_id
    if outbox.redeliver([delivery_id], retry_hours=_retry_hours()):
        flash(f"Delivery {delivery_id} is due again now.")
    else:
        flash(f"Delivery {delivery_id} is under way; try again in a moment.")
    return redirect(url_for("dashboard.message", message_id=message_id) + "#webhooks")


def _retry_hours() -> float:
    return float(current_app.config["TRACKER"]["webhook_retry_hours"])


def init_app(app: Flask) -> None:
    """Register the blueprint and the template functions the message page and the overview
    use."""
    app.register_blueprint(bp)
    app.jinja_env.globals.update(webhook_deliveries=outbox.deliveries_of,
                                 disabled_webhook_endpoints=outbox.disabled_endpoints)
