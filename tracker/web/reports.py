"""The /reports page: the files the worker wrote for each `[reports.<name>]` (tracker/reports.py).

Viewers and admins alike see and download them (which is why they are written masked when
`mask_phone_numbers` is on). A download is a plain file send (sendfile, Content-Length, Range),
and only a name found in a listing of the reports folder is ever served: a request's text never
becomes a path.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from flask import Blueprint, abort, current_app, render_template, send_file
from flask_login import login_required

from .. import exports, reports
from ..models import utcnow

bp = Blueprint("reports", __name__)

def _directory() -> Path:
    return Path(current_app.config["TRACKER"]["reports_dir"])


@bp.get("/reports")
@login_required
def index() -> Any:
    """Each configured report with its files, newest first, then files of removed reports."""
    configured: dict[str, reports.Report] = current_app.config["TRACKER"]["reports"]
    files: dict[str, list[reports.ReportFile]] = {}
    for found in reports.list_files(_directory()):
        files.setdefault(found.report, []).append(found)
    now = utcnow()
    sections = [_section(configured[name], files.pop(name, []), now)
                for name in sorted(configured)]
    sections += [{"name": name, "report": None, "files": listed}
                 for name, listed in sorted(files.items())]
    return render_template("dashboard/reports.html", sections=sections, size=size,
                           format_of=format_of)


def _section(report: reports.Report, files: list[reports.ReportFile],
             now: dt.datetime) -> dict[str, Any]:
    latest = reports.latest_period(report, now)
    written = any(f.period == latest and f.extension == report.extension for f in files)
    upcoming = reports.next_period(report, latest)
    return {"name": report.name, "report": report, "files": files,
            "due": None if written else latest,  # the worker writes it within a minute
            "next": upcoming, "next_at": reports.runs_at(report, upcoming)}


@bp.get("/reports/<name>")
@login_required
def download(name: str) -> Any:
    """One listed file: sendfile, Content-Length, resumable with Range."""
    found = reports.find_file(_directory(), name)
    if found is None:
        abort(404)
    content_type = _format_of_extension(found.extension).content_type
    response = send_file(found.path, mimetype=content_type, as_attachment=True,
                         download_name=found.filename, conditional=True, max_age=0)
    response.headers["Content-Type"] = content_type  # as it is: werkzeug would add a charset
    return response


def format_of(found: reports.ReportFile, report: reports.Report | None) -> str:
    """The format a file was written in, as far as its name and the config tell."""
    if report is not None and report.extension == found.extension:
        return report.format
    return _format_of_extension(found.extension).name


def _format_of_extension(extension: str) -> exports.ExportFormat:
    """For .csv the configured format tells csv from csv-excel; without it, csv."""
    found = exports.format_of_extension(extension)
    if found is None:  # list_files lists only the registry's extensions
        abort(404)
    return found


def size(count: int) -> str:
    """Bytes for people: 950 B, 12.3 KB, 4.5 MB."""
    if count < 1000:
        return f"{count} B"
    value = count / 1000
    for unit in ("KB", "MB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
