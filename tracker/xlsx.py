"""A small streaming XLSX writer: rows go into the file as they come, so memory stays flat
whatever the row count (tracker/exports.py writes the XLSX message export with it).

An .xlsx is a ZIP of XML parts (ECMA-376 SpreadsheetML). This writes the minimal valid set:
[Content_Types].xml, _rels/.rels, xl/workbook.xml, xl/_rels/workbook.xml.rels, xl/styles.xml
and xl/worksheets/sheetN.xml, one per MAX_ROWS rows (Excel's limit, header included). A sheet
is streamed into the ZIP as it is written; the small parts follow once the sheet count is known
(readers find parts through the ZIP's central directory, not by their order).

What makes it fast is doing nothing per cell in Python: the caller hands each row as one string
of finished cells (tracker/exports.py has the database render them), and a batch of rows goes
to the ZIP in one write. XlsxWriter, called once per cell, managed about 8,000 rows/s.

The cells are the cheapest form every reader still reads exactly:
- strings inline (`t="inlineStr"`): a shared-string table would hold every distinct value in
  memory until the end;
- cells carry no `r` reference: it is optional (ECMA-376 §18.3.1.4, a cell without one is the
  next column; Excel, LibreOffice, openpyxl and calamine read it), so an empty value is a bare
  `<c/>`, and a row costs about 150 bytes less to build, compress and store; rows keep theirs;
- text is only ever a string cell, never a formula: nothing in it is evaluated;
- times are numbers (Excel serial days since 1899-12-30) with a date-time style.
"""

from __future__ import annotations

import re
import zipfile
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO

MAX_ROWS = 1_048_576  # rows in a sheet, header included

# DEFLATE level 1: on 1 M export rows (590 MB of sheet XML) it took 1.2 s against 1.2 s for
# stored (no compression: a 590 MB file, written to disk) and 3.1 s for level 6, and the file is
# 36 MB against 29 MB at level 6 (bench/export.py data).
COMPRESSLEVEL = 1

# Cell parts for a caller that renders rows itself (tracker/exports.py does it in SQL). A value
# between TEXT's two halves must be `is_clean` or escaped; between DEFER's, it is the
# hex of its UTF-8 and `write_rows` escapes it (for the rare value that needs it).
EMPTY = "<c/>"
TEXT = ('<c t="inlineStr"><is><t>', "</t></is></c>")
NUMBER = ("<c><v>", "</v></c>")
BOOLEAN = ('<c t="b"><v>', "</v></c>")  # 1 or 0
DATE = ('<c s="1"><v>', "</v></c>")  # style 1 (styles.xml): a date-time number format
DEFER = ("\x01", "\x02")  # control characters: never in a finished cell
EXCEL_EPOCH_JULIAN_DAY = 2415018.5  # serial 0.0 is 1899-12-30 00:00 (the 1900 date system)
EXCEL_EPOCH_UNIX_DAYS = 25569  # the serial of 1970-01-01

# A value can go between TEXT's halves as it is (`is_clean`) unless it holds one of these: XML
# markup (& < >), a control character (illegal in XML 1.0, except tab, LF and CR: CR would read
# back as LF, and a leading or trailing one is trimmed, so they go the careful way too),
# U+FFFE/U+FFFF (not XML characters), "_x" (Excel reads "_x0041_" as "A"), or a leading or
# trailing space (trimmed without xml:space="preserve").
NEEDS_ESCAPING = re.compile("[&<>\x00-\x1f\ufffe\uffff]|_x|^ | $")

_OOXML_ESCAPE = re.compile("_x[0-9A-Fa-f]{4}_")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_MARKUP = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_DEFERRED = re.compile(f"{DEFER[0]}([0-9A-Fa-f]*){DEFER[1]}")

_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
_DOC_RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml"
_XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'

# Style 0 default, 1 date-time (numFmt 164, milliseconds shown), 2 bold (the header). Excel
# wants the two built-in fills and a cellStyleXfs/cellStyles "Normal" even if unused.
_STYLES = (
    f'<styleSheet xmlns="{_MAIN}">'
    '<numFmts count="1"><numFmt numFmtId="164" formatCode="yyyy-mm-dd hh:mm:ss.000"/></numFmts>'
    '<fonts count="2"><font><sz val="11"/><name val="Calibri"/><family val="2"/></font>'
    '<font><b/><sz val="11"/><name val="Calibri"/><family val="2"/></font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill>'
    '<fill><patternFill patternType="gray125"/></fill></fills>'
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="3"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
    '<xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    '<xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"/></cellXfs>'
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    "</styleSheet>"
)
_BOLD = 2


def escape(value: str) -> str:
    """Text for inside `<t>`: markup escaped, and what XML cannot hold written as Excel's
    `_xHHHH_` escape (Excel shows the original character; other readers show the escape)."""
    value = _OOXML_ESCAPE.sub(r"_x005F\g<0>", value)  # first: a literal "_x0041_" stays so
    value = _NOT_XML.sub(lambda found: f"_x{ord(found[0]):04X}_", value)
    return value.translate(_MARKUP)


def is_clean(value: str) -> bool:
    """True if `value` can go into a cell as it is (what the database checks, in Python)."""
    return NEEDS_ESCAPING.search(value) is None


def text_cell(value: str | None, style: int = 0) -> str:
    """A string cell (never a formula, whatever the text starts with)."""
    if value is None:
        return EMPTY
    keep = ' xml:space="preserve"' if value != value.strip(" \t\n\r") else ""
    styled = f' s="{style}"' if style else ""
    return f'<c{styled} t="inlineStr"><is><t{keep}>{escape(value)}</t></is></c>'


def _deferred_cell(found: re.Match[str]) -> str:
    return text_cell(bytes.fromhex(found[1]).decode("utf-8", "replace"))


def _attribute(value: str) -> str:
    return escape(value).replace('"', "&quot;")


class _Background:
    """Sheet writes in one worker thread. zlib and the file write release the GIL, and so does
    SQLite while it runs a query, so a batch is compressed (about 2 s of a 1 M row export) while
    the caller reads the next from the database. At most two batches wait: memory stays flat."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xlsx")
        self._pending: deque[Future[int]] = deque()

    def write(self, target: IO[bytes], data: bytes) -> None:
        while len(self._pending) >= 2:
            self._pending.popleft().result()  # raises what the write raised
        self._pending.append(self._pool.submit(target.write, data))

    def wait(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def stop(self) -> None:
        """Wait for the writes under way, drop the others (after an error)."""
        self._pool.shutdown(cancel_futures=True)
        self._pending.clear()


class Workbook:
    """Write rows to a new .xlsx at `path`; use as a context manager (or call `close`).

    `header`: the first row of every sheet (bold, frozen). `sheet_rows`: rows per sheet,
    header included; past it the rows go on to a new sheet named "<sheet_name> 2" and so on.
    `widths`: column widths by 0-based column index."""

    def __init__(self, path: Path, header: Sequence[str], *, sheet_name: str = "Sheet",
                 sheet_rows: int = MAX_ROWS, widths: Mapping[int, float] | None = None) -> None:
        if not 2 <= sheet_rows <= MAX_ROWS:
            raise ValueError(f"sheet_rows must be between 2 and {MAX_ROWS}")
        self.rows = 0  # data rows written, all sheets
        self._header = "".join(text_cell(name, _BOLD) for name in header)
        self._sheet_name = sheet_name
        self._sheet_rows = sheet_rows
        self._cols = "".join(f'<col min="{c + 1}" max="{c + 1}" width="{w}" customWidth="1"/>'
                             for c, w in sorted((widths or {}).items()))
        self._zip = zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED,
                                    compresslevel=COMPRESSLEVEL)
        self._sheet: IO[bytes] | None = None
        self._sheets: list[str] = []
        self._row = 0  # the last row number used on the current sheet
        self._background = _Background()

    def write_rows(self, rows: Sequence[str]) -> None:
        """Append rows, each the concatenation of its cells (EMPTY for a missing value)."""
        done = 0
        while done < len(rows):
            if self._sheet is None or self._row == self._sheet_rows:
                self._sheet = self._next_sheet()
            part = rows[done:done + self._sheet_rows - self._row]
            self._background.write(self._sheet, self._xml(part, self._row + 1))
            self._row += len(part)
            done += len(part)
        self.rows += len(rows)

    @staticmethod
    def _xml(rows: Sequence[str], first: int) -> bytes:
        # One string, one write: per-row writes would each go through zlib and the CRC.
        text = "".join([f'<row r="{n}">{cells}</row>' for n, cells in enumerate(rows, first)])
        if DEFER[0] in text:  # rare: a value the caller left to `text_cell`
            text = _DEFERRED.sub(_deferred_cell, text)
        return text.encode()

    def _next_sheet(self) -> IO[bytes]:
        self._end_sheet()
        number = len(self._sheets) + 1
        self._sheets.append(self._sheet_name if number == 1 else f"{self._sheet_name} {number}")
        # force_zip64: the size is not known in advance and 1 M rows of long texts can pass the
        # 2 GiB a plain ZIP entry holds (zipfile would then fail at the end of the sheet).
        sheet = self._zip.open(f"xl/worksheets/sheet{number}.xml", "w", force_zip64=True)
        selected = ' tabSelected="1"' if number == 1 else ""
        cols = f"<cols>{self._cols}</cols>" if self._cols else ""
        sheet.write((
            f'{_XML_DECLARATION}<worksheet xmlns="{_MAIN}">'
            f'<sheetViews><sheetView{selected} workbookViewId="0">'
            '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>'
            '<selection pane="bottomLeft"/></sheetView></sheetViews>'
            f'{cols}<sheetData><row r="1">{self._header}</row>'
        ).encode())
        self._row = 1
        return sheet

    def _end_sheet(self) -> None:
        if self._sheet is not None:
            self._background.wait()
            self._sheet.write(b"</sheetData></worksheet>")
            self._sheet.close()
            self._sheet = None

    def close(self) -> None:
        """Finish the last sheet (a header-only one if no row came) and the package."""
        if not self._sheets:
            self._sheet = self._next_sheet()
        self._end_sheet()
        self._background.stop()
        for name, text in self._package_parts():
            self._zip.writestr(name, _XML_DECLARATION + text)
        self._zip.close()

    def _package_parts(self) -> Iterable[tuple[str, str]]:
        numbers = range(1, len(self._sheets) + 1)
        sheets = "".join(f'<Override PartName="/xl/worksheets/sheet{n}.xml" '
                         f'ContentType="{_TYPE}.worksheet+xml"/>' for n in numbers)
        yield "[Content_Types].xml", (
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" '
            'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/xl/workbook.xml" ContentType="{_TYPE}.sheet.main+xml"/>'
            f'<Override PartName="/xl/styles.xml" ContentType="{_TYPE}.styles+xml"/>'
            f"{sheets}</Types>")
        yield "_rels/.rels", (
            f'<Relationships xmlns="{_RELS}"><Relationship Id="rId1" '
            f'Type="{_DOC_RELS}/officeDocument" Target="xl/workbook.xml"/></Relationships>')
        entries = "".join(f'<sheet name="{_attribute(name)}" sheetId="{n}" r:id="rId{n}"/>'
                          for n, name in zip(numbers, self._sheets, strict=True))
        yield "xl/workbook.xml", (
            f'<workbook xmlns="{_MAIN}" xmlns:r="{_DOC_RELS}">'
            f'<bookViews><workbookView activeTab="0"/></bookViews>'
            f"<sheets>{entries}</sheets></workbook>")
        targets = "".join(f'<Relationship Id="rId{n}" Type="{_DOC_RELS}/worksheet" '
                          f'Target="worksheets/sheet{n}.xml"/>' for n in numbers)
        yield "xl/_rels/workbook.xml.rels", (
            f'<Relationships xmlns="{_RELS}">{targets}<Relationship Id="rId{len(numbers) + 1}" '
            f'Type="{_DOC_RELS}/styles" Target="styles.xml"/></Relationships>')
        yield "xl/styles.xml", _STYLES

    def abort(self) -> None:
        """Close the file without finishing it (the caller deletes it)."""
        self._background.stop()
        if self._sheet is not None:
            self._sheet.close()
            self._sheet = None
        self._zip.close()

    def __enter__(self) -> Workbook:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
