"""Exports: what the filters show, every page, in the list's order, in every format of the one
registry, complete, formula-safe, masked for viewers.

The jobs that write them from the page, their status page and downloads, the worker and the
command line are in test_export_jobs.py. The LibreOffice test reads the files back the way a
spreadsheet user would (skipped only where `soffice` is not installed: `apt-get install
libreoffice-calc-nogui`).
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
import zipfile
from pathlib import Path

import openpyxl
import peewee as pw
import pytest

from tracker import exports, reporting
from tracker.db import db, is_sqlite, without_jit
from tracker.models import Event, Message
from tracker.phones import mask_phone

HYPERLINK = '=HYPERLINK("http://evil.example/x","click")'
T0 = dt.datetime(2026, 3, 1, 12, 0, 0)


def seed(count: int, start: int = 0, same_second: int = 1, **fields: object) -> None:
    """`count` messages in a few big inserts: every 3rd delivered (2.5 s latency), the rest
    failed; providers alternate; `same_second` messages share each created_at."""
    rows = []
    for i in range(start, start + count):
        delivered = i % 3 == 0
        created = T0 + dt.timedelta(seconds=i // same_second)
        rows.append({
            "reference": f"R{i:09d}", "client_ref": f"order-{i}",
            "provider": "fake" if i % 2 else "skycore", "provider_message_id": f"P{i}",
            "recipient": f"+7701{i:07d}", "sender": "ACME", "text": f"hello {i}",
            "status": "delivered" if delivered else "failed", "status_order": "x",
            "status_inferred": i % 5 == 0,
            "error_code": None if delivered else "E42",
            "error_detail": None if delivered else "Unknown subscriber",
            "encoding": "GSM-7", "segments": 1, "attempts": 1,
            "created_at": created, "submitted_at": created,
            "status_at": created + dt.timedelta(milliseconds=2500),
            **fields,
        })
    for chunk in range(0, len(rows), 500):
        Message.insert_many(rows[chunk:chunk + 500]).execute()


def read_csv(path: Path, excel: bool = False) -> list[dict[str, str]]:
    raw = path.read_bytes()
    if excel:
        assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw and b"sep=" not in raw
    else:  # for programs: no byte-order mark in front of the first column's name
        assert not raw.startswith(b"\xef\xbb\xbf"), raw[:10]
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


def list_order(flt: reporting.MessageFilter) -> list[int]:
    """The ids the messages list shows for a filter, page after page, as a person pages it."""
    ids: list[int] = []
    while True:
        page = reporting.list_messages(flt, limit=7)
        ids += [row.id for row in page.rows]
        if page.older is None:
            return ids
        flt = reporting.MessageFilter(**{**flt.__dict__, "before": page.older})


# -- the writers, on each database ------------------------------------------------------------


@pytest.mark.parametrize("fmt", exports.FORMATS)
def test_export_is_exactly_the_list_in_its_order_across_batches(app, tmp_path, fmt) -> None:
    """Newest first, as the list pages them, with ties on created_at (three messages a second)
    broken by id as the list breaks them, across keyset batches that end inside a tie."""
    seed(53, same_second=3)
    Message.update(created_at=T0 + dt.timedelta(hours=1)).where(Message.id == 6).execute()
    flt = reporting.MessageFilter(status="failed", provider="fake", before=10)  # before: ignored
    expected = list_order(reporting.MessageFilter(status="failed", provider="fake"))
    assert 10 < len(expected) < 53 and expected[0] == 6  # created last, though an old id
    out = tmp_path / f"out.{fmt}"
    count = exports.export(fmt, flt, out, batch_size=4)  # many keyset batches
    assert count == len(expected)
    got = read_any(fmt, out)
    assert [int(r["id"]) for r in got] == expected
    assert not list(tmp_path.glob("*.part"))


def test_rows_deleted_while_exporting_do_not_end_it_early(app, tmp_path) -> None:
    """Retention may delete the rows a long export has already written, the last row of a
    batch among them: the next batch starts from that row's values, not from the row."""
    seed(40)
    everything = list_order(reporting.MessageFilter())

    def delete_what_was_written(rows: int) -> None:
        Message.delete().where(Message.id.in_(everything[:rows])).execute()

    out = tmp_path / "o.csv"
    exports.export("csv", reporting.MessageFilter(), out, batch_size=4,
                   progress=delete_what_was_written)
    assert [int(r["id"]) for r in read_csv(out)] == everything


def test_messages_created_during_an_export_are_not_in_it(app, tmp_path) -> None:
    seed(12)
    before = list_order(reporting.MessageFilter())

    def add_one(_rows: int) -> None:
        seed(1, start=1000 + _rows)

    out = tmp_path / "o.jsonl"
    assert exports.export("jsonl", reporting.MessageFilter(), out, batch_size=4,
                          progress=add_one) == 12
    assert [r["id"] for r in read_any("jsonl", out)] == before


@pytest.mark.parametrize("fmt", exports.FORMATS)
def test_a_job_writes_the_rows_it_counted_when_it_started(app, tmp_path, fmt) -> None:
    """An export job counts its rows up to the newest message when it starts (`top`), shows
    progress against that count, and writes exactly those rows, in every format."""
    seed(12)
    top = sorted(list_order(reporting.MessageFilter()))[7]  # the 8th message by id
    flt = reporting.MessageFilter(provider="fake")
    counted = exports.expected_rows(flt, top=top)
    expected = [i for i in list_order(flt) if i <= top]
    assert counted == len(expected) == 4 < exports.expected_rows(flt)
    assert exports.expected_rows(reporting.MessageFilter(status="queued")) == 0
    out = tmp_path / f"out.{fmt}"
    assert exports.export(fmt, flt, out, batch_size=3, top=top) == counted
    assert [int(r["id"]) for r in read_any(fmt, out)] == expected


@pytest.mark.parametrize("fmt", exports.FORMATS)
def test_a_search_by_national_number_exports_what_the_list_finds(app, tmp_path, fmt) -> None:
    """With default_region set, a whole national number is matched exactly (as on the
    dashboard): the count and the file agree with the list."""
    seed(3)
    flt = reporting.MessageFilter(q="8 701 000 00 01")  # +77010000001, written the Kazakh way
    assert exports.expected_rows(flt, "KZ") == 1
    out = tmp_path / f"kz.{fmt}"
    assert exports.export(fmt, flt, out, default_region="KZ") == 1
    assert [int(r["id"]) for r in read_any(fmt, out)] == [2]


def test_jsonl_is_one_compact_utf8_object_per_line(app, tmp_path) -> None:
    """Text as written (UTF-8, not \\u escapes, so grep finds "Привет"), one object per line,
    no padding: what jq, pandas.read_json(lines=True) and a log shipper take line by line."""
    seed(1, text="Привет, мир")
    out = tmp_path / "o.jsonl"
    exports.export("jsonl", reporting.MessageFilter(), out)
    raw = out.read_bytes()
    assert "Привет, мир".encode() in raw and b"\\u" not in raw
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1 and b"\r" not in raw
    assert raw.startswith(b'{"id":') and b'", "' not in raw and b'": ' not in raw


def test_progress_is_told_the_rows_written_after_each_batch(app, tmp_path) -> None:
    seed(10)
    for fmt in exports.FORMATS:
        told: list[int] = []
        exports.export(fmt, reporting.MessageFilter(), tmp_path / f"p.{fmt}", batch_size=4,
                       progress=told.append)
        assert told == [4, 8, 10], fmt
    assert exports.expected_rows(reporting.MessageFilter(status="delivered")) == 4


def test_a_progress_callback_that_raises_stops_the_export_and_leaves_no_file(app,
                                                                            tmp_path) -> None:
    seed(20)

    def stop(rows: int) -> None:
        raise RuntimeError("stopped")

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeError):
        exports.export("xlsx", reporting.MessageFilter(), out / "s.xlsx", batch_size=4,
                       progress=stop)
    assert list(out.iterdir()) == []


def test_a_writer_that_stops_early_lets_the_reader_thread_go(app) -> None:
    """Batches are read ahead in a thread; when writing fails (disk full, client gone) the
    export must end at once, not leave a reader blocked on a batch no one takes."""
    seed(40)
    before = threading.active_count()
    batches = exports._batches([Message.id], reporting.MessageFilter(), "", 4)
    assert [row[0] for row in next(batches)] == list_order(reporting.MessageFilter())[:4]
    started = time.monotonic()
    batches.close()  # what an exception in the writer's loop does to the generator
    assert time.monotonic() - started < 2
    assert threading.active_count() == before


def test_the_reader_runs_without_jit_and_gives_its_connection_back_as_it_came(app) -> None:
    """Postgres JIT-compiled each 5,000-row batch (its estimated cost passes jit_above_cost
    at 1 M messages): 38 ms of each 104 ms. The export's reads run with JIT off, and the
    pooled connection is handed back with the server's setting. SQLite: nothing to do."""
    seed(6)
    if is_sqlite():
        rows = [r for batch in exports._batches([Message.id], reporting.MessageFilter(), "", 4)
                for r in batch]
        assert len(rows) == 6
        return
    seen = [row[1] for batch in exports._batches(
        [Message.id, pw.fn.current_setting("jit")], reporting.MessageFilter(), "", 4)
        for row in batch]
    assert seen == ["off"] * 6  # every batch, the first included
    server = db.execute_sql("SHOW jit").fetchone()[0]
    with without_jit():
        assert db.execute_sql("SHOW jit").fetchone()[0] == "off"
    assert db.execute_sql("SHOW jit").fetchone()[0] == server


@pytest.mark.parametrize("fmt", exports.FORMATS)
def test_a_long_latency_is_exact_to_the_millisecond(app, tmp_path, fmt) -> None:
    """A receipt a day late: seconds from submission to delivery, rounded to the millisecond,
    in every format (not a day's worth of drift from a wrong factor, not more digits)."""
    seed(1)  # delivered
    Message.update(status_at=T0 + dt.timedelta(days=1, milliseconds=250, microseconds=400)
                   ).execute()
    out = tmp_path / f"late.{fmt}"
    exports.export(fmt, reporting.MessageFilter(), out)
    [row] = read_any(fmt, out)
    assert float(row["delivered_latency_s"]) == 86400.25


def test_columns_times_text_and_delivered_latency(app, tmp_path) -> None:
    seed(2)
    exports.export("jsonl", reporting.MessageFilter(), tmp_path / "o.jsonl")
    failed, delivered = read_any("jsonl", tmp_path / "o.jsonl")  # newest first
    assert tuple(delivered) == exports.COLUMNS and exports.COLUMNS[-1] == "text"
    assert delivered["status"] == "delivered" and delivered["delivered_latency_s"] == 2.5
    assert delivered["created_at"] == "2026-03-01T12:00:00.000Z"
    assert delivered["status_at"] == "2026-03-01T12:00:02.500Z"
    assert delivered["status_inferred"] is True and delivered["to"] == "+77010000000"
    assert delivered["text"] == "hello 0" and failed["text"] == "hello 1"
    assert failed["delivered_latency_s"] is None and failed["error_code"] == "E42"
    assert failed["error_detail"] == "Unknown subscriber" and failed["status_inferred"] is False

    exports.export("xlsx", reporting.MessageFilter(), tmp_path / "o.xlsx")
    last = read_xlsx(tmp_path / "o.xlsx")[-1]
    assert last["status_at"] == dt.datetime(2026, 3, 1, 12, 0, 2, 500000)  # a real date cell
    assert last["delivered_latency_s"] == 2.5 and last["segments"] == 1
    assert (last["reference"], last["provider"], last["status"], last["encoding"],
            last["text"]) == ("R000000000", "skycore", "delivered", "GSM-7", "hello 0")


def canonical(fmt: str, row: dict[str, object]) -> dict[str, object]:
    """A row read back from any format, as the values it stands for: CSV's texts parsed (its
    formula guard and Excel's ="…" taken off), XLSX's and JSON's already typed, times as
    datetimes to the millisecond."""
    out: dict[str, object] = {}
    for name, value in row.items():
        if fmt.startswith("csv") and isinstance(value, str):
            if value == "":
                value = None
            elif value.startswith('="') and value.endswith('"'):
                value = value[2:-1]
            elif value.startswith("'") and value[1:].startswith(exports._FORMULA_START):
                value = value[1:]
            if name in ("id", "segments", "attempts") and value is not None:
                value = int(value)
            elif name == "delivered_latency_s" and value is not None:
                value = float(value)
            elif name == "status_inferred":
                value = {"true": True, "false": False}[value]
        if name.endswith("_at") and isinstance(value, str):
            value = dt.datetime.fromisoformat(value.removesuffix("Z").replace("T", " "))
        out[name] = value
    return out


@pytest.mark.parametrize("masked", [False, True])
def test_every_format_carries_the_same_values(app, tmp_path, masked) -> None:
    """What a CSV, a CSV for Excel, an XLSX and a JSON Lines export of the same filter hold,
    read back, is the same, cell for cell: no format drops, shifts or re-reads a column (a
    time, a flag, an empty latency, a masked number, a formula-like text)."""
    seed(6)
    (Message.update(status_at=None, status_inferred=False, text=HYPERLINK, sender="+15550001111")
     .where(Message.id.in_([2, 5])).execute())
    Event.create(message=2, kind="receipt", source="callback", status="failed", applied=True,
                 received_at=T0 + dt.timedelta(seconds=7, milliseconds=250))
    Message.update(sender="+1234567").where(Message.id == 5).execute()  # too short to mask
    read = {}
    for fmt in exports.FORMATS:
        out = tmp_path / f"all.{fmt}"
        assert exports.export(fmt, reporting.MessageFilter(), out, masked=masked) == 6
        raw = read_any(fmt, out)
        if fmt.startswith("csv"):  # Excel's ="…" keeps a number's "+"; plain CSV is for programs
            assert (raw[1]["from"] == '="+1234567"') == (fmt == "csv-excel"), (fmt, raw[1])
        read[fmt] = [canonical(fmt, row) for row in raw]
    first = read["jsonl"]
    assert first[4]["status_at_source"] == "received" and first[4]["from"] == (
        "+1555•••••11" if masked else "+15550001111")
    assert {r["status_inferred"] for r in first} == {True, False}
    for fmt, rows in read.items():
        assert rows == first, fmt


@pytest.mark.parametrize("fmt", exports.FORMATS)
def test_status_time_falls_back_to_when_the_receipt_arrived(app, tmp_path, fmt) -> None:
    """A receipt without a provider time (the offline provider's, for one) leaves status_at
    empty: the export shows when it was received instead, says so, and measures the latency
    to it, as the message page and the overview do (tracker.statustime)."""
    seed(3)  # newest first: 2 failed (provider time), 1 failed, 0 delivered
    (Message.update(status_at=None, status_inferred=False)
     .where(Message.id.in_([1, 2])).execute())
    Event.create(message=1, kind="receipt", source="callback", status="delivered",
                 applied=True, received_at=T0 + dt.timedelta(seconds=4))
    Event.create(message=1, kind="receipt", source="callback", status="sent", applied=True,
                 received_at=T0 + dt.timedelta(seconds=9))  # not the current status
    out = tmp_path / f"t.{fmt}"
    exports.export(fmt, reporting.MessageFilter(), out)
    third, second, first = read_any(fmt, out)
    assert first["status_at_source"] == "received" and float(
        first["delivered_latency_s"]) == 4.0
    assert str(first["status_at"]).replace("T", " ").startswith("2026-03-01 12:00:04")
    assert second["status_at"] in ("", None) and second["status_at_source"] in ("", None)
    assert third["status_at_source"] == "provider" and third["status_at"] not in ("", None)


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
    book = openpyxl.load_workbook(out)
    assert [sheet.title for sheet in book.worksheets] == [
        "messages", "messages 2", "messages 3", "messages 4"]  # 3 + 3 + 3 + 1
    widths = {cell.value: book.worksheets[0].column_dimensions[cell.column_letter].width
              for cell in book.worksheets[0][1]}
    assert widths["created_at"] == widths["status_at"] == 23 and widths["text"] == 60
    assert [r["id"] for r in read_xlsx(out)] == list_order(reporting.MessageFilter())


# -- the registry -----------------------------------------------------------------------------


def test_one_registry_names_every_format() -> None:
    assert list(exports.FORMATS) == ["csv", "csv-excel", "xlsx", "jsonl"]
    for name, fmt in exports.FORMATS.items():
        assert fmt.name == name and fmt.label and fmt.help
        assert fmt.file_name("messages") == f"messages.{fmt.extension}"
    assert exports.format_of_extension("csv").name == "csv"  # not csv-excel
    assert exports.format_of_extension("pdf") is None
    assert {"csv", "xlsx", "jsonl"} == exports.EXTENSIONS
    with pytest.raises(ValueError, match="format must be one of csv, csv-excel, xlsx, jsonl"):
        exports.export("pdf", reporting.MessageFilter(), Path("never.pdf"))


# -- masking ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "masked"), [
    ("Your code is 123456", "Your code is 123456"),  # a code is not a number to hide
    ("Call +77011234567 now", "Call +7701•••••67 now"),  # as `to` shows it
    ("Call 87011234567 now", "Call 8701•••••67 now"),
    ("Call +7 701 123 45 67", "Call +7 701 ••• •• 67"),
    ("(701) 555-0119 or 555-0119", "(701) 5••-••19 or •••-••19"),
    ("Due 2026-01-31 12:00 or 31.01.2026", "Due 2026-01-31 12:00 or 31.01.2026"),  # dates stay
    ("Balance 1 000 000 KZT", "Balance • ••• •00 KZT"),  # errs on the side of hiding
    ("Call 701555019 now", "Call 7015•••19 now"),  # 9 digits: the first 4 and last 2 stay
    ("Call 70155501 now", "Call ••••••01 now"),  # 8: keeping 4 + 2 would hide only 2
    ("", ""),
])
def test_mask_text_hides_every_phone_number_in_a_text(text, masked) -> None:
    assert exports.mask_text(text) == masked
    assert exports.mask_text(None) is None


def test_the_recipients_number_in_the_text_reads_as_in_the_to_column() -> None:
    number = "+77011234567"
    assert exports.mask_text(f"sent to {number}") == f"sent to {mask_phone(number)}"


@pytest.mark.parametrize("fmt", exports.FORMATS)
def test_a_masked_export_hides_numbers_in_to_from_and_the_text(app, tmp_path, fmt) -> None:
    seed(1, text="Ring +77011234567 or 87015550119; code 4321", sender="+14155550100",
         recipient="+77011234567")
    out = tmp_path / f"m.{fmt}"
    exports.export(fmt, reporting.MessageFilter(), out, masked=True)
    (row,) = read_any(fmt, out)
    quote = "'" if fmt.startswith("csv") else ""  # masked, a number is free text in CSV
    assert row["to"] == quote + "+7701•••••67" and row["from"] == quote + "+1415•••••00"
    assert row["text"] == "Ring +7701•••••67 or 8701•••••19; code 4321"
    assert row["reference"] == "R000000000"  # nothing else changes


# -- formula injection ------------------------------------------------------------------------


def seed_hostile() -> None:
    """Newest first in the files: the third, the second, the first."""
    seed(1, client_ref=HYPERLINK, error_detail="+SUM(1,2)", sender="=1+1",
         provider_message_id="@cmd", error_code="-1", recipient="+77011234567",
         text="=WEBSERVICE(\"http://evil.example\")")
    seed(1, start=1, client_ref="\tTAB", error_detail="\rCR", sender="ACME",
         recipient="+14155550100")
    seed(1, start=2, sender="+12345", recipient="+1415555010x")  # not E.164: free text


def test_csv_neutralizes_formulas_and_keeps_phone_numbers(app, tmp_path) -> None:
    seed_hostile()
    exports.export("csv", reporting.MessageFilter(), tmp_path / "o.csv")
    third, second, first = read_csv(tmp_path / "o.csv")
    assert third["from"] == "'+12345" and third["to"] == "'+1415555010x"
    assert first["client_ref"] == "'" + HYPERLINK
    assert first["error_detail"] == "'+SUM(1,2)" and first["provider_message_id"] == "'@cmd"
    assert first["error_code"] == "'-1" and first["text"] == "'=WEBSERVICE(\"http://evil.example\")"
    assert first["from"] == "'=1+1"
    assert second["client_ref"] == "'\tTAB" and second["error_detail"] == "'\rCR"
    assert first["to"] == "+77011234567" and second["to"] == "+14155550100"  # exact: E.164
    assert second["from"] == "ACME"

    exports.export("csv-excel", reporting.MessageFilter(), tmp_path / "x.csv")
    third, _second, first = read_csv(tmp_path / "x.csv", excel=True)
    assert first["to"] == '="+77011234567"' and first["client_ref"] == "'" + HYPERLINK
    assert first["created_at"] == "2026-03-01 12:00:00.000" and third["from"] == "'+12345"

    # Numbers masked for a viewer are no longer E.164: they follow the free-text rule.
    exports.export("csv-excel", reporting.MessageFilter(), tmp_path / "m.csv", masked=True)
    third, second, first = read_csv(tmp_path / "m.csv", excel=True)
    assert first["to"] == "'+7701•••••67" and first["from"] == "'=1+1"
    assert second["from"] == "ACME" and first["client_ref"] == "'" + HYPERLINK
    assert first["text"] == "'=WEBSERVICE(\"http://evil.example\")"


def test_xlsx_writes_text_as_strings_never_formulas(app, tmp_path) -> None:
    seed_hostile()
    exports.export("xlsx", reporting.MessageFilter(), tmp_path / "o.xlsx")
    sheet = openpyxl.load_workbook(tmp_path / "o.xlsx").active
    header = [c.value for c in sheet[1]]
    cells = {name: sheet.cell(row=4, column=header.index(name) + 1) for name in header}
    for name, value in (("client_ref", HYPERLINK), ("to", "+77011234567"), ("from", "=1+1"),
                        ("error_detail", "+SUM(1,2)"), ("error_code", "-1"),
                        ("text", "=WEBSERVICE(\"http://evil.example\")")):
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
             provider_message_id=value, error_code=value, text=value)
    exports.export("xlsx", reporting.MessageFilter(), tmp_path / "o.xlsx", masked=masked)
    rows = read_xlsx(tmp_path / "o.xlsx")
    assert len(rows) == len(AWKWARD)
    for row, value in zip(rows, reversed(AWKWARD), strict=True):
        for name in ("client_ref", "error_detail", "provider_message_id", "error_code", "text"):
            assert excel_text(row[name]) == value, (name, value)
        assert excel_text(row["from"]) == (mask_phone(value) if masked else value)
    # openpyxl keeps edge spaces whatever the file says; Excel trims them unless the text is
    # marked xml:space="preserve", so look at the sheet's XML itself.
    with zipfile.ZipFile(tmp_path / "o.xlsx") as book:
        sheet = book.read("xl/worksheets/sheet1.xml").decode()
    for value in (" leading", "trailing "):
        shown = [value] * 5 + [mask_phone(value) if masked else value]  # the 6th is `from`
        for text in set(shown):
            assert sheet.count(f'<t xml:space="preserve">{text}</t>') == shown.count(text), text


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
        assert [r["to"] for r in rows][1:] == ["+14155550100", "+77011234567"]
        assert rows[1]["from"] == "ACME"
    assert from_csv[2]["client_ref"] == "'" + HYPERLINK  # text, not a link named "click"
    assert from_csv[2]["from"] == "'=1+1"
    assert from_xlsx[2]["client_ref"] == HYPERLINK and from_xlsx[2]["from"] == "=1+1"
    assert from_xlsx[2]["error_detail"] == "+SUM(1,2)"
    assert from_xlsx[2]["text"] == "=WEBSERVICE(\"http://evil.example\")"
