"""Fixtures: an app on a real database (a fresh SQLite file, and Postgres when configured).

Every test that takes `app` runs once per database: `sqlite` always, `postgres` when
TRACKER_TEST_DATABASE_URL points at a server (a throwaway database is created for the session).

On a developer's machine, tests that need what is not installed (Postgres, Chromium, LibreOffice,
wrk) skip with the command that installs it. Under CI=true nothing may skip: what is missing is
named before the first test runs, and a run in which any test skipped fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse, urlunparse

import psycopg2
import pytest
from flask import Flask

from tracker import create_app, migrations
from tracker.db import db

PG_URL = os.environ.get("TRACKER_TEST_DATABASE_URL", "")
CI = os.environ.get("CI") == "true"
SKYCORE = {"api_key": "test-api-key", "shortcode": "60856", "callback_token": "sky-secret-token"}
MOBIZON_KEY = "kz0123456789abcdef0123456789abcdef01234567"


def missing_prerequisites() -> list[str]:
    """What the whole suite needs and this machine lacks, each with how to get it."""
    needs = [
        (bool(PG_URL), "TRACKER_TEST_DATABASE_URL (a Postgres server the tests may create "
                       "databases on)"),
        (importlib.util.find_spec("selenium") is not None, "selenium (pip install -e '.[test]')"),
        (shutil.which("chromium") is not None, "chromium (apt-get install chromium)"),
        (shutil.which("chromedriver") is not None,
         "chromedriver (apt-get install chromium-driver)"),
        (shutil.which("soffice") is not None,
         "LibreOffice (apt-get install libreoffice-calc-nogui)"),
        (shutil.which("wrk") is not None, "wrk (apt-get install wrk)"),
        (shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin") is not None,
         "nginx (apt-get install nginx-light)"),
        (shutil.which("systemd-analyze") is not None, "systemd-analyze (apt-get install systemd)"),
    ]
    return [what for found, what in needs if not found]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under CI, a missing prerequisite fails the run before any test, instead of skipping."""
    if CI and (missing := missing_prerequisites()):
        raise pytest.UsageError("CI=true, but the suite cannot run whole; missing: "
                                + "; ".join(missing))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI, a skipped test is a failure: it would hide whatever it should have caught."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if CI and skipped and exitstatus == pytest.ExitCode.OK:
        if reporter:
            reporter.write_line(f"CI=true: {skipped} test(s) skipped; skips fail the run under "
                                "CI", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _admin_conn(url: str) -> Any:
    parsed = urlparse(url)
    conn = psycopg2.connect(dbname=parsed.path.lstrip("/") or "postgres", user=parsed.username,
                            password=parsed.password, host=parsed.hostname, port=parsed.port)
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A throwaway Postgres database for this test session."""
    if not PG_URL:
        pytest.skip("TRACKER_TEST_DATABASE_URL is not set: Postgres tests skipped")
    name = f"tracker_test_{uuid.uuid4().hex[:10]}"
    conn = _admin_conn(PG_URL)
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    url = urlunparse(urlparse(PG_URL)._replace(path="/" + name))
    yield url
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A URL to an empty, migrated database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tracker.sqlite3'}"
        return
    url = request.getfixturevalue("pg_database_url")
    conn = _admin_conn(url)
    with conn.cursor() as cur:
        cur.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    conn.close()
    yield url


def make_config(database_url: str, **overrides: Any) -> dict[str, Any]:
    """The test configuration: the fake and Skycore providers, a fixed secret."""
    config: dict[str, Any] = {
        "database_url": database_url,
        "secret_key": "test-secret-key",
        "public_base_url": "http://127.0.0.1:8000",
        "providers": {"fake": {"callback_token": "fake-token"}, "skycore": dict(SKYCORE)},
    }
    config.update(overrides)
    return config


def build_app(config: dict[str, Any]) -> Flask:
    """Create the app and apply the migrations."""
    app = create_app(config)
    app.config["WTF_CSRF_ENABLED"] = config.get("csrf", True)
    with db.connection_context():
        migrations.upgrade(db.obj, log=lambda _line: None)
    return app


@contextlib.contextmanager
def running(config: dict[str, Any]) -> Iterator[Flask]:
    """The app built from `config`, inside its app context with a connection open for direct
    model use; afterwards provider HTTP clients and every connection are closed."""
    flask_app = build_app(config)
    with flask_app.app_context():
        db.connect(reuse_if_open=True)
        yield flask_app
        for provider in flask_app.extensions["providers"].values():
            if provider._client is not None:
                provider.client.close()
        if not db.is_closed():
            db.close()
    if hasattr(db.obj, "close_all"):
        db.obj.close_all()


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    """The app on a fresh database, with a connection open for direct model use in tests."""
    with running(make_config(database_url)) as flask_app:
        yield flask_app


@pytest.fixture
def client(app: Flask) -> Any:
    """A test client for the app."""
    return app.test_client()


@pytest.fixture
def api_key(app: Flask) -> str:
    """A valid API key."""
    from tracker import accounts

    return accounts.create_api_key("tests")


@pytest.fixture
def sky() -> Iterator[Any]:
    """A Skycore stand-in on loopback (tests/standins/skycore.py)."""
    from standins.skycore import SkycoreStandIn

    with SkycoreStandIn(api_key=SKYCORE["api_key"]) as stand_in:
        yield stand_in


@pytest.fixture
def mob() -> Iterator[Any]:
    """A Mobizon stand-in on loopback (tests/standins/mobizon.py)."""
    from standins.mobizon import MobizonStandIn

    with MobizonStandIn(api_key=MOBIZON_KEY) as stand_in:
        yield stand_in
