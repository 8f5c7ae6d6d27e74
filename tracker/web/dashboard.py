"""The support dashboard: the messages list and a message page with its timeline."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

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
from markupsafe import Markup, escape

from .. import reporting, sending, statustime
from ..db import read_snapshot
from ..exports import mask_text
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
    return mask_phone(number) if _masked() else number


def _masked() -> bool:
    """True when this user sees phone numbers masked (a viewer, mask_phone_numbers on)."""
    return bool(current_app.config["TRACKER"]["mask_phone_numbers"]) and not getattr(
        current_user, "is_admin", False)


@bp.app_template_filter("text_for_user")
def text_for_user(text: str | None) -> str:
    """A message's text as this user may see it: for a viewer under mask_phone_numbers, every
    number written in it masked, as in the list and exports (mask_text)."""
    return (mask_text(text) if _masked() else text) or ""


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


def first_words(text: str | None, width: int = 48) -> str:
    """The start of a text for a list row: whole words up to `width` characters, "…" when it
    goes on."""
    text = " ".join((text or "").split())
    if len(text) <= width:
        return text
    cut = text[:width + 1].rsplit(" ", 1)[0] if " " in text[:width + 1] else text[:width]
    return cut.rstrip(" ,.;:-") + "…"


_CLOCKS = {statustime.PROVIDER: "the provider's time",
           statustime.TRACKER: "set by the tracker",
           statustime.RECEIVED: "the provider gave no time: when its receipt was received here"}


def shown_rows(rows: list[reporting.ListRow], masked: bool, message_url: str) -> list[Markup]:
    """Each list row as its `<tr>`: the number and the text's first words (masked for a viewer
    under mask_phone_numbers, as exports mask them), and the time its status changed (the time
    of day alone on the day it was created) with whose clock that is.

    Built here rather than in the template: the list is the dashboard's busiest page, and at
    50 rows the template's per-cell attribute lookups and escapes took ~2 ms of its 5 ms
    budget; one f-string per row costs 0.45 ms (Markup.format, the other safe way, 2.3 ms).
    Every value goes through `escape`, as autoescaping would (tests/test_dashboard.py holds a
    hostile text, provider id and error code to that)."""
    message_url = escape(message_url)
    shown = []
    for m in rows:
        text = first_words(mask_text(m.text) if masked else m.text)
        to = mask_phone(m.recipient) if masked else m.recipient
        when = m.status_time
        changed = ""
        if when.at:
            clock = escape(_CLOCKS.get(when.source or "", ""))
            at = escape(when.at.strftime("%H:%M:%S" if when.at.date() == m.created_at.date()
                                         else "%Y-%m-%d %H:%M:%S"))
            changed = f'<br><small class="changed" title="{clock}">→ {at}</small>'
        href = f"{message_url}{int(m.id)}"
        status = escape(m.status)
        created = escape(m.created_at.strftime("%Y-%m-%d %H:%M:%S"))
        shown.append(Markup(  # noqa: S704 - every interpolated value is escaped above or here
            f'<tr class="m"><td><a href="{href}">{created}</a>{changed}'
            f'</td><td class="mono">{escape(to)}</td><td class="preview">{escape(text)}</td>'
            f'<td><span class="status status-{status}">{status}</span></td>'
            f'<td>{escape(m.provider)}</td>'
            f'<td class="mono"><a href="{href}">{escape(m.reference)}</a></td>'
            f'<td class="mono pmid">{escape(m.provider_message_id or "—")}</td>'
            f'<td>{escape(m.error_code or "")}</td></tr>'))
    return shown


@bp.get("/")
def index() -> Any:
    """The dashboard starts at the messages list."""
    return redirect(url_for("dashboard.messages"))


@bp.get("/messages")
@login_required
def messages() -> Any:
    """Newest messages first: searched by number (whole, national or its last digits),
    reference, provider id or client_ref, filtered by status, provider, error code and created
    date (UTC days), paged by keyset, with the matches counted per status (each exact up to
    reporting.COUNT_CAP) and the page's place among them."""
    problems = reporting.filter_problems(request.args)
    flt = reporting.MessageFilter.from_args(request.args)
    region = current_app.config["TRACKER"]["default_region"]
    base = reporting.base_where(flt, region)  # once for the list and the counts: a search probes
    where = base.status(flt.status)
    page = reporting.list_messages(flt, region, where=where)
    counts = reporting.page_status_counts(flt, base, page)
    # One url_for per row cost ~0.5 ms of the 5 ms budget; the rows append their id.
    message_url = url_for("dashboard.message", message_id=0)[:-1]
    return render_template(
        "dashboard/messages.html", page=page, rows=page.rows, flt=flt,
        shown=shown_rows(page.rows, _masked(), message_url),
        count=counts.of(flt.status), tabs=_status_tabs(flt, counts), sample=counts.sample,
        start=_start(flt, page, where), statuses=[s.value for s in Status],
        providers=_providers(flt), filter_args=_filter_args(flt), page_size=reporting.PAGE_SIZE,
        problems=problems,
    ), 400 if problems else 200


def _status_tabs(flt: reporting.MessageFilter, counts: reporting.StatusCounts
                 ) -> list[tuple[str, reporting.MatchCount, str, bool]]:
    """The row of status links: "all" and each status with matches (and the one filtered on),
    with its count, the link that sets it (keeping the other filters) and whether it is the
    one shown. Links built from one url_for: a dozen url_for calls cost 0.3 ms of 5."""
    path = url_for("dashboard.messages")
    others = {name: value for name, value in _filter_args(flt).items() if name != "status"}
    tabs = [("all", counts.total,
             f"{path}?{urlencode(others)}" if others else path, not flt.status)]
    for status, count in counts.by_status.items():
        if count.n or status == flt.status:
            tabs.append((status, count, f"{path}?{urlencode({**others, 'status': status})}",
                         status == flt.status))
    return tabs


def _start(flt: reporting.MessageFilter, page: reporting.Page,
           where: reporting.Where) -> int | None:
    """The page's first row's place among the matches (1 = newest): carried by the paging links
    (`start`), counted when a page was reached without it; None when not known."""
    if not (flt.before or flt.after) or (flt.after and page.newer is None):
        return 1  # the newest page
    carried = reporting.as_id(request.args.get("start"))
    return carried or reporting.position(where, page)


def _providers(flt: reporting.MessageFilter) -> list[str]:
    """The provider choices: the configured ones, and the one filtered on if it is not."""
    providers = sorted(current_app.extensions["providers"])
    if flt.provider and flt.provider not in providers:
        providers.append(flt.provider)  # a provider no longer configured still has history
    return providers


def _filter_args(flt: reporting.MessageFilter) -> dict[str, str]:
    """The filter as query arguments, for the paging and status links (empty ones left out)."""
    args = {"q": flt.q, "status": flt.status, "provider": flt.provider,
            "error_code": flt.error_code,
            "created_from": flt.created_from.isoformat() if flt.created_from else "",
            "created_to": flt.created_to.isoformat() if flt.created_to else ""}
    return {name: value for name, value in args.items() if value}


@bp.get("/messages/<id:message_id>")
@login_required
def message(message_id: int) -> Any:
    """One message: its fields, and every event with the raw callback behind it."""
    with read_snapshot():  # the fields and the timeline as of one moment
        found = Message.get_or_none(Message.id == message_id)
        events = reporting.timeline(message_id) if found else []
    if found is None:
        abort(404)
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
