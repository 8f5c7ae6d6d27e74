"""Status webhooks through the real processes: `tracker worker` killed with SIGKILL while its
deliveries are under way loses none of them (the next worker delivers them again, same
webhook-id); `tracker serve` takes status_callback through the API and the worker pushes every
change; the CLI adds endpoints, prints and rotates secrets, and re-delivers. Both databases."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import make_config, running
from servers import db_rows, tracker_command, tracker_serve, wait_until, write_config
from standardwebhooks.webhooks import Webhook
from webhook_receiver import Receiver

from tracker import accounts, correlation, sending
from tracker.db import write_tx
from tracker.models import ApiKey
from tracker.status import Status

FAST = {"webhooks_allow_private": True, "webhook_backoff_seconds": 0.05,
        "webhook_backoff_max_seconds": 0.2, "webhook_timeout_seconds": 30.0}


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


def settings(database_url: str) -> dict[str, Any]:
    return {"database_url": database_url, "secret_key": "test-secret-key",
            "providers": {"fake": {}}, **FAST}


def run_cli(config: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env["TRACKER_CONFIG"] = str(config)
    done = subprocess.run([*tracker_command(), *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, f"tracker {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def start_worker(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env["TRACKER_CONFIG"] = str(config)
    with log.open("ab") as out:
        return subprocess.Popen([*tracker_command(), "worker"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def test_sigkill_of_the_worker_mid_delivery_loses_nothing(database_url: str, tmp_path: Path,
                                                          rx: Receiver) -> None:
    with running(make_config(database_url, **FAST)):
        accounts.create_api_key("shop")
        key_id = ApiKey.get().id
        for _ in range(12):
            message = sending.enqueue(sending.NewMessage(
                to="+15551234567", text="hi", provider="fake", status_callback=rx.url(),
                api_key_id=key_id, send_at=None), source="test")
            with write_tx():
                correlation.set_status(message.id, Status.DELIVERED)
    config = write_config(tmp_path / "tracker.toml", settings(database_url))
    rx.hold.clear()  # every request waits: the deliveries are under way when the kill comes
    worker = start_worker(config, tmp_path / "worker.log")
    try:
        wait_until(lambda: rx.in_flight >= 5, timeout=60,
                   message=lambda: (tmp_path / "worker.log").read_text())
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        rx.hold.set()  # the answers go to a dead process: nothing recorded them
        undelivered = db_rows(database_url, "SELECT COUNT(*) FROM webhook_delivery"
                              " WHERE state <> 'delivered'")[0][0]
        assert undelivered == 12
        worker = start_worker(config, tmp_path / "worker.log")
        wait_until(lambda: db_rows(database_url, "SELECT COUNT(*) FROM webhook_delivery"
                                   " WHERE state = 'delivered'")[0][0] == 12, timeout=60,
                   message=lambda: (tmp_path / "worker.log").read_text())
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    ids = [r.headers["webhook-id"] for r in rx.received]
    assert len(set(ids)) == 12  # every event, at least once
    assert len(ids) > 12  # those under way at the kill came again, under the same ids
    secret = db_rows(database_url, "SELECT webhook_secret FROM api_key")[0][0]
    for got in rx.received:
        Webhook(secret).verify(got.body, got.headers)


def test_serve_pushes_every_change_of_an_api_message(database_url: str, tmp_path: Path,
                                                     rx: Receiver) -> None:
    with tracker_serve(tmp_path, database_url=database_url, **FAST) as server:
        key = server.create_api_key("shop")
        endpoint_out = run_cli(server.config_path, "webhooks", "add", rx.url("/endpoint"),
                               "--key", "shop", "--events", "delivered")
        secret = endpoint_out.strip().splitlines()[-1]
        assert secret.startswith("whsec_")
        answer = httpx.post(server.base_url + "/api/v1/messages",
                            headers={"Authorization": f"Bearer {key}"},
                            json={"to": "+15551234567", "text": "hi",
                                  "status_callback": rx.url("/message")})
        assert answer.status_code == 202, answer.text
        rx.wait_for(3, timeout=30)  # accepted and delivered to the message's URL, delivered
        got = {(r.path, r.event["type"]) for r in rx.received}
        assert got == {("/message", "message.accepted"), ("/message", "message.delivered"),
                       ("/endpoint", "message.delivered")}
        for r in rx.received:
            Webhook(secret).verify(r.body, r.headers)
        shown = run_cli(server.config_path, "keys", "webhook-secret", "shop")
        assert shown.strip().splitlines()[-1] == secret
        listed = run_cli(server.config_path, "webhooks", "list")
        assert rx.url("/endpoint") in listed and "1 delivered" in listed
        delivery = db_rows(database_url, "SELECT id FROM webhook_delivery WHERE endpoint_id"
                           " IS NOT NULL")[0][0]
        out = run_cli(server.config_path, "webhooks", "redeliver", "--delivery", str(delivery))
        assert out.startswith("1 delivery")
        rx.wait_for(4, timeout=30)
        again = [r.headers["webhook-id"] for r in rx.received if r.path == "/endpoint"]
        assert len(again) == 2 and again[0] == again[1]
        rotated = run_cli(server.config_path, "keys", "webhook-secret", "shop", "--rotate")
        assert rotated.strip().splitlines()[-1] not in (secret, "")
        run_cli(server.config_path, "send", "--to", "+15551234567", "--text", "hi",
                "--status-callback", rx.url("/cli"), "--key", "shop")
        wait_until(lambda: any(r.path == "/cli" and r.event["type"] == "message.delivered"
                               for r in rx.received), timeout=30, message="no /cli webhook")
        got = next(r for r in rx.received if r.path == "/cli")
        Webhook(secret).verify(got.body, got.headers)  # the old secret signs during the grace
