"""The support dashboard: the messages list and a message page with its timeline."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user, login_required

from .. import reporting, sending
from ..models import Message
from ..phones import mask_phone
from ..status import Status
from .auth import admin_required

bp = Blueprint("dashboard", __name__)


@bp.app_template_filter("phone")
def phone(number: str | None) -> str:
    """A phone number as this user may see it: masked for viewers when mask_phone_numbers is on
    (country code and first digits stay, so support can still tell a network, and the last two
    stay, so a caller can confirm it)."""
    if not number:
        return "—"
    if not current_app.config["TRACKER"]["mask_phone_numbers"] or getattr(
            current_user, "is_admin", False):
        return number
    return mask_phone(number)


@bp.app_template_filter("utc")
def utc(when: dt.datetime | None) -> str:
    """A stored (naive UTC) time to the millisecond, as receipts are compared, marked UTC."""
    if when is None:
        return "—"
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d} UTC"


@bp.app_template_filter("hide_phone")
def hide_phone(text: str, number: str | None) -> str:
    """Raw provider text with the message's number masked wherever it appears (with or
    without its "+"), under the same rule as `phone`."""
    if not number or phone(number) == number:
        return text
    digits = number.lstrip("+")
    return text.replace(digits, mask_phone(digits))


@bp.get("/")
def index() -> Any:
    """The dashboard starts at the messages list."""
    return redirect(url_for("dashboard.messages"))


@bp.get("/messages")
@login_required
def messages() -> Any:
    """Newest messages first: searched by number, reference, provider id or client_ref, filtered
    by status, provider, error code and created date (UTC days), paged by keyset, with a count
    of the matches (exact up to reporting.COUNT_CAP)."""
    problems = reporting.filter_problems(request.args)
    flt = reporting.MessageFilter.from_args(request.args)
    region = current_app.config["TRACKER"]["default_region"]
    # The filter's terms once for the list and the count: a search probes the database.
    where = reporting.filter_where(flt, region)
    page = reporting.list_messages(flt, region, where=where, count_cap=reporting.COUNT_CAP)
    providers = sorted(current_app.extensions["providers"])
    if flt.provider and flt.provider not in providers:
        providers.append(flt.provider)  # a provider no longer configured still has history
    return render_template(
        "dashboard/messages.html", page=page, rows=page.rows, flt=flt,
        count=page.count or reporting.count_messages(flt, region, where=where),
        statuses=[s.value for s in Status],
        providers=providers, filter_args=_filter_args(flt),
        # One url_for per row cost ~0.5 ms of the 5 ms budget; the rows append their id.
        message_url=url_for("dashboard.message", message_id=0)[:-1], problems=problems,
    ), 400 if problems else 200


def _filter_args(flt: reporting.MessageFilter) -> dict[str, str]:
    """The filter as query arguments, for the paging links (empty ones left out)."""
    args = {"q": flt.q, "status": flt.status, "provider": flt.provider,
            "error_code": flt.error_code,
            "created_from": flt.created_from.isoformat() if flt.created_from else "",
            "created_to": flt.created_to.isoformat() if flt.created_to else ""}
    return {name: value for name, value in args.items() if value}


@bp.get("/messages/<id:message_id>")
@login_required
def message(message_id: int) -> Any:
    """One message: its fields, and every event with the raw callback behind it."""
    found = Message.get_or_none(Message.id == message_id)
    if found is None:
        abort(404)
    events = reporting.timeline(message_id)
    resent_as = list(Message.select(Message.id, Message.reference)
                     .where(Message.resent_from == message_id).order_by(Message.id))
    return render_template("dashboard/message.html", m=found, events=events,
                           callbacks=reporting.callbacks_for(events),
                           pretty_body=reporting.pretty_body, explain=_explain,
                           resent_as=resent_as,
                           can_cancel=found.status in ("queued", "scheduled"),
                           can_resend=Status(found.status) in sending.RESENDABLE)


@bp.post("/messages/<id:message_id>/cancel")
@admin_required
def cancel(message_id: int) -> Any:
    """Admin: cancel a queued or scheduled message before it is submitted."""
    try:
        sending.cancel(message_id, source="dashboard")
        flash("Message canceled.")
    except sending.NotCancelable as exc:
        flash(f"Not canceled: the message is {exc.status} (a send may already be under way).")
    return redirect(url_for("dashboard.message", message_id=message_id))


@bp.post("/messages/<id:message_id>/resend")
@admin_required
def resend(message_id: int) -> Any:
    """Admin: send a failed message again, as a new message linked to this one."""
    old = Message.get_or_none(Message.id == message_id)
    if old is None:
        abort(404)
    cfg = current_app.config["TRACKER"]
    data = {"to": old.recipient, "text": old.text, "from": old.sender,
            "client_ref": old.client_ref}
    try:
        new = sending.validate(data, providers=current_app.extensions["providers"],
                               default_provider=cfg["default_provider"], routes=cfg["routes"],
                               default_region=cfg["default_region"])
        fresh = sending.resend(old, new, source="dashboard")
    except sending.SendRejected as exc:
        flash(f"Not resent: {exc.message}")
        return redirect(url_for("dashboard.message", message_id=message_id))
    except sending.NotCancelable as exc:
        flash(f"Not resent: the message is {exc.status}; only a failed one is resent.")
        return redirect(url_for("dashboard.message", message_id=message_id))
    flash(f"Resent as message #{fresh.id}.")
    return redirect(url_for("dashboard.message", message_id=fresh.id))


def _explain(provider: str | None, code: str | None) -> str | None:
    """A provider's raw status or error code in words (None when it is not documented)."""
    handler = current_app.extensions["providers"].get(provider or "")
    return handler.explain(code) if handler else None
