"""0013: on SQLite, the search indexes (whole number, client_ref, last 4 digits) carry the provider,
so a search narrowed by provider checks it in the index and reads only the matching rows.

A QA number with 3,000 messages filtered by provider (with or without a status) was the one
list shape over 5 ms on SQLite at 1,000,000 messages (bench/dashboard.py: 6.2 ms p95 for the
list, 6.0 for its counts per status): each of the 3,000 entries cost a table row to learn its
provider. With the provider in the entry, the list and its counts read 3,000 index entries and
the ~150 rows that match (1.5 -> 0.3 ms and 1.2 -> 0.3 ms each, queries alone, between the other
shapes' queries as a dashboard runs them).

Only the provider: it is set when a message is created and never changes, and SQLite updates
only the indexes whose columns an UPDATE changes, so these indexes still cost the callback path
nothing. Status and error code change with every receipt: carrying them (as Postgres does, 0006,
where an UPDATE of an indexed column writes every index anyway) measured +60 us per status
change on SQLite (90 -> 150 us per UPDATE, one random index page more each), against a callback
path that already misses its throughput goal. "id" (the rowid, which ends every index anyway)
comes before the provider so that the entries stay in the list's order, (created_at, id), as
in 0009.

SQLite cannot rename an index: each is dropped and built again under its name, in the
migration's transaction. Building takes a few seconds per million messages, with writes to the
table blocked meanwhile (as for 0006 and 0009).
"""

from __future__ import annotations

import peewee

VERSION = 13
NAME = "search_provider"

SQLITE = [
    'DROP INDEX "message_recipient_created_at"',
    'CREATE INDEX "message_recipient_created_at" ON "message"'
    ' ("recipient", "created_at", "id", "provider")',
    'DROP INDEX "message_client_ref_created_at"',
    'CREATE INDEX "message_client_ref_created_at" ON "message"'
    ' ("client_ref", "created_at", "id", "provider")',
    'DROP INDEX "message_recipient_tail"',
    'CREATE INDEX "message_recipient_tail" ON "message"'
    ' (substr("recipient", -4), "created_at", "id", "recipient", "provider")',
]


def upgrade(database: peewee.Database, dialect: str) -> None:
    for statement in SQLITE if dialect == "sqlite" else []:
        database.execute_sql(statement)
