"""Message exports: CSV, Excel-friendly CSV, XLSX and JSON Lines of exactly what a dashboard
filter shows (no Flask imports: the CLI, the web job and the benchmark all call `export()`).

How a file is produced (why it cannot be cut)
---------------------------------------------
A sync gunicorn worker is killed when one request runs past `timeout` (30 s): a response that
streams rows as they are read is then cut after its 200, silently (measured in
perf-baseline.md: 63 of 101 MB). So an export is never streamed from the database to the
client. `export()` writes the whole file first, to `<output>.part`, and renames it into place
only when the last row is written: a file under its final name is complete by construction.
From the page, an export is a job of the application (tracker/export_jobs.py: a row in
`export_job`, written by the worker, or within the click itself when it is small), so there is
no row cap; the download is then a plain file send (sendfile, `Content-Length`, HTTP Range).
That send is still one request under the same timeout, but it moves bytes only: 100 MB within
30 s needs 3.4 MB/s (under a second on loopback or a LAN; a buffering reverse proxy such as
nginx frees the worker that fast whatever the client's link). If a slow client is cut anyway it
is never silent (the client knows the length and reports a short file) and it can resume with a
Range request.

Order: the messages list's, newest first (`created_at DESC, id DESC`, reporting.list_sql).
Rows are read with keyset pagination on that pair (`(created_at, id) < (at, last) ... LIMIT
5000`, never OFFSET), so memory is one batch whatever the row count, on SQLite and on Postgres
(where psycopg2 would otherwise buffer a whole result client-side). Every filter index ends in
(created_at, id) (SQLite's rowid; Postgres since 0014), so each batch is one index range read
in order. The keyset carries the last row's stored created_at itself (read as a
trailing column, dropped before writing), not a subquery on its id: retention may delete that
row meanwhile, and a lookup of a deleted anchor would end the export early without a word.
The upper bound is the highest id when the export starts, so rows inserted meanwhile are not
in it. Each batch is its own read: a long export is not one snapshot (a status may change
between batches).

Speed: for the text formats the database does the per-value work (times formatted, latency
computed, CSV neutralization) and rows come raw from the cursor, straight into csv.writer:
formatting in Python (or peewee's strptime per datetime) was half the time of a CSV export.
The next batch is read while the last is written (`_batches`). bench/export.py measured 1 M
rows in 9.5-11.3 s on SQLite and 6.4-7.6 s on Postgres on this 2-core VM (every format) before
the text column and the status-time fallback; those add a third to the bytes of a CSV and
measured 20-40 % more CPU over 200,000 rows (most of it the text, in the reading thread, which
sets the pace: the writing thread takes half as long). With them, on 2026-12-04: 15.7-18.1 s on
SQLite and 12.0-14.8 s on Postgres, whose reads run without JIT (db.without_jit: compiling
each batch was a third of the time).

XLSX: tracker/xlsx.py, a small streaming writer (rows go into the ZIP as they come; memory is
one batch). The database renders each row's finished XML cells in one printf/format call, so
Python touches a row only to join it into the batch; the rare value that needs escaping comes
back hex-encoded and `xlsx.text_cell` escapes it. XlsxWriter, a cell at a time in Python,
managed about 8,000 rows/s (two minutes for 1 M rows against the 12 s goal). A sheet holds
1,048,576 rows; past that the rows continue on the next sheet.

Formula injection policy (spreadsheets evaluate a cell starting with = + - @, tab or CR)
----------------------------------------------------------------------------------------
- Text from outside (client_ref, provider_message_id, error_code, error_detail, the message
  text) in CSV: a value starting with one of those characters gets a leading `'` (OWASP), so
  it shows as text. reference, provider, status and encoding are our own values and never
  start with one.
- `to`/`from` in CSV: a valid E.164 number (`+` and 7-15 digits) is a numeric constant, never
  code, so it stays exact in `csv` (for programs). In `csv-excel` (for people) it is written as
  `="+77011234567"`: Excel and LibreOffice would otherwise turn `+77011234567` into the number
  77011234567 (7.7E+10), and the formula we build from the digits only shows the exact text.
  Anything else in those columns (an alphanumeric sender, a masked number) follows the free-text
  rule.
- XLSX: every text cell is written as an explicit string cell, never a formula, so values stay
  exact and nothing is evaluated; times are real date cells, numbers numbers.
- JSON Lines is not for spreadsheets: values are exact.

Masking (`masked=True`: a viewer's export when `mask_phone_numbers` is on, and scheduled reports)
----------------------------------------------------------------------------------------------
- `to` and `from` as the dashboard shows them to viewers (phones.mask_phone: +7701•••••67).
- `text`: every phone number written in it is masked too (`mask_text`): a run of 7 or more
  digits, with an optional leading `+` and up to two spaces, dashes, dots or brackets between
  digits ("+7 701 555-01-19"), keeps its first four digits and last two when it has nine or
  more (the recipient's own number reads exactly as in `to`), and only its last two otherwise.
  Dates (2026-01-31, 31.01.2026) stay; shorter numbers (codes, amounts under a million) stay.
  The rest of the text is as sent: support needs it to answer "what did they get?".

Columns: COLUMNS. `status_at` is the status time as every page shows it (tracker.statustime:
the provider's time, or ours for what the tracker decided, or, when the provider gave none,
when its receipt arrived), and `status_at_source` says which (provider, tracker, received);
`delivered_latency_s` is measured to it. `text` comes last: the longest value. All times UTC.
"""


from __future__ import annotations

import csv
import dataclasses
import functools
import json
import operator
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import peewee as pw
from peewee import fn

from . import reporting, statustime, xlsx
from .db import db, is_sqlite, without_jit
from .models import Message
from .phones import mask_phone

BATCH_SIZE = 5000

COLUMNS = ("id", "reference", "client_ref", "provider", "provider_message_id", "to", "from",
           "status", "status_inferred", "error_code", "error_detail", "encoding", "segments",
           "created_at", "submitted_at", "status_at", "status_at_source", "delivered_latency_s",
           "attempts", "text")

_TO, _FROM, _INFERRED, _TEXT = (COLUMNS.index(name)
                                for name in ("to", "from", "status_inferred", "text"))
_TIMES = tuple(COLUMNS.index(name) for name in ("created_at", "submitted_at", "status_at"))
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_E164 = re.compile(r"\+[1-9]\d{6,14}")

Row = tuple[Any, ...]
Progress = Callable[[int], None]  # called after each batch with the rows written so far
_without_keyset = operator.itemgetter(slice(0, -1))  # a row without its trailing created_at


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


# -- masking (see the module docstring) ------------------------------------------------------

# A date is tried first at each position, so that a date is never read as a number.
_IN_TEXT = re.compile(r"(?P<date>\d{4}-\d\d-\d\d|\d\d[./]\d\d[./]\d{4})"
                      r"|\+?\(?\d(?:[ \-.()]{0,2}\d){6,}")


def mask_number(number: str | None) -> str | None:
    """`to`/`from` in a masked export, as the dashboard shows them to viewers."""
    return mask_phone(number) if number else number


def mask_text(text: str | None) -> str | None:
    """A message's text in a masked export: each phone number in it masked."""
    return _IN_TEXT.sub(_masked_run, text) if text else text


def _masked_run(found: re.Match[str]) -> str:
    run = found[0]
    if found["date"]:
        return run
    digits = sum(c.isdigit() for c in run)
    head = 4 if digits >= 9 else 0  # 4 + 2 kept of 9 digits: 3 hidden, as mask_phone's minimum
    out, seen = [], 0
    for char in run:
        if char.isdigit():
            seen += 1
            char = char if seen <= head or seen > digits - 2 else "•"
        out.append(char)
    return "".join(out)


# -- reading ----------------------------------------------------------------------------------


def _batches(fields: list[Any], flt: reporting.MessageFilter, default_region: str,
             batch_size: int, top: int | None = None) -> Iterator[list[Row]]:
    """The filter's messages up to id `top` (default: the highest now) in the list's order,
    newest first, `batch_size` raw rows at a time (the id must be the first field), each batch
    read while the caller writes the one before.

    The reads run in a thread on its own connection: while the database works (SQLite and
    psycopg2 release the GIL) the caller formats and writes, so an export takes about the
    longer of the two rather than their sum (1 M rows on Postgres: 12.4 -> 6.7 s for CSV for
    Excel, 12.6 -> 7.6 s for JSON Lines; on SQLite 5-10 % less). One
    batch waits at most, so memory stays one or two batches whatever the row count."""
    ready: queue.Queue[list[Row] | BaseException | None] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def offer(item: list[Row] | BaseException | None) -> bool:
        while not stop.is_set():  # a bounded wait: the caller may have stopped taking
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            with db.connection_context(), without_jit():
                for batch in _read_batches(fields, flt, default_region, batch_size, top):
                    if not offer(batch):
                        return
            offer(None)
        except BaseException as exc:
            offer(exc)

    reader = threading.Thread(target=read, name="export-reader", daemon=True)
    reader.start()
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # the caller stopped early (an error while writing): let the reader go
        reader.join()


def top_id() -> int | None:
    """The highest message id now: an export covers the messages up to it."""
    return Message.select(Message.id).order_by(Message.id.desc()).limit(1).scalar()


def _read_batches(fields: list[Any], flt: reporting.MessageFilter, default_region: str,
                  batch_size: int, top: int | None) -> Iterator[list[Row]]:
    flt = flt.without_page()  # pagination: an export is every page
    top = top_id() if top is None else top
    if top is None:
        return
    p = db.obj.param
    read = [*fields, Message.created_at]  # the keyset's stored value, dropped below
    keyset: list[pw.Node] = []
    while True:
        query = reporting.narrow(Message.select(*read).where(Message.id <= top, *keyset),
                                 flt, default_region)
        query = query.order_by(Message.created_at.desc(), Message.id.desc()).limit(batch_size)
        batch = db.obj.execute(query).fetchall()  # raw values: no per-value conversion
        if batch:
            yield list(map(_without_keyset, batch))
        if len(batch) < batch_size:
            return
        last_id, at = batch[-1][0], batch[-1][-1]
        keyset = [pw.SQL(reporting.keyset_term("<", p), [at, last_id])]


def expected_rows(flt: reporting.MessageFilter, default_region: str = "",
                  top: int | None = None) -> int:
    """How many messages an export of the filter writes (up to message `top`), exact now."""
    query = Message.select(fn.COUNT(Message.id))
    if top is not None:
        query = query.where(Message.id <= top)
    return reporting.narrow(query, flt.without_page(), default_region).scalar() or 0


# -- what the database computes per row -------------------------------------------------------


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
            time_text(statustime.shown()), statustime.source(), _latency(), Message.attempts,
            text(Message.text)]


def _latency() -> Any:
    """`delivered_latency_s`: seconds from submission to the status time as shown (the
    receipt's arrival when the provider gave no time: tracker.statustime), for delivered
    messages."""
    status_at = statustime.shown()
    if is_sqlite():  # julianday keeps milliseconds, as the stored times do
        seconds = (fn.julianday(status_at) - fn.julianday(Message.submitted_at)) * 86400.0
        latency = fn.round(seconds, 3)
    else:
        seconds = fn.date_part("epoch", status_at - Message.submitted_at)
        latency = fn.round(seconds.cast("numeric"), 3).cast("float8")
    return pw.Case(None, [(Message.status == "delivered", latency)], None)


# One XLSX cell as SQL: its XML with %s where each argument goes (printf on SQLite, format() on
# Postgres: both read %s, and it is the only directive used).
Cell = tuple[str, list[Any]]


def _xlsx_fields(masked: bool) -> list[Any]:
    """The XLSX rows as the database renders them: [id, cells], cells being the row's finished
    XML cells in one string; masked, [id, cells before `to`, to, from, cells after it up to
    `text`, text] (the mask runs in Python). The one printf/format per row builds each string
    once: with `||` the query took 25 % longer, and rendering the cells in Python took twice as
    long."""
    cells: list[Cell] = [
        _xlsx_number(Message.id), _xlsx_text(Message.reference),
        _xlsx_text(Message.client_ref, outside=True), _xlsx_text(Message.provider),
        _xlsx_text(Message.provider_message_id, outside=True),
        _xlsx_text(Message.recipient, outside=True), _xlsx_text(Message.sender, outside=True),
        _xlsx_text(Message.status),
        (f"{xlsx.BOOLEAN[0]}%s{xlsx.BOOLEAN[1]}",
         [pw.Case(None, [(Message.status_inferred == True, 1)], 0)]),  # noqa: E712
        _xlsx_text(Message.error_code, outside=True),
        _xlsx_text(Message.error_detail, outside=True), _xlsx_text(Message.encoding),
        _xlsx_number(Message.segments), _xlsx_time(Message.created_at),
        _xlsx_time(Message.submitted_at), _xlsx_time(statustime.shown()),
        _xlsx_text(statustime.source(), nullable=True), _xlsx_number(_latency(), null=True),
        _xlsx_number(Message.attempts),
        _xlsx_text(Message.text, outside=True),
    ]
    if masked:
        return [Message.id, _sql_row(cells[:_TO]), Message.recipient, Message.sender,
                _sql_row(cells[_FROM + 1:_TEXT]), Message.text]
    return [Message.id, _sql_row(cells)]
def _sql_row(cells: list[Cell]) -> Any:
    template = "".join(text for text, _ in cells)
    arguments = [argument for _, some in cells for argument in some]
    return (fn.printf if is_sqlite() else fn.format)(template, *arguments)


def _or_empty(cell: Any) -> Any:
    return fn.coalesce(cell, xlsx.EMPTY)  # the cell is NULL when its value is


def _xlsx_number(value: Any, null: bool | None = None) -> Cell:
    start, end = xlsx.NUMBER
    if null or (null is None and value.null):
        return "%s", [_or_empty(pw.Value(start).concat(value).concat(end))]
    return f"{start}%s{end}", [value]


def _xlsx_time(field: Any) -> Cell:
    """A date cell: the time as an Excel serial number, computed by the database."""
    if is_sqlite():  # in days; as text, 15 significant digits: to the 10 microseconds
        serial = fn.julianday(field) - xlsx.EXCEL_EPOCH_JULIAN_DAY
    else:  # milliseconds, as the CSV shows them (double precision: to the microsecond)
        epoch = fn.date_part("epoch", fn.date_trunc("milliseconds", field))
        serial = epoch / 86400.0 + xlsx.EXCEL_EPOCH_UNIX_DAYS
    start, end = xlsx.DATE
    return "%s", [_or_empty(pw.Value(start).concat(serial).concat(end))]


def _xlsx_text(field: Any, outside: bool = False, nullable: bool | None = None) -> Cell:
    """A string cell. Ours (reference, provider, status, encoding, the status time's source: a
    generated id, a slug, enum values) go in as they are; text from outside only when
    `xlsx.is_clean`, the rare other value goes to Python, hex-encoded, for `xlsx.text_cell` to
    escape. `nullable`: for an expression (a field says itself)."""
    start, end = xlsx.TEXT
    if not outside:
        if field.null if nullable is None else nullable:
            return "%s", [_or_empty(pw.Value(start).concat(field).concat(end))]
        return f"{start}%s{end}", [field]
    if is_sqlite():
        hex_utf8 = fn.hex(field)
        dirty = (pw.NodeList((field, pw.SQL("GLOB"), "*[&<>\x01-\x1f\ufffe-\uffff]*"))
                 | pw.NodeList((field, pw.SQL("GLOB"), " *"))
                 | pw.NodeList((field, pw.SQL("GLOB"), "* "))
                 | (fn.instr(field, "_x") > 0)
                 | (fn.instr(field, fn.char(0)) > 0))  # GLOB stops at a NUL, instr does not
    else:  # Postgres text cannot hold a NUL
        hex_utf8 = fn.encode(fn.convert_to(field, "UTF8"), "hex")
        dirty = pw.NodeList((field, pw.SQL("~"), "[&<>\x01-\x1f\ufffe\uffff]|_x|^ | $"))
    deferred = pw.Value(xlsx.DEFER[0]).concat(hex_utf8).concat(xlsx.DEFER[1])
    clean = pw.Value(start).concat(field).concat(end)
    return "%s", [pw.Case(None, [(field.is_null(), xlsx.EMPTY), (dirty, deferred)], clean)]




# -- writers: each writes a file at `path` and returns the row count --------------------------


def write_csv(path: Path, flt: reporting.MessageFilter, excel: bool = False, *,
              default_region: str = "", batch_size: int = BATCH_SIZE, masked: bool = False,
              progress: Progress | None = None, top: int | None = None) -> int:
    """CSV, UTF-8, CRLF. `excel`: with a BOM (Excel then reads UTF-8), times Excel parses, and
    phone numbers that stay text."""
    count = 0
    fields = _text_fields("csv-excel" if excel else "csv")
    if masked:  # the phone and free-text policies run on the masked text instead
        fields[_TO], fields[_FROM], fields[_TEXT] = Message.recipient, Message.sender, Message.text
    with open(path, "w", encoding="utf-8-sig" if excel else "utf-8", newline="") as out:
        # CRLF for both (RFC 4180): the csv module quotes a field only when it holds a
        # character of the line terminator, so with "\n" alone a bare CR would split a row.
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(COLUMNS)
        for batch in _batches(fields, flt, default_region, batch_size, top):
            if masked:
                batch = [(*row[:_TO], phone_cell(mask_number(row[_TO]), excel),
                          phone_cell(mask_number(row[_FROM]), excel), *row[_FROM + 1:_TEXT],
                          neutralize(mask_text(row[_TEXT]))) for row in batch]
            writer.writerows(batch)
            count += len(batch)
            if progress is not None:
                progress(count)
    return count


def write_jsonl(path: Path, flt: reporting.MessageFilter, *, default_region: str = "",
                batch_size: int = BATCH_SIZE, masked: bool = False,
                progress: Progress | None = None, top: int | None = None) -> int:
    """One JSON object per line, keys in COLUMNS order, exact values, times ISO 8601 with Z."""
    count = 0
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        for batch in _batches(_text_fields("jsonl"), flt, default_region, batch_size, top):
            lines = []
            for row in batch:
                cells = list(row)
                cells[_INFERRED] = bool(cells[_INFERRED])
                if masked:
                    cells[_TO], cells[_FROM] = mask_number(cells[_TO]), mask_number(cells[_FROM])
                    cells[_TEXT] = mask_text(cells[_TEXT])
                lines.append(encode(dict(zip(COLUMNS, cells, strict=True))))
            out.write("\n".join(lines) + "\n")
            count += len(lines)
            if progress is not None:
                progress(count)
    return count


def write_xlsx(path: Path, flt: reporting.MessageFilter, *, default_region: str = "",
               batch_size: int = BATCH_SIZE, masked: bool = False,
               progress: Progress | None = None, top: int | None = None,
               sheet_rows: int = xlsx.MAX_ROWS) -> int:
    """Header bold and frozen; text as string cells (never formulas), times as date cells,
    numbers as numbers; past `sheet_rows` rows (header included) the rows go on to a new
    sheet ("messages 2", ...)."""
    with xlsx.Workbook(path, COLUMNS, sheet_name="messages", sheet_rows=sheet_rows,
                       widths={**dict.fromkeys(_TIMES, 23), _TEXT: 60}) as book:
        for batch in _batches(_xlsx_fields(masked), flt, default_region, batch_size, top):
            if not masked:
                book.write_rows([cells for _, cells in batch])
            else:
                cell = xlsx.text_cell
                book.write_rows([f"{head}{cell(mask_number(to))}{cell(mask_number(sender))}"
                                 f"{tail}{cell(mask_text(text))}"
                                 for _, head, to, sender, tail, text in batch])
            if progress is not None:
                progress(book.rows)
    return book.rows


# -- the one format registry ------------------------------------------------------------------


class Writer(Protocol):
    """What every format's writer takes (see write_csv)."""

    def __call__(self, path: Path, flt: reporting.MessageFilter, *, default_region: str = ...,
                 batch_size: int = ..., masked: bool = ..., progress: Progress | None = ...,
                 top: int | None = ...) -> int: ...


@dataclasses.dataclass(frozen=True)
class ExportFormat:
    """One export format. The CLI's `--format` choices, the messages page's links, scheduled
    reports' `format`, file and download names and the Content-Type all read FORMATS."""

    name: str  # `--format`, `?format=`, `[reports.x] format`
    label: str  # the page's link
    extension: str  # of files and downloads (csv and csv-excel share .csv)
    content_type: str  # the download's Content-Type header, as sent
    writer: Writer
    help: str  # a line for `tracker export --help` and the README

    def file_name(self, stem: str) -> str:
        """`<stem>.<extension>`."""
        return f"{stem}.{self.extension}"


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("csv", "CSV", "csv", "text/csv; charset=utf-8", write_csv,
                 "CSV for programs: UTF-8, exact values, ISO 8601 times"),
    ExportFormat("csv-excel", "CSV for Excel", "csv", "text/csv; charset=utf-8",
                 functools.partial(write_csv, excel=True),
                 "CSV for spreadsheets: a BOM, times Excel reads, numbers kept as text"),
    ExportFormat("xlsx", "XLSX", "xlsx",
                 "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", write_xlsx,
                 "an Excel workbook: real date and number cells, text never a formula"),
    ExportFormat("jsonl", "JSON Lines", "jsonl", "application/x-ndjson", write_jsonl,
                 "one JSON object per line, exact values"),
)}
EXTENSIONS = frozenset(f.extension for f in FORMATS.values())


def get_format(name: str) -> ExportFormat:
    """The format called `name`; ValueError naming the choices otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {name!r}") from None


def format_of_extension(extension: str) -> ExportFormat | None:
    """The first format written with that extension (csv, not csv-excel, for .csv)."""
    return next((f for f in FORMATS.values() if f.extension == extension), None)


def export(fmt: str, flt: reporting.MessageFilter, output: Path, *, default_region: str = "",
           batch_size: int = BATCH_SIZE, masked: bool = False, progress: Progress | None = None,
           top: int | None = None) -> int:
    """Write every message the filter matches (up to id `top`, default: the highest now) to
    `output` in the format named `fmt`, newest first; return the row count. `progress` is
    called after each batch with the rows written so far (it may raise to stop the export).

    The file appears under its name only once complete (written as `<output>.part`, renamed)."""
    writer = get_format(fmt).writer
    output = Path(output)
    partial = output.with_name(output.name + ".part")
    try:
        count = writer(partial, flt, default_region=default_region, batch_size=batch_size,
                       masked=masked, progress=progress, top=top)
        os.replace(partial, output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return count
