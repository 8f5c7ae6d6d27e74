"""The `tracker` command: serve, worker, db, keys, users, providers, send, callbacks."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
from flask import Flask

from . import __version__, cli_webhooks, create_app, logmask, metrics, shipped
from .errors import ConfigError
from .settings import DEFAULTS


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


@click.group()
@click.version_option(__version__, prog_name="tracker")
def main() -> None:
    """dlr-tracker: send SMS and track every delivery receipt."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", type=int, help="Web worker processes (default: web_workers).")
def serve(host: str, port: int, workers: int | None) -> None:
    """Run the web app (gunicorn) and the worker together; Ctrl-C stops both."""
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
    """Write DIRECTORY/tracker.toml (default: here), the commented example configuration with
    its instance folder set to DIRECTORY/instance, and say what to run next."""
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
    """The configured providers."""


@providers.command("check")
@click.argument("slug", required=False)
def providers_check(slug: str | None) -> None:
    """Ask each configured provider (or SLUG) whether our host, key and sender are accepted,
    through its cheapest authenticated call; nothing is sent. Exit 1 if anything is refused."""
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
    """Register our receipt URL with a provider that has an API for it (mobivate); the others
    say where to set it by hand."""
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
    """Run the scheduled jobs (dispatch, orphan re-match) in this process."""
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
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations."""
    _upgrade(_app())


@main.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.argument("name")
def keys_create(name: str) -> None:
    """Create an API key; the key is printed once, alone on the last line."""
    from . import accounts

    app = _app()
    _upgrade(app)
    with app.app_context():
        key = accounts.create_api_key(name)
    click.echo(f"API key for {name!r} (store it now; it is not shown again):")
    click.echo(key)


@main.group()
def users() -> None:
    """Dashboard accounts."""


@users.command("create")
@click.argument("username")
@click.option("--role", type=click.Choice(["viewer", "admin"]), default="viewer",
              show_default=True)
@click.option("--password", envvar="TRACKER_NEW_PASSWORD",
              help="Default: prompted (or TRACKER_NEW_PASSWORD).")
def users_create(username: str, role: str, password: str | None) -> None:
    """Create a dashboard account."""
    from . import accounts

    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    app = _app()
    _upgrade(app)
    with app.app_context():
        try:
            accounts.create_user(username, password, role)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"created {role} {username!r}")


@main.command()
@click.option("--to", required=True, help="Phone number, any common format.")
@click.option("--text", required=True)
@click.option("--from", "sender")
@click.option("--provider")
@click.option("--client-ref")
@click.option("--send-at", help="ISO 8601 with time zone, e.g. 2026-01-01T09:00:00Z")
def send(to: str, text: str, sender: str | None, provider: str | None,
         client_ref: str | None, send_at: str | None) -> None:
    """Queue one SMS, as POST /api/v1/messages does; prints the message as JSON."""
    import json

    from . import reporting, sending

    app = _app()
    _upgrade(app)
    cfg = app.config["TRACKER"]
    data = {"to": to, "text": text, "from": sender, "provider": provider,
            "client_ref": client_ref, "send_at": send_at}
    with app.app_context():
        try:
            new = sending.validate(data, providers=app.extensions["providers"],
                                   default_provider=cfg["default_provider"], routes=cfg["routes"],
                                   default_region=cfg["default_region"])
        except sending.SendRejected as exc:
            raise click.ClickException(f"{exc.field}: {exc.message}") from exc
        message = sending.enqueue(new, source="cli")
        click.echo(json.dumps(reporting.message_detail(message.id), indent=2))


@main.command()
@click.argument("ident")
def cancel(ident: str) -> None:
    """Cancel a queued or scheduled message (by id or reference) before it is submitted."""
    from . import reporting, sending

    app = _app()
    _upgrade(app)
    with app.app_context():
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
    """Stored provider callbacks."""


def _when(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(dt.UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


@callbacks.command("replay")
@click.option("--id", "ids", type=int, multiple=True, help="Callback id (repeatable).")
@click.option("--since", help="Received at or after (ISO 8601; UTC when no zone).")
@click.option("--until", help="Received before (ISO 8601; UTC when no zone).")
@click.option("--verdict", help="Only callbacks with this verdict (e.g. invalid, error).")
@click.option("--dry-run", is_flag=True, help="Print what would change; write nothing.")
def callbacks_replay(ids: tuple[int, ...], since: str | None, until: str | None,
                     verdict: str | None, dry_run: bool) -> None:
    """Re-run stored callbacks through the current parser."""
    from . import replay
    from .db import db as database

    if not (ids or since or until or verdict):
        raise click.UsageError("say which callbacks: --id, --since/--until or --verdict")
    app = _app()
    _upgrade(app)
    count = 0
    with app.app_context(), database.connection_context():
        for callback in replay.select_callbacks(list(ids), _when(since), _when(until), verdict):
            click.echo(replay.replay(callback, app.extensions["providers"], dry_run=dry_run).line())
            count += 1
    click.echo(f"{count} callback(s) {'checked (dry run)' if dry_run else 'replayed'}", err=True)


def _export_formats() -> list[str]:
    from .exports import FORMATS

    return list(FORMATS)


def _export_formats_help() -> str:
    from .exports import FORMATS

    return "; ".join(f"{f.name}: {f.help}" for f in FORMATS.values()) + "."


class _ExportProgress:
    """Rows written and the rate (and, with the total, percent and time left) on the
    terminal's last line, redrawn at most every REDRAW seconds; silent when stderr is not a
    terminal, so a cron job's mail or a pipe gets the summary line alone."""

    REDRAW = 0.2

    def __init__(self, total: int | None, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.started = self.drawn = time.monotonic()
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
