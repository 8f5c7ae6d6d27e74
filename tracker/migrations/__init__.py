"""Numbered schema migrations and the runner that applies the pending ones.

Each migration is a module with `VERSION`, `NAME` and `upgrade(database)`, listed explicitly in
MIGRATIONS. A migration is a frozen snapshot: it never imports the current models, so a fresh
database and an upgraded one end with the same schema.
"""

from __future__ import annotations

from collections.abc import Callable

import peewee

from ..db import is_sqlite, write_tx
from ..models import SchemaMigration, utcnow
from . import (
    m0001_initial,
    m0002_sending,
    m0003_dashboard,
    m0004_accounts,
    m0005_rollups,
    m0006_search_cover,
    m0007_send_lease,
    m0008_export_jobs,
    m0009_number_suffix,
    m0010_cli_accounts,
    m0011_webhooks,
    m0012_event_callback,
    m0013_search_provider,
    m0014_list_order,
)

MIGRATIONS = [m0001_initial, m0002_sending, m0003_dashboard, m0004_accounts,
              m0005_rollups, m0006_search_cover, m0007_send_lease, m0008_export_jobs,
              m0009_number_suffix, m0010_cli_accounts,
              m0011_webhooks, m0012_event_callback, m0013_search_provider,
              m0014_list_order]


def applied_versions(database: peewee.Database) -> set[int]:
    """Versions already applied (empty on a new database)."""
    if not database.table_exists("schema_migration"):
        return set()
    return {row.version for row in SchemaMigration.select(SchemaMigration.version)}


def upgrade(database: peewee.Database, log: Callable[[str], None] = print) -> list[int]:
    """Apply every pending migration in order, each in its own transaction."""
    done = applied_versions(database)
    applied: list[int] = []
    for module in MIGRATIONS:
        if module.VERSION in done:
            continue
        with write_tx():
            if module.VERSION in applied_versions(database):
                continue  # another process (web and worker start together) got there first
            module.upgrade(database, "sqlite" if is_sqlite(database) else "postgres")
            SchemaMigration.create(version=module.VERSION, name=module.NAME, applied_at=utcnow())
        log(f"applied migration {module.VERSION:04d} {module.NAME}")
        applied.append(module.VERSION)
    return applied


def pending(database: peewee.Database) -> list[int]:
    """Versions not yet applied."""
    done = applied_versions(database)
    return [m.VERSION for m in MIGRATIONS if m.VERSION not in done]
