"""Message exports: CSV, Excel-friendly CSV, XLSX and JSON Lines of exactly what a dashboard
filter shows (no Flask imports: the CLI, the web job and the benchmark all call `export()`).

How a file is produced (why it cannot be cut)
---------------------------------------------
A sync gunicorn worker is killed when one request runs past `timeout` (30 s): a response that
streams rows as they are read is then cut after its 200, silently (measured in
perf-baseline.md: 63 of 101 MB). So an export is never streamed from the database to the
client. `export()` writes the whole file first, to `<output>.part`, and renames it into place
only when the last row is written: a file under its final name is complete by construction. The
dashboard runs it as a job in its own process (`tracker export`, spawned by
tracker/web/exports.py), outside any gunicorn timeout, so there is no row cap; the download is
then a plain file send (sendfile, `Content-Length`, HTTP Range). That send is still one
request under the same timeout, but it moves bytes only: 100 MB within 30 s needs 3.4 MB/s
(under a second on loopback or a LAN; a buffering reverse proxy such as nginx frees the worker
that fast whatever the client's link). If a slow client is cut anyway it is never silent (the
client knows the length and reports a short file) and it can resume with a Range request.

Rows are read with keyset pagination over the primary key (`id > last ORDER BY id LIMIT 5000`,
never OFFSET), so memory is one batch whatever the row count, on SQLite and on Postgres (where
psycopg2 would otherwise buffer a whole result client-side). The upper bound is the highest id
when the export starts, so rows inserted meanwhile do not make it chase the table. Each batch
is its own read: a long export is not one snapshot (a status may change between batches).

Speed: for the text formats the database does the per-value work (times formatted, latency
computed, CSV neutralization) and rows come raw from the cursor, straight into csv.writer:
formatting in Python (or peewee's strptime per datetime) was half the time of a CSV export.
bench/export.py measures 1 M rows at about 10-14 s on this 2-core VM depending on its load.

XLSX: XlsxWriter in `constant_memory` mode (each row is flushed to a temp file when the next
starts; strings are written inline, no shared-string table in memory). It is well kept and
faster than openpyxl's write-only mode, and since the file is written before it is sent, a
streaming zip would buy nothing for completeness. It is pure Python, cell by cell: about
8,000 rows/s, so 1 M rows take about two minutes (far from the 12 s goal; see the bench).
A sheet holds 1,048,576 rows; past that the rows continue on the next sheet.

Formula injection policy (spreadsheets evaluate a cell starting with = + - @, tab or CR)
----------------------------------------------------------------------------------------
- Text from outside (client_ref, provider_message_id, error_code, error_detail) in CSV: a
  value starting with one of those characters gets a leading `'` (OWASP), so it shows as text.
  reference, provider, status and encoding are our own values and never start with one.
- `to`/`from` in CSV: a valid E.164 number (`+` and 7-15 digits) is a numeric constant, never
  code, so it stays exact in `csv` (for programs). In `csv-excel` (for people) it is written as
  `="+77011234567"`: Excel and LibreOffice would otherwise turn `+77011234567` into the number
  77011234567 (7.7E+10), and the formula we build from the digits only shows the exact text.
  Anything else in those columns (an alphanumeric sender, a masked number) follows the free-text
  rule.
- XLSX: every text cell is written as an explicit string cell, never a formula, so values stay
  exact and nothing is evaluated; times are real date cells, numbers numbers.
- JSON Lines is not for spreadsheets: values are exact.

All times are UTC.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import peewee as pw
from peewee import fn

from . import reporting
from .db import db, is_sqlite
from .models import Message

BATCH_SIZE = 5000

FORMATS = ("csv", "csv-excel", "xlsx", "jsonl")
EXTENSIONS = {"csv": "csv", "csv-excel": "csv", "xlsx": "xlsx", "jsonl": "jsonl"}
MIMETYPES = {
    "csv": "text/csv; charset=utf-8",
    "csv-excel": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "jsonl": "application/x-ndjson",
}

COLUMNS = ("id", "reference", "client_ref", "provider", "provider_message_id", "to", "from",
           "status", "status_inferred", "error_code", "error_detail", "encoding", "segments",
           "created_at", "submitted_at", "status_at", "delivered_latency_s", "attempts")

# What is read, in this order; `delivered_latency_s` is computed.
_FIELDS = (Message.id, Message.reference, Message.client_ref, Message.provider,
           Message.provider_message_id, Message.recipient, Message.sender, Message.status,
           Message.status_inferred, Message.error_code, Message.error_detail, Message.encoding,
           Message.segments, Message.created_at, Message.submitted_at, Message.status_at,
           Message.attempts)

_TO, _FROM, _INFERRED = 5, 6, 8
_TIMES = (13, 14, 15)
# Text from outside (clients, providers): neutralized in CSV. reference, provider, status and
# encoding are ours (generated id, slug, enum values) and never start with a trigger character.
_TEXT = (2, 4, 9, 10)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_E164 = re.compile(r"\+[1-9]\d{6,14}")
XLSX_MAX_ROWS = 1_048_576  # header included

Row = tuple[Any, ...]


def neutralize(value: str | None) -> str | None:
    """Free text for a CSV cell: a leading `'` when a spreadsheet would read a formula."""
    if value and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def phone_cell(value: str | None, excel: bool) -> str | None:
    """`to`/`from` for a CSV cell (see the module docstring for the policy)."""
    if value and _E164.fullmatch(value):
        return f'="{value}"' if excel else value
    return neutralize(value)


def _datetime(value: Any) -> dt.datetime | None:
    # SQLite gives the text peewee stored ("2026-01-01 12:00:00.123456"), Postgres a datetime.
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(value)


def _batches(fields: list[Any], flt: reporting.MessageFilter, default_region: str,
             batch_size: int) -> Iterator[list[Row]]:
    """The filter's messages, oldest first, `batch_size` raw rows at a time (keyset on id;
    the id must be the first field)."""
    flt = dataclasses.replace(flt, before=None)  # pagination: an export is every page
    top = Message.select(Message.id).order_by(Message.id.desc()).limit(1).scalar()
    if top is None:
        return
    last = 0
    while True:
        query = reporting.narrow(
            Message.select(*fields).where((Message.id > last) & (Message.id <= top)),
            flt, default_region,
        ).order_by(Message.id).limit(batch_size)
        batch = db.obj.execute(query).fetchall()  # raw values: no per-value conversion
        if batch:
            yield batch
        if len(batch) < batch_size:
            return
        last = batch[-1][0]


def rows(flt: reporting.MessageFilter, default_region: str = "",
         batch_size: int = BATCH_SIZE,
         phone: Callable[[str | None], str | None] | None = None) -> Iterator[Row]:
    """Every message the filter matches, in COLUMNS order, with times as naive UTC datetimes
    and the delivered latency in seconds (for XLSX, which writes real date cells)."""
    for batch in _batches(list(_FIELDS), flt, default_region, batch_size):
        for raw in batch:
            created, submitted, status_at = (_datetime(raw[i]) for i in _TIMES)
            latency = None
            if raw[7] == "delivered" and submitted and status_at:
                latency = round((status_at - submitted).total_seconds(), 3)
            to, sender = raw[_TO], raw[_FROM]
            if phone is not None:
                to, sender = phone(to), phone(sender)
            yield (raw[0], raw[1], raw[2], raw[3], raw[4], to, sender, raw[7],
                   bool(raw[_INFERRED]), raw[9], raw[10], raw[11], raw[12],
                   created, submitted, status_at, latency, raw[16])


def _text_fields(style: str) -> list[Any]:
    """COLUMNS as the database formats them for a text format: times as text, the latency
    computed, and (CSV) free text neutralized. Done in SQL, it costs next to nothing; in Python
    it was half the time of a CSV export."""
    sqlite = is_sqlite()
    csv_style = style in ("csv", "csv-excel")

    def time_text(field: pw.Field) -> Any:
        if style == "csv-excel":  # Excel and LibreOffice read "2026-01-01 12:00:00.123" as a time
            return (fn.strftime("%Y-%m-%d %H:%M:%f", field) if sqlite
                    else fn.to_char(field, "YYYY-MM-DD HH24:MI:SS.MS"))
        return (fn.strftime("%Y-%m-%dT%H:%M:%fZ", field) if sqlite
                else fn.to_char(field, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))

    def text(field: pw.Field) -> Any:
        if not csv_style:
            return field
        starts = fn.substr(field, 1, 1).in_(list(_FORMULA_START))
        return pw.Case(None, [(starts, pw.Value("'").concat(field))], field)

    if sqlite:  # julianday keeps milliseconds, as the stored times do
        seconds = (fn.julianday(Message.status_at) - fn.julianday(Message.submitted_at)) * 86400.0
        latency = fn.round(seconds, 3)
    else:
        seconds = fn.date_part("epoch", Message.status_at - Message.submitted_at)
        latency = fn.round(seconds.cast("numeric"), 3).cast("float8")
    def phone(field: pw.Field) -> Any:
        """`phone_cell` in SQL (without a mask the CSV rows need no Python at all)."""
        if not csv_style:
            return field
        if sqlite:
            e164 = (pw.NodeList((field, pw.SQL("GLOB"), "+[1-9]*"))
                    & ~pw.NodeList((fn.substr(field, 2), pw.SQL("GLOB"), "*[^0-9]*"))
                    & fn.length(field).between(8, 16))
        else:
            e164 = pw.NodeList((field, pw.SQL("~"), r"^\+[1-9][0-9]{6,14}$"))
        shown = pw.Value('="').concat(field).concat('"') if style == "csv-excel" else field
        return pw.Case(None, [(e164, shown)], text(field))

    inferred: Any = Message.status_inferred
    if csv_style:
        inferred = pw.Case(None, [(Message.status_inferred == True, "true")], "false")  # noqa: E712
    return [Message.id, Message.reference, text(Message.client_ref),
            Message.provider, text(Message.provider_message_id), phone(Message.recipient),
            phone(Message.sender), Message.status, inferred, text(Message.error_code),
            text(Message.error_detail), Message.encoding, Message.segments,
            time_text(Message.created_at), time_text(Message.submitted_at),
            time_text(Message.status_at),
            pw.Case(None, [(Message.status == "delivered", latency)], None), Message.attempts]


# -- writers: each writes a file at `path` and returns the row count --------------------------


def write_csv(path: Path, flt: reporting.MessageFilter, excel: bool = False, *,
              default_region: str = "", batch_size: int = BATCH_SIZE,
              phone: Callable[[str | None], str | None] | None = None) -> int:
    """CSV, UTF-8, CRLF. `excel`: with a BOM (Excel then reads UTF-8), times Excel parses, and
    phone numbers that stay text."""
    count = 0
    fields = _text_fields("csv-excel" if excel else "csv")
    if phone is not None:  # masked numbers: the phone policy runs on the masked text instead
        fields[_TO], fields[_FROM] = Message.recipient, Message.sender
    with open(path, "w", encoding="utf-8-sig" if excel else "utf-8", newline="") as out:
        # CRLF for both (RFC 4180): the csv module quotes a field only when it holds a
        # character of the line terminator, so with "\n" alone a bare CR would split a row.
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(COLUMNS)
        for batch in _batches(fields, flt, default_region, batch_size):
            if phone is not None:
                batch = [(*row[:_TO], phone_cell(phone(row[_TO]), excel),
                          phone_cell(phone(row[_FROM]), excel), *row[_FROM + 1:])
                         for row in batch]
            writer.writerows(batch)
            count += len(batch)
    return count


def write_jsonl(path: Path, flt: reporting.MessageFilter, *, default_region: str = "",
                batch_size: int = BATCH_SIZE,
                phone: Callable[[str | None], str | None] | None = None) -> int:
    """One JSON object per line, keys in COLUMNS order, exact values, times ISO 8601 with Z."""
    count = 0
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        for batch in _batches(_text_fields("jsonl"), flt, default_region, batch_size):
            lines = []
            for row in batch:
                cells = list(row)
                cells[_INFERRED] = bool(cells[_INFERRED])
                if phone is not None:
                    cells[_TO], cells[_FROM] = phone(cells[_TO]), phone(cells[_FROM])
                lines.append(encode(dict(zip(COLUMNS, cells, strict=True))))
            out.write("\n".join(lines) + "\n")
            count += len(lines)
    return count


def write_xlsx(path: Path, source: Iterator[Row], sheet_rows: int = XLSX_MAX_ROWS) -> int:
    """Header frozen; text as string cells (never formulas), times as dates; past
    `sheet_rows` rows (header included) the rows continue on the next sheet."""
    import xlsxwriter  # only this format needs it

    book = xlsxwriter.Workbook(str(path), {
        "constant_memory": True, "strings_to_formulas": False, "strings_to_numbers": False,
        "strings_to_urls": False, "tmpdir": str(path.parent),
    })
    try:
        when = book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss.000"})
        bold = book.add_format({"bold": True})
        text_cols = (1, 2, 3, 4, _TO, _FROM, 7, 9, 10, 11)  # every text column
        count = r = 0
        for row in source:
            if r in (0, sheet_rows):
                sheet = book.add_worksheet(f"messages {len(book.worksheets()) + 1}"
                                           if r else "messages")
                sheet.freeze_panes(1, 0)
                for col, name in enumerate(COLUMNS):
                    sheet.write_string(0, col, name, bold)
                sheet.set_column(13, 15, 23)
                string, number, boolean, date = (sheet.write_string, sheet.write_number,
                                                 sheet.write_boolean, sheet.write_datetime)
                r = 1
            count += 1
            for c in text_cols:
                if row[c] is not None:
                    string(r, c, row[c])
            for c in (0, 12, 16, 17):  # id, segments, latency, attempts
                if row[c] is not None:
                    number(r, c, row[c])
            boolean(r, _INFERRED, row[_INFERRED])
            for c in _TIMES:
                if row[c] is not None:
                    date(r, c, row[c], when)
            r += 1
        if count == 0:
            sheet = book.add_worksheet("messages")
            for col, name in enumerate(COLUMNS):
                sheet.write_string(0, col, name, bold)
    finally:
        book.close()
    return count


def export(fmt: str, flt: reporting.MessageFilter, output: Path, *, default_region: str = "",
           batch_size: int = BATCH_SIZE,
           phone: Callable[[str | None], str | None] | None = None) -> int:
    """Write every message the filter matches to `output` in `fmt`; return the row count.

    The file appears under its name only once complete (written as `<output>.part`, renamed)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    output = Path(output)
    partial = output.with_name(output.name + ".part")
    try:
        if fmt == "xlsx":
            count = write_xlsx(partial, rows(flt, default_region, batch_size, phone))
        elif fmt == "jsonl":
            count = write_jsonl(partial, flt, default_region=default_region,
                                batch_size=batch_size, phone=phone)
        else:
            count = write_csv(partial, flt, fmt == "csv-excel", default_region=default_region,
                              batch_size=batch_size, phone=phone)
        os.replace(partial, output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return count
