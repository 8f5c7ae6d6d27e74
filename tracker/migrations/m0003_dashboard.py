"""0003: indexes for the messages list, one per filter shape (frozen DDL, same on both dialects).

The list is ordered by (created_at, id) newest first and pages by keyset. Every filter shape gets
an index whose leading columns are exactly its equality filters, then created_at: the database
reads the newest matching entries in order, applies a date range as a range on the same index,
and stops after one page; a filter matching nothing ends after one index probe. SQLite appends
the rowid (= id) to every index, so ties on created_at are in order too; Postgres finishes ties
with an incremental sort over a handful of rows.

Shapes and their index ((status, provider, created_at) and (created_at) exist since 0001):
  none, date only              created_at
  status                       status, created_at                    (new)
  provider                     provider, created_at                  (new)
  status + provider            status, provider, created_at
  error code (+ status, + provider, + both): partial indexes, WHERE error_code IS NOT NULL.
    Only failed messages carry a code (about a tenth), and it is written once, so these four
    small indexes cost little; without them "code X at provider Y" walks every message with
    code X (tens of thousands) to find none.
  search by provider message id without a provider: provider_message_id  (new; the (provider,
    provider_message_id) index of 0001 needs the provider)
  search by phone number or client_ref, alone or with filters: (recipient, created_at) and
    (client_ref, created_at), read in order (a campaign ref or a test number has thousands of
    messages); the other filters are checked on the table row. Covering indexes with status,
    provider and error_code were measured faster for a number with 3,000 messages (4.4 ms ->
    under 1 ms on SQLite, 13 ms -> ~1 ms on Postgres) but every receipt that changes a status
    would rewrite their entries: the callback path is the one that must stay fast, and a real
    customer's number has a handful of messages.
"""

from __future__ import annotations

import peewee

VERSION = 3
NAME = "dashboard"

_ERROR = 'WHERE ("error_code" IS NOT NULL)'
STATEMENTS = [
    'CREATE INDEX "message_status_created_at" ON "message" ("status", "created_at")',
    'CREATE INDEX "message_provider_created_at" ON "message" ("provider", "created_at")',
    f'CREATE INDEX "message_error_code_created_at" ON "message" ("error_code", "created_at")'
    f" {_ERROR}",
    'CREATE INDEX "message_error_code_status_created_at" ON "message"'
    f' ("error_code", "status", "created_at") {_ERROR}',
    'CREATE INDEX "message_error_code_provider_created_at" ON "message"'
    f' ("error_code", "provider", "created_at") {_ERROR}',
    'CREATE INDEX "message_error_code_status_provider_created_at" ON "message"'
    f' ("error_code", "status", "provider", "created_at") {_ERROR}',
    'CREATE INDEX "message_provider_message_id" ON "message" ("provider_message_id")',
    'DROP INDEX "message_client_ref"',
    'CREATE INDEX "message_client_ref_created_at" ON "message" ("client_ref", "created_at")',
]
# Postgres estimates "status = 'delivered' AND error_code = '1'" as if the columns were
# independent (22,000 rows where there are none) and then walks the created_at index backwards
# through all 1,000,000 rows hoping to fill a page (measured 220-900 ms). A full MCV list of the
# combinations that exist (a few hundred) tells it which ones do not.
POSTGRES = [
    'CREATE STATISTICS "message_status_provider_error_code" (mcv, dependencies)'
    ' ON "status", "provider", "error_code" FROM "message"',
    'ALTER STATISTICS "message_status_provider_error_code" SET STATISTICS 1000',
]


def upgrade(database: peewee.Database, dialect: str) -> None:
    for statement in STATEMENTS + (POSTGRES if dialect == "postgres" else []):
        database.execute_sql(statement)
