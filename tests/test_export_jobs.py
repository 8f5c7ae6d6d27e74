"""Exports started from the messages page are jobs of the application (tracker/export_jobs.py):
a small one is written during the click and downloaded at once, a bigger one is written by the
worker while its status page shows how far it got; two workers never write one job, a job whose
worker died is written again, and only its requester (or an admin) sees it. Also `tracker
export` on the command line: invalid filters, progress on a terminal.

The end-to-end tests run the real `tracker serve` (gunicorn + worker) and download over HTTP.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import pty
import re
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import make_config, running
from servers import tracker_command, tracker_serve, wait_until
from test_exports import list_order, read_any, read_xlsx, seed

from tracker import accounts, export_jobs, exports, jobs, reporting
from tracker.db import db, write_tx
from tracker.models import ExportJob, Lease, utcnow
from tracker.phones import mask_phone

PASSWORD = "correct horse battery"


def get(client, path: str, **kwargs):
    """A request in its own app context: the test's context would share `g` (where Flask-Login
    and Flask-WTF cache the user and the token) between two clients."""
    with client.application.app_context():
        return client.get(path, **kwargs)


def login(client, username: str) -> None:
    with client.application.app_context():
        page = client.get("/auth/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        response = client.post("/auth/login", data={"username": username,
                                                    "password": PASSWORD, "csrf_token": token})
        assert response.status_code == 302


def user(app, name: str, role: str = "viewer"):
    accounts.create_user(name, PASSWORD, role)
    client = app.test_client()
    login(client, name)
    return client


@pytest.fixture
def queued_app(database_url, tmp_path):
    """The app with every export going to the worker (export_inline_rows = 0), no worker."""
    config = make_config(database_url, export_inline_rows=0)
    with running(config) as flask_app:
        flask_app.config["EXPORTS_DIR"] = str(tmp_path / "exports")
        yield flask_app


def token_of(response) -> str:
    return re.search(r"/exports/([0-9a-f]{32})", response.headers["Location"]).group(1)


# -- from the page ------------------------------------------------------------------------------


def test_a_small_export_downloads_at_once_with_no_worker(app, tmp_path) -> None:
    """What users had before jobs: one click, the file. Written within the request (a job all
    the same, with its row), sent with one Content-Type and a name from the registry."""
    app.config["EXPORTS_DIR"] = str(tmp_path / "exports")
    seed(30)
    ana = user(app, "ana")
    page = get(ana, "/messages?status=failed&provider=fake").get_data(as_text=True)
    links = re.findall(r'href="(/messages/export\?format=([a-z-]+)[^"]*)"', page)
    assert [fmt for _, fmt in links] == list(exports.FORMATS)  # the registry's formats, in order
    for fmt in exports.FORMATS.values():
        assert f">{fmt.label}</a>" in page
    link = dict((f, u) for u, f in links)["xlsx"].replace("&amp;", "&")
    assert "status=failed" in link and "provider=fake" in link

    started = get(ana, link)
    assert started.status_code == 303 and started.headers["Location"].endswith("/download")
    download = get(ana, started.headers["Location"])
    assert download.status_code == 200
    assert download.headers.getlist("Content-Type") == [exports.FORMATS["xlsx"].content_type]
    assert re.fullmatch(r'attachment; filename=messages-\d{8}-\d{6}\.xlsx',
                        download.headers["Content-Disposition"])
    (tmp_path / "got.xlsx").write_bytes(download.get_data())
    download.close()
    rows = read_xlsx(tmp_path / "got.xlsx")
    assert [r["id"] for r in rows] == list_order(
        reporting.MessageFilter(status="failed", provider="fake"))
    job = ExportJob.get()
    assert (job.state, job.requested_by, job.rows_written, job.rows_expected) == (
        "done", "ana", len(rows), len(rows))


def test_csv_is_sent_with_one_content_type(app, tmp_path) -> None:
    app.config["EXPORTS_DIR"] = str(tmp_path / "exports")
    seed(3)
    ana = user(app, "ana")
    for fmt in exports.FORMATS.values():
        started = get(ana, f"/messages/export?format={fmt.name}")
        download = get(ana, started.headers["Location"])
        assert download.headers.getlist("Content-Type") == [fmt.content_type], fmt.name
        assert download.headers["Content-Disposition"].endswith(f".{fmt.extension}")
        download.close()
    assert exports.FORMATS["csv"].content_type == "text/csv; charset=utf-8"


@pytest.mark.parametrize(("query", "said"), [
    ("format=pdf", "format must be one of csv, csv-excel, xlsx, jsonl"),
    ("format=csv&created_from=garbage", "created from: &#39;garbage&#39; is not a date"),
    ("format=csv&status=bogus", "status: &#39;bogus&#39; is not a status"),
])
def test_an_invalid_export_is_a_400_page_saying_why_and_starts_nothing(app, query,
                                                                       said) -> None:
    seed(3)
    ana = user(app, "ana")
    response = get(ana, f"/messages/export?{query}")
    assert response.status_code == 400 and response.mimetype == "text/html"
    assert said in response.get_data(as_text=True)
    assert ExportJob.select().count() == 0


def test_a_big_export_waits_for_a_worker_and_its_page_says_so(queued_app) -> None:
    seed(12)
    ana = user(queued_app, "ana")
    started = get(ana, "/messages/export?format=csv&status=failed")
    assert started.status_code == 303 and "/download" not in started.headers["Location"]
    status = get(ana, started.headers["Location"])
    body = status.get_data(as_text=True)
    assert status.status_code == 200 and status.headers["Refresh"] == "2"  # until done
    assert "Waiting for a worker" in body and "No worker seems to be running" in body
    assert "status failed" in body

    with write_tx():  # a worker holds its lease: the page no longer warns
        Lease.create(name="worker", owner="elsewhere:1",
                     expires_at=utcnow() + dt.timedelta(seconds=30))
    assert "No worker seems" not in get(ana, started.headers["Location"]).get_data(as_text=True)

    assert jobs.run_export_jobs(queued_app) == 1  # what `tracker worker` runs
    done = get(ana, started.headers["Location"])
    body = done.get_data(as_text=True)
    assert done.status_code == 200 and "Refresh" not in done.headers
    assert "8 messages" in body and 'class="export-done"' in body
    download = get(ana, f"/exports/{token_of(started)}/download")
    rows = list(csv.DictReader(io.StringIO(download.get_data(as_text=True))))
    download.close()
    assert [int(r["id"]) for r in rows] == list_order(reporting.MessageFilter(status="failed"))
    assert jobs.run_export_jobs(queued_app) == 0  # nothing left


def test_the_status_page_shows_rows_written_of_the_total_percent_and_time_left(
        queued_app) -> None:
    ana = user(queued_app, "ana")
    started = get(ana, "/messages/export?format=jsonl")
    job = export_jobs.claim("worker-host:1:abc")
    now = utcnow()
    with write_tx():
        (ExportJob.update(rows_expected=10_000, rows_written=2_500,
                          started_at=now - dt.timedelta(seconds=10), progress_at=now)
         .where(ExportJob.id == job.id).execute())
    page = get(ana, started.headers["Location"])
    body = page.get_data(as_text=True)
    assert page.headers["Refresh"] == "2"
    assert "2,500 of 10,000 messages written (25 %)" in body
    assert "about 30 s left" in body  # 250 rows/s, 7,500 to go
    assert '<progress max="100" value="25">' in body


def test_standing_is_never_100_before_the_file_is_there() -> None:
    now = dt.datetime(2026, 1, 1, 12, 0, 10)
    job = ExportJob(state="running", rows_expected=100, rows_written=120,
                    started_at=now - dt.timedelta(seconds=10), progress_at=now)
    assert export_jobs.standing(job, now).percent == 99  # rows changed meanwhile
    assert export_jobs.standing(job, now).seconds_left == 0
    job.state = "done"
    assert export_jobs.standing(job, now).percent == 100
    assert export_jobs.say_duration(3) == "under 5 s"
    assert export_jobs.say_duration(42) == "about 40 s"
    assert export_jobs.say_duration(600) == "about 10 min"


def test_only_the_requester_or_an_admin_sees_a_job(queued_app) -> None:
    seed(3)
    ana, bob, boss = (user(queued_app, "ana"), user(queued_app, "bob"),
                      user(queued_app, "boss", "admin"))
    started = get(ana, "/messages/export?format=csv")
    jobs.run_export_jobs(queued_app)
    status_url = started.headers["Location"]
    for path in (status_url, status_url + "/download"):
        assert get(bob, path).status_code == 404  # another viewer's: as if it did not exist
        response = get(boss, path)
        assert response.status_code == 200
        response.close()
    assert get(ana, "/exports/" + "0" * 32).status_code == 404
    assert get(ana, "/exports/not-a-token").status_code == 404
    anonymous = queued_app.test_client()
    assert get(anonymous, status_url).status_code == 302  # login first


def test_a_user_has_at_most_four_exports_under_way(queued_app) -> None:
    ana, bob = user(queued_app, "ana"), user(queued_app, "bob")
    for _ in range(export_jobs.MAX_UNDER_WAY):
        assert get(ana, "/messages/export?format=csv").status_code == 303
    refused = get(ana, "/messages/export?format=csv")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "60"
    assert "4 exports waiting or being written" in refused.get_data(as_text=True)
    assert get(bob, "/messages/export?format=csv").status_code == 303  # another user's limit
    jobs.run_export_jobs(queued_app)
    assert get(ana, "/messages/export?format=csv").status_code == 303


@pytest.mark.parametrize(("role", "masked"), [("viewer", True), ("admin", False)])
def test_an_export_from_the_page_masks_phone_numbers_for_viewers(database_url, tmp_path, role,
                                                                 masked) -> None:
    """With `mask_phone_numbers` on, a viewer's export carries the numbers as the page shows
    them, in `to` and in the text; an admin's carries them whole. Decided when asked: the
    worker writes it as asked."""
    config = make_config(database_url, mask_phone_numbers=True, export_inline_rows=0)
    with running(config) as masked_app:
        masked_app.config["EXPORTS_DIR"] = str(tmp_path / "exports")
        seed(3, text="from +77015550119")
        client = user(masked_app, "ana", role)
        started = get(client, "/messages/export?format=csv")
        assert started.status_code == 303
        jobs.run_export_jobs(masked_app)
        download = get(client, f"/exports/{token_of(started)}/download")
        rows = list(csv.DictReader(io.StringIO(download.get_data(as_text=True))))
        download.close()
    whole = sorted(f"+7701{i:07d}" for i in range(3))
    # A masked number is no longer E.164, so the CSV quotes it as text like any free text
    # starting with "+" (a spreadsheet would read it as a formula).
    assert sorted(r["to"] for r in rows) == (
        ["'" + mask_phone(n) for n in whole] if masked else whole)
    assert {r["text"] for r in rows} == {"from +7701•••••19" if masked else "from +77015550119"}


# -- the worker's side --------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An exports folder of its own (tmp_path also holds the SQLite database)."""
    path = tmp_path / "exports"
    path.mkdir()
    return path


def queue_jobs(count: int, fmt: str = "csv") -> list[ExportJob]:
    return [export_jobs.create(fmt, reporting.MessageFilter(), "ana", masked=False)
            for _ in range(count)]


def test_two_workers_never_claim_the_same_job(app) -> None:
    queued = {job.id for job in queue_jobs(12)}
    claimed: list[tuple[str, int]] = []
    lock = threading.Lock()

    def worker(owner: str) -> None:
        with app.app_context(), db.connection_context():
            while (job := export_jobs.claim(owner)) is not None:
                with lock:
                    claimed.append((owner, job.id))

    threads = [threading.Thread(target=worker, args=(f"w{i}:{i}:x",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    ids = [job_id for _, job_id in claimed]
    assert sorted(ids) == sorted(queued)  # every job once, none twice
    assert {j.claimed_by for j in ExportJob.select()} == {owner for owner, _ in claimed}


def test_a_job_whose_worker_died_is_claimed_again_and_the_old_writer_stops(app,
                                                                          folder) -> None:
    seed(20)
    (job,) = queue_jobs(1)
    assert export_jobs.claim("other-host:99:aaa").id == job.id
    assert export_jobs.claim("me:1:bbb") is None  # its lease still runs
    with write_tx():  # the other host went quiet: its lease ran out
        (ExportJob.update(claimed_until=utcnow() - dt.timedelta(seconds=1))
         .where(ExportJob.id == job.id).execute())
    again = export_jobs.claim("me:1:bbb")
    assert again.id == job.id and again.claimed_by == "me:1:bbb" and again.rows_written == 0

    # The first writer wakes up: its next progress write finds the job taken and it stops,
    # leaving the job to the new writer.
    stale = export_jobs.run(job, "other-host:99:aaa", folder)
    assert (stale.state, stale.claimed_by) == ("running", "me:1:bbb")
    assert not list(folder.iterdir())  # nothing left behind
    done = export_jobs.run(again, "me:1:bbb", folder)
    assert done.state == "done" and done.rows_written == 20
    assert (folder / done.file_name).is_file()


def test_a_job_of_a_dead_process_of_this_host_is_claimed_at_once(app) -> None:
    (job,) = queue_jobs(1)
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = os.uname().nodename
    assert export_jobs.claim(f"{host}:{dead.pid}:dead").id == job.id
    # The lease runs for a minute more, but the process is gone: no need to wait for it.
    assert export_jobs.claim(f"{host}:{os.getpid()}:live").id == job.id


def test_a_stopping_worker_puts_its_job_back_in_the_queue(app, folder) -> None:
    seed(30)
    (job,) = queue_jobs(1)
    stopping = threading.Event()
    stopping.set()
    claimed = export_jobs.claim("me:1:aaa")
    back = export_jobs.run(claimed, "me:1:aaa", folder, stopping=stopping)
    assert (back.state, back.claimed_by, back.rows_written) == ("queued", None, 0)
    assert not list(folder.iterdir())
    assert export_jobs.claim("me:1:bbb").id == job.id


def test_a_failing_job_says_why_on_its_page(queued_app, monkeypatch) -> None:
    ana = user(queued_app, "ana")
    started = get(ana, "/messages/export?format=csv")

    def broken(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(exports, "export", broken)
    jobs.run_export_jobs(queued_app)
    page = get(ana, started.headers["Location"])
    assert page.status_code == 500 and "Refresh" not in page.headers
    assert "No space left on device" in page.get_data(as_text=True)
    assert get(ana, started.headers["Location"] + "/download").status_code == 302


def test_old_jobs_and_their_files_are_cleaned(app, folder) -> None:
    seed(2)
    old, new = queue_jobs(2)
    for _ in range(2):
        export_jobs.run(export_jobs.claim("me:1:a"), "me:1:a", folder)
    with write_tx():
        (ExportJob.update(created_at=utcnow() - dt.timedelta(days=2))
         .where(ExportJob.id == old.id).execute())
    stray = folder / f".{'a' * 32}.0badc0de.csv.part"  # a writer that died long ago
    stray.write_text("x")
    os.utime(stray, (time.time() - 3 * 86400,) * 2)
    unrelated = folder / "notes.txt"
    unrelated.write_text("x")
    os.utime(unrelated, (time.time() - 3 * 86400,) * 2)
    assert export_jobs.clean(folder) == 1
    assert [j.id for j in ExportJob.select()] == [new.id]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{new.token}.csv", "notes.txt"])


# -- end to end over real HTTP against `tracker serve` ------------------------------------------


def http_login(http: httpx.Client, username: str) -> None:
    page = http.get("/auth/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert http.post("/auth/login", data={"username": username, "password": PASSWORD,
                                          "csrf_token": token}).status_code == 302


def test_large_exports_download_complete_over_http(app, database_url, tmp_path) -> None:
    """Inline in the web worker (under export_inline_rows) and resumable with Range."""
    total = 12_345  # more than two keyset batches of 5,000
    seed(total)
    accounts.create_user("ana", PASSWORD, "viewer")
    failed_fake = {m for m in list_order(reporting.MessageFilter(status="failed",
                                                                 provider="fake"))}
    with tracker_serve(tmp_path / "run", database_url=database_url) as server, \
            httpx.Client(base_url=server.base_url, timeout=60) as http:
        http_login(http, "ana")
        for fmt, params, expected in (("csv", {}, total),
                                      ("xlsx", {"status": "failed", "provider": "fake",
                                                "before": "5"}, len(failed_fake))):
            response = http.get("/messages/export", params={"format": fmt, **params},
                                follow_redirects=True)
            assert response.status_code == 200, response.text[:2000]
            assert int(response.headers["Content-Length"]) == len(response.content)
            path = tmp_path / f"download.{fmt}"
            path.write_bytes(response.content)
            tail = http.get(str(response.url), headers={"Range": "bytes=1000-"})
            assert tail.status_code == 206 and tail.content == response.content[1000:]  # resume
            rows = read_any(fmt, path)
            assert len(rows) == expected
            ids = [int(r["id"]) for r in rows]
            if fmt == "csv":
                assert ids == list_order(reporting.MessageFilter())
            else:
                assert set(ids) == failed_fake


def test_a_big_export_is_written_by_the_worker_of_tracker_serve(app, database_url,
                                                                tmp_path) -> None:
    """export_inline_rows = 0: the page queues it, `tracker worker` (not a web worker) writes
    it, the status page follows it to the download."""
    seed(7_000)
    accounts.create_user("ana", PASSWORD, "viewer")
    with tracker_serve(tmp_path / "run", database_url=database_url,
                       export_inline_rows=0) as server, \
            httpx.Client(base_url=server.base_url, timeout=60) as http:
        http_login(http, "ana")
        started = http.get("/messages/export", params={"format": "jsonl"})
        assert started.status_code == 303
        status_url = started.headers["Location"]

        def finished() -> httpx.Response | None:
            page = http.get(status_url)
            assert page.status_code == 200, page.text[:2000]
            return None if "Refresh" in page.headers else page

        page = wait_until(finished, timeout=60, interval=0.3, message="export never finished")
        assert "7,000 messages" in page.text
        download = http.get(status_url + "/download")
        assert download.status_code == 200
        lines = download.text.splitlines()
        assert len(lines) == 7_000
        job = ExportJob.get()
        worker_pid = int(job.claimed_by.split(":")[1])
        assert worker_pid != server.proc.pid
        assert "tracker.cli worker" in Path(f"/proc/{worker_pid}/cmdline").read_text().replace(
            "\0", " ")


# -- the command line ---------------------------------------------------------------------------


def run_export(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*tracker_command(), "export", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def cli_env(app, database_url) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env["TRACKER_DATABASE_URL"] = database_url
    return env


@pytest.mark.parametrize(("args", "said"), [
    (["--status", "bogus"], "--status: 'bogus' is not a status"),
    (["--created-from", "yesterday"], "--created-from: 'yesterday' is not a date"),
    (["--created-to", "2026-02-30"], "--created-to: '2026-02-30' is not a date"),
    (["--provider", "bogus"], "--provider: 'bogus' is not a provider"),
    (["--created-from", "2026-03-02", "--created-to", "2026-03-01"],
     "--created-from is after --created-to"),
    (["--format", "pdf"], "Invalid value for '--format'"),
])
def test_the_export_command_refuses_an_invalid_filter_naming_the_option(
        tmp_path, cli_env, args, said) -> None:
    seed(3)
    done = run_export(tmp_path, *args, "--output", "out.csv", env=cli_env)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out.csv").exists()  # never "all rows"


def test_the_export_command_shows_progress_on_a_terminal_only(tmp_path, cli_env) -> None:
    seed(12_000)
    quiet = run_export(tmp_path, "--output", "quiet.csv", env=cli_env)
    assert quiet.returncode == 0, quiet.stderr
    assert "\x1b[K" not in quiet.stderr and "rows/s" in quiet.stderr.splitlines()[-1]
    assert re.search(r"^12,000 message\(s\) written to quiet\.csv in [\d.]+ s", quiet.stderr,
                     re.MULTILINE)

    controller, terminal = pty.openpty()  # stderr on a terminal, as a person runs it
    child = subprocess.Popen([*tracker_command(), "export", "--output", "shown.csv"],
                             env=cli_env, cwd=tmp_path, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        seen += chunk
    os.close(controller)
    assert child.wait(timeout=120) == 0, seen
    shown = seen.decode()
    assert re.search(r"of 12,000 rows \(\d+ %\), [\d,]+ rows/s", shown), shown
    assert "12,000 message(s) written to shown.csv" in shown
    assert (tmp_path / "shown.csv").read_text() == (tmp_path / "quiet.csv").read_text()
