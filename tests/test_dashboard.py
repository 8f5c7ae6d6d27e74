"""The first dashboard: login, the messages list with filters and search, the message page."""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.parse
from html import unescape

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracker import accounts, reporting, sending
from tracker.models import Callback, Message
from tracker.providers.base import SendResult
from tracker.status import RANK, Status, order_key

PASSWORD = "correct horse battery"
DASH = "\N{EN DASH}"  # between the first and last place of a page: "1-50 of 401"


@pytest.fixture
def staff(app) -> str:
    accounts.create_user("ana", PASSWORD, "viewer")
    return "ana"


def csrf(client, path: str) -> str:
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def login(client, username: str, password: str = PASSWORD):
    token = csrf(client, "/auth/login")
    return client.post("/auth/login", data={"username": username, "password": password,
                                            "csrf_token": token})


def test_pages_need_a_login(client) -> None:
    for path in ("/messages", "/messages/1"):
        response = client.get(path)
        assert response.status_code == 302 and "/auth/login" in response.headers["Location"]


def test_login_rejects_wrong_password_and_missing_csrf(client, staff) -> None:
    assert login(client, staff, "wrong password!").status_code == 401
    no_token = client.post("/auth/login", data={"username": staff, "password": PASSWORD})
    assert no_token.status_code == 400
    assert client.get("/messages").status_code == 302


def test_logout_revokes_the_old_cookie(client, staff) -> None:
    assert login(client, staff).status_code == 302
    cookie = client.get_cookie("session").value
    client.post("/auth/logout", data={"csrf_token": csrf(client, "/messages")})
    client.set_cookie("session", cookie)  # replay the cookie from before the logout
    assert client.get("/messages").status_code == 302


def test_list_filter_search_and_message_page(client, staff) -> None:
    def make(to: str, provider: str, tracking: str | None) -> Message:
        m = sending.enqueue(sending.NewMessage(to=to, text="<script>alert(1)</script>",
                                               provider=provider), source="test")
        if tracking:
            sending.record_accepted(m, SendResult(tracking))
        return Message.get_by_id(m.id)

    kz = make("+77011234567", "skycore", "SMS_777")
    us = make("+15551234888", "skycore", None)
    login(client, staff)
    listing = client.get("/messages").get_data(as_text=True)
    assert kz.reference in listing and us.reference in listing
    assert listing.index(us.reference) < listing.index(kz.reference)  # newest first
    for q in ("+7 701 123 45 67", "0077011234567", "77011234567", kz.reference, "SMS_777"):
        found = client.get("/messages", query_string={"q": q}).get_data(as_text=True)
        assert kz.reference in found and us.reference not in found, q
    queued = client.get("/messages", query_string={"status": "queued"}).get_data(as_text=True)
    assert us.reference in queued and kz.reference not in queued

    callback = client.post("/callbacks/skycore/sky-secret-token", content_type="text/xml",
                           data=b"<POSTBACK><ORIGIN>SMS_MT</ORIGIN><CODE>N202</CODE>"
                                b"<STATUS>Message Sent/Delivered</STATUS><TRACKINGID>SMS_777"
                                b"</TRACKINGID></POSTBACK>")
    assert callback.status_code == 200
    client.post("/callbacks/skycore/sky-secret-token", content_type="text/xml",
                data=b"<POSTBACK><ORIGIN>SMS_MT</ORIGIN><CODE>N201</CODE>"
                     b"<TRACKINGID>SMS_777</TRACKINGID></POSTBACK>")
    page = client.get(f"/messages/{kz.id}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    assert "<dt>Encoding</dt><dd>GSM-7, 1 segment</dd>" in html
    assert "Message Sent/Delivered" in html  # the raw callback behind the event
    assert "Why not applied: message is already final (delivered)" in html
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/messages/999999").status_code == 404


def _raw(body: bytes, content_type: str = "text/xml") -> Callback:
    return Callback(body=body, headers=json.dumps([["Content-Type", content_type]]))


def test_raw_bodies_are_pretty_printed_for_reading_and_never_expanded() -> None:
    """Support staff read raw callbacks: XML and JSON indented, a form one field a line (its
    xml= value indented too); anything refused by the safe parser is shown as it came."""
    xml = b"<POSTBACK><CODE>N202</CODE><TO>77015550142</TO></POSTBACK>"
    assert reporting.pretty_body(_raw(xml)) == (
        "<POSTBACK>\n  <CODE>N202</CODE>\n  <TO>77015550142</TO>\n</POSTBACK>")
    form = b"xml=" + urllib.parse.quote(xml).encode() + b"&x=1"
    assert reporting.pretty_body(_raw(form, "application/x-www-form-urlencoded")) == (
        "xml = <POSTBACK>\n  <CODE>N202</CODE>\n  <TO>77015550142</TO>\n</POSTBACK>\nx = 1")
    assert reporting.pretty_body(_raw(b'{"a": [1]}', "application/json")) == (
        '{\n  "a": [\n    1\n  ]\n}')
    bomb = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]>'
            b"<l>&b;</l>")
    for verbatim in (bomb, b"<A><B></A>", b"not xml & not json"):
        assert reporting.pretty_body(_raw(verbatim)) == verbatim.decode()


# -- the messages list: filters, search, counts, paging ------------------------------------

T0 = dt.datetime(2026, 3, 10, 12, 0, 0)


def add(n: int, *, status: str = "delivered", provider: str = "skycore",
        to: str = "+15551230000", error: str | None = None, pmid: str | None = None,
        client_ref: str | None = None, at: dt.datetime | None = None) -> Message:
    """A message as the tracker stores it, with the fields the list filters on."""
    created = at or T0 + dt.timedelta(minutes=n)
    return Message.create(
        reference=f"ref{n:04d}", client_ref=client_ref, provider=provider,
        provider_message_id=pmid, recipient=to, text="hi", status=status,
        status_rank=RANK[Status(status)], status_order=order_key(status, None),
        error_code=error, created_at=created, updated_at=created)


def refs(flt: reporting.MessageFilter, **kwargs) -> list[str]:
    return [m.reference for m in reporting.list_messages(flt, **kwargs).rows]


@pytest.fixture
def mix(app) -> list[Message]:
    """Eight messages over three days, newest last."""
    return [
        add(1, at=dt.datetime(2026, 3, 1, 0, 0, 0), to="+77011234567", pmid="SMS_1"),
        add(2, status="undelivered", error="E710", at=dt.datetime(2026, 3, 1, 23, 59, 59)),
        add(3, status="failed", provider="mobivate", error="1", at=dt.datetime(2026, 3, 2, 8)),
        add(4, status="undelivered", provider="mobizon", error="1", client_ref="order-9",
            at=dt.datetime(2026, 3, 2, 9)),
        add(5, provider="mobizon", to="+77011234567", client_ref="campaign",
            at=dt.datetime(2026, 3, 2, 23, 59, 59, 999999)),
        add(6, status="failed", provider="mobivate", error="2", at=dt.datetime(2026, 3, 3)),
        add(7, provider="mobivate", pmid="mv-7", client_ref="campaign",
            at=dt.datetime(2026, 3, 3, 10)),
        add(8, status="queued", to="+77011234567", client_ref="77011234567",
            at=dt.datetime(2026, 3, 3, 11)),
    ]


@pytest.mark.parametrize(("args", "expected"), [
    ({}, [8, 7, 6, 5, 4, 3, 2, 1]),
    ({"status": "undelivered"}, [4, 2]),
    ({"status": "not-a-status"}, [8, 7, 6, 5, 4, 3, 2, 1]),  # ignored, as before
    ({"provider": "mobivate"}, [7, 6, 3]),
    ({"status": "failed", "provider": "mobivate"}, [6, 3]),
    ({"error_code": "1"}, [4, 3]),
    ({"error_code": "1", "status": "failed"}, [3]),
    ({"error_code": "1", "provider": "mobizon"}, [4]),
    ({"error_code": "E710", "provider": "mobivate"}, []),
    ({"error_code": "2", "status": "failed", "provider": "mobivate"}, [6]),
    # Inclusive UTC days: the 2nd runs to 23:59:59.999999, the 1st starts at 00:00.
    ({"created_from": "2026-03-02", "created_to": "2026-03-02"}, [5, 4, 3]),
    ({"created_from": "2026-03-01", "created_to": "2026-03-01"}, [2, 1]),
    ({"created_from": "2026-03-03"}, [8, 7, 6]),
    ({"created_to": "2026-03-01"}, [2, 1]),
    ({"created_from": "2026-03-02", "status": "undelivered"}, [4]),
    ({"created_from": "2026-03-02", "created_to": "2026-03-02", "provider": "mobizon"}, [5, 4]),
    ({"created_from": "not a date"}, [8, 7, 6, 5, 4, 3, 2, 1]),
    ({"created_from": "2026-03-04"}, []),
    ({"error_code": "1", "created_to": "2026-03-02", "created_from": "2026-03-02"}, [4, 3]),
])
def test_filters_list_and_count_the_same_messages(mix, args, expected) -> None:
    flt = reporting.MessageFilter.from_args(args)
    assert refs(flt) == [f"ref{n:04d}" for n in expected]
    count = reporting.count_messages(flt)
    assert (count.n, count.capped) == (len(expected), False)
    # The list view reads the count in the same statement as the page: the same figure.
    assert reporting.list_messages(flt, count_cap=reporting.COUNT_CAP).count == count


@pytest.mark.parametrize(("q", "args", "expected"), [
    ("+7 701 123 45 67", {}, [8, 5, 1]),  # a number in any format
    ("8 (701) 123-45-67", {"region": "KZ"}, [8, 5, 1]),  # national format, default region
    ("0077011234567", {}, [8, 5, 1]),
    ("ref0003", {}, [3]),  # reference
    ("mv-7", {}, [7]),  # provider message id, whatever the provider
    ("SMS_1", {}, [1]),
    ("order-9", {}, [4]),  # client_ref
    ("campaign", {}, [7, 5]),
    ("77011234567", {"status": "queued"}, [8]),  # a number and a client_ref: both columns
    ("campaign", {"provider": "mobizon"}, [5]),  # search combined with filters
    ("+77011234567", {"status": "delivered", "created_from": "2026-03-02"}, [5]),
    ("+77011234567", {"status": "failed"}, []),
    ("nothing like it", {}, []),
])
def test_search_by_number_reference_provider_id_or_client_ref(mix, q, args, expected) -> None:
    args = dict(args)  # the parameters are shared by the sqlite and postgres runs
    region = args.pop("region", "")
    flt = reporting.MessageFilter.from_args({"q": q, **args})
    assert refs(flt, default_region=region) == [f"ref{n:04d}" for n in expected]
    assert reporting.count_messages(flt, region).n == len(expected)
    assert reporting.list_messages(flt, region, count_cap=5).count.n == len(expected)


def test_keyset_pages_walk_every_message_once_both_ways(app) -> None:
    same = dt.datetime(2026, 3, 5, 9, 30)
    made = [add(n, at=same if n in (4, 5, 6) else None) for n in range(1, 11)]  # a tie
    newest_first = sorted(made, key=lambda m: (m.created_at, m.id), reverse=True)
    seen, pages, flt = [], [], reporting.MessageFilter()
    while True:
        page = reporting.list_messages(flt, limit=3)
        pages.append(page)
        seen += [m.id for m in page.rows]
        if page.older is None:
            break
        flt = reporting.MessageFilter(before=page.older)
    assert seen == [m.id for m in newest_first]
    assert [len(p.rows) for p in pages] == [3, 3, 3, 1]
    assert pages[0].newer is None and pages[1].newer == pages[1].rows[0].id
    # Back up with `after`: the page newer than the last one is the third one again.
    back = reporting.list_messages(reporting.MessageFilter(after=pages[3].newer), limit=3)
    assert [m.id for m in back.rows] == [m.id for m in pages[2].rows]
    assert back.newer == pages[2].rows[0].id and back.older == pages[2].rows[-1].id
    top = reporting.list_messages(reporting.MessageFilter(after=pages[1].rows[0].id), limit=3)
    assert [m.id for m in top.rows] == [m.id for m in pages[0].rows] and top.newer is None


def test_count_is_exact_up_to_the_cap(app) -> None:
    for n in range(1, 8):
        add(n, status="failed" if n <= 3 else "delivered")
    assert reporting.count_messages(reporting.MessageFilter(), cap=5) == \
        reporting.MatchCount(5, True, 5)
    assert reporting.count_messages(reporting.MessageFilter(), cap=5).label == "5+ messages"
    failed = reporting.count_messages(reporting.MessageFilter(status="failed"), cap=5)
    assert (failed.n, failed.capped, failed.label) == (3, False, "3 messages")
    assert reporting.count_messages(reporting.MessageFilter(status="failed"), cap=3).label \
        == "3 messages"  # exactly the cap is still exact
    assert reporting.MatchCount(1, False, 5).label == "1 message"
    # Folded into the list's statement: every page of a filter carries the filter's count,
    # capped alike; an empty later page carries none (the view then counts on its own).
    first = reporting.list_messages(reporting.MessageFilter(), limit=2, count_cap=5)
    assert first.count == reporting.MatchCount(5, True, 5)
    second = reporting.list_messages(reporting.MessageFilter(status="failed", before=first.older),
                                     limit=2, count_cap=5)
    assert second.count == reporting.MatchCount(3, False, 5)
    oldest = min(m.id for m in Message.select(Message.id))
    empty = reporting.list_messages(reporting.MessageFilter(before=oldest), count_cap=5)
    assert empty.rows == [] and empty.count is None
    assert reporting.list_messages(reporting.MessageFilter(status="queued"),
                                   count_cap=5).count == reporting.MatchCount(0, False, 5)


def test_messages_page_filters_counts_and_pages(client, staff) -> None:
    for n in range(1, 56):
        add(n, status="failed" if n % 5 == 0 else "delivered", error="E1" if n % 5 == 0 else None)
    login(client, staff)
    html = client.get("/messages").get_data(as_text=True)
    assert f"1{DASH}50 of 55 messages</p>" in html
    assert html.count('<tr class="m">') == 50
    assert "UTC days, both included" in html
    older = re.search(r'<a rel="next" href="([^"]+)"', html).group(1).replace("&amp;", "&")
    rest = client.get(older).get_data(as_text=True)
    assert rest.count('<tr class="m">') == 5 and 'rel="next"' not in rest
    assert "ref0005" in rest and "ref0006" not in rest
    newer = re.search(r'<a rel="prev" href="([^"]+)"', rest).group(1).replace("&amp;", "&")
    assert client.get(newer).get_data(as_text=True).count('<tr class="m">') == 50

    failed = client.get("/messages", query_string={
        "status": "failed", "error_code": "E1", "created_from": "2026-03-10",
        "created_to": "2026-03-10"}).get_data(as_text=True)
    assert f"1{DASH}11 of 11 messages matching" in failed and failed.count('<tr class="m">') == 11
    assert 'value="2026-03-10"' in failed and 'value="E1"' in failed
    none = client.get("/messages", query_string={"provider": "mobizon"}).get_data(as_text=True)
    assert "0 messages matching" in none and "No messages match." in none


@pytest.mark.parametrize("path", [
    "/messages?before=%C2%B2", "/messages?after=%C2%B2", "/messages?before=" + "9" * 23,
    "/messages?created_to=9999-12-31", "/messages?created_from=9999-12-31",
    "/callback-log?until=9999-12-31", "/callback-log?before=%C2%B2",
    "/messages/" + "9" * 23, "/messages/%C2%B2", "/messages/0",
    "/messages/export?format=csv&created_to=9999-12-31&before=%C2%B2",
])
def test_odd_ids_and_dates_are_never_a_server_error(client, staff, path) -> None:
    login(client, staff)
    response = client.get(path)
    assert response.status_code < 500, (path, response.status_code)


def test_odd_ids_in_the_api_are_404(client, api_key) -> None:
    auth = {"Authorization": f"Bearer {api_key}"}
    for ident in ("9" * 25, "²", "0"):
        response = client.get(f"/api/v1/messages/{ident}", headers=auth)
        assert (response.status_code, response.json["error"]["code"]) == (404, "not_found")


_PAGES = ["/messages", "/overview", "/callback-log", "/reports", "/messages/export"]
_PARAMS = ["status", "provider", "q", "error_code", "created_from", "created_to", "before",
           "after", "format", "window", "verdict", "since", "until", "refresh"]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(page=st.sampled_from(_PAGES),
       params=st.dictionaries(st.sampled_from(_PARAMS), st.text(max_size=25), max_size=5))
def test_generated_query_strings_are_never_a_server_error(client, staff, page, params) -> None:
    login(client, staff)
    response = client.get(page, query_string=params)
    assert response.status_code < 500, (page, params, response.status_code)


@pytest.mark.parametrize(("query", "said"), [
    ("created_from=garbage", "created from: 'garbage' is not a date"),
    ("created_to=2026-02-30", "created to: '2026-02-30' is not a date"),
    ("status=deliverd", "status: 'deliverd' is not a status"),
    ("provider=nobody", "provider: 'nobody' is not a provider"),
    ("start=0", "start: '0' is not a position in the list"),
    ("before=%C2%B2", "before: '²' is not a message id"),
    ("created_from=2026-03-02&created_to=2026-03-01", "created from is after created to"),
])
def test_an_invalid_filter_is_shown_and_answered_400(client, staff, query, said) -> None:
    login(client, staff)
    page = client.get(f"/messages?{query}")
    assert page.status_code == 400
    assert said in unescape(page.get_data(as_text=True))
    export = client.get(f"/messages/export?format=csv&{query}")
    assert export.status_code == 400 and said in unescape(export.get_data(as_text=True))
    assert client.get("/messages?created_from=2026-03-01&status=delivered").status_code == 200


def test_the_export_command_refuses_an_invalid_filter(tmp_path) -> None:
    from click.testing import CliRunner

    from tracker import cli

    result = CliRunner().invoke(cli.main, ["export", "--created-from", "garbage",
                                           "--output", str(tmp_path / "x.csv")])
    assert result.exit_code == 2 and "--created-from: 'garbage' is not a date" in result.output
    assert not (tmp_path / "x.csv").exists()


# -- counts per status, the page's place, what a row shows (issue 12, items 1 and 2) --------


def test_status_counts_are_exact_up_to_the_cap(app) -> None:
    for n in range(1, 8):
        add(n, status="failed" if n <= 3 else "delivered", to="+77011234567")
    plain = reporting.base_where(reporting.MessageFilter())
    counts = reporting.status_counts(plain, cap=5)
    assert list(counts.by_status) == [s.value for s in Status]  # every status, enum order
    assert counts.of("failed") == reporting.MatchCount(3, False, 5)
    assert counts.of("delivered") == reporting.MatchCount(4, False, 5)
    assert counts.of("queued") == reporting.MatchCount(0, False, 5)
    assert counts.total == counts.of("") == reporting.MatchCount(7, False, 5)  # a sum: exact
    assert counts.sample is None
    capped = reporting.status_counts(plain, cap=3)
    assert capped.of("delivered") == reporting.MatchCount(3, True, 3)
    assert capped.of("delivered").figure == "3+" and capped.of("failed").figure == "3"
    assert capped.total == reporting.MatchCount(3, True, 3)
    # A search's matches grouped by status: exact when they are no more than the cap...
    searched = reporting.base_where(reporting.MessageFilter(q="+77011234567"))
    exact = reporting.status_counts(searched, cap=7)
    assert exact.of("delivered") == reporting.MatchCount(4, False, 7) and exact.sample is None
    # ... else counted among the newest (floors), but for the status the list is narrowed to,
    # counted as the list's count is (the newest 3 are delivered: no failed among them).
    floors = reporting.status_counts(searched, cap=5, status="failed", sample=3)
    assert floors.sample == 3 and floors.total == reporting.MatchCount(5, True, 5)
    assert floors.of("delivered") == reporting.MatchCount(3, True, 5)  # "3+"
    assert floors.of("failed") == reporting.MatchCount(3, False, 5)
    assert floors.of("queued").figure == "0+"


def tabs_in(html: str) -> dict[str, str]:
    """The status links of a page or counts fragment: {"failed <b>3": href, ...}."""
    found = re.findall(r'<a href="([^"]+)"[^>]*>(\w+ <b>[^<]+)</b></a>', unescape(html))
    return {label: href for href, label in found}


def test_status_links_count_each_status_and_keep_the_other_filters(client, staff) -> None:
    for n in range(1, 8):
        add(n, status="failed" if n <= 3 else "delivered", error="E1" if n <= 3 else None)
    add(8, status="delivered", provider="mobizon")
    login(client, staff)
    # A first page with room to spare holds every match: its counts are in the page.
    html = client.get("/messages", query_string={"provider": "skycore"}).get_data(as_text=True)
    tabs = tabs_in(html)
    assert set(tabs) == {"all <b>7", "delivered <b>4", "failed <b>3"}, tabs
    assert "data-counts" not in html
    failed = tabs["failed <b>3"]
    assert "provider=skycore" in failed and "status=failed" in failed
    page = client.get(failed).get_data(as_text=True)
    assert page.count('<tr class="m">') == 3 and f"1{DASH}3 of 3 messages matching" in page
    # Narrowed to a status, the page does not hold the others: they come from the fragment the
    # page names, for the same filters.
    counts_url = unescape(re.search(r'data-counts="([^"]+)"', page).group(1))
    assert counts_url.startswith("/messages/counts?") and "provider=skycore" in counts_url
    fragment = client.get(counts_url)
    assert fragment.status_code == 200 and fragment.headers["Cache-Control"] == "no-store"
    html = fragment.get_data(as_text=True)
    assert re.search(r'aria-current="page">failed <b>3</b>', html)
    assert re.search(r'delivered <b>4</b>', html)  # the other statuses stay, to switch to
    assert "<html" not in html and "<tr" not in html  # the row of counts alone
    # A status with no match shows only when it is the one filtered on.
    assert "queued <b>" not in client.get("/messages/counts").get_data(as_text=True)
    assert "queued <b>0</b>" in client.get("/messages/counts?status=queued").get_data(
        as_text=True)


def test_counts_come_after_the_list_unless_asked_for_in_the_page(client, staff) -> None:
    """A list with more than a page does not wait for its counts per status: the page leaves a
    placeholder naming where they are (static/counts.js fetches them) and, for a browser without
    scripts, a link to the page with them in it (counts=1), whose status links keep them."""
    for n in range(1, 56):
        add(n, status="failed" if n % 5 == 0 else "delivered")
    login(client, staff)
    page = client.get("/messages?provider=skycore").get_data(as_text=True)
    assert f"1{DASH}50 of 55 messages matching" in page  # the list's own count is in the page
    assert not tabs_in(page) and 'aria-busy="true"' in page and "counts.js" in page
    inline = unescape(re.search(r'<noscript><a href="([^"]+)"', page).group(1))
    assert "provider=skycore" in inline and "counts=1" in inline
    with_counts = client.get(inline).get_data(as_text=True)
    tabs = tabs_in(with_counts)
    assert set(tabs) == {"all <b>55", "delivered <b>44", "failed <b>11"}, tabs
    assert all("counts=1" in href for href in tabs.values())
    older = unescape(re.search(r'<a rel="next" href="([^"]+)"', with_counts).group(1))
    assert "counts=1" in older and tabs_in(client.get(older).get_data(as_text=True))
    # The fragment is the same row of counts as in the page.
    fragment = client.get("/messages/counts?provider=skycore").get_data(as_text=True)
    assert set(tabs_in(fragment)) == set(tabs)


def test_the_counts_fragment_checks_its_filters_and_its_user(client, staff) -> None:
    add(1, status="failed")
    assert client.get("/messages/counts").status_code == 302  # to the login page
    login(client, staff)
    bad = client.get("/messages/counts?status=bogus&created_from=garbage")
    assert bad.status_code == 400  # as the list: the counts of the filter as applied
    assert "all <b>1" in tabs_in(bad.get_data(as_text=True))
    paged = client.get("/messages/counts?before=1&start=7")  # paging is the list's alone
    assert paged.status_code == 200 and "failed <b>1" in tabs_in(paged.get_data(as_text=True))


def test_pages_say_which_rows_they_show_of_how_many(client, staff) -> None:
    for n in range(1, 56):
        add(n)
    login(client, staff)

    def place(path: str) -> str:
        page = client.get(path).get_data(as_text=True)
        return re.search(r'<p class="count">([^<]+)</p>', page).group(1)

    first = client.get("/messages").get_data(as_text=True)
    assert place("/messages") == f"1{DASH}50 of 55 messages"
    older = unescape(re.search(r'<a rel="next" href="([^"]+)"', first).group(1))
    assert "start=51" in older and place(older) == f"51{DASH}55 of 55 messages"
    second = client.get(older).get_data(as_text=True)
    newer = unescape(re.search(r'<a rel="prev" href="([^"]+)"', second).group(1))
    assert place(newer) == f"1{DASH}50 of 55 messages"
    # A page reached without its place (a bookmark, a shared link) counts it.
    sixth = Message.get(Message.reference == "ref0050").id  # the 6th newest
    assert place(f"/messages?before={sixth}") == f"7{DASH}55 of 55 messages"


def test_a_page_reached_without_its_place_counts_rows_created_in_the_same_instant(
        client, staff) -> None:
    # Three bursts created in one microsecond each: the place counts the later bursts and,
    # within the first row's own burst, the rows with a higher id (the list's tie-break).
    for n in range(1, 61):
        add(n, at=T0 + dt.timedelta(minutes=n // 20))
    login(client, staff)
    ids = [m.id for m in Message.select(Message.id).order_by(Message.created_at.desc(),
                                                               Message.id.desc())]
    for shown in (5, 20, 33, 59):  # its place: 1 + how many rows come before it in the list
        page = client.get(f"/messages?before={ids[shown - 1]}").get_data(as_text=True)
        assert f'<p class="count">{shown + 1}{DASH}' in page, shown
    # Newer than an anchor: the page holds the 50 matches just above it, the newest first.
    for above in (52, 55, 59):
        page = client.get(f"/messages?after={ids[above]}").get_data(as_text=True)
        assert f'<p class="count">{above - 49}{DASH}{above} of 60' in page, above


def test_past_the_cap_the_place_and_the_total_say_so(app, client, staff) -> None:
    Message.insert_many([
        {"reference": f"bulk{n:05d}", "provider": "fake", "recipient": "+15551230000",
         "text": "hi", "status": "delivered", "status_rank": 3, "status_order": "",
         "created_at": T0 + dt.timedelta(seconds=n), "updated_at": T0}
        for n in range(reporting.COUNT_CAP + 60)]).execute()
    login(client, staff)
    page = client.get("/messages").get_data(as_text=True)
    assert f"1{DASH}50 of 1,000+ messages (counting stops at 1,000)" in page
    assert "delivered <b>1,000+</b>" in client.get("/messages/counts").get_data(as_text=True)
    ids = [m.id for m in Message.select(Message.id).order_by(Message.created_at.desc())]
    deep = client.get(f"/messages?before={ids[999]}").get_data(as_text=True)
    assert f"1,001{DASH}1,050 of 1,000+ messages" in deep  # the 1,000 newer ones, counted
    deeper = client.get(f"/messages?before={ids[1005]}").get_data(as_text=True)
    assert "50 older than the newest 1,000 of 1,000+ messages" in deeper
    # A search past the cap counts its statuses among its newest matches, and says so.
    searched = client.get("/messages/counts?q=1230000").get_data(as_text=True)
    assert "delivered <b>200+</b>" in searched and "per status: among the newest 200" in searched
    searched = client.get("/messages?q=1230000").get_data(as_text=True)
    assert f"1{DASH}50 of 1,000+ messages matching" in searched


def test_a_row_shows_the_first_words_and_when_its_status_changed(app, client, staff) -> None:
    m = add(1, status="delivered")
    Message.update(text="Your code is 4821. Call +7 701 555 01 19 if it was not you, we are"
                        " here around the clock", status_at=m.created_at + dt.timedelta(seconds=42)
                   ).where(Message.id == m.id).execute()
    login(client, staff)
    html = unescape(client.get("/messages").get_data(as_text=True))
    assert "Your code is 4821. Call +7 701 555 01 19 if it…" in html
    assert re.search(r'title="the provider.s time">→ 12:01:42</small>', html), html


def test_list_cells_from_senders_and_providers_are_escaped(app, client, staff) -> None:
    """The list's rows are built outside the template (tracker.web.dashboard.shown_rows), so
    autoescaping does not hold them: a text, a provider's id and an error code written as
    markup come out as text."""
    m = add(1, status="failed")
    Message.update(text='<script>alert(1)</script> & "quotes"',
                   provider_message_id='"><img src=x onerror=alert(2)>',
                   error_code="<b>E1</b>").where(Message.id == m.id).execute()
    odd = add(2, status="failed", provider="<i>p</i>")  # not a word of ours: escaped too
    Message.update(status="<u>odd</u>").where(Message.id == odd.id).execute()
    login(client, staff)
    html = client.get("/messages").get_data(as_text=True)
    newest = re.search(r'<tr class="m">.*?</tr>', html, re.S).group(0)
    assert "<i>" not in newest and "<u>" not in newest
    assert "&lt;u&gt;odd&lt;/u&gt;" in newest and "&lt;i&gt;p&lt;/i&gt;" in newest
    row = re.findall(r'<tr class="m">.*?</tr>', html, re.S)[1]
    assert "<script" not in row and "<img" not in row and "<b>" not in row
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;quotes&#34;" in row
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in row
    assert "&lt;b&gt;E1&lt;/b&gt;" in row
    assert unescape(row).count(f'href="/messages/{m.id}"') == 2


def test_a_viewer_sees_numbers_in_the_text_masked(database_url) -> None:
    from conftest import make_config, running

    with running(make_config(database_url, mask_phone_numbers=True)) as flask_app:
        accounts.create_user("ana", PASSWORD, "viewer")
        add(1, to="+77015550119")
        Message.update(text="Call +7 701 555 01 19 now").execute()
        client = flask_app.test_client()
        login(client, "ana")
        html = client.get("/messages").get_data(as_text=True)
        assert "+7701•••••19" in html and "555 01" not in html
        page = client.get(f"/messages/{Message.get().id}").get_data(as_text=True)
        assert "Call" in page and "555 01" not in page
        # The viewer still finds it by the last digits of the number.
        found = client.get("/messages", query_string={"q": "0119"}).get_data(as_text=True)
        assert found.count('<tr class="m">') == 1


def test_an_unknown_provider_is_a_filter_problem(client, staff) -> None:
    login(client, staff)
    page = client.get("/messages?provider=nobody")
    assert page.status_code == 400
    assert "provider: 'nobody' is not a provider" in unescape(page.get_data(as_text=True))
    assert client.get("/messages?provider=mobizon").status_code == 200  # known, not configured


def test_a_big_search_narrowed_by_provider_counts_in_one_pass(app) -> None:
    """A search with a provider filter reads each match's row anyway: its statuses are grouped
    in the same pass, exact up to the cap, floors past it."""
    for n in range(1, 8):
        add(n, status="failed" if n <= 3 else "delivered", to="+77011234567",
            provider="mobizon" if n % 2 else "skycore")
    flt = reporting.MessageFilter(q="0 1234567", provider="mobizon")  # 1, 3, 5, 7
    counts = reporting.status_counts(reporting.base_where(flt), cap=5)
    assert counts.total == reporting.MatchCount(4, False, 5) and counts.sample is None
    assert (counts.of("failed").n, counts.of("delivered").n) == (2, 2)
    floors = reporting.status_counts(reporting.base_where(flt), cap=3)
    assert floors.total == reporting.MatchCount(3, True, 3) and floors.sample == 4
    assert floors.of("delivered").figure == "2+" and floors.of("failed").figure == "2+"
