"""Installed as a package, not run from the checkout: the wheel (built from the sdist) goes into
a fresh virtualenv in a temporary folder, and the installed `tracker` serves, stores a callback
and exports from there, keeping its instance folder where it was started."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers import ROOT, free_port

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 600) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """bin/ of a fresh virtualenv holding only the built wheel and its dependencies."""
    tmp = tmp_path_factory.mktemp("package")
    dist = tmp / "dist"
    run(sys.executable, "-m", "build", "--outdir", dist, ROOT, cwd=tmp)
    [sdist] = dist.glob("dlr_tracker-*.tar.gz")
    [wheel] = dist.glob("dlr_tracker-*.whl")
    assert sdist.name == f"dlr_tracker-{VERSION}.tar.gz"
    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp)
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel, cwd=tmp)
    yield venv / "bin"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TRACKER_", "PYTHON", "VIRTUAL_ENV"))}
    return {**env, **extra}


def test_version_comes_from_one_place(installed: Path, tmp_path: Path) -> None:
    assert run(installed / "tracker", "--version", cwd=tmp_path).strip() == (
        f"tracker, version {VERSION}")
    agent = run(installed / "python", "-c",
                "from tracker.providers.base import USER_AGENT; print(USER_AGENT)", cwd=tmp_path)
    assert agent.strip() == f"dlr-tracker/{VERSION}"


def test_the_installed_package_serves_stores_and_exports(installed: Path,
                                                         tmp_path: Path) -> None:
    site = Path(run(installed / "python", "-c", "import tracker; print(tracker.__file__)",
                    cwd=tmp_path).strip()).parent
    assert ROOT not in site.parents, site  # the package, not the checkout
    home = tmp_path / "home"
    home.mkdir()
    said = run(installed / "tracker", "init", cwd=home)
    config = home / "tracker.toml"
    assert f"TRACKER_CONFIG={config} tracker serve" in said, said
    env = clean_env(TRACKER_CONFIG=str(config), TRACKER_PROVIDERS__FAKE__CALLBACK_TOKEN="tok")
    port = free_port()
    with (tmp_path / "serve.log").open("w") as log:
        server = subprocess.Popen([installed / "tracker", "serve", "--port", str(port)],
                                  cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                login = httpx.get(f"{base}/auth/login", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.2)
        assert login.status_code == 200 and "csrf_token" in login.text
        openapi = httpx.get(f"{base}/api/v1/openapi.json", timeout=10)  # package data
        assert openapi.json()["openapi"].startswith("3.1"), openapi.text[:200]
        answer = httpx.post(f"{base}/callbacks/fake/tok", timeout=10,
                            content=json.dumps({"id": "PKG-1", "status": "delivered"}),
                            headers={"Content-Type": "application/json"})
        assert (answer.status_code, answer.text) == (200, "OK orphan\n")
    finally:
        server.terminate()
        assert server.wait(timeout=60) == 0, (tmp_path / "serve.log").read_text()
    output = (tmp_path / "serve.log").read_text()
    instance = home / "instance"
    assert f"instance folder {instance}" in output, output
    assert not (site / "instance").exists() and not (site.parent / "instance").exists()
    with sqlite3.connect(instance / "tracker.sqlite3") as conn:
        assert conn.execute("SELECT provider, verdict FROM callback").fetchall() == [
            ("fake", "orphan")]
    assert (instance / "secret_key").exists()

    elsewhere = tmp_path / "elsewhere"  # the configuration, not the directory, decides
    elsewhere.mkdir()
    out = elsewhere / "messages.csv"
    run(installed / "tracker", "export", "--format", "csv", "--output", out, cwd=elsewhere,
        env=env)
    assert re.match(r"\ufeff?id,", out.read_text(encoding="utf-8")), out.read_text()[:200]
    assert not (elsewhere / "instance").exists()
