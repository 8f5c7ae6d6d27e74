"""Export downloads from the messages page: the file is written by a job, then sent whole.

`GET /messages/export?format=csv&status=…&provider=…&q=…` starts `tracker export` in its own
process (see tracker/exports.py for why a file is written first: a sync gunicorn worker past its
30 s timeout would cut a streamed download silently after its 200). The request waits up to
START_WAIT seconds, well inside that timeout: a CSV or JSON Lines export of up to about a
million rows is done by then and the browser is redirected straight to the file. A bigger one
(or XLSX, which is slower) lands on its status page, which refreshes itself until the file is
there; the job is its own process (own session), so it keeps running whatever happens to the
web worker. The file is sent with `Content-Length` and Range support (sendfile under gunicorn):
a cut transfer is never silent and can be resumed.

A job is three files in the exports directory (instance/exports/, or EXPORTS_DIR in the Flask
config): `<token>.json` (who, what, the pid), `<token>.<ext>.part` while it runs and
`<token>.<ext>` when done; `<token>.log` holds the job's stderr. Jobs older than KEEP_SECONDS are
deleted when the next one starts. Only their owner (or an admin) sees a job.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    redirect,
    render_template_string,
    request,
    send_file,
    url_for,
)
from flask_login import current_user, login_required

from .. import exports, reporting

bp = Blueprint("exports", __name__)

START_WAIT = 20.0  # seconds a request waits for its job; gunicorn's timeout is 30
KEEP_SECONDS = 24 * 3600
MAX_RUNNING = 4  # concurrent jobs; each is a process reading the whole filter
_children: dict[str, subprocess.Popen[bytes]] = {}  # reaped as they finish


def exports_dir() -> Path:
    path = Path(current_app.config.get("EXPORTS_DIR")
                or Path(current_app.instance_path) / "exports")
    path.mkdir(parents=True, exist_ok=True)
    return path


def filter_args(flt: reporting.MessageFilter) -> dict[str, str]:
    """The filter as `tracker export` options (and for the status page); paging dropped."""
    return {"status": flt.status, "provider": flt.provider, "q": flt.q,
            "error-code": flt.error_code,
            "created-from": flt.created_from.isoformat() if flt.created_from else "",
            "created-to": flt.created_to.isoformat() if flt.created_to else ""}


def _reap() -> None:
    """Collect the exit status of finished jobs: no zombie is left behind."""
    for token, child in list(_children.items()):
        if child.poll() is not None:
            del _children[token]


def _alive(pid: int) -> bool:
    _reap()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _job(token: str) -> dict[str, Any]:
    if not token.isalnum():
        abort(404)
    try:
        job = json.loads((exports_dir() / f"{token}.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        abort(404)
    if job["user"] != current_user.username and not getattr(current_user, "is_admin", False):
        abort(404)
    base = exports_dir() / f"{token}.{exports.EXTENSIONS[job['format']]}"
    job["path"] = base
    _reap()
    if base.exists():
        job["state"] = "done"
    elif _alive(job["pid"]):
        job["state"] = "running"
        part = base.with_name(base.name + ".part")
        job["bytes"] = part.stat().st_size if part.exists() else 0
    else:
        job["state"] = "failed"
        log = exports_dir() / f"{token}.log"
        job["error"] = log.read_text(encoding="utf-8", errors="replace")[-2000:] if (
            log.exists()) else ""
    return job


def _clean(folder: Path) -> int:
    """Delete old jobs' files; return how many jobs still run."""
    now = time.time()
    running = 0
    for meta in folder.glob("*.json"):
        try:
            job = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if now - job["started"] > KEEP_SECONDS:
            for path in folder.glob(f"{meta.stem}.*"):
                path.unlink(missing_ok=True)
        elif _alive(job["pid"]) and not (
                folder / f"{meta.stem}.{exports.EXTENSIONS[job['format']]}").exists():
            running += 1
    return running


@bp.get("/messages/export")
@login_required
def start() -> Any:
    """Start an export of what the filters show; redirect to the file or its status page."""
    fmt = request.args.get("format", "csv")
    if fmt not in exports.FORMATS:
        abort(400)
    problems = reporting.filter_problems(request.args)
    if problems:  # an export of a filter that is not what it looks like would mislead
        return ("Not exported: " + "; ".join(problems) + "\n", 400,
                {"Content-Type": "text/plain; charset=utf-8"})
    folder = exports_dir()
    if _clean(folder) >= MAX_RUNNING:
        return "Too many exports are running; try again in a minute.", 429, {"Retry-After": "60"}
    options = filter_args(reporting.MessageFilter.from_args(request.args))  # as the page does
    cfg = current_app.config["TRACKER"]
    token = secrets.token_hex(16)
    output = folder / f"{token}.{exports.EXTENSIONS[fmt]}"
    mask = cfg["mask_phone_numbers"] and not getattr(current_user, "is_admin", False)
    command = [sys.executable, "-m", "tracker.cli", "export", "--format", fmt,
               *[f"--{name}={value}" for name, value in options.items()],
               "--output", str(output), *(["--mask-phones"] if mask else [])]
    # The job reads the database this app reads, whatever the config file says.
    env = {**os.environ, "TRACKER_DATABASE_URL": cfg["database_url"],
           "TRACKER_DEFAULT_REGION": cfg["default_region"],
           "TRACKER_INSTANCE_DIR": cfg["instance_dir"]}
    with open(folder / f"{token}.log", "wb") as log:
        child = subprocess.Popen(command, env=env, cwd=folder, stdin=subprocess.DEVNULL,  # noqa: S603
                                 stdout=log, stderr=log, start_new_session=True)
    _children[token] = child
    (folder / f"{token}.json").write_text(json.dumps({
        "user": current_user.username, "format": fmt, "pid": child.pid, "started": time.time(),
        "filters": options,
    }), encoding="utf-8")
    deadline = time.monotonic() + START_WAIT
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if output.exists():
        return redirect(url_for("exports.download", token=token), 303)
    return redirect(url_for("exports.status", token=token), 303)


_STATUS_PAGE = """{% extends "base.html" %}
{% block title %}Export · dlr-tracker{% endblock %}
{% block content %}
<h1>Export ({{ job.format }})</h1>
<p>Filters: {% for k, v in job.filters.items() if v %}{{ k }} = {{ v }}; {% else %}none
{% endfor %}</p>
{% if job.state == "done" %}
<p class="export-done"><a href="{{ url_for('exports.download', token=token) }}">Download</a>
({{ job.path.stat().st_size }} bytes)</p>
{% elif job.state == "running" %}
<p class="export-running">Being written: {{ job.bytes }} bytes so far. This page refreshes.</p>
{% else %}
<p class="export-failed">The export failed.</p><pre>{{ job.error }}</pre>
{% endif %}
<p><a href="{{ url_for('dashboard.messages') }}">Back to messages</a></p>
{% endblock %}
"""


@bp.get("/exports/<token>")
@login_required
def status(token: str) -> Any:
    """Where a long export can be watched until its file is ready."""
    job = _job(token)
    page = render_template_string(_STATUS_PAGE, job=job, token=token)
    if job["state"] == "running":  # a header, not a <meta>: base.html has no head block
        return page, 200, {"Refresh": "2"}
    return page, 500 if job["state"] == "failed" else 200


@bp.get("/exports/<token>/download")
@login_required
def download(token: str) -> Any:
    """The complete file: sendfile, Content-Length, resumable with Range."""
    job = _job(token)
    if job["state"] != "done":
        return redirect(url_for("exports.status", token=token))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(job["started"]))
    return send_file(job["path"], mimetype=exports.MIMETYPES[job["format"]], as_attachment=True,
                     download_name=f"messages-{stamp}.{exports.EXTENSIONS[job['format']]}",
                     conditional=True, max_age=0)
