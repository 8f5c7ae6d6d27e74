"""`tracker callbacks replay`: stored callbacks through the current parser, dry run first."""

from __future__ import annotations

import datetime as dt
import os
import pty
import subprocess

from conftest import make_config
from servers import tracker_command, write_config

from tracker import replay, sending
from tracker.db import write_tx
from tracker.models import Callback, Event, Message
from tracker.providers.base import SendResult

BODY = (b"<POSTBACK><ORIGIN>SMS_MT</ORIGIN><CODE>N202</CODE><STATUS>Message Sent/Delivered"
        b"</STATUS><TRACKINGID>R1</TRACKINGID><TIMESTAMP>2013-11-05T05:41:15-05:00</TIMESTAMP>"
        b"</POSTBACK>")


def stored_as_invalid(body: bytes) -> Callback:
    """A callback an older parser could not read (as if stored before a parser fix)."""
    with write_tx():
        return Callback.create(provider="skycore", method="POST", path="/callbacks/skycore/***",
                               headers='[["Content-Type", "text/xml"]]', body=body,
                               verdict="invalid", detail="old parser: unknown format")


def test_dry_run_then_replay(app) -> None:
    message = sending.enqueue(sending.NewMessage(to="+15551234888", text="hi",
                                                 provider="skycore"), source="test")
    sending.record_accepted(message, SendResult("R1"))
    callback = stored_as_invalid(BODY)
    providers = app.extensions["providers"]

    dry = replay.replay(Callback.get_by_id(callback.id), providers, dry_run=True)
    assert (dry.old_verdict, dry.new_verdict) == ("invalid", "applied")
    assert dry.changes == [(message.reference, "accepted", "delivered")]
    assert "dry run" in dry.line()
    assert Message.get_by_id(message.id).status == "accepted"  # nothing written
    assert Callback.get_by_id(callback.id).verdict == "invalid"

    done = replay.replay(Callback.get_by_id(callback.id), providers, dry_run=False)
    assert done.changes == [(message.reference, "accepted", "delivered")]
    assert Message.get_by_id(message.id).status == "delivered"
    event = Event.get((Event.message == message.id) & (Event.kind == "receipt"))
    assert event.source == "replay" and event.callback_id == callback.id
    assert Callback.get_by_id(callback.id).verdict == "applied"

    again = replay.replay(Callback.get_by_id(callback.id), providers, dry_run=False)
    assert again.new_verdict == "applied" and again.changes == []  # idempotent


def test_selection_by_id_time_and_verdict(app) -> None:
    old = stored_as_invalid(BODY)
    Callback.update(received_at=dt.datetime(2020, 1, 1)).where(Callback.id == old.id).execute()
    new = stored_as_invalid(BODY)
    assert [c.id for c in replay.select_callbacks(ids=[new.id])] == [new.id]
    assert [c.id for c in replay.select_callbacks(since=dt.datetime(2021, 1, 1))] == [new.id]
    assert [c.id for c in replay.select_callbacks(until=dt.datetime(2021, 1, 1))] == [old.id]
    assert [c.id for c in replay.select_callbacks(verdict="invalid", batch=1)] == [old.id, new.id]
    assert list(replay.select_callbacks(verdict="applied")) == []


def test_cli(app, database_url, tmp_path) -> None:
    """`tracker callbacks replay` as a user runs it: its own process, the configuration read
    from the file TRACKER_CONFIG names (not the test's app)."""
    config = write_config(tmp_path / "tracker.toml", make_config(database_url))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")},
           "TRACKER_CONFIG": str(config)}

    def tracker(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*tracker_command(), "callbacks", "replay", *args], env=env,
                              capture_output=True, text=True, timeout=120)

    callback = stored_as_invalid(BODY)  # no message R1: the replay makes it an orphan
    dry = tracker("--verdict", "invalid", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"callback #{callback.id} skycore: invalid -> orphan" in dry.stdout
    assert Callback.get_by_id(callback.id).verdict == "invalid"
    real = tracker("--id", str(callback.id))
    assert real.returncode == 0, real.stderr
    assert Callback.get_by_id(callback.id).verdict == "orphan"
    assert tracker().returncode == 2  # says which


def test_replay_reports_a_row_that_fails_again_and_goes_on(app) -> None:
    """A row whose replay fails again (here: its stored headers are not the JSON list they
    should be, as after a bad manual edit) is reported and left as it was, and the rows after
    it are still replayed."""
    message = sending.enqueue(sending.NewMessage(to="+15551234888", text="hi",
                                                 provider="skycore"), source="test")
    sending.record_accepted(message, SendResult("R1"))
    with write_tx():
        bad = Callback.create(provider="fake", method="POST", path="/callbacks/fake/***",
                              headers='[["Content-Type", "application/json"]',
                              body=b'{"id": "x"}', verdict="error", detail="processing failed")
    good = stored_as_invalid(BODY)
    results = [replay.replay(c, app.extensions["providers"], dry_run=False)
               for c in replay.select_callbacks()]
    assert [(r.callback_id, r.new_verdict) for r in results] == [
        (bad.id, "error"), (good.id, "applied")]
    assert "failed again" in results[0].line()
    assert Callback.get_by_id(bad.id).verdict == "error"
    assert Message.get_by_id(message.id).status == "delivered"


def read_terminal(master: int) -> str:
    """Everything written to a pseudo-terminal until its other end closed."""
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the process exited and its end is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_cli_shows_progress_on_a_terminal_only(app, database_url, tmp_path) -> None:
    """On a terminal: "done of total" redrawn below the lines; to a pipe: the lines alone."""
    config = write_config(tmp_path / "tracker.toml", make_config(database_url))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")},
           "TRACKER_CONFIG": str(config)}
    callbacks = [stored_as_invalid(BODY) for _ in range(3)]
    command = [*tracker_command(), "callbacks", "replay", "--verdict", "invalid", "--dry-run"]

    master, slave = pty.openpty()
    with subprocess.Popen(command, env=env, stdout=slave, stderr=subprocess.PIPE) as proc:
        os.close(slave)
        shown = read_terminal(master)
        assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    os.close(master)
    assert "3 of 3 callbacks (100 %)" in shown, shown
    assert "1 of 3 callbacks" in shown and "\x1b[K" in shown
    for callback in callbacks:
        assert f"callback #{callback.id} skycore: invalid -> orphan" in shown

    piped = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.splitlines() == [
        f"callback #{c.id} skycore: invalid -> orphan (dry run: nothing written)"
        for c in callbacks]
    assert "3 callback(s) checked (dry run)" in piped.stderr and " of 3" not in piped.stderr


def test_a_replay_covers_what_was_stored_when_it_started(app) -> None:
    """Its total is known up front, and callbacks arriving meanwhile are the live path's."""
    first, second = stored_as_invalid(BODY), stored_as_invalid(BODY)
    selection = replay.Selection(verdict="invalid").frozen()
    assert selection.count() == 2
    stored_as_invalid(BODY)  # arrives during the replay
    assert [c.id for c in selection.callbacks(batch=1)] == [first.id, second.id]
    assert replay.Selection(ids=(second.id,), verdict="invalid").frozen().count() == 1
