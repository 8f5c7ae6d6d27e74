"""Exports from the messages page: a job of the application (tracker/export_jobs.py), then a
plain file download.

`GET /messages/export?format=csv&status=…&provider=…&q=…` checks the filter (a 400 page naming
what is wrong: an export of a filter that is not what it looks like would mislead), then stores
a job. When the filter matches at most `export_inline_rows` messages (counted up to that bound:
milliseconds), this request writes the file itself, in a second or two, and redirects to the
download: a small export is one click, as it always was, and needs no worker. A bigger one is
queued for the worker (`tracker worker`) and the browser goes to its status page: rows written
of the total, percent and time left, refreshed every REFRESH_SECONDS (a Refresh header: no
script) until the Download link is there. The file is sent with `Content-Length` and Range
support (sendfile under gunicorn): a cut transfer is never silent and can be resumed.

Only the requester (or an admin) sees a job; anyone else gets the 404 of a job that does not
exist. With web and worker on different hosts the exports folder must be one shared folder
(as `reports_dir` for scheduled reports).
"""

from __future__ import annotations

import json
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_login import current_user, login_required

from .. import export_jobs, exports, reporting
from ..dispatcher import new_owner
from ..models import ExportJob, utcnow
from .errors import page
from .reports import size

bp = Blueprint("exports", __name__)

REFRESH_SECONDS = 2


@bp.app_context_processor
def export_formats() -> dict[str, Any]:
    """The formats the messages page links to, from the one registry."""
    return {"export_formats": list(exports.FORMATS.values())}


def _is_admin() -> bool:
    return bool(getattr(current_user, "is_admin", False))


def _refused(code: int, detail: str, **headers: str) -> Any:
    response = page(code, detail)
    response.headers.update(headers)
    return response


@bp.get("/messages/export")
@login_required
def start() -> Any:
    """Export what the filters show: the file at once when small, else its status page."""
    fmt = request.args.get("format", "csv")
    refused = _refusal(fmt)
    if refused is not None:
        return refused
    cfg = current_app.config["TRACKER"]
    flt = reporting.MessageFilter.from_args(request.args).without_page()  # as the page reads it
    inline = cfg["export_inline_rows"]
    small = inline > 0 and not reporting.count_messages(
        flt, cfg["default_region"], cap=inline).capped
    owner = new_owner() if small else None  # this request writes it: claimed from the start
    job = export_jobs.create(fmt, flt, current_user.username, owner=owner,
                             masked=cfg["mask_phone_numbers"] and not _is_admin())
    if owner is not None:
        job = export_jobs.run(job, owner, export_jobs.folder_of(current_app),
                              default_region=cfg["default_region"])
        if job.state == "done":
            return redirect(_url("exports.download", job), 303)
    return redirect(_url("exports.status", job), 303)


def _refusal(fmt: str) -> Any:
    """The answer to an export that must not start (and old jobs cleaned), or None."""
    if fmt not in exports.FORMATS:
        return _refused(400, f"Not exported: format must be one of {', '.join(exports.FORMATS)}.")
    problems = reporting.filter_problems(request.args)
    if problems:
        return _refused(400, "Not exported: " + "; ".join(problems) + ".")
    export_jobs.clean(export_jobs.folder_of(current_app))  # as each export starts
    if export_jobs.under_way(current_user.username) >= export_jobs.MAX_UNDER_WAY:
        return _refused(429, f"You have {export_jobs.MAX_UNDER_WAY} exports waiting or being "
                        "written; start another when one is done.", **{"Retry-After": "60"})
    return None


def _url(endpoint: str, job: ExportJob) -> str:
    return url_for(endpoint, token=job.token)


def _job(token: str) -> ExportJob:
    job = export_jobs.visible(token, current_user.username, _is_admin())
    if job is None:
        abort(404)
    return job


@bp.get("/exports/<token>")
@login_required
def status(token: str) -> Any:
    """Where an export can be watched until its file is ready."""
    job = _job(token)
    now = utcnow()
    filters = json.loads(job.filters)
    body = render_template(
        "dashboard/export.html", job=job, fmt=exports.FORMATS[job.format], filters=filters,
        filters_set={k: v for k, v in filters.items() if v},
        standing=export_jobs.standing(job, now), say_duration=export_jobs.say_duration,
        size=_size(job), size_text=size,
        worker_running=job.state != "queued" or export_jobs.worker_running(now))
    if job.state in ("queued", "running"):  # a header, not a <meta>: base.html has no head block
        return body, 200, {"Refresh": str(REFRESH_SECONDS)}
    return body, 500 if job.state == "failed" else 200


def _size(job: ExportJob) -> int | None:
    if job.state != "done" or not job.file_name:
        return None
    path = export_jobs.folder_of(current_app) / job.file_name
    return path.stat().st_size if path.exists() else None


@bp.get("/exports/<token>/download")
@login_required
def download(token: str) -> Any:
    """The complete file: sendfile, Content-Length, resumable with Range."""
    job = _job(token)
    path = export_jobs.folder_of(current_app) / (job.file_name or "")
    if job.state != "done" or not job.file_name or not path.is_file():
        return redirect(_url("exports.status", job))
    fmt = exports.FORMATS[job.format]
    response = send_file(path, mimetype=fmt.content_type, as_attachment=True,
                         download_name=fmt.file_name(f"messages-{job.created_at:%Y%m%d-%H%M%S}"),
                         conditional=True, max_age=0)
    response.headers["Content-Type"] = fmt.content_type  # as it is: werkzeug would add a charset
    return response
