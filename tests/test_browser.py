"""The dashboard in a real headless Chromium: log in, search a number typed with spaces, read
a message's timeline. Needs Debian's chromium and chromium-driver (.ci/run installs them)."""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from tracker import accounts, correlation, sending
from tracker.models import Message
from tracker.providers.base import SendResult
from tracker.status import Status

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMEDRIVER = shutil.which("chromedriver")
# Skipped on a developer's machine without it; under CI (which installs it) a missing driver
# fails these tests instead of hiding them.
pytestmark = pytest.mark.skipif(
    CHROMEDRIVER is None and os.environ.get("CI") != "true",
    reason="chromium-driver not installed (apt-get install chromium chromium-driver)")


@pytest.fixture
def live_url(app) -> Iterator[str]:
    """The app served over real HTTP on loopback."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def browser() -> Iterator[object]:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="tracker-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def log_in(browser, username: str) -> None:
    """Fill in the login form the browser is on; it lands on the messages list."""
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys("correct horse battery")
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    WebDriverWait(browser, 10).until(expected_conditions.url_matches(r"/messages$"))


def test_support_finds_a_message_and_reads_why(app, live_url, browser) -> None:
    accounts.create_user("ana", "correct horse battery", "viewer")
    message = sending.enqueue(sending.NewMessage(to="+77011234567", text="Your code is 1234",
                                                 provider="skycore"), source="test")
    sending.record_accepted(Message.get_by_id(message.id), SendResult("SMS_42"))
    client = app.test_client()
    for code, text in (("N202", "Message Sent/Delivered"), ("N201", "Message Sent")):
        client.post("/callbacks/skycore/sky-secret-token", content_type="text/xml",
                    data=f"<POSTBACK><ORIGIN>SMS_MT</ORIGIN><CODE>{code}</CODE><STATUS>{text}"
                         f"</STATUS><TRACKINGID>SMS_42</TRACKINGID></POSTBACK>".encode())

    browser.get(live_url + "/messages")
    assert "/auth/login" in browser.current_url
    log_in(browser, "ana")

    search = browser.find_element(By.NAME, "q")
    search.send_keys("+7 701 123 45 67")  # as the customer dictated it
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    WebDriverWait(browser, 10).until(expected_conditions.url_contains("q="))
    rows = browser.find_elements(By.CSS_SELECTOR, "table.list tbody tr")
    assert len(rows) == 1 and message.reference in rows[0].text and "delivered" in rows[0].text

    browser.find_element(By.LINK_TEXT, message.reference).click()
    WebDriverWait(browser, 10).until(expected_conditions.url_contains(f"/messages/{message.id}"))
    timeline = browser.find_element(By.CSS_SELECTOR, "ol.timeline").text
    assert "delivered" in timeline
    assert "Why not applied: message is already final (delivered)" in timeline
    browser.find_element(By.CSS_SELECTOR, "details summary").click()
    assert "Message Sent/Delivered" in browser.find_element(By.CSS_SELECTOR, "details pre").text


def test_admin_filters_and_replays_a_callback_after_a_dry_run(app, live_url, browser) -> None:
    from selenium.webdriver.support.ui import Select
    from test_replay import BODY, stored_as_invalid

    accounts.create_user("boss", "correct horse battery", "admin")
    message = sending.enqueue(sending.NewMessage(to="+15551234888", text="hi",
                                                 provider="skycore"), source="test")
    sending.record_accepted(Message.get_by_id(message.id), SendResult("R1"))
    bad = stored_as_invalid(BODY)  # a postback an older parser could not read

    browser.get(live_url + "/auth/login")
    log_in(browser, "boss")

    # A filter on the messages list: accepted ones only.
    Select(browser.find_element(By.NAME, "status")).select_by_value("accepted")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    WebDriverWait(browser, 10).until(expected_conditions.url_contains("status=accepted"))
    assert message.reference in browser.find_element(By.CSS_SELECTOR, "table.list").text

    browser.find_element(By.LINK_TEXT, "Callbacks").click()
    Select(browser.find_element(By.NAME, "verdict")).select_by_value("invalid")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    WebDriverWait(browser, 10).until(expected_conditions.url_contains("verdict=invalid"))
    browser.find_element(By.CSS_SELECTOR, f'input[name="id"][value="{bad.id}"]').click()
    browser.find_element(By.CSS_SELECTOR, 'button[value="dry-run"]').click()
    WebDriverWait(browser, 10).until(expected_conditions.url_contains("/callback-log/replay"))
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "Replay dry run: nothing written yet" in page
    assert f"{message.reference}: accepted → delivered" in page
    assert Message.get_by_id(message.id).status == "accepted"

    browser.find_element(By.CSS_SELECTOR, 'button[value="apply"]').click()
    WebDriverWait(browser, 10).until(
        expected_conditions.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Replayed"))
    assert Message.get_by_id(message.id).status == "delivered"


def test_viewer_downloads_a_csv_export_of_the_filtered_list(app, live_url, browser,
                                                            tmp_path) -> None:
    """A support user filters the messages list by status, clicks "CSV" under "Export:" and
    Chromium saves a file holding exactly the messages the filter shows, and none of the others
    (the app redirects a small export straight to the file; a slow one to its status page, whose
    Download link is then clicked)."""
    from selenium.webdriver.support.ui import Select
    from test_exports import seed

    app.config["EXPORTS_DIR"] = str(tmp_path / "exports")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Browser.setDownloadBehavior",
                            {"behavior": "allow", "downloadPath": str(downloads)})
    accounts.create_user("ana", "correct horse battery", "viewer")
    seed(12)  # every 3rd delivered, the rest failed; skycore and fake alternate
    delivered = {m.reference for m in Message.select().where(Message.status == "delivered")}
    others = {m.reference for m in Message.select().where(Message.status != "delivered")}
    assert len(delivered) == 4 and len(others) == 8

    browser.get(live_url + "/auth/login")
    log_in(browser, "ana")

    Select(browser.find_element(By.NAME, "status")).select_by_value("delivered")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    WebDriverWait(browser, 10).until(expected_conditions.url_contains("status=delivered"))
    shown = {row.find_element(By.CSS_SELECTOR, "td:nth-child(6)").text
             for row in browser.find_elements(By.CSS_SELECTOR, "table.list tbody tr.m")}
    assert shown == delivered

    browser.find_element(By.CSS_SELECTOR, "p.exports").find_element(By.LINK_TEXT, "CSV").click()

    def finished_file(driver) -> list:
        files = [p for p in downloads.iterdir() if not p.name.endswith(".crdownload")]
        if not files and "/exports/" in driver.current_url:  # the status page of a slow job
            done = driver.find_elements(By.CSS_SELECTOR, "p.export-done a")
            if done:
                done[0].click()
        return files

    browser.implicitly_wait(0)  # polled: a missing element must not block for 5 s
    files = WebDriverWait(browser, 40, poll_frequency=0.2).until(
        finished_file, message=f"no finished download in {downloads}")
    assert len(files) == 1 and files[0].name.startswith("messages-") and files[0].suffix == ".csv"
    rows = list(csv.DictReader(io.StringIO(files[0].read_text(encoding="utf-8"), newline="")))
    assert {r["reference"] for r in rows} == shown and not {r["reference"] for r in rows} & others
    assert {int(r["id"]) for r in rows} == {
        m.id for m in Message.select().where(Message.reference.in_(shown))}
    assert {r["status"] for r in rows} == {"delivered"} and len(rows) == len(shown)


# -- the dashboard as support uses it all day: refresh, phone, errors, navigation ------------

DESKTOP, PHONE = (1280, 900), (390, 844)
SIZES = pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone-390"])


def set_viewport(browser, size: tuple[int, int]) -> None:
    """Lay pages out at this CSS size, as a phone does (390 px: an iPhone 12-15)."""
    width, height = size
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1 if size == DESKTOP else 3,
        "mobile": size != DESKTOP})


def assert_fits(browser, size: tuple[int, int]) -> None:
    """No horizontal scrolling: nothing on the page is wider than the window. (A phone widens
    its layout viewport, window.innerWidth, to fit content that is too wide, zooming out: so
    the window must also still be the screen's width.)"""
    page, window = browser.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]")
    assert page <= window == size[0], f"{browser.current_url}: {page} px wide, window {window}"


def queued(n: int, provider: str = "skycore") -> list[Message]:
    return [sending.enqueue(sending.NewMessage(to=f"+1555123{i % 10000:04d}", text="hi",
                                               provider=provider), source="test")
            for i in range(n)]


def text_of(browser, selector: str) -> str:
    """The element's shown text, read in one script: auto-refresh replaces the page's content
    under the test, and an element found in one call and read in the next may be gone by then
    (StaleElementReferenceException, seen in a full run)."""
    text = browser.execute_script(
        "var el = document.querySelector(arguments[0]); return el ? el.innerText : null;",
        selector)
    assert text is not None, f"no {selector} on the page"
    return text


def table_text(browser) -> str:
    return text_of(browser, "table.list tbody")


def refresh_state(browser) -> str:
    return text_of(browser, ".refresh-state")


@SIZES
def test_auto_refresh_keeps_the_filter_and_the_scroll_and_is_remembered(
        app, live_url, browser, size) -> None:
    """Off until switched on; then the list follows new messages every 10 s without losing
    the filter or the scroll position, and the choice stays for this page (not the others)."""
    from selenium.webdriver.support.ui import Select

    set_viewport(browser, size)
    accounts.create_user("ana", "correct horse battery", "viewer")
    queued(60)
    browser.get(live_url + "/auth/login")
    log_in(browser, "ana")
    browser.get(live_url + "/messages?provider=skycore")
    control = Select(browser.find_element(By.CSS_SELECTOR, ".refresh select"))
    assert control.first_selected_option.text == "off"
    assert_fits(browser, size)

    control.select_by_value("10")
    browser.execute_script("window.scrollTo(0, 600)")  # reading further down the list
    scrolled = browser.execute_script("return window.scrollY")
    assert scrolled > 0
    fresh = queued(1)[0]
    other = queued(1, provider="fake")[0]
    WebDriverWait(browser, 20, poll_frequency=0.5).until(
        lambda b: fresh.reference in table_text(b), message="the list never refreshed")
    assert other.reference not in table_text(browser)  # the filter held
    assert browser.current_url.endswith("/messages?provider=skycore")
    assert browser.execute_script("return window.scrollY") == scrolled
    assert refresh_state(browser).startswith("updated ")
    # Its counts per status (static/counts.js) came again with it: 61 queued at Skycore now.
    WebDriverWait(browser, 10).until(
        lambda b: text_of(b, "nav.status-tabs").split() == ["all", "61", "queued", "61"],
        message="the counts per status were not refreshed")
    assert_fits(browser, size)

    browser.refresh()  # remembered for this page ...
    assert Select(browser.find_element(
        By.CSS_SELECTOR, ".refresh select")).first_selected_option.text == "every 10 s"
    browser.find_element(By.LINK_TEXT, "Overview").click()  # ... and for this page only
    assert Select(browser.find_element(
        By.CSS_SELECTOR, ".refresh select")).first_selected_option.text == "off"


def test_auto_refresh_waits_while_typing_or_selecting(app, live_url, browser) -> None:
    """What the person is doing is never thrown away: a half-typed search, or text selected to
    copy, holds the refresh; it goes ahead once they are done."""
    from selenium.webdriver.support.ui import Select

    accounts.create_user("ana", "correct horse battery", "viewer")
    queued(3)
    browser.get(live_url + "/auth/login")
    log_in(browser, "ana")
    Select(browser.find_element(By.CSS_SELECTOR, ".refresh select")).select_by_value("10")
    search = browser.find_element(By.NAME, "q")
    search.send_keys("+1 555")
    waiting = queued(1)[0]
    WebDriverWait(browser, 20, poll_frequency=0.5).until(
        lambda b: refresh_state(b) == "paused while you type")
    assert waiting.reference not in table_text(browser)
    assert browser.find_element(By.NAME, "q").get_attribute("value") == "+1 555"

    search.clear()  # back as it was, and away from the form: the refresh goes ahead
    browser.find_element(By.TAG_NAME, "h1" if browser.find_elements(By.TAG_NAME, "h1")
                         else "main").click()
    browser.execute_script("document.activeElement.blur()")
    WebDriverWait(browser, 10, poll_frequency=0.3).until(
        lambda b: waiting.reference in table_text(b), message="never refreshed after typing")

    browser.execute_script(
        "window.getSelection().selectAllChildren(document.querySelector('table.list'))")
    later = queued(1)[0]
    WebDriverWait(browser, 20, poll_frequency=0.5).until(
        lambda b: refresh_state(b) == "paused while text is selected")
    assert later.reference not in table_text(browser)
    browser.execute_script("window.getSelection().removeAllRanges()")
    WebDriverWait(browser, 10, poll_frequency=0.3).until(
        lambda b: later.reference in table_text(b))


def seed_a_day_of_support(app) -> Message:
    """A few messages of every kind, one with a long raw receipt, a long client ref and an
    error with a long explanation: what makes a page too wide if anything does."""
    client = app.test_client()
    for i in range(12):
        m = sending.enqueue(sending.NewMessage(
            to=f"+7701123{i:04d}", text="Your code is 1234 " * 6, provider="skycore",
            client_ref=f"order-{i:04d}-" + "x" * 40), source="test")
        sending.record_accepted(Message.get_by_id(m.id), SendResult(f"SMS_{i}_" + "9" * 30))
        code, text = (("N202", "Message Sent/Delivered") if i % 3 else
                      ("E628", "Invalid mobile number " + "y" * 90))
        client.post("/callbacks/skycore/sky-secret-token", content_type="text/xml",
                    data=f"<POSTBACK><ORIGIN>SMS_MT</ORIGIN><CODE>{code}</CODE><STATUS>{text}"
                         f"</STATUS><TRACKINGID>SMS_{i}_{'9' * 30}</TRACKINGID>"
                         f"<NOTE>{'z' * 200}</NOTE></POSTBACK>".encode())
        if i % 4 == 1:  # a provider's long error code beside its long id
            correlation.set_status(m.id, Status.UNDELIVERED, error_code="UNDELIVERABLE_ROUTE")
    return m


PAGES = [("Overview", "/overview"), ("Messages", "/messages"),
         ("Callbacks", "/callback-log"), ("Reports", "/reports")]


@SIZES
def test_every_page_fits_the_screen_and_the_navigation_says_where_you_are(
        app, live_url, browser, size) -> None:
    """At 390 px (a phone) as on a desktop: the list, a message with its raw callback open,
    the overview and the other pages need no sideways scrolling, and the navigation marks the
    page you are on (aria-current), the message page counting as Messages."""
    set_viewport(browser, size)
    accounts.create_user("boss", "correct horse battery", "admin")
    last = seed_a_day_of_support(app)
    browser.get(live_url + "/auth/login")
    assert_fits(browser, size)
    log_in(browser, "boss")

    for label, path in PAGES:
        browser.get(live_url + path)
        current = browser.find_elements(By.CSS_SELECTOR, 'header nav a[aria-current="page"]')
        assert [a.text for a in current] == [label], path
        assert_fits(browser, size)

    browser.get(live_url + "/messages")
    browser.find_element(By.LINK_TEXT, last.reference).click()
    WebDriverWait(browser, 10).until(expected_conditions.url_contains(f"/messages/{last.id}"))
    for summary in browser.find_elements(By.CSS_SELECTOR, "details summary"):
        summary.click()
    assert "z" * 50 in browser.find_element(By.CSS_SELECTOR, "details pre").text
    assert [a.text for a in browser.find_elements(
        By.CSS_SELECTOR, 'header nav a[aria-current="page"]')] == ["Messages"]
    assert_fits(browser, size)

    browser.get(live_url + "/overview?window=7d")
    assert browser.find_element(By.CSS_SELECTOR, "svg.chart").size["width"] <= size[0]
    assert_fits(browser, size)


def page_heading(browser) -> str:
    return browser.find_element(By.CSS_SELECTOR, "main h1").text


def styled(browser) -> bool:
    """The dashboard's stylesheet is applied (the error box is white on the grey page)."""
    return browser.execute_script(
        "return getComputedStyle(document.querySelector('.error-page')).backgroundColor"
    ) == "rgb(255, 255, 255)"


@SIZES
def test_errors_are_pages_in_the_dashboards_style_and_the_api_stays_json(
        app, live_url, browser, size) -> None:
    """A wrong link, a page for admins only and our own failure each get a page saying what
    happened and where to go, at any screen size; the API keeps answering JSON errors and the
    callback endpoint its short plain answers (providers read those, not people)."""
    def boom() -> str:
        raise RuntimeError("a bug of ours")

    app.add_url_rule("/boom", "boom", boom)
    app.add_url_rule("/api/v1/boom", "api_boom", boom)
    set_viewport(browser, size)
    accounts.create_user("ana", "correct horse battery", "viewer")
    message = queued(1)[0]

    browser.get(live_url + "/no/such/page")
    assert page_heading(browser) == "Page not found" and styled(browser)
    assert browser.find_element(By.LINK_TEXT, "Messages")
    assert_fits(browser, size)

    browser.get(live_url + "/auth/login")
    log_in(browser, "ana")
    browser.get(live_url + "/messages/999999")
    assert page_heading(browser) == "Page not found" and styled(browser)
    assert [a.text for a in browser.find_elements(
        By.CSS_SELECTOR, 'header nav a[aria-current="page"]')] == ["Messages"]
    assert not browser.find_elements(By.CSS_SELECTOR, ".refresh select")  # nothing to follow

    # A viewer posting an admin action (an old tab, a shared link): 403, in words.
    browser.execute_script(
        "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];"
        "const t = document.querySelector('input[name=csrf_token]').cloneNode();"
        "f.appendChild(t); document.body.appendChild(f); f.submit();",
        f"/messages/{message.id}/cancel")
    WebDriverWait(browser, 10).until(lambda b: "/cancel" in b.current_url)
    assert page_heading(browser) == "Not allowed for your account" and styled(browser)
    assert "admin" in browser.find_element(By.TAG_NAME, "main").text
    assert_fits(browser, size)
    assert Message.get_by_id(message.id).status == "queued"

    browser.get(live_url + "/boom")
    assert page_heading(browser) == "Something went wrong on our side" and styled(browser)
    assert "a bug of ours" not in browser.page_source
    assert "UTC" in browser.find_element(By.TAG_NAME, "main").text  # a time to report
    assert_fits(browser, size)

    client = app.test_client()
    assert client.get("/no/such/page").status_code == 404
    assert client.get("/boom").status_code == 500
    for path, code, name in (("/api/v1/nothing", 404, "not_found"),
                             ("/api/v1/boom", 500, "internal_server_error")):
        answer = client.get(path)
        assert (answer.status_code, answer.json["error"]["code"]) == (code, name)
    callback = client.post("/callbacks/skycore/wrong-token", data=b"<x/>")
    assert (callback.status_code, callback.mimetype, callback.get_data()) == (
        404, "text/plain", b"not found\n")


def page_left(element) -> bool:
    """True once `element`'s page has been replaced by the next one.

    Selenium's `staleness_of` expects a StaleElementReferenceException, but Chromium sometimes
    answers a node from the old document with the generic "Node with given id does not belong
    to the document" instead (seen in CI); both mean the page was left."""
    try:
        element.is_enabled()
    except WebDriverException as error:  # StaleElementReferenceException is one too
        if "stale element" in str(error) or "does not belong to the document" in str(error):
            return True
        raise
    return False


@SIZES
def test_a_wrong_password_keeps_the_username_and_blocking_says_so(
        app, live_url, browser, size) -> None:
    set_viewport(browser, size)
    accounts.create_user("ana", "correct horse battery", "viewer")
    browser.get(live_url + "/auth/login")

    def attempt(password: str) -> None:
        field = browser.find_element(By.NAME, "password")
        field.send_keys(password)
        browser.find_element(By.CSS_SELECTOR, "form.login button").click()
        WebDriverWait(browser, 10).until(lambda _: page_left(field))

    browser.find_element(By.NAME, "username").send_keys("ana")
    attempt("correct horse batery")
    assert "Wrong username or password." in browser.find_element(By.TAG_NAME, "main").text
    assert browser.find_element(By.NAME, "username").get_attribute("value") == "ana"
    assert browser.switch_to.active_element.get_attribute("name") == "password"
    assert_fits(browser, size)
    for _ in range(4):
        attempt("still wrong")
    attempt("correct horse battery")  # blocked now: not even checked
    assert "Too many wrong passwords" in browser.find_element(By.TAG_NAME, "main").text
    assert browser.find_element(By.NAME, "username").get_attribute("value") == "ana"
    assert "/auth/login" in browser.current_url
    assert_fits(browser, size)
