"""The `tracker` command: serve, worker, db, keys, users, providers, send, callbacks, export."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click
from flask import Flask

from . import __version__, cli_webhooks, create_app, logmask, metrics, shipped
from .db import UNAVAILABLE_ERRORS
from .errors import ConfigError
from .settings import DEFAULTS


def _summary(command: click.Command) -> str:
    """A command's line in its group's list: its first paragraph, whole."""
    text = command.short_help or (command.help or "").partition("\n\n")[0]
    return " ".join(text.split())


class _Group(click.Group):
    group_class = type  # subgroups are _Group too

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        # A group made in another module (cli_webhooks) lists its commands itself: give them
        # their whole summary as short_help, which click shows as it is.
        for sub in getattr(cmd, "commands", {}).values():
            sub.short_help = sub.short_help or _summary(sub)
        super().add_command(cmd, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Click cuts each summary to the terminal's width and ends it with "...": a summary
        # that stops mid-sentence says less than none. Here the list wraps it instead.
        listed = [(name, command) for name in self.list_commands(ctx)
                  if (command := self.get_command(ctx, name)) is not None and not command.hidden]
        if listed:
            with formatter.section("Commands"):
                formatter.write_dl([(name, _summary(command)) for name, command in listed])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UNAVAILABLE_ERRORS as exc:  # one line, not a traceback through peewee
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise click.ClickException(f"database: {first}") from exc


def _app() -> Flask:
    try:
        return create_app()
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from exc


def _upgrade(app: Flask) -> None:
    from . import migrations
    from .db import db

    with app.app_context(), db.connection_context():
        migrations.upgrade(db.obj, log=lambda line: click.echo(line, err=True))


@contextlib.contextmanager
def _database() -> Iterator[Flask]:
    """The app, its schema up to date, and a connection for the length of a command."""
    from .db import db

    app = _app()
    _upgrade(app)
    with app.app_context(), db.connection_context():
        yield app


def _setup_logging(app: Flask) -> None:
    logging.basicConfig(level=app.config["TRACKER"]["log_level"].upper(),
                        format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    # APScheduler logs every run at INFO; our jobs log what they did themselves.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # httpx logs every request with its whole URL at INFO: a line per message sent, and
    # provider credentials in query strings (Mobizon's apiKey) would reach the log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # peewee logs every statement with its parameters at DEBUG: phone numbers, message texts.
    logging.getLogger("peewee").setLevel(logging.INFO)
    logmask.install()  # and whatever else logs a URL: callback tokens, keys masked


class _Moment(click.ParamType):
    """An ISO 8601 date or time; UTC when it has no zone."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        try:
            parsed = dt.datetime.fromisoformat(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 date or time (e.g. 2026-12-01 or "
                      "2026-12-01T09:30:00Z)", param, ctx)
        return parsed.astimezone(dt.UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def _when(value: dt.datetime | None) -> str:
    """A stored (naive UTC) time for a person: minutes are enough."""
    return value.strftime("%Y-%m-%d %H:%M") if value else "never"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns aligned to their widest cell, the last one left ragged."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows,
                                                                        strict=True)]
    for row in (headers, *rows):
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        click.echo("  ".join(cells).rstrip())


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="tracker",
                      help="Show the installed version and exit.")
def main() -> None:
    """dlr-tracker: send SMS and track every delivery receipt.

    The configuration comes from the TOML file TRACKER_CONFIG names and TRACKER_* variables
    (see config/tracker.example.toml); `tracker init` writes one.
    """


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535),
              help="Port to listen on.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Web worker processes (default: the web_workers setting).")
def serve(host: str, port: int, workers: int | None) -> None:
    """Run the web app (gunicorn) and a worker together; Ctrl-C stops both.

    Applies pending migrations first and prints the instance folder.
    """
    app = _app()
    _setup_logging(app)
    _upgrade(app)
    cfg = app.config["TRACKER"]
    env = dict(os.environ)
    if cfg["public_base_url"] == DEFAULTS["public_base_url"]:
        env["TRACKER_PUBLIC_BASE_URL"] = f"http://{host}:{port}"
    env["TRACKER_WEB_WORKERS"] = str(workers or cfg["web_workers"])
    env["TRACKER_WEB_THREADS"] = str(cfg["web_threads"])
    env["TRACKER_INSTANCE_DIR"] = cfg["instance_dir"]  # the same folder for every child
    # Every child's counters, summed at each scrape of /metrics; last run's are gone.
    env[metrics.MULTIPROC_ENV] = metrics.fresh_multiprocess_dir(cfg["instance_dir"])
    web = subprocess.Popen([  # noqa: S603 - our own interpreter and arguments
        sys.executable, "-m", "gunicorn", "--config", "python:tracker.gunicorn_conf",
        "--bind", f"{host}:{port}", "tracker.wsgi:app",
    ], env=env)
    worker = subprocess.Popen([sys.executable, "-m", "tracker.cli", "worker"], env=env)
    click.echo(f"dlr-tracker {__version__} on http://{host}:{port} (web pid {web.pid}, worker"
               f" pid {worker.pid}); instance folder {cfg['instance_dir']}", err=True)
    sys.exit(_supervise([web, worker]))


@main.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing tracker.toml.")
def init(directory: Path, force: bool) -> None:
    """Write DIRECTORY/tracker.toml (default: here) and say what to run next.

    The file is the commented example configuration, its instance folder (database, secret
    key, exports) set to DIRECTORY/instance.
    """
    directory = directory.expanduser().resolve()
    target = directory / "tracker.toml"
    if target.exists() and not force:
        raise click.ClickException(f"{target} exists; --force overwrites it")
    example = (shipped("config") / "tracker.example.toml").read_text(encoding="utf-8")
    instance = directory / "instance"
    header = (f"# Written by `tracker init` from the example shipped with dlr-tracker "
              f"{__version__}.\n"
              f"# The database (SQLite by default), the secret key and exports live here:\n"
              f"instance_dir = {json.dumps(str(instance))}\n\n")
    directory.mkdir(parents=True, exist_ok=True)
    target.write_text(header + example, encoding="utf-8")
    click.echo(f"wrote {target}")
    click.echo("next:")
    click.echo(f"  TRACKER_CONFIG={shlex.quote(str(target))} tracker users create admin"
               " --role admin")
    click.echo(f"  TRACKER_CONFIG={shlex.quote(str(target))} tracker serve")


def _supervise(children: list[subprocess.Popen[bytes]]) -> int:
    """Wait until a signal or a child exits, then stop every child; return an exit code."""
    stopping = False

    def _stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stopping and all(c.poll() is None for c in children):
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return 0 if stopping else 1


@main.group()
def providers() -> None:
    """Check the configured providers and register our receipt URL with them."""


@providers.command("check")
@click.argument("slug", required=False)
def providers_check(slug: str | None) -> None:
    """Ask each configured provider (or SLUG) whether our host, key and sender are accepted.

    Each is asked through its cheapest authenticated call; nothing is sent. Exits 1 if
    anything is refused.
    """
    app = _app()
    configured = app.extensions["providers"]
    if slug is not None and slug not in configured:
        raise click.UsageError(f"{slug!r} is not configured; configured: "
                               f"{', '.join(sorted(configured))}")
    refused = False
    for name, provider in sorted(configured.items()):
        if slug is not None and name != slug:
            continue
        for finding in provider.check():
            mark = {True: "ok", False: "REFUSED", None: "-"}[finding.ok]
            refused = refused or finding.ok is False
            click.echo(f"{name:<10} {finding.subject:<7} {mark:<8} {finding.detail}")
    sys.exit(1 if refused else 0)


@providers.command("setup")
@click.argument("slug")
def providers_setup(slug: str) -> None:
    """Register our receipt URL with provider SLUG, if it has an API for it (mobivate).

    For the others it says where to set the URL by hand.
    """
    app = _app()
    provider = app.extensions["providers"].get(slug)
    if provider is None:
        raise click.UsageError(f"{slug!r} is not configured")
    setup = getattr(provider, "setup", None)
    if setup is None:
        url = provider.callback_url(None)
        raise click.ClickException(
            f"{slug} has no API to register a receipt URL; set it in its control panel"
            + (f" to {url}" if url else "") + " (see README, Providers)")
    from .providers.base import SendError

    try:
        url = setup()
    except SendError as exc:
        raise click.ClickException(f"{slug}: {exc.detail}") from exc
    click.echo(f"{slug}: receipts now go to {logmask.mask(url)}")


@main.command()
def worker() -> None:
    """Send messages, write exports, deliver webhooks and run the periodic jobs, until stopped.

    Every worker runs the dispatcher (sends due messages), the export writer (exports started
    from the messages page) and the webhook sender (status webhooks to client applications);
    any number of workers share that work. The periodic jobs run on the one worker holding
    the job lease; the others stand by and take over when it stops:

    \b
      rematch_orphans    apply waiting receipts whose message has got its provider id
                         (every orphan_rematch_seconds)
      poll               ask providers with a status API about messages not final yet
                         (every poll_interval_seconds)
      expire             mark messages past their validity as expired
                         (every expire_interval_seconds)
      roll_up            refresh the overview's hourly and daily figures
                         (every rollup_interval_seconds)
      clean_exports      delete exports started from the page, a day after (every 10 min)
      webhook_endpoints  disable webhook endpoints failing for days (hourly)
      reports            write the scheduled report files ([reports.*]; checked every minute)
      retention          delete callbacks and final messages past [retention_days], in
                         small batches (every 10 min)

    SIGTERM or Ctrl-C: the sends and jobs under way finish, and the lease is given up.
    """
    from .scheduler import Worker

    app = _app()
    _setup_logging(app)
    _upgrade(app)
    runner = Worker(app)

    def _stop(_signum: int, _frame: Any) -> None:
        runner.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    runner.run()


@main.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations (serve, worker and the other commands do it too)."""
    _upgrade(_app())


def _confirm(question: str, yes: bool) -> None:
    """Ask before what cannot be undone; a script says --yes (it has no one to ask)."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.UsageError("--yes is required when not run from a terminal")
    click.confirm(question, abort=True)


def _account_error(exc: ValueError) -> click.ClickException:
    return click.ClickException(str(exc))


@main.group()
def keys() -> None:
    """API keys: create, list, revoke."""


@keys.command("create")
@click.argument("name")
def keys_create(name: str) -> None:
    """Create an API key named NAME; it is printed once, alone on the last line.

    Live key names are unique: to replace a key, revoke it first.
    """
    from . import accounts

    with _database():
        try:
            key = accounts.create_api_key(name)
        except accounts.AccountError as exc:
            raise _account_error(exc) from exc
    click.echo(f"API key for {name!r} (store it now; it is not shown again):")
    click.echo(key)


@keys.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
def keys_list(include_revoked: bool) -> None:
    """List API keys: name, prefix, created and last used (UTC, to the minute).

    "last used" is noted at most once a minute per key.
    """
    from . import accounts

    with _database():
        records = accounts.api_keys(include_revoked=include_revoked)
    headers = ["NAME", "PREFIX", "CREATED", "LAST USED"] + (["REVOKED"] if include_revoked
                                                            else [])
    rows = [[k.name, k.prefix, _when(k.created_at), _when(k.last_used_at)]
            + ([_when(k.revoked_at) if k.revoked_at else "-"] if include_revoked else [])
            for k in records]
    if not rows:
        click.echo("no API keys" if include_revoked else "no live API keys", err=True)
        return
    _table(headers, rows)


@keys.command("revoke")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def keys_revoke(name: str, yes: bool) -> None:
    """Revoke the live API key NAME: requests with it are refused from now on."""
    from . import accounts

    _confirm(f"Revoke API key {name!r}? Applications using it stop working", yes)
    with _database():
        try:
            record = accounts.revoke_api_key(name)
        except accounts.AccountError as exc:
            raise _account_error(exc) from exc
    click.echo(f"revoked API key {name!r} ({record.prefix}…)")


@main.group()
def users() -> None:
    """Dashboard accounts: create, list, set-password, disable, enable, delete."""


_NEW_LOGIN_HELP = ("The password, at least 10 characters. Default: TRACKER_NEW_PASSWORD, else "
                  "prompted twice (an option is visible to other users of this machine).")


def _password(given: str | None) -> str:
    if given is not None:
        return given
    if sys.stdin.isatty():
        return click.prompt("Password", hide_input=True, confirmation_prompt=True)
    # A script: the password on stdin, once or twice (as typed at the prompt), read without
    # getpass, which would warn that it cannot hide what it reads.
    lines = sys.stdin.read().splitlines()[:2]
    if not lines or not lines[0]:
        raise click.UsageError("no password: set TRACKER_NEW_PASSWORD or give it on stdin")
    if len(lines) == 2 and lines[1] != lines[0]:
        raise click.UsageError("the two passwords given on stdin differ")
    return lines[0]


@users.command("create")
@click.argument("username")
@click.option("--role", type=click.Choice(["viewer", "admin"]), default="viewer",
              show_default=True, help="viewer: reads; admin: also cancels, resends and "
              "replays callbacks, and sees masked numbers whole.")
@click.option("--password", envvar="TRACKER_NEW_PASSWORD", help=_NEW_LOGIN_HELP)
def users_create(username: str, role: str, password: str | None) -> None:
    """Create the dashboard account USERNAME."""
    from . import accounts
    from .models import User

    with _database():
        if User.get_or_none(User.username == username) is not None:
            raise click.ClickException(f"a user named {username!r} exists")  # before prompting
        try:
            accounts.create_user(username, _password(password), role)
        except accounts.AccountError as exc:
            raise _account_error(exc) from exc
    click.echo(f"created {role} {username!r}")


@users.command("list")
def users_list() -> None:
    """List dashboard accounts: name, role, state, created and last login (UTC)."""
    from . import accounts

    with _database():
        rows = [[u.username, u.role, "disabled" if u.disabled_at else "active",
                 _when(u.created_at), _when(u.last_login_at)] for u in accounts.users()]
    if not rows:
        click.echo("no users; tracker users create NAME --role admin adds one", err=True)
        return
    _table(["USERNAME", "ROLE", "STATE", "CREATED", "LAST LOGIN"], rows)


@users.command("set-password")
@click.argument("username")
@click.option("--password", envvar="TRACKER_NEW_PASSWORD", help=_NEW_LOGIN_HELP)
def users_set_password(username: str, password: str | None) -> None:
    """Give USERNAME a new password; their sessions everywhere end."""
    from . import accounts
    from .models import User

    with _database():
        if User.get_or_none(User.username == username) is None:
            raise click.ClickException(f"no user named {username!r}")  # before prompting
        try:
            accounts.set_password(username, _password(password))
        except accounts.AccountError as exc:
            raise _account_error(exc) from exc
    click.echo(f"new password set for {username!r}; their sessions have ended")


@users.command("disable")
@click.argument("username")
def users_disable(username: str) -> None:
    """Stop USERNAME from logging in and end their sessions now; `enable` undoes it."""
    from . import accounts

    with _database():
        try:
            changed = accounts.disable_user(username)
        except accounts.AccountError as exc:
            raise _account_error(exc) from exc
    click.echo(f"disabled {username!r}; their sessions have ended" if changed
               else f"{username!r} was already disabled")


@users.command("enable")
@click.argument("username")
def users_enable(username: str) -> None:
    """Let a disabled USERNAME log in again."""
    from . import accounts

    with _database():
        try:
            changed = accounts.enable_user(username)
        except accounts.AccountError as exc:
            raise _account_error(exc) from exc
    click.echo(f"enabled {username!r}" if changed else f"{username!r} was not disabled")


@users.command("delete")
@click.argument("username")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def users_delete(username: str, yes: bool) -> None:
    """Delete the account USERNAME; their sessions end. `disable` keeps it instead."""
    from . import accounts

    _confirm(f"Delete user {username!r}?", yes)
    with _database():
        try:
            accounts.delete_user(username)
        except accounts.AccountError as exc:
            raise _account_error(exc) from exc
    click.echo(f"deleted {username!r}")


def _option_of(field: str) -> str:
    """The option of an API field sending.validate names: client_ref -> '--client-ref'."""
    return f"'--{field.replace('_', '-')}'"


@main.command()
@click.option("--to", required=True, help="Phone number, any common format.")
@click.option("--text", required=True, help="The message text (at most 1600 characters).")
@click.option("--from", "sender", help="Sender name or number (default: the provider's).")
@click.option("--provider", help="Send through this provider only (default: routes, then "
              "default_provider).")
@click.option("--client-ref", help="Your own tag for the message (at most 64 characters).")
@click.option("--send-at", help="Send later: ISO 8601 with a time zone, e.g. "
              "2026-01-01T09:00:00Z.")
@click.option("--status-callback", help="URL that receives this message's status changes "
              "(needs --key: that key's webhook secret signs them).")
@click.option("--key", "key_name", help="Send as this API key: its webhook endpoints hear "
              "of the message.")
def send(to: str, text: str, sender: str | None, provider: str | None,
         client_ref: str | None, send_at: str | None, status_callback: str | None,
         key_name: str | None) -> None:
    """Queue one SMS, as POST /api/v1/messages does; prints the message as JSON."""
    from . import reporting, sending

    data = {"to": to, "text": text, "from": sender, "provider": provider,
            "client_ref": client_ref, "send_at": send_at, "status_callback": status_callback}
    if status_callback and not key_name:
        raise click.UsageError("--status-callback needs --key NAME: its secret signs them")
    with _database() as app:
        cfg = app.config["TRACKER"]
        key_id = cli_webhooks.find_key(key_name).id if key_name else None
        try:
            new = sending.validate(data, providers=app.extensions["providers"],
                                   default_provider=cfg["default_provider"], routes=cfg["routes"],
                                   default_region=cfg["default_region"], api_key_id=key_id)
        except sending.SendRejected as exc:
            raise click.BadParameter(exc.message, param_hint=_option_of(exc.field)) from exc
        message = sending.enqueue(new, source="cli")
        click.echo(json.dumps(reporting.message_detail(message.id), indent=2))


@main.command()
@click.argument("ident")
def cancel(ident: str) -> None:
    """Cancel a queued or scheduled message (IDENT: id or reference) before it is sent."""
    from . import reporting, sending

    with _database():
        message_id = reporting.resolve_message_id(ident)
        if message_id is None:
            raise click.ClickException(f"no message {ident!r}")
        try:
            sending.cancel(message_id, source="cli")
        except sending.NotCancelable as exc:
            raise click.ClickException(f"message {ident} is {exc.status}; only a queued or "
                                       "scheduled message not being sent can be canceled"
                                       ) from exc
        click.echo(f"canceled message {message_id}")


@main.group()
def callbacks() -> None:
    """Stored provider callbacks: replay them through the current parser."""


class _Progress:
    """"done of total" on the terminal's last line, redrawn below the lines printed above it;
    nothing at all when stdout is not a terminal (a pipe or a file gets the lines alone)."""

    def __init__(self, total: int, noun: str, enabled: bool) -> None:
        self.total, self.noun, self.enabled = total, noun, enabled and total > 0
        self.done = 0
        self.started = time.monotonic()

    def echo(self, line: str) -> None:
        """Print a line above the progress line."""
        if self.enabled:
            click.echo("\r\x1b[K", nl=False)
        click.echo(line)

    def advance(self) -> None:
        """One more done: redraw."""
        self.done += 1
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = f", about {(self.total - self.done) / rate:.0f} s left" if rate else ""
        click.echo(f"\r\x1b[K{self.done:,} of {self.total:,} {self.noun} "
                   f"({100 * self.done // self.total} %), {rate:,.0f}/s{left}", nl=False)

    def close(self) -> None:
        """Leave the last progress line in place, ending it."""
        if self.enabled and self.done:
            click.echo("")


def _verdicts() -> list[str]:
    from .correlation import Verdict

    return [v.value for v in Verdict if v is not Verdict.PENDING]  # pending: only mid-commit


@callbacks.command("replay")
@click.option("--id", "ids", type=click.IntRange(min=1), multiple=True,
              help="Callback id (repeatable).")
@click.option("--since", type=_Moment(), help="Received at or after this (ISO 8601; UTC when "
              "no zone).")
@click.option("--until", type=_Moment(), help="Received before this (ISO 8601; UTC when no "
              "zone).")
@click.option("--verdict", type=click.Choice(_verdicts(), case_sensitive=False),
              help="Only callbacks with this verdict.")
@click.option("--dry-run", is_flag=True, help="Print what would change; write nothing.")
def callbacks_replay(ids: tuple[int, ...], since: dt.datetime | None,
                     until: dt.datetime | None, verdict: str | None, dry_run: bool) -> None:
    """Re-run stored callbacks through the current parser, oldest first.

    Prints a line per callback (old verdict -> new, and the statuses it changed); on a
    terminal, also how many of the total are done. Callbacks stored after it starts are
    left to the live path.
    """
    from . import replay

    if not (ids or since or until or verdict):
        raise click.UsageError("say which callbacks: --id, --since/--until or --verdict")
    if since and until and since >= until:
        raise click.BadParameter("must be before --until", param_hint="'--since'")
    selection = replay.Selection(ids, since, until, verdict and verdict.lower())
    with _database() as app:
        selection = selection.frozen()
        progress = _Progress(selection.count(), "callbacks", sys.stdout.isatty())
        for callback in selection.callbacks():
            outcome = replay.replay(callback, app.extensions["providers"], dry_run=dry_run)
            progress.echo(outcome.line())
            progress.advance()
        progress.close()
    click.echo(f"{progress.done} callback(s) "
               f"{'checked (dry run)' if dry_run else 'replayed'}", err=True)


def _export_formats() -> list[str]:
    from .exports import FORMATS

    return list(FORMATS)


def _export_formats_help() -> str:
    from .exports import FORMATS

    return "; ".join(f"{f.name}: {f.help}" for f in FORMATS.values()) + "."


class _ExportProgress:
    """Rows written and the rate (and, with the total, percent and time left) on the
    terminal's last line: drawn at the first batch, then redrawn at most every REDRAW seconds;
    silent when stderr is not a terminal, so a cron job's mail or a pipe gets the summary line
    alone."""

    REDRAW = 0.2

    def __init__(self, total: int | None, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.started = time.monotonic()
        self.drawn = self.started - self.REDRAW  # the first batch shows at once, however fast
        self.rows = 0

    def __call__(self, rows: int) -> None:
        self.rows = rows
        now = time.monotonic()
        if self.enabled and now - self.drawn >= self.REDRAW:
            self.drawn = now
            click.echo(f"\r\x1b[K{self.line(now)}", nl=False, err=True)

    def line(self, now: float) -> str:
        """"12,345 of 100,000 rows (12 %), 45,000 rows/s, about 2 s left"."""
        elapsed = now - self.started
        rate = self.rows / elapsed if elapsed > 0 else 0.0
        if not self.total:
            return f"{self.rows:,} rows written, {rate:,.0f} rows/s"
        left = f", about {(self.total - self.rows) / rate:.0f} s left" if rate else ""
        return (f"{self.rows:,} of {self.total:,} rows ({min(100, 100 * self.rows // self.total)}"
                f" %), {rate:,.0f} rows/s{left}")

    def close(self) -> None:
        """Clear the progress line (the summary follows)."""
        if self.enabled and self.rows:
            click.echo("\r\x1b[K", nl=False, err=True)


@main.command("export")
@click.option("--format", "fmt", type=click.Choice(_export_formats()), default="csv",
              show_default=True, help=_export_formats_help())
@click.option("--status", default="", help="Only this status (as the dashboard filter).")
@click.option("--provider", default="", help="Only this provider.")
@click.option("--q", default="", help="Phone number in any format, reference, provider id or "
              "client_ref.")
@click.option("--error-code", default="", help="Only this error code.")
@click.option("--created-from", default="", help="Created on or after this UTC day (YYYY-MM-DD).")
@click.option("--created-to", default="", help="Created on or before this UTC day (YYYY-MM-DD).")
@click.option("--mask-phones", is_flag=True, help="Mask phone numbers (to, from, and numbers "
              "in the text) as the dashboard does for viewers.")
@click.option("--output", required=True, type=click.Path(dir_okay=False),
              help="File to write; it appears only once complete.")
def export(fmt: str, mask_phones: bool, output: str, **filters: str) -> None:
    """Export the messages a dashboard filter shows, every page, newest first, as the list
    shows them (tracker.exports). On a terminal, rows written and the rate are shown as it
    goes."""
    from . import exports, reporting
    from .db import db as database

    problems = reporting.filter_problems(filters)
    if problems:  # never "all rows" for a filter that could not be read
        raise click.UsageError("; ".join(_option_named(p) for p in problems))
    app = _app()
    flt = reporting.MessageFilter.from_args(filters)  # parsed as the dashboard parses its own
    region = app.config["TRACKER"]["default_region"]
    started = time.monotonic()
    with app.app_context(), database.connection_context():
        top = exports.top_id()
        terminal = sys.stderr.isatty()
        progress = _ExportProgress(exports.expected_rows(flt, region, top) if terminal else None,
                                   terminal)
        try:
            count = exports.export(fmt, flt, Path(output), default_region=region,
                                   masked=mask_phones, progress=progress, top=top)
        finally:
            progress.close()
    seconds = time.monotonic() - started
    click.echo(f"{count:,} message(s) written to {output} in {seconds:.1f} s"
               f" ({count / seconds if seconds else 0:,.0f} rows/s)", err=True)


def _option_named(problem: str) -> str:
    """A filter problem in the words of the command line: "created from: ..." ->
    "--created-from: ..."."""
    for words, option in (("created from", "--created-from"), ("created to", "--created-to"),
                          ("status:", "--status:"), ("provider:", "--provider:")):
        problem = problem.replace(words, option)
    return problem


cli_webhooks.register(main, keys)  # tracker webhooks …, tracker keys webhook-secret


if __name__ == "__main__":
    main()
