"""Scheduled reports: files of messages, written by the worker, listed on the /reports page.

A `[reports.<name>]` table describes one report: its schedule (daily, or weekly on a weekday),
the UTC time it runs, the export format, the messages-page filters and how many files to keep.
Each run covers the last *closed* period: daily, the previous UTC day [00:00, 24:00); weekly,
the previous Monday-Sunday week. A report holds the messages *created* in that period, with
their status as it stands when the report runs (so `at` also decides how long late receipts
have to arrive).

The files are the state: `<name>-<start>.<ext>` (daily) or `<name>-<start>_<end>.<ext>`
(weekly, both days included) in the reports folder. A run writes the latest closed period's
file when it is missing, so the worker's minute tick costs one stat per report, running twice
writes once, and a worker that was down catches up the latest missed period when it is back
(older missed periods are not written: the ad-hoc export on the messages page covers any range).

Files are written through `exports.export`, so a file under its final name is complete. They are
listed to viewers as well as admins, so with `mask_phone_numbers` on they are written masked:
`to`, `from` and the numbers written in the text (exports.mask_text; admins then download the
same masked file; the messages page export gives them every digit). A report's `format` is a
name of the one registry, exports.FORMATS, which also gives its file extension.

No Flask here: the worker job and the web page both call these functions.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import exports, reporting
from .errors import ConfigError

log = logging.getLogger(__name__)

SCHEDULES = ("daily", "weekly")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
FILTERS = ("status", "provider", "error_code", "q")
DEFAULTS: dict[str, Any] = {"weekday": "mon", "at": "01:00", "format": "csv", "keep": 30,
                            "status": "", "provider": "", "error_code": "", "q": ""}
KEYS = ("schedule", *DEFAULTS)

# A report's name is the start of its file names: nothing a path or a shell could misread.
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_AT = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
_FILE = re.compile(r"(?P<report>[a-z0-9][a-z0-9_-]*)-(?P<start>\d{4}-\d\d-\d\d)"
                   r"(?:_(?P<end>\d{4}-\d\d-\d\d))?\.(?P<ext>"
                   + "|".join(sorted(map(re.escape, exports.EXTENSIONS))) + ")")
# Where a run writes before its final rename (see `write`); a leading dot keeps it off the list.
_TEMP = re.compile(r"\..+\.[0-9a-f]{16}(\.part)?")
TEMP_MAX_AGE = 24 * 3600  # seconds: a temp file this old belongs to a run that died


@dataclass(frozen=True)
class Report:
    """One validated `[reports.<name>]` table."""

    name: str
    schedule: str  # "daily" or "weekly"
    at: dt.time  # UTC
    format: str  # a name of exports.FORMATS
    keep: int
    weekday: int = 0  # weekly only: the day it runs, 0 = Monday
    status: str = ""
    provider: str = ""
    error_code: str = ""
    q: str = ""

    @property
    def extension(self) -> str:
        return exports.FORMATS[self.format].extension

    def describe(self) -> str:
        """"daily at 02:00 UTC" / "weekly on Monday at 02:00 UTC", for the page."""
        at = self.at.strftime("%H:%M")
        if self.schedule == "daily":
            return f"daily at {at} UTC"
        return f"weekly on {dt.date(2024, 1, 1 + self.weekday):%A} at {at} UTC"

    def filters(self) -> dict[str, str]:
        """The filters that narrow it (as the messages page names them)."""
        values = {name: getattr(self, name) for name in FILTERS}
        return {name: value for name, value in values.items() if value}


@dataclass(frozen=True)
class Period:
    """UTC days from `start` to `end`, both included."""

    start: dt.date
    end: dt.date

    @property
    def label(self) -> str:
        return str(self.start) if self.start == self.end else f"{self.start} to {self.end}"


@dataclass(frozen=True)
class ReportFile:
    """One written file, as found in the reports folder."""

    path: Path
    report: str
    period: Period
    extension: str
    size: int
    written_at: dt.datetime  # naive UTC, the file's modification time

    @property
    def filename(self) -> str:
        return self.path.name


# -- periods ---------------------------------------------------------------------------------


def latest_period(report: Report, now: dt.datetime) -> Period:
    """The last period whose run time (`runs_at`) is not after `now` (naive UTC)."""
    # Shifting `now` back by the run's offset turns "the run time has passed" into "the
    # period ended before this day".
    shifted = now - dt.timedelta(hours=report.at.hour, minutes=report.at.minute)
    if report.schedule == "daily":
        day = shifted.date() - dt.timedelta(days=1)
        return Period(day, day)
    shifted -= dt.timedelta(days=report.weekday)
    monday = shifted.date() - dt.timedelta(days=shifted.weekday() + 7)
    return Period(monday, monday + dt.timedelta(days=6))


def runs_at(report: Report, period: Period) -> dt.datetime:
    """When the worker writes the file of `period`: its `at` on the day after the period ends
    (weekly: on its `weekday` after the week ends)."""
    day = period.end + dt.timedelta(days=1)
    if report.schedule == "weekly":
        day += dt.timedelta(days=report.weekday)
    return dt.datetime.combine(day, report.at)


def next_period(report: Report, period: Period) -> Period:
    """The period after `period`."""
    step = dt.timedelta(days=1 if report.schedule == "daily" else 7)
    return Period(period.start + step, period.end + step)


def message_filter(report: Report, period: Period) -> reporting.MessageFilter:
    """The messages-page filter of one run: the report's filters, created within the period."""
    return reporting.MessageFilter(status=report.status, provider=report.provider,
                                   error_code=report.error_code, q=report.q,
                                   created_from=period.start, created_to=period.end)


# -- files -----------------------------------------------------------------------------------


def filename(report: Report, period: Period) -> str:
    """`<name>-<start>.<ext>`, or `<name>-<start>_<end>.<ext>` for more than one day."""
    days = str(period.start) if period.start == period.end else f"{period.start}_{period.end}"
    return f"{report.name}-{days}.{report.extension}"


def parse_filename(name: str) -> tuple[str, Period, str] | None:
    """(report name, period, extension) of a report file name; None for anything else."""
    found = _FILE.fullmatch(name)
    if found is None:
        return None
    try:
        start = dt.date.fromisoformat(found["start"])
        end = dt.date.fromisoformat(found["end"]) if found["end"] else start
    except ValueError:
        return None
    if end < start:
        return None
    return found["report"], Period(start, end), found["ext"]


def list_files(directory: Path) -> list[ReportFile]:
    """Every report file in the folder, newest period first. Only names that parse are listed:
    the download view serves nothing else, so no path from a request ever reaches the disk."""
    found: list[ReportFile] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        parsed = parse_filename(entry.name)
        if parsed is None or not entry.is_file(follow_symlinks=False):
            continue
        stat = entry.stat(follow_symlinks=False)
        written = dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC).replace(tzinfo=None)
        found.append(ReportFile(Path(entry.path), parsed[0], parsed[1], parsed[2],
                                stat.st_size, written))
    found.sort(key=lambda f: (f.report, f.period.start, f.written_at), reverse=True)
    return found


def find_file(directory: Path, name: str) -> ReportFile | None:
    """The listed file called `name`, or None (a traversal or an unknown name)."""
    return next((f for f in list_files(directory) if f.filename == name), None)


# -- runs ------------------------------------------------------------------------------------


def due(reports: Mapping[str, Report], now: dt.datetime,
        directory: Path) -> list[tuple[Report, Period, Path]]:
    """The reports whose latest closed period has no file yet: one stat each, no database."""
    todo = []
    for report in reports.values():
        period = latest_period(report, now)
        path = directory / filename(report, period)
        if not path.exists():
            todo.append((report, period, path))
    return todo


def run_due(reports: Mapping[str, Report], now: dt.datetime, *, directory: Path,
            default_region: str = "", mask: bool = False) -> list[Path]:
    """Write every due report (see `due`), then prune its old files; return the paths written.

    A report that fails is logged and the others still run; it is tried again next tick."""
    written = []
    todo = due(reports, now, directory)
    if todo:
        directory.mkdir(parents=True, exist_ok=True)
    for report, period, path in todo:
        try:
            count = write(report, period, path, default_region=default_region, mask=mask)
        except Exception:
            log.exception("report %s for %s failed; retried at the next run", report.name,
                          period.label)
            continue
        log.info("report %s for %s: %d message(s) written to %s", report.name, period.label,
                 count, path)
        written.append(path)
        prune(report, directory)
    return written


def write(report: Report, period: Period, path: Path, *, default_region: str = "",
          mask: bool = False) -> int:
    """Write one period's file at `path`; return the message count.

    Written to a temp name of its own, then renamed: if a lease handover ever lets two workers
    run the same report, they never share the `.part` file `exports.export` writes into."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    try:
        count = exports.export(report.format, message_filter(report, period), temp,
                               default_region=default_region, masked=mask)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return count


def prune(report: Report, directory: Path) -> list[Path]:
    """Delete the report's files beyond its newest `keep` (whatever their format), and temp
    files of runs that died; return what was deleted."""
    mine = [f for f in list_files(directory) if f.report == report.name]  # newest first
    deleted = [f.path for f in mine[report.keep:]]
    cutoff = time.time() - TEMP_MAX_AGE
    for entry in os.scandir(directory):
        if (_TEMP.fullmatch(entry.name) and entry.name.startswith(f".{report.name}-")
                and entry.stat(follow_symlinks=False).st_mtime < cutoff):
            deleted.append(Path(entry.path))
    for path in deleted:
        path.unlink(missing_ok=True)
        log.info("report %s: deleted %s", report.name, path.name)
    return deleted


# -- settings --------------------------------------------------------------------------------


def validate(raw: Any) -> dict[str, Report]:
    """The `[reports.<name>]` tables as Reports; ConfigError naming the key otherwise."""
    if not isinstance(raw, dict):
        raise ConfigError("reports: expected a table of [reports.<name>] tables")
    return {name: _report(name, section) for name, section in raw.items()}


def _report(name: str, section: Any) -> Report:
    where = f"reports.{name}"
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: a report name is lowercase letters, digits, - and _ "
                          "(at most 64; it starts the names of its files)")
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: expected a table")
    for key in section:
        if key not in KEYS:
            raise ConfigError(f"{where}.{key}: unknown setting (one of {', '.join(KEYS)})")
    schedule = section.get("schedule")
    if schedule not in SCHEDULES:
        raise ConfigError(f"{where}.schedule: must be \"daily\" or \"weekly\", got {schedule!r}")
    if schedule == "daily" and "weekday" in section:
        raise ConfigError(f"{where}.weekday: only weekly reports have a weekday")
    values = {**DEFAULTS, **section}
    for key in ("weekday", "format", *FILTERS):
        if not isinstance(values[key], str):
            raise ConfigError(f"{where}.{key}: expected a string, got {values[key]!r}")
    return Report(
        name=name, schedule=schedule, at=_at(where, values["at"]),
        format=_one_of(f"{where}.format", values["format"], tuple(exports.FORMATS)),
        keep=_keep(where, values["keep"]),
        weekday=_weekday(where, values["weekday"]),
        status=_status(where, values["status"]), provider=_provider(where, values["provider"]),
        error_code=values["error_code"].strip(), q=values["q"].strip(),
    )


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{key}: must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _weekday(where: str, value: str) -> int:
    """"mon" (or "Monday") -> 0."""
    lowered = value.strip().lower()
    for index, (short, full) in enumerate(zip(WEEKDAYS, _DAY_NAMES, strict=True)):
        if lowered in (short, full):
            return index
    raise ConfigError(f"{where}.weekday: must be one of {', '.join(WEEKDAYS)}, got {value!r}")


def _at(where: str, value: Any) -> dt.time:
    """"HH:MM" (or a TOML time such as 02:00:00), whole minutes, UTC."""
    if isinstance(value, dt.time) and not value.second and not value.microsecond:
        return value.replace(tzinfo=None)
    found = _AT.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        raise ConfigError(f"{where}.at: expected \"HH:MM\" (UTC, 00:00 to 23:59), got {value!r}")
    return dt.time(int(found[1]), int(found[2]))


def _keep(where: str, value: Any) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():  # from the env
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}.keep: expected a whole number of files, at least 1, "
                          f"got {value!r}")
    return value


def _status(where: str, value: str) -> str:
    from .status import Status

    value = value.strip()
    if value and value not in {s.value for s in Status}:
        raise ConfigError(f"{where}.status: must be one of {', '.join(s.value for s in Status)}"
                          f" (or empty), got {value!r}")
    return value


def _provider(where: str, value: str) -> str:
    # Any known provider, configured or not: a provider taken out of [providers] still has
    # its messages, and a report on them is still meaningful. A typo still fails here.
    from .providers import PROVIDERS

    value = value.strip()
    if value and value not in PROVIDERS:
        raise ConfigError(f"{where}.provider: must be one of {', '.join(sorted(PROVIDERS))} "
                          f"(or empty), got {value!r}")
    return value
