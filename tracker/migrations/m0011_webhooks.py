"""0011: status webhooks to client applications (tracker.webhooks, tracker.outbox).

Where to send: `message.status_callback` (a URL given with the send) and the endpoints of the
API key that sent it (`message.api_key_id`, `webhook_endpoint`). What: one `outbox` row per
status change, written by a trigger in the transaction that makes the change, whichever code
path makes it (a receipt on either intake path, a send outcome, expiry, a cancel), so none can
be missed and none is told unless it committed. A failover changes the provider, not the
status: a second trigger writes its row. The worker fans each row out to `webhook_delivery`
rows (one per destination) and records every HTTP try in `webhook_attempt`.

The triggers cost the callback hot path nothing for messages nobody listens to: their WHEN is
evaluated on the updated row alone unless it has a status_callback or an API key (then one
probe of the endpoint index for an enabled endpoint of that key).

Signing secrets (`whsec_…`) sit beside the API key they belong to, in clear: HMAC needs them.
`webhook_secret_previous` keeps signing until `webhook_secret_previous_until` (a rotation's
grace period).
"""

from __future__ import annotations

import peewee

VERSION = 11
NAME = "webhooks"

# Someone listens: a per-message URL, or an enabled endpoint of the message's API key.
_LISTENED = (
    '(NEW."status_callback" IS NOT NULL OR (NEW."api_key_id" IS NOT NULL AND EXISTS ('
    'SELECT 1 FROM "webhook_endpoint" e WHERE e."api_key_id" = NEW."api_key_id"'
    ' AND e."disabled_at" IS NULL)))'
)
_OUTBOX_ROW = (
    'INSERT INTO "outbox" ("message_id", "kind", "status", "status_inferred", "error_code",'
    ' "error_detail", "provider", "previous_provider", "status_at", "changed_at")'
    ' VALUES (NEW."id", {kind}, NEW."status", NEW."status_inferred", NEW."error_code",'
    ' NEW."error_detail", NEW."provider", {previous}, NEW."status_at", NEW."updated_at")'
)
_STATUS_ROW = _OUTBOX_ROW.format(kind="'status'", previous="NULL")
_FAILOVER_ROW = _OUTBOX_ROW.format(kind="'failover'", previous='OLD."provider"')


def _tables(ts: str, pk: str, text: str, boolean: str) -> list[str]:
    return [
        'ALTER TABLE "message" ADD COLUMN "status_callback" VARCHAR(2048)',
        'ALTER TABLE "message" ADD COLUMN "api_key_id" INTEGER',
        'ALTER TABLE "api_key" ADD COLUMN "webhook_secret" VARCHAR(64)',
        'ALTER TABLE "api_key" ADD COLUMN "webhook_secret_previous" VARCHAR(64)',
        f'ALTER TABLE "api_key" ADD COLUMN "webhook_secret_previous_until" {ts}',
        f'CREATE TABLE "webhook_endpoint" ("id" {pk}, "api_key_id" INTEGER NOT NULL'
        ' REFERENCES "api_key" ("id") ON DELETE CASCADE, "url" VARCHAR(2048) NOT NULL,'
        f' "events" {text}, "created_at" {ts} NOT NULL, "disabled_at" {ts},'
        f' "disabled_reason" {text}, "failing_since" {ts}, "last_success_at" {ts},'
        f' "last_error" {text}, "last_error_at" {ts})',
        # The triggers' probe, and an API key's endpoints.
        'CREATE INDEX "webhook_endpoint_api_key_id" ON "webhook_endpoint" ("api_key_id")',
        f'CREATE TABLE "outbox" ("id" {pk}, "message_id" INTEGER NOT NULL REFERENCES'
        ' "message" ("id") ON DELETE CASCADE, "kind" VARCHAR(16) NOT NULL,'
        f' "status" VARCHAR(16) NOT NULL, "status_inferred" {boolean} NOT NULL,'
        ' "error_code" VARCHAR(64), "error_detail" TEXT, "provider" VARCHAR(32) NOT NULL,'
        f' "previous_provider" VARCHAR(32), "status_at" {ts}, "changed_at" {ts} NOT NULL,'
        f' "fanned_out_at" {ts})',
        # Rows not fanned out yet: a handful at any time, whatever the table's size.
        'CREATE INDEX "outbox_waiting" ON "outbox" ("id") WHERE ("fanned_out_at" IS NULL)',
        'CREATE INDEX "outbox_message_id" ON "outbox" ("message_id")',
        f'CREATE TABLE "webhook_delivery" ("id" {pk}, "outbox_id" INTEGER NOT NULL'
        ' REFERENCES "outbox" ("id") ON DELETE CASCADE, "endpoint_id" INTEGER REFERENCES'
        ' "webhook_endpoint" ("id") ON DELETE CASCADE, "api_key_id" INTEGER,'
        ' "url" VARCHAR(2048) NOT NULL, "origin" VARCHAR(300) NOT NULL,'
        f' "webhook_id" VARCHAR(40) NOT NULL, "payload" {text} NOT NULL,'
        ' "state" VARCHAR(16) NOT NULL, "attempts" INTEGER NOT NULL,'
        f' "created_at" {ts} NOT NULL, "give_up_at" {ts} NOT NULL, "next_at" {ts},'
        f' "claimed_by" VARCHAR(128), "delivered_at" {ts}, "last_status_code" INTEGER,'
        f' "last_error" {text})',
        # Deliveries still to try, by when: what the worker claims. A claim moves next_at to
        # the end of its lease, so a delivery whose worker died is due again by itself.
        'CREATE INDEX "webhook_delivery_due" ON "webhook_delivery" ("next_at")'
        ' WHERE ("state" = \'pending\')',
        'CREATE INDEX "webhook_delivery_outbox_id" ON "webhook_delivery" ("outbox_id")',
        # An endpoint's deliveries, newest first (its page, re-delivery since a time).
        'CREATE INDEX "webhook_delivery_endpoint" ON "webhook_delivery"'
        ' ("endpoint_id", "created_at")',
        f'CREATE TABLE "webhook_attempt" ("id" {pk}, "delivery_id" INTEGER NOT NULL'
        ' REFERENCES "webhook_delivery" ("id") ON DELETE CASCADE,'
        f' "at" {ts} NOT NULL, "status_code" INTEGER, "latency_ms" INTEGER,'
        f' "response" {text}, "error" {text})',
        'CREATE INDEX "webhook_attempt_delivery_id" ON "webhook_attempt" ("delivery_id", "id")',
    ]


def _sqlite_triggers() -> list[str]:
    return [
        'CREATE TRIGGER "message_status_outbox" AFTER UPDATE OF "status" ON "message"'
        f' FOR EACH ROW WHEN NEW."status" IS NOT OLD."status" AND {_LISTENED}'
        f" BEGIN {_STATUS_ROW}; END",
        'CREATE TRIGGER "message_failover_outbox" AFTER UPDATE OF "provider" ON "message"'
        f' FOR EACH ROW WHEN NEW."provider" IS NOT OLD."provider" AND {_LISTENED}'
        f" BEGIN {_FAILOVER_ROW}; END",
    ]


def _postgres_triggers() -> list[str]:
    # Postgres allows no subquery in a trigger's WHEN: the WHEN keeps the cheap tests on the
    # row (the function is not even called for a message without a key or a URL), the
    # function the endpoint probe.
    out = []
    for name, column, row in (("message_status_outbox", "status", _STATUS_ROW),
                              ("message_failover_outbox", "provider", _FAILOVER_ROW)):
        out += [
            f'CREATE FUNCTION "{name}"() RETURNS trigger LANGUAGE plpgsql AS $$'
            f" BEGIN IF {_LISTENED} THEN {row}; END IF; RETURN NULL; END $$",
            f'CREATE TRIGGER "{name}" AFTER UPDATE OF "{column}" ON "message" FOR EACH ROW'
            f' WHEN (NEW."{column}" IS DISTINCT FROM OLD."{column}"'
            ' AND (NEW."status_callback" IS NOT NULL OR NEW."api_key_id" IS NOT NULL))'
            f' EXECUTE FUNCTION "{name}"()',
        ]
    return out


DDL = {
    "sqlite": _tables("DATETIME", "INTEGER NOT NULL PRIMARY KEY", "TEXT", "INTEGER") + _sqlite_triggers(),
    "postgres": _tables("TIMESTAMP", "SERIAL NOT NULL PRIMARY KEY", "TEXT", "BOOLEAN")
    + _postgres_triggers(),
}


def upgrade(database: peewee.Database, dialect: str) -> None:
    for statement in DDL[dialect]:
        database.execute_sql(statement)
