"""Dashboard accounts: throttled password guessing, session cookies, phone masking for viewers."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import build_app, make_config, running
from flask import Flask, g
from test_dashboard import PASSWORD, csrf, login

from tracker import accounts, create_app, migrations, sending
from tracker.db import db, execute, is_sqlite, write_tx
from tracker.models import ApiKey, LoginFailure, SchemaMigration, utcnow
from tracker.phones import mask_phone


def fresh_client(app: Flask) -> Any:
    """Another browser. Flask-WTF caches the CSRF token in `g`, which the tests' outer app
    context shares between clients: drop it so this client gets its own session's token."""
    g.pop("csrf_token", None)
    return app.test_client()


@pytest.fixture
def masked_app(database_url: str) -> Iterator[Flask]:
    with running(make_config(database_url, mask_phone_numbers=True)) as flask_app:
        yield flask_app


def test_wrong_passwords_are_throttled_per_user_and_address(app: Flask, client: Any) -> None:
    accounts.create_user("ana", PASSWORD, "viewer")
    for _ in range(5):
        assert login(client, "ana", "not the password").status_code == 401
    blocked = login(client, "ana")  # even the right password: not checked while blocked
    assert blocked.status_code == 429
    assert 14 * 60 < int(blocked.headers["Retry-After"]) <= 15 * 60 + 1
    assert "Too many wrong passwords. Try again in 15 minutes." in blocked.get_data(as_text=True)
    assert client.get("/messages").status_code == 302  # no session was started

    # Another address is not blocked by ana's typos here (the per-address key differs).
    other = fresh_client(app)
    token = csrf(other, "/auth/login")
    answer = other.post("/auth/login", data={"username": "ana", "password": PASSWORD,
                                             "csrf_token": token},
                        environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert answer.status_code == 302

    # The window passes: the same address may try again, and a success forgets its mistakes.
    LoginFailure.update(at=utcnow() - dt.timedelta(minutes=16)).execute()
    g.pop("csrf_token", None)  # back to the first client's session (see fresh_client)
    assert login(client, "ana").status_code == 302
    pair = accounts.login_keys("ana", "127.0.0.1")["pair"]
    assert LoginFailure.select().where(LoginFailure.key == pair).count() == 0


def test_one_address_guessing_many_names_is_throttled(app: Flask, client: Any) -> None:
    for i in range(30):
        assert login(client, f"user{i}", "guess").status_code == 401
    assert login(client, "someone-else", "guess").status_code == 429


def test_session_cookie_flags(database_url: str) -> None:
    app = build_app(make_config(database_url, public_base_url="https://sms.example.com"))
    with app.app_context():
        accounts.create_user("ana", PASSWORD, "viewer")
    client = app.test_client()
    answer = login(client, "ana")
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie
    assert answer.headers["Strict-Transport-Security"].startswith("max-age=")
    page = client.get("/auth/login")
    for header in ("Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options"):
        assert header in page.headers


@pytest.mark.parametrize(("number", "masked"), [
    ("+77011234567", "+7701•••••67"),
    ("+15551234888", "+1555•••••88"),
    ("77011234567", "7701•••••67"),  # as providers write it in raw bodies
    ("+4412", "+4412"),  # too short to hide anything useful
])
def test_mask_phone(number: str, masked: str) -> None:
    assert mask_phone(number) == masked


def test_viewers_see_masked_numbers_admins_see_all(masked_app: Flask) -> None:
    accounts.create_user("ana", PASSWORD, "viewer")
    accounts.create_user("boss", PASSWORD, "admin")
    message = sending.enqueue(sending.NewMessage(to="+77011234567", text="hi",
                                                 provider="fake"), source="test")
    sending.dispatch(masked_app.extensions["providers"], batch_size=5, max_attempts=1,
                     backoff_seconds=1)
    viewer = fresh_client(masked_app)
    login(viewer, "ana")
    for path in ("/messages", f"/messages/{message.id}"):
        html = viewer.get(path).get_data(as_text=True)
        assert "+7701•••••67" in html and "77011234567" not in html, path
    # A viewer still finds the message by typing the whole number.
    found = viewer.get("/messages", query_string={"q": "+7 701 123 45 67"})
    assert message.reference in found.get_data(as_text=True)
    admin = fresh_client(masked_app)
    login(admin, "boss")
    assert "+77011234567" in admin.get(f"/messages/{message.id}").get_data(as_text=True)


def test_a_key_s_last_use_is_written_at_most_once_a_minute(app: Flask, client: Any,
                                                           caplog: Any) -> None:
    """The API is hot: a request writes "last used" only when the stored one is a minute old,
    and otherwise opens no write transaction at all."""
    key = accounts.create_api_key("ops")
    auth = {"Authorization": f"Bearer {key}"}
    assert ApiKey.get(ApiKey.name == "ops").last_used_at is None
    assert client.get("/api/v1/messages/1", headers=auth).status_code == 404
    first = ApiKey.get(ApiKey.name == "ops").last_used_at
    assert first is not None and utcnow() - first < dt.timedelta(seconds=30)
    back = first - dt.timedelta(seconds=50)  # as if used 50 s ago
    ApiKey.update(last_used_at=back).execute()
    with caplog.at_level(logging.DEBUG, logger="peewee"):  # every statement sent
        assert client.get("/api/v1/messages/1", headers=auth).status_code == 404
    sent = [str(r.msg) for r in caplog.records if r.name == "peewee"]
    assert sent and not [s for s in sent if "UPDATE" in s or "BEGIN" in s], sent
    assert ApiKey.get(ApiKey.name == "ops").last_used_at == back  # not written again
    ApiKey.update(last_used_at=first - dt.timedelta(seconds=61)).execute()
    assert client.get("/api/v1/messages/1", headers=auth).status_code == 404
    assert ApiKey.get(ApiKey.name == "ops").last_used_at >= first  # a minute on: written
    assert client.get("/api/v1/messages/1", headers={"Authorization": "Bearer dlr_x"}
                      ).status_code == 401


def test_migration_0010_keeps_one_live_key_per_name(database_url: str) -> None:
    """Keys named alike before names were unique: the oldest keeps the name, the others get
    their id appended; revoked keys keep theirs."""
    app = create_app(make_config(database_url))
    with app.app_context(), db.connection_context():
        dialect = "sqlite" if is_sqlite(db.obj) else "postgres"
        for module in migrations.MIGRATIONS:
            if module.VERSION < 10:
                with write_tx():
                    module.upgrade(db.obj, dialect)
                    SchemaMigration.create(version=module.VERSION, name=module.NAME)
        insert = ('INSERT INTO "api_key" ("name", "key_hash", "prefix", "created_at",'
                  ' "revoked_at") VALUES (?, ?, ?, ?, ?)')
        now = utcnow()
        for i, (name, revoked) in enumerate([("ops", None), ("ops", None), ("ops", now),
                                             ("ci", None), ("ops", None)]):
            execute(insert, (name, f"{i:064d}", f"dlr_{i}", now, revoked))
        migrations.upgrade(db.obj, log=lambda _line: None)
        names = [(k.id, k.name, k.revoked_at is None)
                 for k in ApiKey.select().order_by(ApiKey.id)]
        ids = [k[0] for k in names]
        assert names == [(ids[0], "ops", True), (ids[1], f"ops-{ids[1]}", True),
                         (ids[2], "ops", False), (ids[3], "ci", True),
                         (ids[4], f"ops-{ids[4]}", True)]
        assert accounts.revoke_api_key("ops").id == ids[0]
    if hasattr(db.obj, "close_all"):
        db.obj.close_all()  # the pool's connections, before the next test drops the schema


def test_a_disabled_account_is_refused_only_with_its_password(app: Flask) -> None:
    accounts.create_user("ana", PASSWORD, "viewer")
    assert accounts.disable_user("ana") and not accounts.disable_user("ana")
    assert accounts.authenticate("ana", "wrong password") is None
    with pytest.raises(accounts.AccountDisabled):
        accounts.authenticate("ana", PASSWORD)
    assert accounts.enable_user("ana") and not accounts.enable_user("ana")
    assert accounts.authenticate("ana", PASSWORD).username == "ana"
