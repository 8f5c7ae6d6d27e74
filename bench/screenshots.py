"""README screenshots: the overview (last 7 days), the messages list, one message's timeline,
and the messages list on a phone.

    .venv/bin/python bench/screenshots.py          # docs/{overview,messages,message,phone}.png
    .venv/bin/python bench/screenshots.py --out-dir /tmp/shots
    .venv/bin/python bench/screenshots.py --smoke  # 40 messages, into a temp folder (removed)

Needs Debian's chromium and chromium-driver. The app runs on a temporary SQLite database, seeded
with ~400 messages over the last 7 days through the tracker's own code: sending.enqueue, the
dispatcher (sending.dispatch, each provider's send() replaced by a scripted answer: nothing goes
out), real provider callbacks posted to /callbacks/..., the expiry job and the rollups, with the
clock those modules read (their `utcnow`) set to each step's time. Numbers are the fake
+7 701 555 01xx. Then it logs in with headless Chromium and saves the pages at 1280 px wide,
and the messages list as a 390 px phone shows it (at twice the pixels, as a phone's screen).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tracker import (  # noqa: E402
    accounts,
    correlation,
    create_app,
    expiry,
    intake,
    migrations,
    overview,
    sending,
)
from tracker.db import db  # noqa: E402
from tracker.models import Message, utcnow  # noqa: E402
from tracker.providers.base import SendError, SendResult  # noqa: E402
from tracker.status import Status  # noqa: E402
from tracker.web import callbacks as web_callbacks  # noqa: E402

TOKEN = "demo-callback-token"  # noqa: S105
PROVIDERS = {
    "skycore": {"api_key": "demo", "shortcode": "60856", "callback_token": TOKEN},
    "mobizon": {"api_key": "demo", "callback_token": TOKEN},
    "mobivate": {"base_url": "https://mobivate.invalid", "api_key": "demo", "sender": "ACME",
                 "callback_token": TOKEN},
    "alphasms": {"api_key": "demo", "sender": "ACME", "callback_token": TOKEN},
}
WEIGHTS = {"skycore": 35, "mobizon": 30, "mobivate": 20, "alphasms": 15}
# Per outcome, each provider's (raw status, status code) as its callbacks carry them.
WORDS = {
    "skycore": {"sent": ("N201", "Message Sent"),
                "delivered": ("N202", "Message Sent/Delivered"),
                "undelivered": ("E202", "Message Failed/Failed"),
                "expired": ("E202", "Message Failed/Expired"),
                "failed": ("E201", "Message Failed")},
    "mobizon": {"sent": ("ACCEPTD", 0), "delivered": ("DELIVRD", 0),
                "undelivered": ("UNDELIV", 0), "expired": ("EXPIRED", 0),
                "failed": ("REJECTD", 0)},
    "mobivate": {"sent": ("ACCEPTED", 2), "delivered": ("DELIVERED", 1),
                 "undelivered": ("UNDELIVERABLE", 5), "expired": ("EXPIRED", 3),
                 "failed": ("FAILED_NOROUTE", 12)},
    "alphasms": {"sent": ("Sent", 0), "delivered": ("Delivered", 0),
                 "undelivered": ("Undeliverable", 0), "expired": ("Out of touch", 0),
                 "failed": ("No route", 0)},
}
TEXTS = ["Your code is {n}", "Order #{n} has shipped", "Your taxi arrives in 4 min",
         "Payment of {n} KZT received", "Reminder: appointment tomorrow at 10:30"]
_now: list[dt.datetime | None] = [None]


def clock() -> dt.datetime:
    return _now[0] or utcnow()


def callback(client: Any, provider: str, m: Message, outcome: str, at: dt.datetime,
             seq: int, pmid: str | None = None, delay: float = 1.0) -> None:
    """Post the provider's own receipt for `m` (its time `at`), received `delay` s later."""
    _now[0] = at + dt.timedelta(seconds=delay)
    raw, code = WORDS[provider][outcome]
    pmid = pmid or m.provider_message_id
    url = f"/callbacks/{provider}/{TOKEN}"
    if provider == "skycore":
        client.post(url, content_type="text/xml", data=(
            f"<POSTBACK><ORIGIN>SMS_MT</ORIGIN><CODE>{raw}</CODE><STATUS>{code}</STATUS>"
            f"<TO>{m.recipient[1:]}</TO><TRACKINGID>{pmid}</TRACKINGID>"
            f"<TIMESTAMP>{at:%Y-%m-%dT%H:%M:%S}+00:00</TIMESTAMP></POSTBACK>").encode())
    elif provider == "mobizon":
        client.post(url, json={
            "eventId": seq, "eventType": "sms-delivery-report", "webhookId": 1,
            "data": {"messageId": int(pmid), "status": raw, "to": m.recipient[1:],
                     "statusUpdateTs": f"{at:%Y-%m-%d %H:%M:%S}"}})
    elif provider == "mobivate":
        client.post(url, json={"deliveryMessageId": pmid, "clientReference": None, "status": raw,
                               "statusCode": code, "created": f"{at:%Y-%m-%dT%H:%M:%S}.000+00:00",
                               "parts": 1})
    else:
        client.get(url, query_string={"ref": m.reference, "status": raw,
                                      "status_time": f"{at:%Y-%m-%dT%H:%M:%S}+0000"})


def dispatch(providers: dict[str, Any], at: dt.datetime, answer: SendResult | SendError) -> None:
    """The dispatcher's run at `at`, the provider answering `answer` (nothing goes out)."""
    def send(_outbound: Any) -> SendResult:
        if isinstance(answer, SendError):
            raise answer
        return answer
    def send_batch(outbound: list[Any]) -> list[SendResult | SendError]:
        return [answer for _ in outbound]

    _now[0] = at
    for provider in providers.values():
        provider.send = send
        provider.send_batch = send_batch  # AlphaSMS's json.php sends in batches
    sending.dispatch(providers, batch_size=1, max_attempts=6, backoff_seconds=30)


def seed(app: Any, rng: random.Random, count: int = 400) -> int:
    """`count` messages over the last 7 days; returns the id of the one with the rich timeline."""
    client, providers, now = app.test_client(), app.extensions["providers"], utcnow()
    for module in (sending, correlation, intake, web_callbacks):
        module.utcnow = clock  # type: ignore[attr-defined]
    starts = sorted(now - dt.timedelta(seconds=rng.uniform(60, 7 * 86400)) for _ in range(count))
    for i, created in enumerate(starts):
        provider = rng.choices(list(WEIGHTS), list(WEIGHTS.values()))[0]
        _now[0] = created
        m = sending.enqueue(sending.NewMessage(
            to=f"+770155501{rng.randrange(100):02d}", provider=provider, sender="ACME",
            text=rng.choice(TEXTS).format(n=rng.randrange(1000, 9999)),
            client_ref=f"order-{5000 + i}"), source="api")
        sent = created + dt.timedelta(seconds=rng.uniform(0.3, 2))
        if provider == "skycore" and rng.random() < 0.03:  # refused at once: never submitted
            dispatch(providers, sent, SendError("invalid receiver number", permanent=True,
                                                status=Status.REJECTED, code="E110"))
            continue
        pmid = {"skycore": base64.b64encode(f"SMS_{80000 + i}".encode()).decode(),
                "mobizon": str(169275000 + i), "mobivate": f"{rng.getrandbits(128):032X}",
                "alphasms": str(7310000 + i)}[provider]
        dispatch(providers, sent, SendResult(pmid))
        m = Message.get_by_id(m.id)
        age = (now - created).total_seconds()
        roll = rng.random()
        outcome = ("delivered" if roll < 0.86 else "undelivered" if roll < 0.92 else
                   "expired" if roll < 0.95 else "failed" if roll < 0.97 else None)
        if age < 600 and rng.random() < 0.5:
            outcome = None  # still in flight
        elif outcome is None and age < 3 * 86400:
            outcome = "delivered"  # no receipt ever: only old ones, expired by the job below
        at = m.submitted_at + dt.timedelta(seconds=rng.lognormvariate(1.3, 0.9))
        if outcome and rng.random() < 0.4:  # an interim report first
            callback(client, provider, m, "sent", at, 2 * i)
            at += dt.timedelta(seconds=rng.lognormvariate(0.5, 0.8))
        if outcome and at < now:
            if outcome == "expired":
                at += dt.timedelta(hours=rng.uniform(2, 20))
            callback(client, provider, m, outcome, min(at, now), 2 * i + 1)
            if rng.random() < 0.03:  # the provider posted it twice
                callback(client, provider, m, outcome, min(at, now), 2 * i + 1)
    callback(client, "skycore", m, "delivered", now - dt.timedelta(minutes=40), 0,
             pmid="U01TXzk5OTk5")  # an orphan: a message sent by another system

    # The timeline of the README: routed, a failover, submitted, sent, delivered, and a late
    # receipt that does not apply.
    created = now - dt.timedelta(minutes=25)
    _now[0] = created
    m = sending.enqueue(sending.NewMessage(
        to="+77015550142", text="Your code is 4821. Do not share it.", provider="mobizon",
        sender="ACME", client_ref="login-2fa-7731", failover=("skycore",),
        rule="route +7701"), source="api")
    dispatch(providers, created + dt.timedelta(seconds=1), SendError(
        "HTTP 503 from api.mobizon.kz", permanent=False, provider_side=True, code="HTTP 503"))
    dispatch(providers, created + dt.timedelta(seconds=2), SendResult(
        "U01TXzgwNjc4", raw="<RESPONSE><STATUS>Success</STATUS><MESSAGEID>U01TXzgwNjc4"
                            "</MESSAGEID></RESPONSE>"))
    m = Message.get_by_id(m.id)
    sent = created + dt.timedelta(seconds=5)
    callback(client, "skycore", m, "delivered", created + dt.timedelta(seconds=9), 0)
    callback(client, "skycore", m, "sent", sent, 0, delay=70)  # arrives after the delivery
    _now[0] = None
    expiry.expire_overdue()  # no receipt within the validity: expired, inferred
    overview.roll_up()
    return m.id


DESKTOP = {"width": 1280, "min_height": 900, "deviceScaleFactor": 1, "mobile": False}
PHONE = {"width": 390, "min_height": 844, "deviceScaleFactor": 2, "mobile": True}


def screenshot(driver: Any, path: Path, screen: dict[str, Any] = DESKTOP,
               max_height: int = 2600) -> None:
    """The page as `screen` lays it out, as tall as its content (up to max_height)."""
    def emulate(height: int) -> None:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": screen["width"], "height": height,
            "deviceScaleFactor": screen["deviceScaleFactor"], "mobile": screen["mobile"]})

    # Parts that load after the page (the list's counts per status: static/counts.js) first.
    for _ in range(100):
        if not driver.execute_script("return document.querySelector('[aria-busy], [data-counts]')"):
            break
        time.sleep(0.05)
    emulate(screen["min_height"])  # laid out at this width first: its height depends on it
    height = min(driver.execute_script("return document.documentElement.scrollHeight"), max_height)
    height = max(height, screen["min_height"])
    emulate(height)
    data = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})["data"]
    path.write_bytes(base64.b64decode(data))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    print(f"wrote {path} ({screen['width']}x{height} CSS px)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path,
                        help="where the PNGs go (default: docs/; --smoke: a temp folder)")
    parser.add_argument("--smoke", action="store_true",
                        help="a check that it runs: 40 messages, and the PNGs go to a temp "
                             "folder (removed) unless --out-dir is given; docs/ is not touched")
    args = parser.parse_args()
    smoke_dir = None
    if args.out_dir is None and args.smoke:
        smoke_dir = args.out_dir = Path(tempfile.mkdtemp(prefix="tracker-screenshots-smoke-"))
    args.out_dir = args.out_dir or ROOT / "docs"
    try:
        shoot(args.out_dir, count=40 if args.smoke else 400)
    finally:
        if smoke_dir is not None:
            shutil.rmtree(smoke_dir, ignore_errors=True)


def shoot(out_dir: Path, count: int) -> None:
    """Seed `count` messages, log in, save the README's PNGs into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    work = Path(tempfile.mkdtemp(prefix="tracker-screenshots-"))
    app = create_app({"database_url": f"sqlite:///{work / 'demo.sqlite3'}",
                      "secret_key": "screenshots", "public_base_url": "https://sms.example.com",
                      "default_provider": "skycore", "sqlite_synchronous": "normal",
                      "providers": PROVIDERS})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    # Serving from the start: shutdown() in `finally` waits for serve_forever to end, and
    # would hang forever on an error raised before it began.
    threading.Thread(target=server.serve_forever, daemon=True).start()
    driver = None
    try:
        with app.app_context():
            db.connect(reuse_if_open=True)
            migrations.upgrade(db.obj, log=lambda _line: None)
            accounts.create_user("support", "demo password 1", "admin")
            rich = seed(app, random.Random(7), count)
            db.close()
        base = f"http://127.0.0.1:{server.server_port}"

        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                     "--disable-dev-shm-usage", "--window-size=1280,900",
                     f"--user-data-dir={work / 'profile'}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        driver.get(base + "/auth/login")
        driver.find_element(By.NAME, "username").send_keys("support")
        driver.find_element(By.NAME, "password").send_keys("demo password 1")
        driver.find_element(By.CSS_SELECTOR, "form.login button").click()
        WebDriverWait(driver, 10).until(expected_conditions.url_matches(r"/messages$"))
        for url, name, screen, height in (
                ("/overview?window=7d", "overview.png", DESKTOP, 2600),
                ("/messages", "messages.png", DESKTOP, 1400),
                (f"/messages/{rich}", "message.png", DESKTOP, 2600),
                ("/messages", "phone.png", PHONE, 1500)):
            driver.get(base + url)
            for summary in driver.find_elements(By.CSS_SELECTOR, "details summary")[:1]:
                summary.click()  # show one raw callback
            screenshot(driver, out_dir / name, screen, height)
    finally:
        if driver is not None:
            driver.quit()
        server.shutdown()
        server.server_close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
