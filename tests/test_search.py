"""Search by the end of a number, as support staff type it: its last digits (4 or more), or the
number in national format, with the trunk prefix (8 701 …, 07700 …) or without, with spaces,
dashes and brackets, whether or not default_region is set; on SQLite and Postgres."""

from __future__ import annotations

import datetime as dt

import pytest

from tracker import phones, reporting
from tracker.db import db, is_sqlite
from tracker.models import Message
from tracker.status import RANK, Status, order_key

T0 = dt.datetime(2026, 3, 10, 12, 0, 0)


def add(ref: str, to: str, status: str = "delivered", client_ref: str | None = None) -> None:
    n = Message.select().count()
    created = T0 + dt.timedelta(minutes=n)
    Message.create(reference=ref, provider="skycore", recipient=to, text="hi", status=status,
                   status_rank=RANK[Status(status)], status_order=order_key(status, None),
                   client_ref=client_ref, created_at=created, updated_at=created)


@pytest.fixture
def numbers(app) -> None:
    """Seven numbers in five countries; four end in 0119, two in the same ten digits."""
    add("kz-1", "+77015550119")
    add("kz-2", "+77015550119", status="failed")
    add("uk", "+447700900119")
    add("de", "+4915112340119")
    add("us", "+17015550119")  # the Kazakh number's national digits, in North America
    add("kz-other", "+77019990000")
    add("ref", "+4915100000000", client_ref="5550119")  # digits that are also a client_ref
    add("ar", "+5491123456789")  # Buenos Aires mobile: written 11 15 2345-6789 at home


@pytest.mark.parametrize(("q", "region", "expected"), [
    ("0119", "", {"kz-1", "kz-2", "uk", "de", "us"}),  # the last 4 digits
    ("550119", "", {"kz-1", "kz-2", "us"}),  # the last 6
    ("5550119", "", {"kz-1", "kz-2", "us", "ref"}),  # and a client_ref that reads the same
    ("87015550119", "", {"kz-1", "kz-2", "us"}),  # national, trunk 8, no default_region
    ("8 (701) 555-01-19", "", {"kz-1", "kz-2", "us"}),
    ("8 701 555 01 19", "", {"kz-1", "kz-2", "us"}),
    ("701 555 01 19", "", {"kz-1", "kz-2", "us"}),  # national without the trunk prefix
    ("07700 900119", "", {"uk"}),  # national, trunk 0
    ("0151-1234-0119", "", {"de"}),
    ("87015550119", "KZ", {"kz-1", "kz-2"}),  # with default_region: the whole number, exactly
    ("7015550119", "KZ", {"kz-1", "kz-2"}),
    ("8 10 7 701 555 01 19", "RU", {"kz-1", "kz-2"}),  # Russia's 810 international prefix
    # National rules that move digits (Argentina's mobile 15 becomes 9 before the area code):
    # the whole number is found; the same digits read as an end of a number find nothing.
    ("11 15 2345-6789", "AR", {"ar"}),
    ("+7 701 555 01 19", "", {"kz-1", "kz-2"}),  # international: the whole number only
    ("0044 7700 900119", "", {"uk"}),
    ("77015550119", "", {"kz-1", "kz-2"}),  # international digits without "+"
    ("119", "", set()),  # 3 digits are too few to search a number by
    ("99999999", "", set()),
    ("+7 701 555 01 18", "", set()),
])
def test_a_number_is_found_by_its_end_or_national_format(numbers, q, region, expected) -> None:
    flt = reporting.MessageFilter(q=q)
    found = {m.reference for m in reporting.list_messages(flt, region).rows}
    assert found == expected, q
    assert reporting.count_messages(flt, region).n == len(expected)
    counts = reporting.status_counts(reporting.base_where(flt, region))
    assert counts.total.n == len(expected)
    # Exports narrow with the same terms: they hold what the list shows.
    exported = reporting.narrow(Message.select(Message.reference), flt, region)
    assert {m.reference for m in exported} == expected


def test_the_end_of_a_number_combines_with_the_filters(numbers) -> None:
    flt = reporting.MessageFilter(q="0119", status="failed")
    assert [m.reference for m in reporting.list_messages(flt).rows] == ["kz-2"]
    flt = reporting.MessageFilter(q="8 701 555 01 19", status="delivered")
    assert [m.reference for m in reporting.list_messages(flt).rows] == ["us", "kz-1"]


def test_rows_inserted_by_any_path_are_found(app) -> None:
    """The index is on an expression of the recipient (m0009), so rows written without our
    models (a bulk load, a hand-written INSERT) are found too; nothing fills a column."""
    p = db.obj.param
    db.obj.execute_sql(
        "INSERT INTO message (reference, provider, recipient, text, status, status_rank,"  # noqa: S608
        " status_order, status_inferred, attempts, created_at, updated_at) VALUES"
        f" ({p}, 'fake', {p}, 'hi', 'queued', 0, '', {p}, 0, {p}, {p})",
        ["bulk", "+380671234567", False, T0, T0])
    assert [m.reference for m in reporting.list_messages(
        reporting.MessageFilter(q="067 123 45 67")).rows] == ["bulk"]


def test_a_search_by_the_end_of_a_number_reads_its_index(numbers) -> None:
    """The query's expression must be the index's, character for character, or the database
    reads every message instead (measured in bench/dashboard.py; held here)."""
    flt = reporting.MessageFilter(q="87015550119")
    sql, params = reporting.list_sql(flt)
    if is_sqlite():
        plan = " ".join(r[3] for r in db.obj.execute_sql("EXPLAIN QUERY PLAN " + sql, params))
    else:
        db.obj.execute_sql("SET enable_seqscan = off")  # a table this small is read whole
        plan = " ".join(r[0] for r in db.obj.execute_sql("EXPLAIN " + sql, params))
        db.obj.execute_sql("RESET enable_seqscan")
    assert "message_recipient_tail" in plan, plan


@pytest.mark.parametrize(("raw", "suffix"), [
    ("0119", "0119"),
    ("  55 01 19 ", "550119"),
    ("87015550119", "7015550119"),  # a trunk 8 dropped
    ("8(701)555-01-19", "7015550119"),
    ("07700 900123", "7700900123"),  # a trunk 0 dropped
    ("0077015550119", "77015550119"),  # an international prefix dropped
    ("019 0119", "0190119"),  # 7 digits: a leading 0 is one of the last digits
    ("0119 0119", "1190119"),  # from 8 on, a trunk prefix (dropped: the search only widens)
    ("1234567890123456", None),  # longer than any number
    ("119", None),
    ("+7 701 555 01 19", None),  # a whole international number: searched exactly
    ("ref-0119", None),
    ("", None),
])
def test_the_digits_a_number_must_end_with(raw, suffix) -> None:
    assert phones.search_suffix(raw) == suffix


@pytest.mark.parametrize(("q", "index", "provider_at", "matches"), [
    ("+77015550119", "message_recipient_created_at", 3, 2),
    ("campaign-7", "message_client_ref_created_at", 3, 1),
    ("0119", "message_recipient_tail", 4, 5),
])
def test_a_search_narrowed_by_provider_checks_it_in_the_search_index(
        numbers, q, index, provider_at, matches) -> None:
    """A busy number (a QA phone's thousands of messages) filtered by provider reads its index
    entries and only the rows that match (bench/dashboard.py: 6 -> under 1 ms on SQLite):
    SQLite (m0013) reads the provider from the index entry before it seeks the row, and
    Postgres (m0006) counts inside the index."""
    add("campaign", "+4915100000001", client_ref="campaign-7")
    flt = reporting.MessageFilter(q=q, provider="skycore")
    where = reporting.filter_where(flt)
    sql, params = reporting.count_sql(where)
    if is_sqlite():
        root = db.obj.execute_sql("SELECT rootpage FROM sqlite_master WHERE name = ?",
                                  [index]).fetchone()[0]
        ops = list(db.obj.execute_sql("EXPLAIN " + sql, params))
        [cursor] = {op[2] for op in ops if op[1] == "OpenRead" and op[3] == root}
        assert any(op[1] == "Column" and op[2] == cursor and op[3] == provider_at
                   for op in ops), ops
    else:
        for setting in ("enable_seqscan", "enable_bitmapscan"):  # a table this small is read
            db.obj.execute_sql(f"SET {setting} = off")           # whole, or by bitmap
        plan = " ".join(r[0] for r in db.obj.execute_sql("EXPLAIN " + sql, params))
        db.obj.execute_sql("RESET ALL")
        assert f"Index Only Scan using {index}" in plan, plan
    assert reporting.count_messages(flt).n == matches


def test_a_search_probe_is_planned_once_per_connection(numbers) -> None:
    """Postgres: which columns hold a search is asked by a prepared statement (one plan for
    every value: each EXISTS is one index lookup), so a search is not planned twice. The
    answers are those of the plain statement (SQLite's module caches its statements itself)."""
    found = {q: {m.reference for m in reporting.list_messages(reporting.MessageFilter(q=q)).rows}
             for q in ("0119", "7700 900119", "5550119", "nothing")}
    assert found == {"0119": {"kz-1", "kz-2", "uk", "de", "us"}, "7700 900119": {"uk"},
                     "5550119": {"kz-1", "kz-2", "us", "ref"}, "nothing": set()}
    if is_sqlite():
        return
    probes = [row[0] for row in db.obj.execute_sql(
        "SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s",
        ["%EXISTS (SELECT 1 FROM message WHERE reference%"])]
    assert probes, "the search probe was not prepared"
    assert all("$1" in text for text in probes), probes  # values as parameters, not text
