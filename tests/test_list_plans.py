"""Every shape of the messages list is read straight off one index, in the list's own order
(created_at, id): no sort, so a page stops after its entries, whatever the database estimates
(migrations 0003, 0009, 0013; on Postgres 0014). A sort above the index read every match of a
QA number with 3,000 messages before the first row came back when Postgres misjudged their
number (9 ms for one page at 1,000,000 messages); these plans hold that on SQLite and on
Postgres."""

from __future__ import annotations

import datetime as dt

import pytest

from tracker import reporting
from tracker.db import db, is_sqlite
from tracker.models import Message
from tracker.status import RANK, Status, order_key

T0 = dt.datetime(2026, 3, 10, 12, 0, 0)
DAY = {"created_from": "2026-03-10", "created_to": "2026-03-11"}


@pytest.fixture
def messages(app) -> list[Message]:
    rows = []
    for i in range(40):
        status = ("delivered", "failed", "undelivered", "accepted")[i % 4]
        created = T0 + dt.timedelta(minutes=i // 2)  # pairs created in the same instant
        rows.append(Message.create(
            reference=f"r{i}", provider=("skycore", "mobizon")[i % 2],
            recipient=("+77015550119", "+447700900119")[i % 3 == 0], text="hi", status=status,
            status_rank=RANK[Status(status)], status_order=order_key(status, None),
            error_code="1" if status in ("failed", "undelivered") else None,
            client_ref="campaign-7" if i % 5 == 0 else None,
            created_at=created, updated_at=created))
    return rows


SHAPES = {
    "newest": {},
    "date": DAY,
    "status": {"status": "delivered"},
    "provider": {"provider": "skycore"},
    "status+provider": {"status": "failed", "provider": "mobizon"},
    "error": {"error_code": "1"},
    "error+status": {"error_code": "1", "status": "failed"},
    "error+provider": {"error_code": "1", "provider": "skycore"},
    "error+status+provider": {"error_code": "1", "status": "undelivered", "provider": "skycore"},
    "error+date": {"error_code": "1", **DAY},
    "number": {"q": "+77015550119"},
    "number+status": {"q": "+77015550119", "status": "delivered"},
    "client_ref": {"q": "campaign-7"},
    "last digits": {"q": "0119"},
    "last digits+provider": {"q": "0119", "provider": "skycore"},
}
PAGES = {"first": {}, "older": {"before": "{anchor}"}, "newer": {"after": "{anchor}"}}


def plan(sql: str, params: list) -> str:
    if is_sqlite():
        return "\n".join(r[3] for r in db.obj.execute_sql("EXPLAIN QUERY PLAN " + sql, params))
    # A table this small is cheapest read whole and sorted; the question is which index.
    for setting in ("enable_seqscan", "enable_bitmapscan"):
        db.obj.execute_sql(f"SET {setting} = off")
    try:
        return "\n".join(r[0] for r in db.obj.execute_sql("EXPLAIN " + sql, params))
    finally:
        db.obj.execute_sql("RESET ALL")


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("shape", SHAPES)
def test_a_list_page_is_read_in_index_order_without_a_sort(messages, shape, page) -> None:
    anchor = messages[20]
    args = {**SHAPES[shape], **{k: v.format(anchor=anchor.id) for k, v in PAGES[page].items()}}
    flt = reporting.MessageFilter.from_args(args)
    sql, params = reporting.list_sql(flt, count_cap=reporting.COUNT_CAP)
    shown = plan(sql, params)
    if is_sqlite():
        assert "USE TEMP B-TREE FOR ORDER BY" not in shown, shown
        assert "USING INDEX" in shown or "USING COVERING INDEX" in shown, shown
    else:
        assert "Sort" not in shown, shown
        assert "Index" in shown, shown
        # The page's bound is where the index read starts, not a test run on each entry.
        assert not [line for line in shown.splitlines()
                    if "Filter" in line and "created_at" in line], shown
    # And the page is the right one: newest first, (created_at, id) breaking ties.
    def key(m: Message) -> tuple[dt.datetime, int]:
        return m.created_at, m.id

    expected = sorted(reporting.narrow(Message.select(), flt), key=key, reverse=True)
    if flt.before:
        expected = [m for m in expected if key(m) < key(anchor)][:reporting.PAGE_SIZE]
    elif flt.after:
        expected = [m for m in expected if key(m) > key(anchor)][-reporting.PAGE_SIZE:]
    else:
        expected = expected[:reporting.PAGE_SIZE]
    assert [m.id for m in reporting.list_messages(flt).rows] == [m.id for m in expected]
