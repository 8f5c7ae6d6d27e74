"""0002: what production sending needs: encoding and segments, failover route, validity
(expiry), polling schedule, and the per-provider send throttle (frozen DDL per dialect)."""

from __future__ import annotations

import peewee

VERSION = 2
NAME = "sending"

_COLUMNS = [
    ("encoding", "VARCHAR(8)"),  # GSM-7 or UCS-2
    ("segments", "INTEGER"),
    ("route", "VARCHAR(255)"),  # providers still to try, comma-separated (failover)
    ("expires_at", "{ts}"),  # validity end: not final by then -> expired (inferred)
    ("poll_at", "{ts}"),  # next status poll, for providers with a status API
]
# Partial: only messages that can still change are indexed, so the expiry and poll jobs never
# walk the (much larger) final history, and a final message leaves these indexes for good.
_INDEXES = [
    'CREATE INDEX "message_expires_at" ON "message" ("expires_at") WHERE ("status_rank" < 3)',
    'CREATE INDEX "message_provider_poll_at" ON "message" ("provider", "poll_at")'
    ' WHERE ("status_rank" < 3)',
]


def _ddl(ts: str, real: str) -> list[str]:
    return [
        *(f'ALTER TABLE "message" ADD COLUMN "{name}" {kind.format(ts=ts)}'
          for name, kind in _COLUMNS),
        *_INDEXES,
        f'CREATE TABLE "provider_throttle" ("provider" VARCHAR(32) NOT NULL PRIMARY KEY,'
        f' "next_at" {real} NOT NULL)',
    ]


DDL = {"sqlite": _ddl("DATETIME", "REAL"), "postgres": _ddl("TIMESTAMP", "DOUBLE PRECISION")}


def upgrade(database: peewee.Database, dialect: str) -> None:
    for statement in DDL[dialect]:
        database.execute_sql(statement)
