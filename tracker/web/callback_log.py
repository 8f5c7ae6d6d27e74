"""The callbacks page: every inbound callback with its verdict, filterable, and (admins) a
replay through the current parser, shown first as a dry run of the status changes it makes."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, abort, current_app, render_template, request
from flask_login import login_required

from .. import replay, reporting
from ..correlation import Verdict
from ..models import Callback, Event
from .auth import admin_required

bp = Blueprint("callback_log", __name__, url_prefix="/callback-log")
PAGE_SIZE = 50
MAX_REPLAY = 200  # one form, one request: a larger replay belongs to `tracker callbacks replay`


@bp.get("")
@login_required
def index() -> Any:
    """Newest first; filter by provider, verdict and day range (UTC)."""
    provider, verdict = request.args.get("provider", ""), request.args.get("verdict", "")
    # A value no callback can have is answered as such, not searched for (a NUL in it was a 500
    # on Postgres, which refuses one in a string).
    if unknown := reporting.provider_problem(provider):
        abort(400, unknown)
    if verdict and verdict not in {v.value for v in Verdict}:
        abort(400, f"verdict: {verdict!r} is not a verdict"
                   f" ({', '.join(v.value for v in Verdict if v != Verdict.PENDING)})")
    since, until = _day(request.args.get("since")), _day(request.args.get("until"))
    before = request.args.get("before", "")
    query = Callback.select(Callback.id, Callback.provider, Callback.method, Callback.verdict,
                            Callback.detail, Callback.received_at, Callback.remote_addr)
    if provider:
        query = query.where(Callback.provider == provider)
    if verdict:
        query = query.where(Callback.verdict == verdict)
    if since:
        query = query.where(Callback.received_at >= since)
    if until:
        query = query.where(Callback.received_at < until + dt.timedelta(days=1))
    if reporting.as_id(before):
        query = query.where(Callback.id < reporting.as_id(before))
    rows = list(query.order_by(Callback.id.desc()).limit(PAGE_SIZE))
    messages = _messages_of([r.id for r in rows])
    return render_template(
        "dashboard/callbacks.html", rows=rows, messages=messages,
        providers=sorted(current_app.extensions["providers"]),
        verdicts=[v.value for v in Verdict if v != Verdict.PENDING],
        flt={"provider": provider, "verdict": verdict, "since": request.args.get("since", ""),
             "until": request.args.get("until", "")},
        next_before=rows[-1].id if len(rows) == PAGE_SIZE else None,
    )


@bp.post("/replay")
@admin_required
def replay_selected() -> Any:
    """Dry run first (nothing written); the same form then applies it for real."""
    ids = [n for n in map(reporting.as_id, request.form.getlist("id")) if n][:MAX_REPLAY]
    if not ids:
        abort(400, "select at least one callback")
    apply = request.form.get("action") == "apply"
    providers = current_app.extensions["providers"]
    results = [replay.replay(cb, providers, dry_run=not apply)
               for cb in replay.select_callbacks(ids=ids)]
    return render_template("dashboard/replay.html", results=results, applied=apply,
                           ids=[r.callback_id for r in results])


def _messages_of(callback_ids: list[int]) -> dict[int, list[int]]:
    """callback id -> ids of the messages its receipts belong to."""
    out: dict[int, list[int]] = {}
    if not callback_ids:
        return out
    rows = (Event.select(Event.callback, Event.message)
            .where(Event.callback.in_(callback_ids) & Event.message.is_null(False))
            .distinct().tuples())
    for callback_id, message_id in rows:
        out.setdefault(callback_id, []).append(message_id)
    return out


def _day(value: str | None) -> dt.datetime | None:
    day = reporting.day(value)  # the last day of the calendar counts as the one before
    return dt.datetime.combine(day, dt.time()) if day else None
