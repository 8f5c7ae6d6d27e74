"""Scheduled reports: periods, files with exactly the period's messages, idempotent runs,
catch-up, pruning, masking, config errors, the worker job and the /reports page.

The database tests run on SQLite and, with TRACKER_TEST_DATABASE_URL, on Postgres.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import time
import tomllib
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from conftest import make_config, running
from hypothesis import given
from hypothesis import strategies as st

from tracker import ROOT, accounts, create_app, exports, jobs, reports
from tracker.models import Message
from tracker.scheduler import REPORTS_INTERVAL, Worker
from tracker.settings import ConfigError, load

PASSWORD = "correct horse battery"
D = dt.date
T = dt.datetime


def report(name: str = "daily", **section: Any) -> reports.Report:
    """A report validated as the settings validate it."""
    return reports.validate({name: {"schedule": "daily", **section}})[name]


# -- periods ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("now", "at", "period"), [
    (T(2026, 3, 10, 2, 0), "02:00", (D(2026, 3, 9), D(2026, 3, 9))),  # on the minute: runs
    (T(2026, 3, 10, 1, 59), "02:00", (D(2026, 3, 8), D(2026, 3, 8))),  # not yet: the one before
    (T(2026, 1, 1, 0, 0), "00:00", (D(2025, 12, 31), D(2025, 12, 31))),  # year boundary
    (T(2026, 1, 1, 0, 30), "01:00", (D(2025, 12, 30), D(2025, 12, 30))),
    (T(2026, 3, 1, 2, 0), "02:00", (D(2026, 2, 28), D(2026, 2, 28))),  # month boundary
    (T(2024, 3, 1, 23, 59), "23:59", (D(2024, 2, 29), D(2024, 2, 29))),  # leap day
])
def test_daily_period_is_the_previous_utc_day(now, at, period) -> None:
    assert reports.latest_period(report(at=at), now) == reports.Period(*period)


# 2026-01-05 is a Monday.
@pytest.mark.parametrize(("now", "weekday", "at", "period"), [
    (T(2026, 1, 5, 2, 0), "mon", "02:00", (D(2025, 12, 29), D(2026, 1, 4))),  # across the year
    (T(2026, 1, 5, 1, 59), "mon", "02:00", (D(2025, 12, 22), D(2025, 12, 28))),
    (T(2026, 1, 11, 23, 0), "mon", "02:00", (D(2025, 12, 29), D(2026, 1, 4))),  # Sunday after
    (T(2026, 1, 7, 3, 0), "wed", "03:00", (D(2025, 12, 29), D(2026, 1, 4))),  # runs Wednesday
    (T(2026, 1, 6, 23, 59), "Wednesday", "03:00", (D(2025, 12, 22), D(2025, 12, 28))),
    (T(2026, 2, 2, 0, 0), "mon", "00:00", (D(2026, 1, 26), D(2026, 2, 1))),  # across a month
    (T(2026, 3, 8, 23, 59), "sun", "23:59", (D(2026, 2, 23), D(2026, 3, 1))),
])
def test_weekly_period_is_the_previous_monday_to_sunday(now, weekday, at, period) -> None:
    weekly = report(schedule="weekly", weekday=weekday, at=at)
    assert reports.latest_period(weekly, now) == reports.Period(*period)


@given(now=st.datetimes(T(2000, 1, 8), T(2100, 1, 1)), weekly=st.booleans(),
       weekday=st.sampled_from(reports.WEEKDAYS), hour=st.integers(0, 23),
       minute=st.integers(0, 59))
def test_latest_period_is_the_last_one_whose_run_time_has_come(now, weekly, weekday, hour,
                                                                minute) -> None:
    at = f"{hour:02}:{minute:02}"
    r = (report(schedule="weekly", weekday=weekday, at=at) if weekly else report(at=at))
    period = reports.latest_period(r, now)
    assert reports.runs_at(r, period) <= now < reports.runs_at(r, reports.next_period(r, period))
    if weekly:
        assert period.start.weekday() == 0 and period.end - period.start == dt.timedelta(days=6)
    else:
        assert period.start == period.end


def test_file_names() -> None:
    daily = report("daily-billing", format="csv-excel")
    weekly = report("wk_1", schedule="weekly", format="xlsx")
    day = reports.Period(D(2026, 1, 1), D(2026, 1, 1))
    week = reports.Period(D(2025, 12, 29), D(2026, 1, 4))
    assert reports.filename(daily, day) == "daily-billing-2026-01-01.csv"
    assert reports.filename(weekly, week) == "wk_1-2025-12-29_2026-01-04.xlsx"
    assert reports.parse_filename("daily-billing-2026-01-01.csv") == ("daily-billing", day, "csv")
    assert reports.parse_filename("wk_1-2025-12-29_2026-01-04.xlsx") == ("wk_1", week, "xlsx")
    for name in ("../daily-2026-01-01.csv", "daily-2026-13-01.csv", "daily-2026-01-01.csv.part",
                 ".daily-2026-01-01.csv.0123456789abcdef", "daily-2026-01-02_2026-01-01.csv",
                 "Daily-2026-01-01.csv", "daily-2026-01-01.pdf", "daily-2026-01-01"):
        assert reports.parse_filename(name) is None, name


# -- runs ------------------------------------------------------------------------------------

_seq = iter(range(1, 1_000_000))


def add(created: dt.datetime, provider: str = "skycore", status: str = "delivered",
        to: str = "+77011234567", text: str = "hi") -> str:
    """A message created at `created`; returns its reference."""
    ref = f"R{next(_seq):08d}"
    Message.create(reference=ref, provider=provider, recipient=to, sender="ACME", text=text,
                   status=status, status_order="x", created_at=created, submitted_at=created,
                   status_at=created + dt.timedelta(seconds=3))
    return ref


def read(path: Path) -> list[dict[str, Any]]:
    """The rows of a report file, whatever its format."""
    if path.suffix == ".xlsx":
        book = openpyxl.load_workbook(path, read_only=True)
        values = book.worksheets[0].iter_rows(values_only=True)
        header = next(values)
        out = [dict(zip(header, row, strict=True)) for row in values]
        book.close()
        return out
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines()]
    return list(csv.DictReader(io.StringIO(text, newline="")))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "reports"


@pytest.mark.parametrize("fmt", ["csv", "csv-excel", "xlsx", "jsonl"])
def test_a_run_writes_exactly_the_periods_messages_once(app, folder, fmt) -> None:
    inside = [add(T(2026, 1, 1)), add(T(2026, 1, 1, 23, 59, 59, 999000)),
              add(T(2026, 1, 1, 12), status="undelivered")]
    add(T(2025, 12, 31, 23, 59, 59, 999000))  # the day before
    add(T(2026, 1, 2))  # the day after
    add(T(2026, 1, 1, 12), provider="fake")  # another provider
    billing = report("billing", provider="skycore", format=fmt, at="02:00")
    now = T(2026, 1, 2, 2, 0)

    written = reports.run_due({"billing": billing}, now, directory=folder)
    ext = "csv" if fmt.startswith("csv") else fmt
    assert written == [folder / f"billing-2026-01-01.{ext}"]
    assert sorted(row["reference"] for row in read(written[0])) == sorted(inside)
    assert [p.name for p in folder.iterdir()] == [written[0].name]  # no temp file left

    stamp = written[0].stat().st_mtime_ns
    assert reports.run_due({"billing": billing}, now + dt.timedelta(hours=5),
                           directory=folder) == []  # idempotent: nothing new
    assert written[0].stat().st_mtime_ns == stamp


def test_weekly_run_and_filters(app, folder) -> None:
    week = [add(T(2025, 12, 29), status="failed"), add(T(2026, 1, 4, 23, 59), status="failed")]
    add(T(2026, 1, 3), status="delivered")  # filtered out by status
    add(T(2026, 1, 5), status="failed")  # the next week
    failures = report("failures", schedule="weekly", weekday="mon", status="failed",
                      format="jsonl", at="03:00")
    written = reports.run_due({"failures": failures}, T(2026, 1, 5, 3, 0), directory=folder)
    assert [p.name for p in written] == ["failures-2025-12-29_2026-01-04.jsonl"]
    assert sorted(row["reference"] for row in read(written[0])) == sorted(week)


def test_a_worker_that_was_down_catches_up_the_latest_period(app, folder) -> None:
    refs = {day: add(T(2026, 1, day, 8)) for day in range(1, 6)}
    daily = {"daily": report(format="jsonl", at="02:00")}
    assert [p.name for p in reports.run_due(daily, T(2026, 1, 2, 2, 1), directory=folder)] == [
        "daily-2026-01-01.jsonl"]
    # Down from the 2nd to the 5th at 10:00: the latest closed day is written, once.
    assert [p.name for p in reports.run_due(daily, T(2026, 1, 5, 10), directory=folder)] == [
        "daily-2026-01-04.jsonl"]
    assert [r["reference"] for r in read(folder / "daily-2026-01-04.jsonl")] == [refs[4]]
    assert reports.run_due(daily, T(2026, 1, 5, 10, 1), directory=folder) == []
    assert sorted(p.name for p in folder.iterdir()) == ["daily-2026-01-01.jsonl",
                                                        "daily-2026-01-04.jsonl"]


def test_old_files_are_pruned_to_keep(app, folder) -> None:
    folder.mkdir()
    other = folder / "other-2026-01-01.csv"
    other.write_text("another report's file")
    old_format = folder / "daily-2025-12-30.xlsx"  # before a format change: still counted
    old_format.write_text("x")
    dead = folder / ".daily-2025-12-31.csv.0123456789abcdef.part"  # a run that died
    dead.write_text("x")
    old = time.time() - reports.TEMP_MAX_AGE - 60
    os.utime(dead, (old, old))
    running_temp = folder / ".daily-2026-01-01.csv.fedcba9876543210.part"  # a run going on
    running_temp.write_text("x")

    daily = {"daily": report(keep=2, at="00:00")}
    for day in range(1, 5):
        reports.run_due(daily, T(2026, 1, day + 1), directory=folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        running_temp.name, "daily-2026-01-03.csv", "daily-2026-01-04.csv", other.name]


@pytest.mark.parametrize("mask", [False, True])
def test_the_worker_job_writes_masked_files_when_configured(database_url, tmp_path,
                                                            mask) -> None:
    folder = tmp_path / "reports"
    config = make_config(database_url, mask_phone_numbers=mask, reports_dir=str(folder),
                         reports={"nightly": {"schedule": "daily", "at": "00:00",
                                              "format": "jsonl"}})
    with running(config) as app:
        today = dt.datetime.now(dt.UTC).date()
        yesterday = dt.datetime.combine(today - dt.timedelta(days=1), dt.time(12))
        add(yesterday, to="+77011234567", text="Call us back from +77011234567, code 1234")
        assert jobs.write_reports(app) == 1
        assert jobs.write_reports(app) == 0  # the next tick: one stat, nothing due
        (path,) = folder.iterdir()
        assert path.name == f"nightly-{yesterday.date()}.jsonl"
        (row,) = read(path)
        assert row["to"] == ("+7701•••••67" if mask else "+77011234567")
        # The numbers in the text too (a viewer reads these files): codes stay.
        assert row["text"] == ("Call us back from +7701•••••67, code 1234" if mask
                               else "Call us back from +77011234567, code 1234")


def test_one_failing_report_does_not_stop_the_others(app, folder, monkeypatch) -> None:
    real = reports.exports.export

    def export(fmt: str, flt: Any, output: Path, **kw: Any) -> int:
        if flt.provider == "fake":
            raise RuntimeError("disk full")
        return real(fmt, flt, output, **kw)

    monkeypatch.setattr(reports.exports, "export", export)
    both = {"a": report("a", provider="fake"), "b": report("b", provider="skycore")}
    assert [p.name for p in reports.run_due(both, T(2026, 1, 2, 2), directory=folder)] == [
        "b-2026-01-01.csv"]
    assert sorted(p.name for p in folder.iterdir()) == ["b-2026-01-01.csv"]  # nothing partial


# -- config ----------------------------------------------------------------------------------

GOOD = {"schedule": "daily", "at": "02:00", "format": "csv-excel", "provider": "skycore",
        "keep": 30}


@pytest.mark.parametrize(("reports_cfg", "message"), [
    ({"daily-billing": {**GOOD, "format": "pdf"}},
     "reports.daily-billing.format: must be one of csv, csv-excel, xlsx, jsonl"),
    ({"x": {"at": "02:00"}}, "reports.x.schedule: must be"),
    ({"x": {"schedule": "monthly"}}, "reports.x.schedule: must be"),
    ({"x": {"schedule": "daily", "weekday": "mon"}}, "reports.x.weekday: only weekly"),
    ({"x": {"schedule": "weekly", "weekday": "funday"}}, "reports.x.weekday: must be one of"),
    ({"x": {"schedule": "daily", "at": "24:00"}}, "reports.x.at: expected"),
    ({"x": {"schedule": "daily", "at": "2am"}}, "reports.x.at: expected"),
    ({"x": {"schedule": "daily", "at": 2}}, "reports.x.at: expected"),
    ({"x": {"schedule": "daily", "keep": 0}}, "reports.x.keep: expected"),
    ({"x": {"schedule": "daily", "keep": "ten"}}, "reports.x.keep: expected"),
    ({"x": {"schedule": "daily", "keep": True}}, "reports.x.keep: expected"),
    ({"x": {"schedule": "daily", "status": "lost"}}, "reports.x.status: must be one of"),
    ({"x": {"schedule": "daily", "provider": "skycorp"}}, "reports.x.provider: must be one of"),
    ({"x": {"schedule": "daily", "q": 7701}}, "reports.x.q: expected a string"),
    ({"x": {"schedule": "daily", "formt": "csv"}}, "reports.x.formt: unknown setting"),
    ({"Daily Billing": {"schedule": "daily"}}, "reports.Daily Billing: a report name is"),
    ({"../etc": {"schedule": "daily"}}, "reports.../etc: a report name is"),
    ({"x": "daily"}, "reports.x: expected a table"),
    ("daily", "reports: expected dict"),
])
def test_bad_reports_fail_at_start_naming_the_key(tmp_path, reports_cfg, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        create_app({"database_url": f"sqlite:///{tmp_path}/x.db", "reports": reports_cfg})


def test_rollup_interval_is_a_positive_number(tmp_path) -> None:
    for bad in (0, "often"):
        with pytest.raises(ConfigError, match="rollup_interval_seconds"):
            load({"instance_dir": str(tmp_path)} | {"rollup_interval_seconds": bad})
    assert load({"instance_dir": str(tmp_path)} | {})["rollup_interval_seconds"] == 300


def test_reports_from_env_and_the_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRACKER_REPORTS__NIGHTLY__SCHEDULE", "weekly")
    monkeypatch.setenv("TRACKER_REPORTS__NIGHTLY__KEEP", "7")
    monkeypatch.setenv("TRACKER_REPORTS__NIGHTLY__AT", "04:30")
    cfg = load({"instance_dir": str(tmp_path / "instance")} | {})
    nightly = cfg["reports"]["nightly"]
    assert (nightly.schedule, nightly.keep, nightly.at, nightly.weekday) == (
        "weekly", 7, dt.time(4, 30), 0)
    assert nightly.format == "csv" and nightly.filters() == {}
    assert cfg["reports_dir"] == str(tmp_path / "instance" / "reports")
    instance = {"instance_dir": str(tmp_path / "instance")}
    # Relative: to the instance folder's parent (the project's), whatever the working directory.
    assert load(instance | {"reports_dir": "out"})["reports_dir"] == str(tmp_path / "out")
    assert load(instance | {"reports_dir": "/srv/r"})["reports_dir"] == "/srv/r"


def test_toml_time_is_accepted() -> None:
    parsed = tomllib.loads('[reports.x]\nschedule = "daily"\nat = 02:30:00\n')
    assert reports.validate(parsed["reports"])["x"].at == dt.time(2, 30)


def test_the_example_config_documents_valid_reports() -> None:
    """The commented [reports.*] tables of config/tracker.example.toml, uncommented, load."""
    text = (ROOT / "config" / "tracker.example.toml").read_text(encoding="utf-8")
    lines = text.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("# [reports."))
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:] if line.startswith("# ") else line[1:])
    found = reports.validate(tomllib.loads("\n".join(block))["reports"])
    assert sorted(found) == ["daily-billing", "weekly-failures"]
    assert "reports_dir" in text and "rollup_interval_seconds = 300.0" in text
    documented = set(re.findall(r"^[# ]*(\w+) = ", "\n".join(lines[start:start + len(block)]),
                                re.MULTILINE))
    assert documented >= set(reports.KEYS)


# -- the worker ------------------------------------------------------------------------------


def test_worker_schedules_reports_and_the_configured_rollup(tmp_path) -> None:
    base = {"database_url": f"sqlite:///{tmp_path}/x.db"}
    worker = Worker(create_app({**base, "rollup_interval_seconds": 120,
                                "reports": {"d": {"schedule": "daily"}}}))
    assert worker.scheduler.get_job("roll_up").trigger.interval == dt.timedelta(seconds=120)
    assert worker.scheduler.get_job("reports").trigger.interval == dt.timedelta(
        seconds=REPORTS_INTERVAL)
    plain = Worker(create_app(base))
    assert plain.scheduler.get_job("roll_up").trigger.interval == dt.timedelta(seconds=300)
    assert plain.scheduler.get_job("reports") is None  # nothing configured: no job


# -- the page --------------------------------------------------------------------------------


def login(client: Any, username: str) -> None:
    page = client.get("/auth/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/auth/login", data={"username": username, "password": PASSWORD,
                                                "csrf_token": token})
    assert response.status_code == 302


@pytest.fixture
def site(database_url: str, tmp_path: Path) -> Any:
    """An app with two reports and files written for them, and a secret beside the folder."""
    folder = tmp_path / "reports"
    config = make_config(database_url, reports_dir=str(folder), reports={
        "billing": {"schedule": "daily", "format": "csv-excel", "provider": "skycore"},
        "weekly": {"schedule": "weekly", "weekday": "tue", "format": "xlsx"},
    })
    with running(config) as app:
        for day in range(1, 30):
            add(T(2026, 1, day, 9))
        cfg = app.config["TRACKER"]
        reports.run_due(cfg["reports"], T(2026, 1, 10, 3), directory=folder)
        folder.joinpath("gone-2025-12-01.jsonl").write_text("{}\n")  # a report since removed
        (tmp_path / "secret.csv").write_text("not yours")
        folder.joinpath("link-2026-01-01.csv").symlink_to(tmp_path / "secret.csv")
        accounts.create_user("ana", PASSWORD, "viewer")
        yield app, folder


def test_reports_page_needs_a_login(site) -> None:
    app, _ = site
    client = app.test_client()
    for path in ("/reports", "/reports/billing-2026-01-09.csv"):
        response = client.get(path)
        assert response.status_code == 302 and "/auth/login" in response.headers["Location"]


def test_a_viewer_lists_and_downloads_the_files(site) -> None:
    app, folder = site
    client = app.test_client()
    login(client, "ana")
    page = client.get("/reports").get_data(as_text=True)
    assert re.search(r'<a href="/reports"[^>]*>Reports</a>', page)  # the nav link
    for shown in ("billing-2026-01-09.csv", "2026-01-09", "csv-excel", "daily at 01:00 UTC",
                  "provider = skycore", "weekly-2025-12-29_2026-01-04.xlsx",
                  "2025-12-29 to 2026-01-04", "weekly on Tuesday at 01:00 UTC",
                  "gone-2025-12-01.jsonl", "No longer configured"):
        assert shown in page, shown
    assert "link-2026-01-01.csv" not in page  # a symlink is not a report file

    path = folder / "billing-2026-01-09.csv"
    with client.get("/reports/billing-2026-01-09.csv") as response:
        assert response.status_code == 200
        assert response.data == path.read_bytes() and len(read(path)) == 1
        assert response.headers["Content-Disposition"] == (
            "attachment; filename=billing-2026-01-09.csv")
        assert response.headers["Content-Length"] == str(path.stat().st_size)
        assert response.headers.getlist("Content-Type") == ["text/csv; charset=utf-8"]  # once
    with client.get("/reports/billing-2026-01-09.csv", headers={"Range": "bytes=10-"}) as tail:
        assert tail.status_code == 206 and tail.data == path.read_bytes()[10:]  # resumable
    with client.get("/reports/weekly-2025-12-29_2026-01-04.xlsx") as xlsx:
        assert xlsx.status_code == 200 and xlsx.data[:2] == b"PK"
        assert xlsx.headers.getlist("Content-Type") == [exports.FORMATS["xlsx"].content_type]


def test_only_listed_names_are_served(site) -> None:
    app, _ = site
    client = app.test_client()
    login(client, "ana")
    for path in ("/reports/billing-2026-01-01.csv",  # never written
                 "/reports/link-2026-01-01.csv",  # a symlink out of the folder
                 "/reports/..%2Fsecret.csv", "/reports/%2E%2E/secret.csv",
                 "/reports/..%2F..%2Fx.db", "/reports/.billing-2026-01-09.csv.0123456789abcdef",
                 "/reports/billing-2026-01-09.csv%00", "/reports/billing-2026-01-09.csv.part"):
        assert client.get(path).status_code == 404, path


def test_a_report_not_written_yet_shows_as_due(database_url, tmp_path) -> None:
    config = make_config(database_url, reports_dir=str(tmp_path / "none"),
                         reports={"daily": {"schedule": "daily"}})
    with running(config) as app:
        accounts.create_user("ana", PASSWORD, "viewer")
        client = app.test_client()
        login(client, "ana")
        page = client.get("/reports").get_data(as_text=True)
        assert "Due now:" in page and "No file yet." in page
