"""0012: an index on event.callback_id, so deleting old callbacks (tracker.retention) is cheap.

Deleting a callback sets `callback_id` to null on its events (the foreign key's ON DELETE SET
NULL). Without an index on that column both databases look for those events by reading the
whole event table, once per callback deleted. Partial: the events that never came from a
callback (created, submitted, failed, …) stay out of it, and it is one more index write per
receipt, not per event.
"""

from __future__ import annotations

import peewee

VERSION = 12
NAME = "event_callback"

_DDL = ['CREATE INDEX "event_callback_id" ON "event" ("callback_id")'
        ' WHERE ("callback_id" IS NOT NULL)']
DDL = {"sqlite": _DDL, "postgres": _DDL}


def upgrade(database: peewee.Database, dialect: str) -> None:
    for statement in DDL[dialect]:
        database.execute_sql(statement)
