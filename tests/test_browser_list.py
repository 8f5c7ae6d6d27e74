"""The messages list in a real headless Chromium, at desktop size and on a 390 px phone: the
counts per status (each a link that adds its status), "51-55 of 55" paging, a row's first words
and status time, and a search by the last digits of a number. Needs Debian's chromium and
chromium-driver (.ci/run installs them). Fixtures from tests/test_browser.py."""

from __future__ import annotations

import datetime as dt

import pytest
import test_browser
from test_browser import DESKTOP, PHONE, SIZES, assert_fits, pytestmark, set_viewport  # noqa: F401

from tracker import accounts
from tracker.models import Message
from tracker.status import RANK, Status, order_key

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# The fixtures (a live server, a headless Chromium) of tests/test_browser.py, and its skip.
live_url, browser = test_browser.live_url, test_browser.browser
DASH = "\N{EN DASH}"
T0 = dt.datetime(2026, 3, 10, 12, 0, 0)


def log_in(browser, live_url: str) -> None:
    accounts.create_user("ana", "correct horse battery", "viewer")
    browser.get(live_url + "/auth/login")
    browser.find_element(By.NAME, "username").send_keys("ana")
    browser.find_element(By.NAME, "password").send_keys("correct horse battery")
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    WebDriverWait(browser, 10).until(expected_conditions.url_matches(r"/messages$"))


def seed(n: int) -> None:
    """n Skycore messages a minute apart, every 5th failed, and 3 at Mobizon; each with a
    long text and a status time 42 s after it was created."""
    rows = []
    for i in range(1, n + 4):
        status = "failed" if i % 5 == 0 else "delivered"
        created = T0 + dt.timedelta(minutes=i)
        rows.append({
            "reference": f"ref{i:04d}", "provider": "mobizon" if i > n else "skycore",
            "recipient": f"+7701555{i:04d}", "status": status,
            "text": f"Order {i} is on its way: track it in the app, reply STOP to stop these",
            "status_rank": RANK[Status(status)], "status_order": order_key(status, None),
            "created_at": created, "updated_at": created,
            "status_at": created + dt.timedelta(seconds=42)})
    Message.insert_many(rows).execute()


def place(browser) -> str:
    return browser.find_element(By.CSS_SELECTOR, "p.count").text


def loaded_tabs(browser):
    """The row of counts per status once static/counts.js has put it in (a list longer than a
    page leaves it to a second request)."""
    return WebDriverWait(browser, 10).until(lambda b: next(iter(b.find_elements(
        By.CSS_SELECTOR, "nav.status-tabs:not([aria-busy]):not([data-counts])")), None),
        message="the counts per status never came")


@SIZES
def test_status_links_narrow_the_list_and_keep_the_filters(app, live_url, browser, size) -> None:
    set_viewport(browser, size)
    seed(55)
    log_in(browser, live_url)
    browser.get(live_url + "/messages?provider=skycore")
    assert place(browser) == f"1{DASH}50 of 55 messages matching"  # before its counts
    tabs = loaded_tabs(browser)
    assert tabs.text.split() == ["all", "55", "delivered", "44", "failed", "11"]
    assert_fits(browser, size)

    tabs.find_element(By.PARTIAL_LINK_TEXT, "failed").click()
    WebDriverWait(browser, 10).until(expected_conditions.url_contains("status=failed"))
    assert "provider=skycore" in browser.current_url  # the other filters stay
    rows = browser.find_elements(By.CSS_SELECTOR, "table.list tbody tr.m")
    assert len(rows) == 11 and all("failed" in row.text for row in rows)
    assert place(browser) == f"1{DASH}11 of 11 messages matching"
    current = loaded_tabs(browser).find_element(By.CSS_SELECTOR, 'a[aria-current="page"]')
    assert current.text.split() == ["failed", "11"]
    assert_fits(browser, size)

    loaded_tabs(browser).find_element(By.PARTIAL_LINK_TEXT, "all").click()
    WebDriverWait(browser, 10).until(lambda b: "status=" not in b.current_url)
    assert place(browser) == f"1{DASH}50 of 55 messages matching"


@SIZES
def test_pages_say_where_they_are_and_rows_show_text_and_status_time(
        app, live_url, browser, size) -> None:
    set_viewport(browser, size)
    seed(55)
    log_in(browser, live_url)
    assert place(browser) == f"1{DASH}50 of 58 messages"
    first = browser.find_element(By.CSS_SELECTOR, "table.list tbody tr.m")
    assert "Order 58 is on its way: track it in the app…" in first.text  # whole words
    assert "→ 12:58:42" in first.text  # the status time beside the created time
    changed = first.find_element(By.CSS_SELECTOR, ".changed")
    assert changed.get_attribute("title") == "the provider's time"
    assert_fits(browser, size)

    browser.find_element(By.CSS_SELECTOR, 'a[rel="next"]').click()
    WebDriverWait(browser, 10).until(expected_conditions.url_contains("before="))
    assert place(browser) == f"51{DASH}58 of 58 messages"
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.list tbody tr.m")) == 8
    browser.find_element(By.CSS_SELECTOR, 'a[rel="prev"]').click()
    WebDriverWait(browser, 10).until(expected_conditions.url_contains("after="))
    assert place(browser) == f"1{DASH}50 of 58 messages"


@SIZES
def test_a_number_is_found_by_its_last_digits(app, live_url, browser, size) -> None:
    set_viewport(browser, size)
    seed(55)
    log_in(browser, live_url)
    search = browser.find_element(By.NAME, "q")
    search.send_keys("5 0042")  # "the number ends in 5 00 42", as a customer reads it out
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    WebDriverWait(browser, 10).until(expected_conditions.url_contains("q="))
    rows = browser.find_elements(By.CSS_SELECTOR, "table.list tbody tr.m")
    assert len(rows) == 1 and "ref0042" in rows[0].text
    assert place(browser) == f"1{DASH}1 of 1 message matching"
    assert_fits(browser, size)
