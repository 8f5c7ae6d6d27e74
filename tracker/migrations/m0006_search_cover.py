"""0006: on Postgres, the phone number and client_ref search indexes carry status, provider and
error_code (INCLUDE), so a search combined with filters, and its count, read the index alone.

A number with thousands of messages (a QA phone, a campaign ref) filtered by status was the one
list shape over 5 ms on Postgres (bench/dashboard.py: 6.7 ms p95; its capped count visited
1,250 table rows). With the columns in the index the count is an index-only scan (1.5 -> 0.65 ms
for both queries).

Why only Postgres (0003 kept these indexes plain for the callback path): a Postgres UPDATE that
changes an indexed column (status is in several) is never HOT, so it already writes a new entry
into *every* index of the table; carrying three more columns in two of them costs a receipt next
to nothing. SQLite updates only the indexes whose columns change, so there a covering index
would add two index writes to every status change.

The indexes keep their names (built under a new one, the old dropped, then renamed). Building
takes a few seconds per million messages, with writes to the table blocked meanwhile.
"""

from __future__ import annotations

import peewee

VERSION = 6
NAME = "search_cover"

_COVERED = '("status", "provider", "error_code")'
POSTGRES = [
    f'CREATE INDEX "message_recipient_created_at_new" ON "message" ("recipient", "created_at")'
    f" INCLUDE {_COVERED}",
    'DROP INDEX "message_recipient_created_at"',
    'ALTER INDEX "message_recipient_created_at_new" RENAME TO "message_recipient_created_at"',
    f'CREATE INDEX "message_client_ref_created_at_new" ON "message" ("client_ref", "created_at")'
    f" INCLUDE {_COVERED}",
    'DROP INDEX "message_client_ref_created_at"',
    'ALTER INDEX "message_client_ref_created_at_new" RENAME TO "message_client_ref_created_at"',
]


def upgrade(database: peewee.Database, dialect: str) -> None:
    for statement in POSTGRES if dialect == "postgres" else []:
        database.execute_sql(statement)
