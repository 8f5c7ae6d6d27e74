"""The `tracker` command, run as a user runs it: the installed console script in its own process,
its configuration read from the file TRACKER_CONFIG names, on SQLite and on Postgres."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from conftest import SKYCORE, make_config, running
from flask import Flask, g
from servers import ROOT, tracker_command, write_config
from test_dashboard import PASSWORD, login

from tracker import cli
from tracker.models import ApiKey, Callback, User
from tracker.scheduler import Worker

Tracker = Callable[..., subprocess.CompletedProcess[str]]


def tracker_with(config: dict[str, Any], tmp_path: Path) -> Tracker:
    """A function running `tracker ARGS` on `config`, with no other TRACKER_* variable."""
    path = write_config(tmp_path / "tracker.toml", config)
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}

    def run(*args: str, input_text: str | None = None,
            **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*tracker_command(), *args], text=True, capture_output=True,
                              env={**base, "TRACKER_CONFIG": str(path), **env},
                              input=input_text, timeout=120, check=False)
    return run


@pytest.fixture
def tracker(app: Flask, database_url: str, tmp_path: Path) -> Tracker:
    """`tracker` on the test app's database (migrated, open in this process too)."""
    return tracker_with(make_config(database_url), tmp_path)


def signed_in(client: Any) -> bool:
    """Whether the client's session is a live one (a page behind the login answers)."""
    # Flask-Login keeps the loaded user in `g`, which the tests' outer app context shares
    # between requests; a real request starts without it.
    g.pop("_login_user", None)
    status = client.get("/messages/999999999").status_code  # no such message: 404 inside
    assert status in (302, 404), status
    return status == 404


def one_line_error(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The error a failed command printed: one line, no traceback, the given exit code."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def test_version(tmp_path: Path) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    run = tracker_with(make_config(f"sqlite:///{tmp_path / 'x.sqlite3'}"), tmp_path)
    for flag in ("--version", "-V"):
        done = run(flag)
        assert (done.returncode, done.stdout.strip()) == (0, f"tracker, version {version}")


def test_api_keys_are_listed_named_uniquely_and_revoked_by_name(
        tracker: Tracker, client: Any) -> None:
    created = tracker("keys", "create", "ops")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("dlr_") and " " not in key
    again = one_line_error(tracker("keys", "create", "ops"))
    assert "an API key named 'ops' exists" in again
    listed = tracker("keys", "list")
    assert listed.stdout.splitlines()[0].split() == ["NAME", "PREFIX", "CREATED", "LAST", "USED"]
    [row] = listed.stdout.splitlines()[1:]
    assert row.split()[:2] == ["ops", key[:12]] and row.endswith("never")

    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/v1/messages/1", headers=auth).status_code == 404  # the key works
    used = ApiKey.get(ApiKey.name == "ops").last_used_at
    [row] = tracker("keys", "list").stdout.splitlines()[1:]
    assert row.endswith(used.strftime("%Y-%m-%d %H:%M")), row

    revoked = tracker("keys", "revoke", "ops", "--yes")
    assert revoked.returncode == 0 and "revoked API key 'ops'" in revoked.stdout
    assert client.get("/api/v1/messages/1", headers=auth).status_code == 401
    assert "no live API keys" in tracker("keys", "list").stderr
    assert "no live API key named 'ops'" in one_line_error(tracker("keys", "revoke", "ops",
                                                                   "--yes"))
    # The name is free again: a leaked key is replaced under the same name.
    assert tracker("keys", "create", "ops").returncode == 0
    everything = tracker("keys", "list", "--all").stdout.splitlines()
    assert everything[0].split()[-1] == "REVOKED" and len(everything) == 3
    assert everything[1].split()[-1] != "-" and everything[2].endswith("-")


def test_dashboard_accounts_from_the_command_line(tracker: Tracker, app: Flask,
                                                  client: Any) -> None:
    # The password from TRACKER_NEW_PASSWORD (as `users create --help` says), not prompted.
    created = tracker("users", "create", "ana", TRACKER_NEW_PASSWORD=PASSWORD)
    assert created.returncode == 0 and "created viewer 'ana'" in created.stdout, created.stderr
    twice = one_line_error(tracker("users", "create", "ana", TRACKER_NEW_PASSWORD=PASSWORD))
    assert twice == "Error: a user named 'ana' exists"
    short = one_line_error(tracker("users", "create", "bob", "--password", "short"))
    assert "at least 10 characters" in short
    prompted = tracker("users", "create", "boss", "--role", "admin",
                       input_text=f"{PASSWORD}\n{PASSWORD}\n")
    assert prompted.returncode == 0 and "created admin 'boss'" in prompted.stdout

    assert login(client, "ana").status_code == 302
    assert signed_in(client)
    rows = [line.split() for line in tracker("users", "list").stdout.splitlines()]
    assert rows[0] == ["USERNAME", "ROLE", "STATE", "CREATED", "LAST", "LOGIN"]
    assert [r[:3] for r in rows[1:]] == [["ana", "viewer", "active"], ["boss", "admin", "active"]]
    assert rows[1][-1] != "never" and rows[2][-1] == "never"

    # Disabled: the session already open ends, and the right password no longer logs in.
    assert "disabled 'ana'" in tracker("users", "disable", "ana").stdout
    assert not signed_in(client)
    refused = login(client, "ana")
    assert refused.status_code == 403 and "This account is disabled" in refused.get_data(
        as_text=True)
    assert login(client, "ana", "a wrong password").status_code == 401  # says no more
    assert tracker("users", "list").stdout.splitlines()[1].split()[2] == "disabled"
    assert "enabled 'ana'" in tracker("users", "enable", "ana").stdout
    assert login(client, "ana").status_code == 302

    # A new password ends the sessions too; the old one stops working.
    new = "another long password"
    assert tracker("users", "set-password", "ana", TRACKER_NEW_PASSWORD=new).returncode == 0
    assert not signed_in(client)
    assert login(client, "ana").status_code == 401
    assert login(client, "ana", new).status_code == 302
    assert "no user named 'zed'" in one_line_error(
        tracker("users", "set-password", "zed", "--password", new))

    # Deleting asks first; without a terminal to ask on, --yes is required.
    assert "--yes" in one_line_error(tracker("users", "delete", "ana"), code=2)
    assert tracker("users", "delete", "ana", "--yes").returncode == 0
    assert not signed_in(client)
    assert User.get_or_none(User.username == "ana") is None
    assert "no user named 'ana'" in one_line_error(tracker("users", "delete", "ana", "--yes"))


def test_a_password_from_a_script(tmp_path: Path) -> None:
    """No terminal to prompt on: stdin gives it (once, or twice as at the prompt)."""
    run = tracker_with(make_config(f"sqlite:///{tmp_path / 'x.sqlite3'}"), tmp_path)
    assert "no password" in one_line_error(run("users", "create", "zed", input_text=""), 2)
    differ = run("users", "create", "zed", input_text=f"{PASSWORD}\n{PASSWORD}!\n")
    assert "differ" in one_line_error(differ, 2)
    assert "GetPassWarning" not in differ.stderr
    assert run("users", "create", "zed", input_text=f"{PASSWORD}\n").returncode == 0
    changed = run("users", "set-password", "zed", input_text="another long password\n")
    assert changed.returncode == 0 and "sessions have ended" in changed.stdout


@pytest.mark.parametrize(("args", "option"), [
    (["callbacks", "replay", "--since", "nonsense"], "--since"),
    (["callbacks", "replay", "--since", ""], "--since"),
    (["callbacks", "replay", "--until", "yesterday"], "--until"),
    (["callbacks", "replay", "--verdict", "bogus"], "--verdict"),
    (["callbacks", "replay", "--id", "0"], "--id"),
    (["callbacks", "replay", "--id", "x"], "--id"),
    (["callbacks", "replay", "--since", "2026-02-01", "--until", "2026-01-01"], "--since"),
    (["send", "--to", "12", "--text", "hi"], "--to"),
    (["send", "--to", "+15551234888", "--text", "hi", "--send-at", "tomorrow"], "--send-at"),
    (["send", "--to", "+15551234888", "--text", "hi", "--provider", "nosuch"], "--provider"),
    (["serve", "--port", "0"], "--port"),
    (["serve", "--workers", "0"], "--workers"),
    (["users", "create", "x", "--role", "root"], "--role"),
])
def test_invalid_values_exit_2_naming_the_option(tracker: Tracker, args: list[str],
                                                 option: str) -> None:
    """Never a traceback, and never the command run on everything instead."""
    with_callback = Callback.create(provider="fake", method="POST", path="/x", body=b"{}",
                                    verdict="invalid")
    done = tracker(*args, "--dry-run") if args[0] == "callbacks" else tracker(*args)
    assert f"'{option}'" in one_line_error(done, code=2)
    assert done.stdout == ""  # nothing replayed, nothing sent
    assert Callback.get_by_id(with_callback.id).verdict == "invalid"


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    run = tracker_with(make_config("postgresql://nobody@127.0.0.1:9/nowhere"), tmp_path)
    assert one_line_error(run("users", "list")).startswith("Error: database: ")


def test_one_provider_configured_is_the_default(database_url: str, tmp_path: Path) -> None:
    """No default_provider: sends that name no provider go to the only one configured."""
    config = make_config(database_url, providers={"skycore": dict(SKYCORE)})
    sent = tracker_with(config, tmp_path)("send", "--to", "+15551234888", "--text", "hi")
    assert sent.returncode == 0, sent.stderr
    message = json.loads(sent.stdout)
    assert (message["provider"], message["status"]) == ("skycore", "queued")
    assert message["events"][0]["source"] == "cli"


def commands(group: click.Group, prefix: str = "tracker") -> Iterator[tuple[str, click.Command]]:
    """Every command under `group`, with its full name."""
    for name, command in group.commands.items():
        yield f"{prefix} {name}", command
        if isinstance(command, click.Group):
            yield from commands(command, f"{prefix} {name}")


def test_every_option_has_help() -> None:
    missing = [f"{name} {param.opts[0]}" for name, command in commands(cli.main)
               for param in command.params
               if isinstance(param, click.Option) and not (param.help or "").strip()]
    assert not missing, f"options without help text: {missing}"


def test_help_lists_each_command_s_summary_whole(tmp_path: Path) -> None:
    """Click would cut a summary to the terminal's width, ending it in "..."."""
    run = tracker_with(make_config(f"sqlite:///{tmp_path / 'x.sqlite3'}"), tmp_path)
    for name, group in [("tracker", cli.main), *((n, c) for n, c in commands(cli.main)
                                                 if isinstance(c, click.Group))]:
        shown = run(*name.split()[1:], "--help", COLUMNS="60")
        assert shown.returncode == 0, shown.stderr
        listed = shown.stdout.partition("Commands:")[2]
        assert "..." not in listed, listed
        for sub in group.commands.values():  # compared without spaces: the list wraps lines
            summary = "".join((sub.help or "").partition("\n\n")[0].split())
            assert summary and summary in "".join(listed.split()), (name, sub.name, listed)


def test_worker_help_names_every_job(tmp_path: Path) -> None:
    reports = {"nightly": {"schedule": "daily"}}  # the reports job exists only with reports
    with running(make_config(f"sqlite:///{tmp_path / 'x.sqlite3'}", reports=reports)) as app:
        jobs = [job.id for job in Worker(app).scheduler.get_jobs() if job.id != "lease"]
    shown = tracker_with(make_config(f"sqlite:///{tmp_path / 'x.sqlite3'}"), tmp_path)(
        "worker", "--help")
    assert shown.returncode == 0 and "dispatcher" in shown.stdout
    listed = set(re.findall(r"^ {4}(\w+) ", shown.stdout, re.MULTILINE))
    assert set(jobs) <= listed and jobs, (jobs, shown.stdout)


def test_a_migrated_database_refuses_a_second_live_key_of_one_name(app: Flask) -> None:
    """The unique index itself (m0010), not only the command's check: two processes creating
    the same name at once cannot both succeed."""
    ApiKey.create(name="ci", key_hash="a" * 64, prefix="dlr_aaaaaaaa")
    with pytest.raises(Exception, match=r"(?i)unique"):
        ApiKey.create(name="ci", key_hash="b" * 64, prefix="dlr_bbbbbbbb")
    ApiKey.update(revoked_at=dt.datetime(2026, 1, 1)).execute()
    ApiKey.create(name="ci", key_hash="c" * 64, prefix="dlr_cccccccc")
