"""0010: accounts managed from the command line (frozen DDL per dialect).

- `api_key.last_used_at`: when a key last authenticated, written at most once a minute per key
  (tracker.accounts), for `tracker keys list`.
- `user.disabled_at`: a disabled account cannot log in and its sessions stop working;
  `user.last_login_at`, for `tracker users list`.
- Live API key names are unique, so `tracker keys revoke NAME` names one key. A revoked key
  keeps its name, so a key can be replaced by a new one under the same name. Live duplicates
  made before this migration keep the oldest name; the others get "-<id>" appended.
"""

from __future__ import annotations

import peewee

VERSION = 10
NAME = "cli_accounts"


def _ddl(ts: str) -> list[str]:
    return [
        f'ALTER TABLE "api_key" ADD COLUMN "last_used_at" {ts}',
        f'ALTER TABLE "user" ADD COLUMN "disabled_at" {ts}',
        f'ALTER TABLE "user" ADD COLUMN "last_login_at" {ts}',
        'UPDATE "api_key" SET "name" = SUBSTR("name", 1, 50) || \'-\' || "id"'
        ' WHERE "revoked_at" IS NULL AND "id" NOT IN'
        ' (SELECT MIN("id") FROM "api_key" WHERE "revoked_at" IS NULL GROUP BY "name")',
        'CREATE UNIQUE INDEX "api_key_name" ON "api_key" ("name") WHERE ("revoked_at" IS NULL)',
    ]


DDL = {"sqlite": _ddl("DATETIME"), "postgres": _ddl("TIMESTAMP")}


def upgrade(database: peewee.Database, dialect: str) -> None:
    for statement in DDL[dialect]:
        database.execute_sql(statement)
