"""The support dashboard: the messages list and a message page with its timeline."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask_login import login_required

from .. import reporting
from ..models import Message
from ..status import Status

bp = Blueprint("dashboard", __name__)


@bp.get("/")
def index() -> Any:
    """The dashboard starts at the messages list."""
    return redirect(url_for("dashboard.messages"))


@bp.get("/messages")
@login_required
def messages() -> Any:
    """Newest messages first, filtered by status and provider, searched by number or id."""
    before = request.args.get("before", "")
    flt = reporting.MessageFilter(
        status=request.args.get("status", ""), provider=request.args.get("provider", ""),
        q=request.args.get("q", ""), before=int(before) if before.isdigit() else None,
    )
    rows = reporting.list_messages(flt, current_app.config["TRACKER"]["default_region"])
    return render_template(
        "dashboard/messages.html", rows=rows, flt=flt, statuses=[s.value for s in Status],
        providers=sorted(current_app.extensions["providers"]),
        next_before=rows[-1].id if len(rows) == reporting.PAGE_SIZE else None,
    )


@bp.get("/messages/<int:message_id>")
@login_required
def message(message_id: int) -> Any:
    """One message: its fields, and every event with the raw callback behind it."""
    found = Message.get_or_none(Message.id == message_id)
    if found is None:
        abort(404)
    events = reporting.timeline(message_id)
    return render_template("dashboard/message.html", m=found, events=events,
                           callbacks=reporting.callbacks_for(events),
                           pretty_body=reporting.pretty_body)
