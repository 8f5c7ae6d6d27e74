"""The dashboard in a real headless Chromium: log in, search a number typed with spaces, read
a message's timeline. Needs Debian's chromium and chromium-driver (.ci/run installs them)."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from tracker import accounts, sending
from tracker.models import Message
from tracker.providers.base import SendResult

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMEDRIVER is None, reason="chromium-driver not installed (apt-get install chromium-driver)")


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
    browser.find_element(By.NAME, "username").send_keys("ana")
    browser.find_element(By.NAME, "password").send_keys("correct horse battery")
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    WebDriverWait(browser, 10).until(expected_conditions.url_matches(r"/messages$"))

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
    browser.find_element(By.NAME, "username").send_keys("boss")
    browser.find_element(By.NAME, "password").send_keys("correct horse battery")
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    WebDriverWait(browser, 10).until(expected_conditions.url_matches(r"/messages$"))

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
