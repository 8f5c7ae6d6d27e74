"""GET /healthz and /readyz: no login, plain JSON, nothing sensitive, 503 naming what fails."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from conftest import make_config, running
from flask import Flask
from servers import reset_postgres, tracker_serve, wait_until

from tracker import db as dbmod
from tracker import jobs
from tracker.models import SchemaMigration
from tracker.scheduler import LEASE_NAME

DOWN = "postgresql://postgres@127.0.0.1:9/none"  # nothing listens: connection refused


@pytest.fixture
def client(app: Flask):
    return app.test_client()


def test_healthz_answers_without_login_or_database(client, database_url: str) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in response.headers
    dbmod.db.initialize(dbmod.connect_database(DOWN))
    try:
        down = client.get("/healthz")
    finally:
        dbmod.db.initialize(dbmod.connect_database(database_url))
    assert down.status_code == 200 and down.json == {"status": "ok"}


def test_readyz_needs_a_worker_holding_the_lease(client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json["status"] == "not ready" and response.json["failing"] == ["worker"]
    assert response.json["checks"]["database"] == {"ok": True}
    assert response.json["checks"]["migrations"] == {"ok": True, "pending": 0}
    assert "no worker" in response.json["checks"]["worker"]["error"]
    jobs.hold_lease(LEASE_NAME, "host-a:123", 30)
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.json
    assert ready.json["status"] == "ready" and ready.json["failing"] == []
    assert 0 <= ready.json["checks"]["worker"]["lease_renewed_seconds_ago"] < 5
    assert "host-a" not in ready.get_data(as_text=True)  # no host name, pid or owner


def test_readyz_fails_when_the_lease_ran_out(client) -> None:
    jobs.hold_lease(LEASE_NAME, "host-a:123", -5)  # renewed 35 s ago, ran out 5 s ago
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json["failing"] == ["worker"]
    assert "ran out" in response.json["checks"]["worker"]["error"]
    assert 34 <= response.json["checks"]["worker"]["lease_renewed_seconds_ago"] < 40


def test_readyz_fails_with_a_migration_pending(client) -> None:
    jobs.hold_lease(LEASE_NAME, "host-a:123", 30)
    SchemaMigration.delete().where(SchemaMigration.version == 12).execute()
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json["failing"] == ["migrations"]
    assert response.json["checks"]["migrations"] == {"ok": False, "pending": 1}


def test_readyz_exclude_leaves_a_check_out(client) -> None:
    response = client.get("/readyz?exclude=worker")
    assert response.status_code == 200, response.json
    assert set(response.json["checks"]) == {"database", "migrations"}
    assert client.get("/readyz?exclude=worker,migrations").json["checks"] == {
        "database": {"ok": True}}
    wrong = client.get("/readyz?exclude=wrokr")
    assert wrong.status_code == 400 and "wrokr" in wrong.json["error"]


def test_readyz_names_the_database_when_it_cannot_be_reached(client, database_url: str) -> None:
    jobs.hold_lease(LEASE_NAME, "host-a:123", 30)
    dbmod.db.initialize(dbmod.connect_database(DOWN))
    try:
        response = client.get("/readyz")
    finally:
        dbmod.db.initialize(dbmod.connect_database(database_url))
    assert response.status_code == 503
    assert response.json["failing"] == ["database", "migrations", "worker"]
    text = response.get_data(as_text=True)
    assert "127.0.0.1" not in text and "postgres" not in text  # no address, no driver text
    assert client.get("/readyz").status_code == 200  # works again, no restart


def test_probes_are_cheap(app: Flask) -> None:
    """Probed every second by several balancers: a ready answer reads two rows, and a
    thousand of them take well under a second of this process's time each."""
    client = app.test_client()
    jobs.hold_lease(LEASE_NAME, "host-a:123", 30)
    statements: list[str] = []
    original = dbmod.db.obj.execute_sql

    def counting(sql, *args, **kwargs):
        statements.append(sql)
        return original(sql, *args, **kwargs)

    dbmod.db.obj.execute_sql = counting
    try:
        assert client.get("/readyz").status_code == 200
        assert client.get("/healthz").status_code == 200
    finally:
        del dbmod.db.obj.execute_sql
    assert len(statements) == 2, statements


# -- through tracker serve ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_serve_becomes_ready_once_its_worker_holds_the_lease(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'health.sqlite3'}"
    else:
        url = request.getfixturevalue("pg_database_url")
        reset_postgres(url)
    with (tracker_serve(tmp_path / "run", database_url=url) as server,
          httpx.Client(timeout=5) as client):
        health = client.get(server.base_url + "/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        ready = wait_until(lambda: (r := client.get(server.base_url + "/readyz"))
                           .status_code == 200 and r, timeout=20,
                           message="/readyz never answered 200")
        assert ready.headers["Content-Type"] == "application/json"
        body = json.loads(ready.text)
        assert body["status"] == "ready" and body["failing"] == []
        assert set(body["checks"]) == {"database", "migrations", "worker"}
        # No login, no session cookie, nothing of the instance in it.
        assert "set-cookie" not in ready.headers
        assert str(tmp_path) not in ready.text


def test_readyz_counts_the_migrations_a_database_lacks(tmp_path: Path) -> None:
    """A database none of whose migrations were applied is not ready, and says how many."""
    with running(make_config(f"sqlite:///{tmp_path / 'fresh.sqlite3'}")) as flask_app:
        SchemaMigration.delete().execute()
        response = flask_app.test_client().get("/readyz?exclude=worker")
    assert response.status_code == 503 and response.json["failing"] == ["migrations"]
    assert response.json["checks"]["migrations"]["pending"] >= 12
