"""0004: failed dashboard logins (throttling password guessing) and the link from a resent
message to the one it replaces (frozen DDL per dialect)."""

from __future__ import annotations

import peewee

VERSION = 4
NAME = "accounts"


def _ddl(ts: str) -> list[str]:
    return [
        f'CREATE TABLE "login_failure" ("id" {{pk}}, "key" VARCHAR(160) NOT NULL,'
        f' "at" {ts} NOT NULL)',
        'CREATE INDEX "login_failure_key_at" ON "login_failure" ("key", "at")',
        'ALTER TABLE "message" ADD COLUMN "resent_from" INTEGER',
        'CREATE INDEX "message_resent_from" ON "message" ("resent_from")'
        ' WHERE ("resent_from" IS NOT NULL)',
    ]


DDL = {
    "sqlite": [s.replace("{pk}", "INTEGER NOT NULL PRIMARY KEY") for s in _ddl("DATETIME")],
    "postgres": [s.replace("{pk}", "SERIAL NOT NULL PRIMARY KEY") for s in _ddl("TIMESTAMP")],
}


def upgrade(database: peewee.Database, dialect: str) -> None:
    for statement in DDL[dialect]:
        database.execute_sql(statement)
