"""`tracker webhooks …` and `tracker keys webhook-secret`: where status webhooks go, their
signing secrets, and re-delivery (registered on the `tracker` command by tracker.cli)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import click
from flask import Flask

from . import outbox, webhooks
from .models import ApiKey, WebhookEndpoint, utcnow


@contextmanager
def _database() -> Iterator[Flask]:
    from .cli import _app, _upgrade
    from .db import db

    app = _app()
    _upgrade(app)
    with app.app_context(), db.connection_context():
        yield app


def find_key(name: str) -> ApiKey:
    """The live API key called `name`; a usage error names the problem otherwise."""
    found = list(ApiKey.select().where((ApiKey.name == name) & ApiKey.revoked_at.is_null())
                 .order_by(ApiKey.id))
    if not found:
        raise click.UsageError(f"no live API key named {name!r} (tracker keys create {name})")
    if len(found) > 1:
        raise click.UsageError(f"{len(found)} live API keys are named {name!r}; revoke the "
                               "extra ones first")
    return found[0]


@click.group("webhooks")
def webhooks_group() -> None:
    """Status webhooks: endpoints per API key, and re-delivery."""


@webhooks_group.command("add")
@click.argument("url")
@click.option("--key", "key_name", required=True, help="The API key whose messages it receives.")
@click.option("--events", default="", help="Comma-separated: " + ", ".join(webhooks.EVENTS)
              + " (default: every one).")
def add(url: str, key_name: str, events: str) -> None:
    """Send the status changes of KEY's messages to URL; prints the key's signing secret on
    the last line."""
    with _database() as app:
        key = find_key(key_name)
        try:
            endpoint = webhooks.add_endpoint(key, url, events or None)
        except webhooks.WebhookRefused as exc:
            raise click.UsageError(f"{url}: {exc}") from exc
        secret = ApiKey.get_by_id(key.id).webhook_secret
        _warn_if_unreachable(endpoint.url, app.config["TRACKER"]["webhooks_allow_private"])
    click.echo(f"endpoint {endpoint.id}: {endpoint.url} receives "
               f"{(endpoint.events or 'every event').replace(',', ', ')} of key {key_name!r}")
    click.echo("signing secret (verify the webhook-signature header with it):")
    click.echo(secret)


def _warn_if_unreachable(url: str, allow_private: bool) -> None:
    """Say now what each try would say later: the worker refuses private addresses."""
    from urllib.parse import urlsplit

    from .webhook_sender import AddressRefused, public_address

    parts = urlsplit(url)
    try:
        public_address(parts.hostname or "", parts.port or 443, allow_private=allow_private)
    except AddressRefused as exc:
        click.echo(f"warning: deliveries will fail until this changes: {exc}", err=True)


@webhooks_group.command("list")
def list_endpoints() -> None:
    """Every endpoint: its key, events, state, deliveries of the last 7 days, last error."""
    with _database():
        since = utcnow() - dt.timedelta(days=7)
        click.echo("id\tkey\turl\tevents\tstate\tdeliveries\tlast error")
        for endpoint in WebhookEndpoint.select().order_by(WebhookEndpoint.id):
            counts = outbox.endpoint_counts(endpoint.id, since)
            state = f"disabled ({endpoint.disabled_reason})" if endpoint.disabled_at else "enabled"
            click.echo(f"{endpoint.id}\t{endpoint.api_key.name}\t{endpoint.url}\t"
                       f"{endpoint.events or '*'}\t{state}\t{_rate(counts)}\t"
                       f"{endpoint.last_error or '-'}")


def _rate(counts: dict[str, int]) -> str:
    done = counts.get("delivered", 0) + counts.get("failed", 0)
    rate = f"{100 * counts.get('delivered', 0) / done:.0f} %" if done else "-"
    return (f"7d: {counts.get('delivered', 0)} delivered, {counts.get('failed', 0)} failed,"
            f" {counts.get('pending', 0)} pending ({rate})")


@webhooks_group.command("remove")
@click.argument("endpoint_id", type=int)
def remove(endpoint_id: int) -> None:
    """Delete an endpoint, with its deliveries."""
    with _database():
        if not webhooks.remove_endpoint(endpoint_id):
            raise click.ClickException(f"no endpoint {endpoint_id}")
    click.echo(f"removed endpoint {endpoint_id}")


@webhooks_group.command("enable")
@click.argument("endpoint_id", type=int)
def enable(endpoint_id: int) -> None:
    """Enable an endpoint that was disabled after failing for days."""
    with _database():
        if not outbox.enable(endpoint_id):
            raise click.ClickException(f"no endpoint {endpoint_id}")
    click.echo(f"enabled endpoint {endpoint_id}; re-deliver what it missed with "
               f"tracker webhooks redeliver --endpoint {endpoint_id} --since …")


@webhooks_group.command("redeliver")
@click.option("--delivery", "deliveries", type=int, multiple=True,
              help="A delivery id (repeatable), as on the message page.")
@click.option("--endpoint", "endpoint_id", type=int, help="Every failed delivery of it …")
@click.option("--since", help="… created at or after this (ISO 8601; UTC when no zone).")
def redeliver(deliveries: tuple[int, ...], endpoint_id: int | None, since: str | None) -> None:
    """Deliver again now, with the same webhook-id: given deliveries, or every failed one of
    an endpoint since a time."""
    if not deliveries and not (endpoint_id and since):
        raise click.UsageError("say which: --delivery ID, or --endpoint ID --since TIME")
    with _database() as app:
        ids = list(deliveries)
        if endpoint_id:
            ids += outbox.failed_since(endpoint_id, _when(since))
        count = outbox.redeliver(ids, retry_hours=app.config["TRACKER"]["webhook_retry_hours"])
    click.echo(f"{count} deliver{'y' if count == 1 else 'ies'} due again now")


def _when(value: str | None) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat((value or "").replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.UsageError(f"--since: not ISO 8601: {value!r}") from exc
    return parsed.astimezone(dt.UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


@click.command("webhook-secret")
@click.argument("name")
@click.option("--rotate", is_flag=True, help="Make a new secret; the old one keeps signing "
              "for --grace-hours.")
@click.option("--grace-hours", type=click.FloatRange(min=0), default=24.0, show_default=True,
              help="With --rotate: hours the old secret keeps signing beside the new one.")
def webhook_secret(name: str, rotate: bool, grace_hours: float) -> None:
    """Print the webhook signing secret of API key NAME (last line), made if it has none."""
    with _database():
        key = find_key(name)
        if rotate:
            secret = webhooks.rotate_secret(key.id, dt.timedelta(hours=grace_hours))
            click.echo(f"new signing secret of {name!r}; the old one also signs for "
                       f"{grace_hours:g} h:")
        else:
            from .db import write_tx

            with write_tx():
                secret = webhooks.ensure_secret(key.id)
            click.echo(f"signing secret of {name!r}:")
    click.echo(secret)


def register(main: click.Group, keys: click.Group) -> None:
    """Add the commands to `tracker` and `tracker keys`."""
    main.add_command(webhooks_group)
    keys.add_command(webhook_secret)

