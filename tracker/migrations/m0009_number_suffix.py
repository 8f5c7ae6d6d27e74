"""0009: search by the last digits of a number (and by a national number, which is one).

An index on the recipient's last 4 digits, then created_at: a search for "…4567" reads that
index's entries in created_at order, newest first, and stops after a page, as a search by the
whole number reads (recipient, created_at). Longer ends ("…554567", a national number without
its trunk prefix: 7015550119) are checked on those entries; 4 digits split 1,000,000 messages
into buckets of about a hundred.

An index on an expression, not a column filled by our code: every way a message is inserted
(the API, a batch, a resend, a bulk load, a test) is covered by the database itself, the rows
already stored are indexed by the CREATE INDEX itself (no backfill, nothing to forget), and the
table is not rewritten. The expression is written exactly as reporting._suffix_term writes it;
recipients are E.164 ("+" and digits), so the last characters are the last digits.

Both carry the whole recipient, so a longer end is checked in the index: "…990001" under a
QA number's 0001 (3,000 messages) reads 3,000 index entries, not 3,000 table rows (SQLite:
10 ms -> under 1). On Postgres the index also carries status, provider and error_code
(INCLUDE), as 0006's search indexes do, so a search combined with filters, and its counts,
read the index alone; a status change already writes an entry into every index of the table
there (0006), so this one adds an entry per receipt, not a rewrite. SQLite keeps status out:
it updates only the indexes whose columns change, and the recipient never does, so this index
costs the callback path nothing there. On SQLite, "id" (the rowid, which every index ends
with anyway) comes before the recipient so that the entries stay in the list's order, (created_at,
id), and a page needs no sort.

Building it takes a few seconds per million messages, with writes to the table blocked
meanwhile (as for 0006).
"""

from __future__ import annotations

import peewee

VERSION = 9
NAME = "number_suffix"

DDL = {
    "sqlite": ['CREATE INDEX "message_recipient_tail" ON "message"'
               ' (substr("recipient", -4), "created_at", "id", "recipient")'],
    "postgres": ['CREATE INDEX "message_recipient_tail" ON "message"'
                 ' (right("recipient", 4), "created_at")'
                 ' INCLUDE ("recipient", "status", "provider", "error_code")'],
}


def upgrade(database: peewee.Database, dialect: str) -> None:
    for statement in DDL[dialect]:
        database.execute_sql(statement)
