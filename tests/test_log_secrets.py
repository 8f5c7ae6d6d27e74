"""No secret in any log: `tracker serve` at DEBUG, sending through Mobizon (its apiKey travels in
the query string) and Skycore, taking callbacks (good, wrong token, cut off), must never write
a callback token or a provider key into its output."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
from conftest import SKYCORE
from servers import tracker_serve, wait_until
from standins.mobizon import MobizonStandIn
from standins.skycore import SkycoreStandIn, postback

from tracker.logmask import mask

MOBIZON_KEY = "kz9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0"
MOBIZON_TOKEN = "mz-callback-token-4f1c"


def test_mask_covers_callback_paths_and_credential_parameters() -> None:
    line = ("Error handling request POST /callbacks/skycore/s3cr3t-Token?x=1 "
            "GET https://api.mobizon.kz/service/message/sendSmsMessage?output=json&apiKey=abc123"
            "&api=v1 key=k3y pass=p4ss")
    assert mask(line) == (
        "Error handling request POST /callbacks/skycore/***?x=1 "
        "GET https://api.mobizon.kz/service/message/sendSmsMessage?output=json&apiKey=***"
        "&api=v1 key=*** pass=***")


def test_no_token_or_key_reaches_the_log_at_debug(tmp_path: Path) -> None:
    with SkycoreStandIn(api_key=SKYCORE["api_key"]) as sky, \
            MobizonStandIn(api_key=MOBIZON_KEY) as mob, tracker_serve(
            tmp_path, database_url=f"sqlite:///{tmp_path / 'tracker.sqlite3'}",
            skycore_url=sky.url, default_provider="skycore", log_level="DEBUG",
            providers={"mobizon": {"api_key": MOBIZON_KEY, "base_url": mob.url,
                                   "callback_token": MOBIZON_TOKEN}}) as server:
        key = server.create_api_key()
        auth = {"Authorization": f"Bearer {key}"}
        for provider in ("skycore", "mobizon"):
            response = httpx.post(f"{server.base_url}/api/v1/messages", headers=auth, json={
                "to": "+77011234567", "text": "secret-free", "provider": provider})
            assert response.status_code == 202
        wait_until(lambda: len(sky.requests) == 1 and len(mob.calls()) == 1, timeout=10)
        url = server.callback_url()
        assert httpx.post(url, content=postback("SMS_1", "N202")).status_code == 200
        assert httpx.post(url + "x", content=b"<x/>").status_code == 404
        body = postback("SMS_2")
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(f"POST /callbacks/skycore/{SKYCORE['callback_token']} HTTP/1.1\r\n"
                         f"Host: x\r\nContent-Length: {len(body) + 50}\r\n\r\n".encode() + body)
            sock.shutdown(socket.SHUT_WR)
            sock.recv(4096)
        server.stop()
        output = server.output()
    assert "DEBUG" in output  # the level took effect
    for secret in (SKYCORE["callback_token"], SKYCORE["api_key"], MOBIZON_KEY, MOBIZON_TOKEN,
                   key, "7011234567", "secret-free"):  # and no phone number or message text
        assert secret not in output, f"{secret!r} in the log:\n{output}"


def test_gunicorns_own_error_log_masks_the_token(tmp_path: Path) -> None:
    """gunicorn logs a failed request with its URI ("Error handling request POST /callbacks/
    skycore/<token>"); `tracker serve`'s gunicorn config names the masking logger class."""
    from gunicorn.config import Config

    from tracker import gunicorn_conf
    from tracker.logmask import Logger

    assert gunicorn_conf.logger_class == "tracker.logmask.Logger"
    cfg = Config()
    cfg.set("errorlog", str(tmp_path / "error.log"))
    logger = Logger(cfg)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("Error handling request %s", "/callbacks/skycore/s3cr3t-t0ken?x=1")
    logger.error("Invalid request from %s: /callbacks/mobizon/other-s3cr3t", "127.0.0.1")
    written = (tmp_path / "error.log").read_text()
    assert "Error handling request /callbacks/skycore/***?x=1" in written
    assert "s3cr3t" not in written
