"""Exports: what the filters show, every page, in four formats, complete, formula-safe.

The end-to-end test downloads exports larger than a few batches from the real `tracker serve`
over HTTP; the LibreOffice test reads the files back the way a spreadsheet user would (skipped
only where `soffice` is not installed: `apt-get install libreoffice-calc-nogui`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import openpyxl
import pytest
from servers import ROOT, tracker_serve

from tracker import accounts, exports, reporting
from tracker.models import Message
from tracker.web.dashboard import mask_phone

PASSWORD = "correct horse battery"
HYPERLINK = '=HYPERLINK("http://evil.example/x","click")'
T0 = dt.datetime(2026, 3, 1, 12, 0, 0)


def seed(count: int, start: int = 0, **fields: object) -> None:
    """`count` messages in a few big inserts: every 3rd delivered (2.5 s latency), the rest
    failed; providers alternate."""
    rows = []
    for i in range(start, start + count):
        delivered = i % 3 == 0
        rows.append({
            "reference": f"R{i:09d}", "client_ref": f"order-{i}",
            "provider": "fake" if i % 2 else "skycore", "provider_message_id": f"P{i}",
            "recipient": f"+7701{i:07d}", "sender": "ACME", "text": "hello",
            "status": "delivered" if delivered else "failed", "status_order": "x",
            "status_inferred": i % 5 == 0,
            "error_code": None if delivered else "E42",
            "error_detail": None if delivered else "Unknown subscriber",
            "encoding": "GSM-7", "segments": 1, "attempts": 1,
            "created_at": T0 + dt.timedelta(seconds=i),
            "submitted_at": T0 + dt.timedelta(seconds=i),
            "status_at": T0 + dt.timedelta(seconds=i, milliseconds=2500),
            **fields,
        })
    for chunk in range(0, len(rows), 500):
        Message.insert_many(rows[chunk:chunk + 500]).execute()


def read_csv(path: Path, excel: bool = False) -> list[dict[str, str]]:
    raw = path.read_bytes()
    if excel:
        assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw and b"sep=" not in raw
    text = raw.decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text, newline="")))


def read_xlsx(path: Path) -> list[dict[str, object]]:
    book = openpyxl.load_workbook(path, read_only=True)
    out: list[dict[str, object]] = []
    for sheet in book.worksheets:
        values = sheet.iter_rows(values_only=True)
        header = next(values)
        assert header == exports.COLUMNS
        out += [dict(zip(header, row, strict=True)) for row in values]
    book.close()
    return out


def read_any(fmt: str, path: Path) -> list[dict[str, object]]:
    if fmt == "xlsx":
        return read_xlsx(path)
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return read_csv(path, excel=fmt == "csv-excel")


# -- the writers, on each database ------------------------------------------------------------


@pytest.mark.parametrize("fmt", exports.FORMATS)
def test_export_is_exactly_what_the_filter_shows_across_batches(app, tmp_path, fmt) -> None:
    seed(53)
    flt = reporting.MessageFilter(status="failed", provider="fake", before=10)  # before: ignored
    expected = [m.id for m in reporting.narrow(Message.select(Message.id),
                                               reporting.MessageFilter(status="failed",
                                                                       provider="fake"))
                .order_by(Message.id)]
    assert 10 < len(expected) < 53
    out = tmp_path / f"out.{fmt}"
    count = exports.export(fmt, flt, out, batch_size=4)  # many keyset batches
    assert count == len(expected)
    got = read_any(fmt, out)
    assert [int(r["id"]) for r in got] == expected
    assert not list(tmp_path.glob("*.part"))


def test_a_writer_that_stops_early_lets_the_reader_thread_go(app) -> None:
    """Batches are read ahead in a thread; when writing fails (disk full, client gone) the
    export must end at once, not leave a reader blocked on a batch no one takes."""
    seed(40)
    before = threading.active_count()
    batches = exports._batches([Message.id], reporting.MessageFilter(), "", 4)
    assert [row[0] for row in next(batches)] == [m.id for m in Message.select().order_by(
        Message.id).limit(4)]
    started = time.monotonic()
    batches.close()  # what an exception in the writer's loop does to the generator
    assert time.monotonic() - started < 2
    assert threading.active_count() == before


def test_columns_times_and_delivered_latency(app, tmp_path) -> None:
    seed(2)
    exports.export("jsonl", reporting.MessageFilter(), tmp_path / "o.jsonl")
    delivered, failed = read_any("jsonl", tmp_path / "o.jsonl")
    assert tuple(delivered) == exports.COLUMNS
    assert delivered["status"] == "delivered" and delivered["delivered_latency_s"] == 2.5
    assert delivered["created_at"] == "2026-03-01T12:00:00.000Z"
    assert delivered["status_at"] == "2026-03-01T12:00:02.500Z"
    assert delivered["status_inferred"] is True and delivered["to"] == "+77010000000"
    assert failed["delivered_latency_s"] is None and failed["error_code"] == "E42"
    assert failed["error_detail"] == "Unknown subscriber" and failed["status_inferred"] is False

    exports.export("xlsx", reporting.MessageFilter(), tmp_path / "o.xlsx")
    first = read_xlsx(tmp_path / "o.xlsx")[0]
    assert first["status_at"] == dt.datetime(2026, 3, 1, 12, 0, 2, 500000)  # a real date cell
    assert first["delivered_latency_s"] == 2.5 and first["segments"] == 1
    assert (first["reference"], first["provider"], first["status"], first["encoding"]) == (
        "R000000000", "skycore", "delivered", "GSM-7")


def test_empty_result_is_a_header_only_file(app, tmp_path) -> None:
    for fmt in exports.FORMATS:
        out = tmp_path / f"e.{fmt}"
        assert exports.export(fmt, reporting.MessageFilter(status="delivered"), out) == 0
        assert read_any(fmt, out) == []


def test_xlsx_continues_on_a_new_sheet_past_the_row_limit(app, tmp_path) -> None:
    seed(10)
    out = tmp_path / "o.xlsx"
    count = exports.write_xlsx(out, reporting.MessageFilter(), sheet_rows=4)
    assert count == 10
    assert len(openpyxl.load_workbook(out, read_only=True).worksheets) == 4  # 3 + 3 + 3 + 1
    assert [r["id"] for r in read_xlsx(out)] == [m.id for m in Message.select().order_by(
        Message.id)]


# -- formula injection ------------------------------------------------------------------------


def seed_hostile() -> None:
    seed(1, client_ref=HYPERLINK, error_detail="+SUM(1,2)", sender="=1+1",
         provider_message_id="@cmd", error_code="-1", recipient="+77011234567")
    seed(1, start=1, client_ref="\tTAB", error_detail="\rCR", sender="ACME",
         recipient="+14155550100")
    seed(1, start=2, sender="+12345", recipient="+1415555010x")  # not E.164: free text


def test_csv_neutralizes_formulas_and_keeps_phone_numbers(app, tmp_path) -> None:
    seed_hostile()
    exports.export("csv", reporting.MessageFilter(), tmp_path / "o.csv")
    first, second, third = read_csv(tmp_path / "o.csv")
    assert third["from"] == "'+12345" and third["to"] == "'+1415555010x"
    assert first["client_ref"] == "'" + HYPERLINK
    assert first["error_detail"] == "'+SUM(1,2)" and first["provider_message_id"] == "'@cmd"
    assert first["error_code"] == "'-1"
    assert first["from"] == "'=1+1"
    assert second["client_ref"] == "'\tTAB" and second["error_detail"] == "'\rCR"
    assert first["to"] == "+77011234567" and second["to"] == "+14155550100"  # exact: E.164
    assert second["from"] == "ACME"

    exports.export("csv-excel", reporting.MessageFilter(), tmp_path / "x.csv")
    first, _second, third = read_csv(tmp_path / "x.csv", excel=True)
    assert first["to"] == '="+77011234567"' and first["client_ref"] == "'" + HYPERLINK
    assert first["created_at"] == "2026-03-01 12:00:00.000" and third["from"] == "'+12345"

    # Numbers masked for a viewer are no longer E.164: they follow the free-text rule.
    exports.export("csv-excel", reporting.MessageFilter(), tmp_path / "m.csv", phone=mask_phone)
    first, second, third = read_csv(tmp_path / "m.csv", excel=True)
    assert first["to"] == "'+7701•••••67" and first["from"] == "'=1+1"
    assert second["from"] == "ACME" and first["client_ref"] == "'" + HYPERLINK


def test_xlsx_writes_text_as_strings_never_formulas(app, tmp_path) -> None:
    seed_hostile()
    exports.export("xlsx", reporting.MessageFilter(), tmp_path / "o.xlsx")
    sheet = openpyxl.load_workbook(tmp_path / "o.xlsx").active
    header = [c.value for c in sheet[1]]
    cells = {name: sheet.cell(row=2, column=header.index(name) + 1) for name in header}
    for name, value in (("client_ref", HYPERLINK), ("to", "+77011234567"), ("from", "=1+1"),
                        ("error_detail", "+SUM(1,2)"), ("error_code", "-1")):
        assert cells[name].data_type == "s" and cells[name].value == value, name


AWKWARD = ["a<b&c>d", "_x0041_ stays literal", " leading", "trailing ", "tab\there",
           "two\nlines", "cr\rhere", "bell\x07", "Ünïcödé ✓ 🙂 ж", "plain"]


def excel_text(value: object) -> object:
    """A string cell's text as Excel reads it: `_xHHHH_` is the character U+HHHH (ECMA-376
    ST_Xstring; openpyxl leaves the escape as it is)."""
    if not isinstance(value, str):
        return value
    return re.sub("_x([0-9A-Fa-f]{4})_", lambda found: chr(int(found[1], 16)), value)


@pytest.mark.parametrize("masked", [False, True])
def test_xlsx_text_that_needs_escaping_reads_back_exactly(app, tmp_path, masked) -> None:
    """The database renders clean cells itself and hands the rest to Python to escape: both
    paths must give back exactly the stored text (markup, Excel's _xHHHH_ syntax, edge
    spaces, tabs, newlines, non-ASCII), with and without the phone mask."""
    for i, value in enumerate(AWKWARD):
        seed(1, start=i, client_ref=value, error_detail=value, sender=value,
             provider_message_id=value, error_code=value)
    exports.export("xlsx", reporting.MessageFilter(), tmp_path / "o.xlsx",
                   phone=mask_phone if masked else None)
    rows = read_xlsx(tmp_path / "o.xlsx")
    assert len(rows) == len(AWKWARD)
    for row, value in zip(rows, AWKWARD, strict=True):
        for name in ("client_ref", "error_detail", "provider_message_id", "error_code"):
            assert excel_text(row[name]) == value, (name, value)
        assert excel_text(row["from"]) == (mask_phone(value) if masked else value)


@pytest.mark.skipif(shutil.which("soffice") is None and os.environ.get("CI") != "true",
                    reason="LibreOffice not installed (apt-get install libreoffice-calc-nogui)")
def test_libreoffice_reads_phone_numbers_exactly_and_formulas_as_text(app, tmp_path) -> None:
    seed_hostile()
    exports.export("csv-excel", reporting.MessageFilter(), tmp_path / "excel.csv")
    exports.export("xlsx", reporting.MessageFilter(), tmp_path / "book.xlsx")
    out = tmp_path / "lo"
    profile = (tmp_path / "profile").as_uri()  # its own profile: parallel runs do not collide
    for name, infilter in (("excel.csv", ["--infilter=CSV:44,34,76,1"]), ("book.xlsx", [])):
        subprocess.run(["soffice", f"-env:UserInstallation={profile}", "--headless", *infilter,
                        "--convert-to", "csv:Text - txt - csv (StarCalc):44,34,76,1",
                        "--outdir", str(out), str(tmp_path / name)],
                       check=True, capture_output=True, timeout=120)
    # What LibreOffice computed for each cell, written back out as plain CSV.
    from_csv = read_csv(out / "excel.csv")
    from_xlsx = read_csv(out / "book.csv")
    for rows in (from_csv, from_xlsx):
        assert [r["to"] for r in rows][:2] == ["+77011234567", "+14155550100"]
        assert rows[1]["from"] == "ACME"
    assert from_csv[0]["client_ref"] == "'" + HYPERLINK  # text, not a link named "click"
    assert from_csv[0]["from"] == "'=1+1"
    assert from_xlsx[0]["client_ref"] == HYPERLINK and from_xlsx[0]["from"] == "=1+1"
    assert from_xlsx[0]["error_detail"] == "+SUM(1,2)"


# -- from the page, in process: the status page of a long job, and ownership -------------------


def get(client, path: str):
    """A request in its own app context: the test's context would share `g` (where Flask-Login
    and Flask-WTF cache the user and the token) between two clients."""
    with client.application.app_context():
        return client.get(path)


def login(client, username: str) -> None:
    with client.application.app_context():
        _login(client, username)


def _login(client, username: str) -> None:
    page = client.get("/auth/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/auth/login", data={"username": username, "password": PASSWORD,
                                                "csrf_token": token})
    assert response.status_code == 302


def test_page_links_carry_the_filters_and_a_slow_job_has_a_status_page(
        app, tmp_path, monkeypatch) -> None:
    from tracker.web import exports as web_exports

    app.config["EXPORTS_DIR"] = str(tmp_path / "exports")
    accounts.create_user("ana", PASSWORD, "viewer")
    accounts.create_user("bob", PASSWORD, "viewer")
    seed(30)
    ana, bob = app.test_client(), app.test_client()
    assert get(ana, "/messages/export?format=csv").status_code == 302  # login first
    login(ana, "ana")
    login(bob, "bob")
    page = get(ana, "/messages?status=failed&provider=fake&q=").get_data(as_text=True)
    link = re.search(r'href="(/messages/export\?format=xlsx[^"]*)"', page).group(1)
    link = link.replace("&amp;", "&")
    assert "status=failed" in link and "provider=fake" in link

    monkeypatch.setattr(web_exports, "START_WAIT", 0.0)  # as if the job took longer
    started = get(ana, link)
    assert started.status_code == 303 and "/exports/" in started.headers["Location"]
    status_url = started.headers["Location"]
    assert get(bob, status_url).status_code == 404  # another viewer's export

    def done() -> bool:
        response = get(ana, status_url)
        return response.status_code == 200 and "Refresh" not in response.headers
    deadline = time.monotonic() + 60
    while not done():
        assert time.monotonic() < deadline, get(ana, status_url).get_data(as_text=True)
        time.sleep(0.2)
    download = get(ana, status_url + "/download")
    assert download.status_code == 200
    assert "attachment" in download.headers["Content-Disposition"]
    (tmp_path / "got.xlsx").write_bytes(download.get_data())
    download.close()
    for child in list(web_exports._children.values()):  # it may still be closing its database
        child.wait(timeout=30)
    get(ana, status_url)
    assert not web_exports._children  # the finished job was reaped: no zombie
    ids = [r["id"] for r in read_xlsx(tmp_path / "got.xlsx")]
    assert ids == [m.id for m in Message.select().where(
        (Message.status == "failed") & (Message.provider == "fake")).order_by(Message.id)]
    assert get(ana, "/messages/export?format=pdf").status_code == 400


# -- end to end over real HTTP against `tracker serve` ----------------------------------------


def test_large_exports_download_complete_over_http(app, database_url, tmp_path,
                                                    request) -> None:
    total = 12_345  # more than two keyset batches of 5,000
    seed(total)
    accounts.create_user("ana", PASSWORD, "viewer")
    failed_fake = {m.id for m in Message.select(Message.id).where(
        (Message.status == "failed") & (Message.provider == "fake"))}
    with tracker_serve(tmp_path / "run", database_url=database_url) as server, \
            httpx.Client(base_url=server.base_url, timeout=60) as http:
        page = http.get("/auth/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        assert http.post("/auth/login", data={"username": "ana", "password": PASSWORD,
                                              "csrf_token": token}).status_code == 302
        for fmt, params, expected in (("csv", {}, total),
                                      ("xlsx", {"status": "failed", "provider": "fake",
                                                "before": "5"}, len(failed_fake))):
            response = http.get("/messages/export", params={"format": fmt, **params},
                                follow_redirects=True)
            assert response.status_code == 200, response.text[:2000]
            assert int(response.headers["Content-Length"]) == len(response.content)
            path = tmp_path / f"download.{fmt}"
            path.write_bytes(response.content)
            token = response.url.path.split("/")[2]  # /exports/<token>/download
            jobs = ROOT / "instance" / "exports"  # where `tracker serve` keeps them
            request.addfinalizer(lambda t=token, d=jobs: [p.unlink() for p in d.glob(f"{t}.*")])
            tail = http.get(str(response.url), headers={"Range": "bytes=1000-"})
            assert tail.status_code == 206 and tail.content == response.content[1000:]  # resume
            rows = read_any(fmt, path)
            assert len(rows) == expected
            ids = {int(r["id"]) for r in rows}
            if fmt == "csv":
                assert ids == {m.id for m in Message.select(Message.id)}
            else:
                assert ids == failed_fake


@pytest.mark.parametrize(("role", "masked"), [("viewer", True), ("admin", False)])
def test_an_export_from_the_page_masks_phone_numbers_for_viewers(database_url, tmp_path, role,
                                                                 masked) -> None:
    """With `mask_phone_numbers` on, a viewer's export (started from the page, written by its
    own job) carries the numbers as the page shows them; an admin's carries them whole."""
    from conftest import make_config, running

    with running(make_config(database_url, mask_phone_numbers=True)) as masked_app:
        masked_app.config["EXPORTS_DIR"] = str(tmp_path / "exports")
        accounts.create_user("ana", PASSWORD, role)
        seed(3)
        client = masked_app.test_client()
        login(client, "ana")
        started = get(client, "/messages/export?format=csv")
        assert started.status_code == 303, started.data
        location = started.headers["Location"]
        deadline = time.monotonic() + 60
        while "/download" not in location:  # still running: its status page, until done
            assert time.monotonic() < deadline, get(client, location).get_data(as_text=True)
            time.sleep(0.2)
            page = get(client, location)
            if page.status_code == 200 and "Refresh" not in page.headers:
                location += "/download"
        download = get(client, location)
        assert download.status_code == 200
        rows = list(csv.DictReader(io.StringIO(download.get_data(as_text=True).lstrip("\ufeff"))))
        download.close()
    whole = sorted(f"+7701{i:07d}" for i in range(3))
    # A masked number is no longer E.164, so the CSV quotes it as text like any free text
    # starting with "+" (a spreadsheet would read it as a formula).
    assert sorted(r["to"] for r in rows) == (
        ["'" + mask_phone(n) for n in whole] if masked else whole)
