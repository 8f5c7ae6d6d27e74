"""0008: export jobs started from the messages page, run by any worker (tracker/export_jobs.py).

A row is the whole state of one export: who asked, what (format, filter, masked or not), where
it stands (queued, running, done, failed), how far (rows written of rows expected) and its file
in the exports folder. `claimed_by`/`claimed_until` are the lease of the process writing it, as
for sends (m0007): a job whose writer died is claimed again once the lease runs out.

The partial index holds only jobs waiting or being written (a handful at any time), so the
workers' look for work reads next to nothing however many finished jobs are kept.
"""

from __future__ import annotations

import peewee

VERSION = 8
NAME = "export_jobs"


def _ddl(pk: str, ts: str, boolean: str) -> list[str]:
    return [
        f'CREATE TABLE "export_job" ("id" {pk}, "token" VARCHAR(32) NOT NULL,'
        ' "requested_by" VARCHAR(64) NOT NULL, "format" VARCHAR(16) NOT NULL,'
        f' "filters" TEXT NOT NULL, "masked" {boolean} NOT NULL, "state" VARCHAR(8) NOT NULL,'
        ' "rows_written" INTEGER NOT NULL, "rows_expected" INTEGER, "file_name" VARCHAR(64),'
        f' "error" TEXT, "created_at" {ts} NOT NULL, "started_at" {ts}, "progress_at" {ts},'
        f' "finished_at" {ts}, "claimed_by" VARCHAR(128), "claimed_until" {ts})',
        'CREATE UNIQUE INDEX "export_job_token" ON "export_job" ("token")',
        'CREATE INDEX "export_job_requested_by_state" ON "export_job" ("requested_by", "state")',
        'CREATE INDEX "export_job_created_at" ON "export_job" ("created_at")',
        'CREATE INDEX "export_job_waiting" ON "export_job" ("state", "claimed_until")'
        " WHERE (\"state\" IN ('queued', 'running'))",
    ]


DDL = {
    "sqlite": _ddl("INTEGER NOT NULL PRIMARY KEY", "DATETIME", "INTEGER"),
    "postgres": _ddl("SERIAL NOT NULL PRIMARY KEY", "TIMESTAMP", "BOOLEAN"),
}


def upgrade(database: peewee.Database, dialect: str) -> None:
    for statement in DDL[dialect]:
        database.execute_sql(statement)
