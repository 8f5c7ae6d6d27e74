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
    make_response,
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
_CLOCK_TITLES = {source: escape(title) for source, title in _CLOCKS.items()}
_STATUS_CELLS = {s.value: Markup(  # noqa: S704 - a status is one of our own words
    f'<span class="status status-{s.value}">{s.value}</span>') for s in Status}


def shown_rows(rows: list[reporting.ListRow], masked: bool, message_url: str) -> list[Markup]:
    """Each list row as its `<tr>`: the number and the text's first words (masked for a viewer
    under mask_phone_numbers, as exports mask them), and the time its status changed (the time
    of day alone on the day it was created) with whose clock that is.

    Built here rather than in the template: the list is the dashboard's busiest page, and at
    50 rows the template's per-cell attribute lookups and escapes took ~2 ms of its 5 ms
    budget; one f-string per row costs ~0.3 ms a page (Markup.format, the other safe way,
    2.3 ms). Every value from the database goes through `escape`, as autoescaping would
    (tests/test_dashboard.py holds a hostile text, provider id and error code to that), once
    per distinct value for the columns that repeat down a page (provider, error code); times
    are written by isoformat (digits alone: nothing to escape, and ~4x faster than
    strftime), statuses and clock titles are our own words, written once."""
    message_url = escape(message_url)
    seen: dict[str, Markup] = {}  # provider and error code: a handful of values down a page

    def repeated(value: str) -> Markup:
        shown = seen.get(value)
        if shown is None:
            shown = seen[value] = escape(value)
        return shown

    shown = []
    for m in rows:
        text = first_words(mask_text(m.text) if masked else m.text)
        to = mask_phone(m.recipient) if masked else m.recipient
        created = m.created_at.isoformat(" ", "seconds")
        when = m.status_time
        changed = ""
        if when.at:
            at = when.at.isoformat(" ", "seconds")
            if at[:10] == created[:10]:
                at = at[11:]  # the time of day alone on the day it was created
            changed = (f'<br><small class="changed" title="{_CLOCK_TITLES.get(when.source, "")}"'
                       f'>→ {at}</small>')
        href = f"{message_url}{int(m.id)}"
        status = _STATUS_CELLS.get(m.status) or (
            f'<span class="status">{escape(m.status)}</span>')
        shown.append(Markup(  # noqa: S704 - every interpolated value is escaped above or here
            f'<tr class="m"><td><a href="{href}">{created}</a>{changed}'
            f'</td><td class="mono">{escape(to)}</td><td class="preview">{escape(text)}</td>'
            f'<td>{status}</td><td>{repeated(m.provider)}</td>'
            f'<td class="mono"><a href="{href}">{escape(m.reference)}</a></td>'
            f'<td class="mono pmid">{escape(m.provider_message_id or "—")}</td>'
            f'<td>{repeated(m.error_code or "")}</td></tr>'))
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
    date (UTC days), paged by keyset, with how many match (exact up to reporting.COUNT_CAP) and
    the page's place among them.

    The row of counts per status comes in a second request (`message_counts`, fetched by
    static/counts.js once the list is shown) unless the page holds them already (a first page
    with room to spare) or `counts=1` asks for them here (the link for a browser without
    scripts). Counting eleven statuses reads up to 11,011 index entries: on Postgres that and
    its round trip were half of the list's 5 ms budget, and support reads the rows first."""
    problems = reporting.filter_problems(request.args)
    flt = reporting.MessageFilter.from_args(request.args)
    region = current_app.config["TRACKER"]["default_region"]
    base = reporting.base_where(flt, region)  # once for the list and the counts: a search probes
    where = base.status(flt.status)
    page = reporting.list_messages(flt, region, where=where, count_cap=reporting.COUNT_CAP)
    count = page.count or reporting.count_messages(flt, region, where=where)
    inline = request.args.get("counts") == "1"
    counts = (reporting.page_status_counts(flt, base, page) if inline
              else reporting.held_status_counts(flt, page))
    # One url_for per row cost ~0.5 ms of the 5 ms budget; the rows append their id.
    message_url = url_for("dashboard.message", message_id=0)[:-1]
    args = _filter_args(flt)
    return render_template(
        "dashboard/messages.html", page=page, rows=page.rows, flt=flt,
        shown=shown_rows(page.rows, _masked(), message_url), count=count,
        tabs=_status_tabs(flt, counts, inline) if counts else None,
        sample=counts.sample if counts else None,
        counts_url=_with_query(url_for("dashboard.message_counts"), args),
        # The export links: one url_for for the four (each with the filters cost 16 us).
        export_url=url_for("exports.start"), export_query=f"&{urlencode(args)}" if args else "",
        inline_url=_with_query(url_for("dashboard.messages"),
                               {**request.args.to_dict(), "counts": "1"}),
        start=_start(flt, page, where), statuses=[s.value for s in Status],
        providers=_providers(flt), filter_args={**args, "counts": "1"} if inline else args,
        page_size=reporting.PAGE_SIZE, problems=problems,
    ), 400 if problems else 200


@bp.get("/messages/counts")
@login_required
def message_counts() -> Any:
    """The messages list's row of counts per status, for the same filters (its status aside,
    paging ignored): an HTML fragment that static/counts.js puts in the list's place for it.
    Each exact up to reporting.COUNT_CAP, or, for a search with more matches, counted among
    its newest (reporting.status_counts)."""
    problems = reporting.filter_problems(request.args)
    flt = reporting.MessageFilter.from_args(request.args).without_page()
    base = reporting.base_where(flt, current_app.config["TRACKER"]["default_region"])
    counts = reporting.status_counts(base, status=flt.status)
    response = make_response(render_template(
        "dashboard/status_tabs.html", tabs=_status_tabs(flt, counts), sample=counts.sample,
    ), 400 if problems else 200)
    response.headers["Cache-Control"] = "no-store"  # counts change with every receipt
    return response


def _status_tabs(flt: reporting.MessageFilter, counts: reporting.StatusCounts,
                 inline: bool = False) -> list[tuple[str, reporting.MatchCount, str, bool]]:
    """The row of status links: "all" and each status with matches (and the one filtered on),
    with its count, the link that sets it (keeping the other filters, and `counts=1` when the
    counts were asked for in the page) and whether it is the one shown. Links built from one
    url_for: a dozen url_for calls cost 0.3 ms of 5."""
    path = url_for("dashboard.messages")
    others = {name: value for name, value in _filter_args(flt).items() if name != "status"}
    if inline:
        others["counts"] = "1"
    tabs = [("all", counts.total, _with_query(path, others), not flt.status)]
    for status, count in counts.by_status.items():
        if count.n or status == flt.status:
            tabs.append((status, count, f"{path}?{urlencode({**others, 'status': status})}",
                         status == flt.status))
    return tabs


def _with_query(path: str, args: dict[str, str]) -> str:
    return f"{path}?{urlencode(args)}" if args else path


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
