"""Run the real `tracker serve` (gunicorn + worker) as a subprocess on loopback, for tests.

    with tracker_serve(tmp_path, database_url=url, skycore_url=sky.url) as server:
        key = server.create_api_key("e2e")
        httpx.post(server.base_url + "/api/v1/messages", ...)
        server.stop()  # SIGTERM; asserts it exits within 15 s and leaves no process behind

Every wait is bounded; a server that does not come up fails the test with its captured output.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import httpx
import psycopg2

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0

SKYCORE_API_KEY = "test-api-key"
SKYCORE_SHORTCODE = "60856"
SKYCORE_TOKEN = "sky-secret-token"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tracker_command() -> list[str]:
    """The installed `tracker` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("tracker")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tracker.cli"]


def wait_until(probe: Callable[[], T | None], *, timeout: float, interval: float = 0.05,
               message: str | Callable[[], str] = "condition not met") -> T:
    """Call `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"{text} (waited {timeout} s)")
        time.sleep(interval)


# -- configuration -----------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def write_config(path: Path, settings: dict[str, Any]) -> Path:
    """Write a TOML file: top-level scalars, then one table per dict (e.g. providers.skycore)."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []

    def walk(prefix: str, table: dict[str, Any]) -> None:
        for key, value in table.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
                if not any(isinstance(v, dict) for v in value.values()):
                    tables.append((f"{prefix}{key}", value))

    for key, value in settings.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {_toml_value(value)}")
    walk("", {k: v for k, v in settings.items() if isinstance(v, dict)})
    for name, table in tables:
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def skycore_settings(base_url: str, **extra: Any) -> dict[str, Any]:
    """A [providers.skycore] table pointing at a stand-in."""
    return {"base_url": base_url, "api_key": SKYCORE_API_KEY, "shortcode": SKYCORE_SHORTCODE,
            "callback_token": SKYCORE_TOKEN, **extra}


# -- the server --------------------------------------------------------------------------------


@dataclass
class TrackerServer:
    """A running `tracker serve`."""

    proc: subprocess.Popen[bytes]
    port: int
    env: dict[str, str]
    config_path: Path
    log_path: Path
    database_url: str
    settings: dict[str, Any]
    _log: Any = field(repr=False, default=None)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def callback_url(self, provider: str = "skycore", token: str | None = None) -> str:
        token = token if token is not None else self.settings["providers"][provider][
            "callback_token"]
        return f"{self.base_url}/callbacks/{provider}/{token}"

    def output(self) -> str:
        """Everything the server and its children wrote so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def create_api_key(self, name: str = "tests") -> str:
        """`tracker keys create NAME` with the server's configuration; the key is the last line."""
        done = subprocess.run([*tracker_command(), "keys", "create", name], env=self.env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"tracker keys create failed:\n{done.stdout}\n{done.stderr}"
        key = done.stdout.strip().splitlines()[-1].strip()
        assert key.startswith("dlr_"), f"unexpected output of tracker keys create: {done.stdout!r}"
        return key

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Until the web app answers HTTP (any status) or the process dies."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"tracker serve exited with {self.proc.returncode} "
                                         f"before answering:\n{self.tail()}")
                try:
                    client.get(f"{self.base_url}/api/v1/messages/0")
                    return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise AssertionError(f"tracker serve did not answer HTTP within {timeout} s:"
                                         f"\n{self.tail()}")
                time.sleep(0.1)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, as Ctrl-C would: the server must exit 0 within `timeout` seconds and take
        gunicorn (master and workers) and the worker with it."""
        try:
            assert self.running, (f"tracker serve died on its own with {self.proc.returncode}:"
                                  f"\n{self.tail()}")
            family = {pid: cmdline(pid) for pid in descendants(self.proc.pid)}
            # gunicorn master + at least one web worker + the job worker.
            commands = list(family.values())
            assert sum("gunicorn" in c for c in commands) >= 2, commands
            assert any(c.endswith("tracker.cli worker") for c in commands), commands
            started = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"tracker serve still running {timeout} s after SIGTERM:"
                                     f"\n{self.tail()}") from None
            took = time.monotonic() - started
            assert code == 0, f"tracker serve exited with {code} after SIGTERM:\n{self.tail()}"
            # Reaped children vanish at once; allow a moment for a grandchild's parent to reap.
            left = wait_for_exit(list(family), timeout=5.0)
            assert not left, (f"processes left running after tracker serve stopped "
                              f"({took:.1f} s): {[(p, family[p]) for p in left]}\n{self.tail()}")
        finally:
            self.kill()

    def kill(self) -> None:
        """Last resort after a failure: SIGKILL the server and what it started, one by one."""
        if self.running:
            for pid in [*descendants(self.proc.pid), self.proc.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None


def start_tracker(run_dir: Path, *, database_url: str, skycore_url: str | None = None,
                  port: int | None = None, skycore: dict[str, Any] | None = None,
                  providers: dict[str, dict[str, Any]] | None = None,
                  env: dict[str, str] | None = None, **settings: Any) -> TrackerServer:
    """Write the configuration into `run_dir` and start `tracker serve` on 127.0.0.1.

    `fake` is configured; Skycore too when `skycore_url` or `skycore` is given; `providers` adds
    more [providers.<slug>] tables. The environment is this one without TRACKER_* variables, plus
    TRACKER_CONFIG and `env`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config: dict[str, Any] = {
        "database_url": database_url,
        "public_base_url": f"http://127.0.0.1:{port}",
        "secret_key": "e2e-secret-key",
        "dispatch_interval_seconds": 0.2,
        "orphan_rematch_seconds": 0.5,
        "web_workers": 2,
        **settings,
        # fake too (the default provider unless a test names another), as a real configuration
        # must name it beside real providers to keep it
        "providers": {"fake": {}, **({"skycore": skycore or skycore_settings(skycore_url)}
                         if skycore or skycore_url else {}), **(providers or {})},
    }
    config_path = write_config(run_dir / "tracker.toml", config)
    extra_env = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env.update(TRACKER_CONFIG=str(config_path), PYTHONUNBUFFERED="1", **extra_env)
    log_path = run_dir / "serve.log"
    log = log_path.open("wb")
    proc = subprocess.Popen([*tracker_command(), "serve", "--host", "127.0.0.1",
                             "--port", str(port)],
                            env=env, cwd=run_dir, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    server = TrackerServer(proc=proc, port=port, env=env, config_path=config_path,
                           log_path=log_path, database_url=database_url, settings=config,
                           _log=log)
    try:
        server.wait_ready()
    except BaseException:
        server.kill()
        raise
    return server


@contextlib.contextmanager
def tracker_serve(run_dir: Path, **kwargs: Any) -> Iterator[TrackerServer]:
    """`start_tracker`, and at the end `stop()` (with its checks) unless the test stopped it."""
    server = start_tracker(run_dir, **kwargs)
    try:
        yield server
    except BaseException:
        server.kill()
        raise
    if server.running:
        server.stop()
    else:
        server.kill()


# -- processes ---------------------------------------------------------------------------------


def _parents() -> dict[int, int]:
    """pid -> parent pid for every live (non-zombie) process, from /proc."""
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields and fields[0] != "Z":
            out[int(entry)] = int(fields[1])
    return out


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, grandchildren, ...)."""
    parents = _parents()
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        children = [p for p, parent in parents.items() if parent == current]
        found += children
        frontier += children
    return found


def cmdline(pid: int) -> str:
    """The command line of a process ("" when it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def wait_for_exit(pids: list[int], timeout: float) -> list[int]:
    """The pids still alive (and not zombies) after waiting up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        alive = set(_parents())
        left = [p for p in pids if p in alive]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


# -- reading the database directly (not through the app) ---------------------------------------


def db_rows(database_url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one read query with `?` placeholders on the SQLite file or Postgres database."""
    parsed = urlparse(database_url)
    if parsed.scheme == "sqlite":
        path = database_url[len("sqlite:///"):]
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
            return conn.execute(sql, params).fetchall()
    conn = psycopg2.connect(dbname=parsed.path.lstrip("/"), user=parsed.username,
                            password=parsed.password, host=parsed.hostname, port=parsed.port)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.replace("?", "%s"), params)
            rows = cur.fetchall()
        conn.rollback()
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]
    finally:
        conn.close()


def reset_postgres(database_url: str) -> None:
    """Empty a Postgres database (drop and recreate its public schema)."""
    parsed = urlparse(database_url)
    conn = psycopg2.connect(dbname=parsed.path.lstrip("/"), user=parsed.username,
                            password=parsed.password, host=parsed.hostname, port=parsed.port)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        conn.close()
