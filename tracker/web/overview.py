"""The overview page: tracker.overview's figures drawn as inline SVG on the server.

No JavaScript and no chart library: the page is HTML and SVG built here, so it renders under the
CSP (`default-src 'self'`, no inline script or style attribute; SVG presentation attributes such
as fill= are not styles) and needs no CDN.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from flask import Blueprint, abort, current_app, render_template, request
from flask_login import login_required
from markupsafe import Markup, escape

from .. import overview as figures
from .. import statustime

bp = Blueprint("overview", __name__)
# The message page shows a status time by the rule the overview's latency uses.
bp.add_app_template_global(statustime.of, "status_time")

COLORS = {"delivered": "#2f9e57", "failed": "#d64545", "in flight": "#4a7bd0",
          "not sent": "#b0b6c0"}


@bp.get("/overview")
@login_required
def index() -> Any:
    """Delivery rate, receipt coverage, latency, error codes and provider health."""
    window = request.args.get("window", "24h")
    if window not in figures.WINDOWS:
        abort(404)
    configured = current_app.extensions["providers"]
    provider = request.args.get("provider", "")
    if provider and provider not in configured:
        provider = ""
    found = figures.overview(window, providers=configured, provider=provider)
    return render_template(
        "dashboard/overview.html", o=found, window=window, windows=list(figures.WINDOWS),
        provider=provider, providers=sorted(configured), now=found.until, pct=pct,
        seconds=seconds, ago=ago, bar=bar, outcome_columns=outcome_columns,
        latency_chart=latency_chart, error_bars=error_bars, explain=_explain,
    )


# -- words and numbers ----------------------------------------------------------------------


def pct(value: float | None) -> str:
    """0.9234 -> "92.3 %"; no denominator -> an em dash."""
    return "—" if value is None else f"{value * 100:.1f} %"


def seconds(value: float | None) -> str:
    """A latency bound in words: 75 -> "75 s", 150 -> "2.5 min", inf -> "> 1 d"."""
    if value is None:
        return "—"
    if math.isinf(value):
        return "> 1 d"
    if value < 120:
        return f"{value:g} s"
    if value < 7200:
        return f"{value / 60:g} min"
    return f"{value / 3600:g} h"


def ago(when: dt.datetime | None, now: dt.datetime) -> str:
    """How long ago, coarsely: "40 s ago", "3 min ago", "5 h ago", "2 d ago"; None -> "never"."""
    if when is None:
        return "never"
    return f"{duration(now - when)} ago"


def duration(delta: dt.timedelta) -> str:
    s = max(0, int(delta.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s // size} {unit}"
    return f"{s} s"


# -- charts ---------------------------------------------------------------------------------


def _svg(width: int, height: int, label: str, body: str) -> Markup:
    # Safe: every text in `body` went through escape(); the rest are numbers and our colors.
    return Markup(  # noqa: S704
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">'
        f"<title>{escape(label)}</title>{body}</svg>")


def bar(fraction: float | None, label: str, color: str = "#2f9e57", width: int = 140,
        title: str | None = None) -> Markup:
    """A horizontal 0-100 % bar."""
    filled = 0 if fraction is None else round(width * max(0.0, min(1.0, fraction)))
    return _svg(width, 12, title or f"{label}: {pct(fraction)}",
                f'<rect width="{width}" height="12" fill="#e3e6ea"/>'
                f'<rect width="{filled}" height="12" fill="{color}"/>')


def outcome_columns(o: figures.Overview, width: int = 900, height: int = 180) -> Markup:
    """One stacked column per period: delivered, failed, in flight, never sent."""
    timeline = o.timeline()
    top = max((t.messages for _, t in timeline), default=0) or 1
    slot = width / max(1, len(timeline))
    plot = height - 20
    parts = []
    for i, (start, t) in enumerate(timeline):
        stack = [("delivered", t.delivered), ("failed", t.final - t.delivered),
                 ("in flight", t.in_flight), ("not sent", t.messages - t.submitted)]
        y = float(plot)
        when = start.strftime("%d %b %H:00" if o.step == "hour" else "%d %b")
        tip = f"{when}: {t.messages} messages, " + ", ".join(f"{n} {k}" for k, n in stack if n)
        parts.append(f"<g><title>{escape(tip)}</title>")
        for kind, n in stack:
            h = plot * n / top
            if h > 0:
                y -= h
                parts.append(f'<rect x="{i * slot + 1:.1f}" y="{y:.1f}" width="{slot - 2:.1f}"'
                             f' height="{h:.1f}" fill="{COLORS[kind]}"/>')
        parts.append("</g>")
        if i % max(1, len(timeline) // 8) == 0:
            parts.append(f'<text x="{i * slot + 1:.1f}" y="{height - 5}" font-size="11"'
                         f' fill="#5b6475">{escape(when)}</text>')
    parts.append(f'<text x="{width - 4}" y="12" font-size="11" fill="#5b6475"'
                 f' text-anchor="end">max {top} per {o.step}</text>')
    return _svg(width, height, f"Messages per {o.step} by outcome", "".join(parts))


def latency_chart(o: figures.Overview, width: int = 900, height: int = 140) -> Markup:
    """p50 and p95 delivery latency per period, as two lines (gaps where nothing delivered)."""
    timeline = o.timeline()
    values = [v for _, t in timeline for v in (t.p50, t.p95) if v is not None]
    finite = [v for v in values if not math.isinf(v)]
    top = max(finite, default=1.0) or 1.0
    left = 48  # room for the axis labels
    slot = (width - left) / max(1, len(timeline))
    plot = height - 20
    parts = []
    for q, color in ((0.5, "#4a7bd0"), (0.95, "#9a4a00")):
        points = []
        for i, (start, t) in enumerate(timeline):
            v = t.percentile(q)
            if v is None:
                continue
            y = 4 + (plot - 4) * (1 - min(v, top) / top)
            x = left + i * slot + slot / 2
            points.append(f"{x:.1f},{y:.1f}")
            when = start.strftime("%d %b %H:00" if o.step == "hour" else "%d %b")
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3"'
                         f' fill="{color}"><title>{escape(when)}: p{round(q * 100)}'
                         f" {escape(seconds(v))}</title></circle>")
        if len(points) > 1:
            parts.insert(0, f'<polyline points="{" ".join(points)}" fill="none"'
                            f' stroke="{color}" stroke-width="2"/>')
    parts.append(f'<text x="4" y="12" font-size="11" fill="#5b6475">{escape(seconds(top))}'
                 f"</text>")
    parts.append(f'<text x="4" y="{plot}" font-size="11" fill="#5b6475">0 s</text>')
    parts.append(f'<text x="{left}" y="{height - 5}" font-size="11" fill="#5b6475">'
                 "blue p50, brown p95 (upper bounds of their latency buckets)</text>")
    return _svg(width, height, f"Delivery latency p50 and p95 per {o.step}", "".join(parts))


def error_bars(errors: list[tuple[str, str, int]], width: int = 220) -> dict[tuple, Markup]:
    """A bar per error code, scaled to the most frequent."""
    top = max((n for _, _, n in errors), default=1)
    return {(p, code): bar(n / top, code, "#d64545", width, title=f"{p} {code}: {n} messages")
            for p, code, n in errors}


def _explain(provider: str, code: str) -> str | None:
    handler = current_app.extensions["providers"].get(provider)
    return handler.explain(code) if handler else None
