"""The `tracker` command, run as a user runs it (a subprocess with its own environment)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run(tmp_path, *args: str, input_text: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env["TRACKER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    env["TRACKER_SECRET_KEY"] = "cli-test-secret"
    return subprocess.run([sys.executable, "-m", "tracker.cli", *args], env=env, text=True,
                          capture_output=True, input=input_text, timeout=60, check=False)


def test_keys_users_send(tmp_path) -> None:
    created = run(tmp_path, "keys", "create", "ops")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("dlr_") and " " not in key

    user = run(tmp_path, "users", "create", "ana", "--role", "admin",
               input_text="long enough pw\nlong enough pw\n")
    assert user.returncode == 0 and "created admin 'ana'" in user.stdout
    short = run(tmp_path, "users", "create", "bob", "--password", "short")
    assert short.returncode == 1 and "at least 10" in short.stderr

    sent = run(tmp_path, "send", "--to", "+1 555 123 4888", "--text", "hello")
    assert sent.returncode == 0, sent.stderr
    message = json.loads(sent.stdout)
    assert message["to"] == "+15551234888" and message["status"] == "queued"
    assert message["events"][0]["source"] == "cli"
    bad = run(tmp_path, "send", "--to", "12", "--text", "hello")
    assert bad.returncode == 1 and "to: invalid phone number" in bad.stderr


def test_bad_config_fails_naming_the_key(tmp_path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('default_provider = "skycore"\n[providers.skycore]\napi_key = "k"\n')
    env_run = run(tmp_path, "db", "upgrade")
    assert env_run.returncode == 0
    os.environ["TRACKER_CONFIG"] = str(config)
    try:
        failed = subprocess.run([sys.executable, "-m", "tracker.cli", "db", "upgrade"],
                                env={**os.environ, "TRACKER_DATABASE_URL":
                                     f"sqlite:///{tmp_path / 'x.sqlite3'}"},
                                text=True, capture_output=True, timeout=60, check=False)
    finally:
        del os.environ["TRACKER_CONFIG"]
    assert failed.returncode == 1
    assert "providers.skycore.shortcode: required but not set" in failed.stderr
