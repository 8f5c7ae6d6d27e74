"""0005: the overview's rollups (tracker.overview): per closed hour and closed UTC day and
provider, the message figures and the callback verdicts; which periods are complete; the
rollup job's bookmarks (frozen DDL per dialect)."""

from __future__ import annotations

import peewee

VERSION = 5
NAME = "rollups"


def _ddl(ts: str) -> list[str]:
    return [
        'CREATE TABLE "message_rollup" ("id" {pk}, "step" VARCHAR(8) NOT NULL,'
        f' "period" {ts} NOT NULL, "provider" VARCHAR(32) NOT NULL,'
        ' "messages" INTEGER NOT NULL, "submitted" INTEGER NOT NULL,'
        ' "delivered" INTEGER NOT NULL, "final" INTEGER NOT NULL, "receipted" INTEGER NOT NULL,'
        ' "statuses" TEXT NOT NULL, "errors" TEXT NOT NULL, "latency" TEXT NOT NULL)',
        'CREATE INDEX "message_rollup_step_period" ON "message_rollup" ("step", "period")',
        'CREATE TABLE "callback_rollup" ("id" {pk}, "step" VARCHAR(8) NOT NULL,'
        f' "period" {ts} NOT NULL, "provider" VARCHAR(32) NOT NULL, "verdicts" TEXT NOT NULL,'
        f' "last_callback" {ts})',
        'CREATE INDEX "callback_rollup_step_period" ON "callback_rollup" ("step", "period")',
        'CREATE INDEX "callback_rollup_provider_last_callback"'
        ' ON "callback_rollup" ("provider", "last_callback")',
        'CREATE TABLE "rollup_period" ("id" {pk}, "step" VARCHAR(8) NOT NULL,'
        f' "period" {ts} NOT NULL, "rolled_at" {ts} NOT NULL)',
        'CREATE UNIQUE INDEX "rollup_period_step_period" ON "rollup_period" ("step", "period")',
        'CREATE TABLE "rollup_state" ("name" VARCHAR(32) NOT NULL PRIMARY KEY,'
        ' "value" BIGINT NOT NULL)',
    ]


DDL = {
    "sqlite": [s.replace("{pk}", "INTEGER NOT NULL PRIMARY KEY") for s in _ddl("DATETIME")],
    "postgres": [s.replace("{pk}", "SERIAL NOT NULL PRIMARY KEY") for s in _ddl("TIMESTAMP")],
}


def upgrade(database: peewee.Database, dialect: str) -> None:
    for statement in DDL[dialect]:
        database.execute_sql(statement)
