"""0007: a send is recorded as started before its request leaves (never sent twice).

`claimed_by` names the dispatcher (host:pid:nonce) holding the row, for a batch claim or a send;
`send_started_at` is set, and committed, just before the provider is called and cleared when the
answer is recorded. A row with `send_started_at` whose lease (`claimed_until`) ran out, or whose
dispatcher is gone, never got an answer: it becomes `unknown`, never sent again by itself.

The partial indexes hold only sends in flight (a handful of rows at any time), so the look for
lost sends reads next to nothing, and only due messages, by provider, for the claims.
"""

from __future__ import annotations

import peewee

VERSION = 7
NAME = "send_lease"


def _ddl(ts: str) -> list[str]:
    return [
        'ALTER TABLE "message" ADD COLUMN "claimed_by" VARCHAR(128)',
        f'ALTER TABLE "message" ADD COLUMN "send_started_at" {ts}',
        'CREATE INDEX "message_claimed_until" ON "message" ("claimed_until")'
        ' WHERE ("send_started_at" IS NOT NULL)',
        # A dispatcher claims per provider: without the provider first, a provider with
        # nothing due would walk every due message of the others at each look.
        'CREATE INDEX "message_provider_due_at" ON "message" ("provider", "due_at")'
        ' WHERE ("due_at" IS NOT NULL)',
    ]


DDL = {"sqlite": _ddl("DATETIME"), "postgres": _ddl("TIMESTAMP")}


def upgrade(database: peewee.Database, dialect: str) -> None:
    for statement in DDL[dialect]:
        database.execute_sql(statement)
