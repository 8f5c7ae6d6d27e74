"""Webhooks in the dashboard, in a real headless Chromium: an admin reads a message's failed
delivery with its attempts and re-delivers it from the message page; the endpoints page shows
the success rate and last error and re-delivers an endpoint's failed deliveries since a time;
a disabled endpoint is on the overview. Both databases."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from conftest import make_config, running
from flask import Flask
from test_browser import browser, live_url, pytestmark  # noqa: F401 - the fixtures, the skip
from test_webhooks import change, deliver, queue
from webhook_receiver import Receiver

from tracker import accounts, outbox, webhooks
from tracker.models import ApiKey, WebhookDelivery, utcnow
from tracker.status import Status

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    config = make_config(database_url, webhooks_allow_private=True,
                         webhook_backoff_seconds=3600.0, webhook_backoff_max_seconds=3600.0)
    with running(config) as flask_app:
        yield flask_app


def test_admin_redelivers_a_failed_webhook_from_the_message_page(app, live_url, browser) -> None:  # noqa: F811
    accounts.create_user("ada", "correct horse battery", "admin")
    with Receiver() as rx:
        rx.answers = [500]
        message = queue(callback=rx.url("/status"))
        change(message, Status.DELIVERED)
        deliver(app)  # 500: the retry is an hour away
        rx.wait_for(1)
        browser.get(f"{live_url}/messages/{message.id}")
        log_in_anywhere(browser)
        browser.get(f"{live_url}/messages/{message.id}")
        table = browser.find_element(By.CSS_SELECTOR, "table.webhook-deliveries").text
        assert "message.delivered" in table and "HTTP 500" in table and "pending" in table
        browser.find_element(By.CSS_SELECTOR, "table.webhook-deliveries button").click()
        WebDriverWait(browser, 10).until(expected_conditions.url_contains("#webhooks"))
        assert "due again now" in browser.find_element(By.CSS_SELECTOR, ".flash").text
        deliver(app)
        got = rx.wait_for(2)
        assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
        browser.refresh()
        state = browser.find_element(By.CSS_SELECTOR, "td.delivery-state").text
        assert state == "delivered"
        attempts = browser.find_elements(By.CSS_SELECTOR, "ol.attempts li")
        assert [a.text.split(" — ")[1].split(",")[0] for a in attempts] == ["HTTP 500",
                                                                             "HTTP 200"]


def test_endpoints_page_redelivers_failed_since_and_overview_tells_disabled(
        app, live_url, browser) -> None:  # noqa: F811
    accounts.create_user("ada", "correct horse battery", "admin")
    accounts.create_api_key("shop")
    key = ApiKey.get()
    with Receiver() as rx:
        rx.default = 500
        endpoint = webhooks.add_endpoint(key, rx.url("/shop"))
        for _ in range(3):
            change(queue(key_id=key.id), Status.DELIVERED)
        deliver(app)
        WebhookDelivery.update(state="failed").execute()  # given up (the window ran out)
        browser.get(f"{live_url}/webhooks")
        log_in_anywhere(browser)
        browser.get(f"{live_url}/webhooks")
        row = browser.find_element(By.ID, f"endpoint-{endpoint.id}").text
        assert "shop" in row and "HTTP 500" in row and "0 %" in row
        rx.default = 200
        browser.find_element(By.CSS_SELECTOR, "tr.actions form button").click()
        WebDriverWait(browser, 10).until(expected_conditions.presence_of_element_located(
            (By.CSS_SELECTOR, ".flash")))
        assert "3 failed deliveries" in browser.find_element(By.CSS_SELECTOR, ".flash").text
        deliver(app)
        assert len(rx.wait_for(6)) == 6
        browser.refresh()
        assert "100 %" in browser.find_element(By.ID, f"endpoint-{endpoint.id}").text
        outbox.disable_failing(utcnow())  # not failing now: stays enabled
        rx.default = 500
        change(queue(key_id=key.id), Status.DELIVERED)
        deliver(app)
        assert outbox.disable_failing(utcnow() + dt.timedelta(days=4)) == [endpoint.id]
        browser.get(f"{live_url}/overview")
        notice = browser.find_element(By.CSS_SELECTOR, ".flash.notice").text
        assert f"Webhook endpoint {endpoint.id} of key shop" in notice and "disabled" in notice


def log_in_anywhere(browser) -> None:  # noqa: F811 - the fixture's name
    """The login form the browser was sent to (any page): log in as ada."""
    browser.find_element(By.NAME, "username").send_keys("ada")
    browser.find_element(By.NAME, "password").send_keys("correct horse battery")
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    WebDriverWait(browser, 10).until(
        lambda b: "/auth/login" not in b.current_url)
