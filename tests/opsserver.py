"""What the operations tests share: a `tracker serve` per database with given settings, users,
dashboard logins and fake-provider callbacks over real HTTP."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from servers import TrackerServer, db_rows, reset_postgres, tracker_command, tracker_serve

FAKE_TOKEN = "fake-callback-token"
PASSWORD = "correct horse battery"


@contextlib.contextmanager
def serve_on(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             name: str, **settings: Any) -> Iterator[TrackerServer]:
    """`tracker serve` on the database of `request.param` ("sqlite" or "postgres"), with the
    fake provider taking callbacks at /callbacks/fake/FAKE_TOKEN unless `providers` says else."""
    run_dir = tmp_path_factory.mktemp(f"{name}-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{run_dir / 'tracker.sqlite3'}"
    else:
        url = request.getfixturevalue("pg_database_url")
        reset_postgres(url)
    providers = settings.pop("providers", {"fake": {"callback_token": FAKE_TOKEN}})
    with tracker_serve(run_dir, database_url=url, providers=providers, **settings) as server:
        yield server


def create_user(server: TrackerServer, name: str, role: str = "viewer") -> None:
    """`tracker users create NAME --role ROLE` with PASSWORD."""
    done = subprocess.run([*tracker_command(), "users", "create", name, "--role", role],
                          env={**server.env, "TRACKER_NEW_PASSWORD": PASSWORD},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def csrf_token(page: str) -> str:
    """The CSRF token of the first form on a page."""
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    assert match, page[:2000]
    return match.group(1)


def login(client: httpx.Client, base_url: str, username: str, password: str = PASSWORD,
          **headers: str) -> httpx.Response:
    """Fetch the login form and post it, as a browser on `base_url` would (with a Referer:
    over https the CSRF check wants one from the same origin)."""
    form = client.get(f"{base_url}/auth/login", headers=headers)
    assert form.status_code == 200, form.text[:500]
    return client.post(f"{base_url}/auth/login", headers={
        "Referer": f"{base_url}/auth/login", **headers}, data={
        "username": username, "password": password, "csrf_token": csrf_token(form.text)})


def post_fake_callback(base_url: str, message_id: str = "no-such-message",
                       status: str = "delivered", token: str = FAKE_TOKEN,
                       **kwargs: Any) -> httpx.Response:
    """One JSON receipt of the fake provider."""
    return httpx.post(f"{base_url}/callbacks/fake/{token}",
                      content=json.dumps({"id": message_id, "status": status}),
                      headers={"Content-Type": "application/json",
                               **kwargs.pop("headers", {})}, timeout=10, **kwargs)


def callbacks(server: TrackerServer) -> list[tuple[Any, ...]]:
    """(id, provider, remote_addr, verdict) of every stored callback, oldest first."""
    return db_rows(server.database_url,
                   "SELECT id, provider, remote_addr, verdict FROM callback ORDER BY id")
