"""0014: on Postgres, every index the messages list reads ends in (created_at, id), the list's
own order, so a page is read straight off the index: no sort, whatever the planner estimates.

The list is ordered by (created_at, id), newest first (reporting.list_messages). SQLite ends
every index with the rowid (= id) already. Postgres's ended in created_at, so it finished each
page with an incremental sort, and costed every path with that sort on top. Two things went
wrong there, measured at 1,000,000 messages (bench/dashboard.py):

- A rare error code over a week ("error + date") was read off the created_at index, filtering
  2,355 rows to fill a page (0.81 ms), where its own index holds exactly the page (0.34 ms with
  this migration; the planner now picks it).
- Where the planner misjudges how many rows match (a plan made without the values, as a
  prepared statement's generic plan is, takes a QA number with 3,000 messages for one with a
  few), it sorts every match before the first row comes back: 9 ms for one page. An index in
  the list's order stops after the page's 51 entries.

Each index keeps its name and what it holds (built under a new name, the old one dropped, then
renamed, as in 0006). `id` adds 4 bytes to an entry and no write: an UPDATE that changes an
indexed column already writes every index on Postgres (0006). Building the eleven took 11 s
at 1,000,000 messages on the 2-core machine of bench/, with writes to the table blocked
meanwhile.
"""

from __future__ import annotations

import peewee

VERSION = 14
NAME = "list_order"

_ERROR = ' WHERE ("error_code" IS NOT NULL)'
_COVERED = ' INCLUDE ("status", "provider", "error_code")'
# name: (leading columns, what follows the key)
_INDEXES = {
    "message_created_at": ("", ""),
    "message_status_created_at": ('"status", ', ""),
    "message_provider_created_at": ('"provider", ', ""),
    "message_status_provider_created_at": ('"status", "provider", ', ""),
    "message_error_code_created_at": ('"error_code", ', _ERROR),
    "message_error_code_status_created_at": ('"error_code", "status", ', _ERROR),
    "message_error_code_provider_created_at": ('"error_code", "provider", ', _ERROR),
    "message_error_code_status_provider_created_at": ('"error_code", "status", "provider", ',
                                                      _ERROR),
    "message_recipient_created_at": ('"recipient", ', _COVERED),
    "message_client_ref_created_at": ('"client_ref", ', _COVERED),
    "message_recipient_tail": ('right("recipient", 4), ',
                               ' INCLUDE ("recipient", "status", "provider", "error_code")'),
}
POSTGRES = [
    statement
    for name, (leading, rest) in _INDEXES.items()
    for statement in (
        f'CREATE INDEX "{name}_new" ON "message" ({leading}"created_at", "id"){rest}',
        f'DROP INDEX "{name}"',
        f'ALTER INDEX "{name}_new" RENAME TO "{name}"',
    )
]


def upgrade(database: peewee.Database, dialect: str) -> None:
    for statement in POSTGRES if dialect == "postgres" else []:
        database.execute_sql(statement)
