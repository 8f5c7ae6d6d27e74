"""0001: messages, callbacks, events, API keys, users, leases (frozen DDL per dialect)."""

from __future__ import annotations

import peewee

VERSION = 1
NAME = "initial"

DDL = {
    "sqlite": [
        'CREATE TABLE "message" ("id" INTEGER NOT NULL PRIMARY KEY, "reference" VARCHAR(32) NOT NULL, "client_ref" VARCHAR(64), "provider" VARCHAR(32) NOT NULL, "provider_message_id" VARCHAR(128), "recipient" VARCHAR(20) NOT NULL, "sender" VARCHAR(32), "text" TEXT NOT NULL, "status" VARCHAR(16) NOT NULL, "status_rank" INTEGER NOT NULL, "status_order" VARCHAR(40) NOT NULL, "status_inferred" INTEGER NOT NULL, "status_at" DATETIME, "error_code" VARCHAR(64), "error_detail" TEXT, "send_at" DATETIME, "due_at" DATETIME, "claimed_until" DATETIME, "attempts" INTEGER NOT NULL, "submitted_at" DATETIME, "created_at" DATETIME NOT NULL, "updated_at" DATETIME NOT NULL)',
        'CREATE UNIQUE INDEX "message_reference" ON "message" ("reference")',
        'CREATE INDEX "message_status_provider_created_at" ON "message" ("status", "provider", "created_at")',
        'CREATE INDEX "message_provider_provider_message_id" ON "message" ("provider", "provider_message_id")',
        'CREATE INDEX "message_recipient_created_at" ON "message" ("recipient", "created_at")',
        'CREATE INDEX "message_client_ref" ON "message" ("client_ref")',
        'CREATE INDEX "message_due_at" ON "message" ("due_at")',
        'CREATE INDEX "message_created_at" ON "message" ("created_at")',
        'CREATE TABLE "callback" ("id" INTEGER NOT NULL PRIMARY KEY, "provider" VARCHAR(32) NOT NULL, "method" VARCHAR(8) NOT NULL, "path" VARCHAR(512) NOT NULL, "query" TEXT NOT NULL, "headers" TEXT NOT NULL, "body" BLOB NOT NULL, "remote_addr" VARCHAR(64), "received_at" DATETIME NOT NULL, "verdict" VARCHAR(16) NOT NULL, "detail" TEXT)',
        'CREATE INDEX "callback_received_at" ON "callback" ("received_at")',
        'CREATE INDEX "callback_verdict_received_at" ON "callback" ("verdict", "received_at")',
        'CREATE TABLE "event" ("id" INTEGER NOT NULL PRIMARY KEY, "message_id" INTEGER, "callback_id" INTEGER, "kind" VARCHAR(16) NOT NULL, "source" VARCHAR(16) NOT NULL, "provider" VARCHAR(32), "provider_message_id" VARCHAR(128), "reference" VARCHAR(32), "status" VARCHAR(16), "raw_status" VARCHAR(128), "error_code" VARCHAR(64), "detail" TEXT, "applied" INTEGER, "reason" TEXT, "occurred_at" DATETIME, "received_at" DATETIME NOT NULL, "dedupe_key" VARCHAR(255), FOREIGN KEY ("message_id") REFERENCES "message" ("id") ON DELETE CASCADE, FOREIGN KEY ("callback_id") REFERENCES "callback" ("id") ON DELETE SET NULL)',
        'CREATE UNIQUE INDEX "event_dedupe_key" ON "event" ("dedupe_key")',
        'CREATE INDEX "event_message_id_id" ON "event" ("message_id", "id")',
        'CREATE INDEX "event_provider_provider_message_id" ON "event" ("provider", "provider_message_id") WHERE ("message_id" IS NULL)',
        'CREATE TABLE "api_key" ("id" INTEGER NOT NULL PRIMARY KEY, "name" VARCHAR(64) NOT NULL, "key_hash" VARCHAR(64) NOT NULL, "prefix" VARCHAR(12) NOT NULL, "created_at" DATETIME NOT NULL, "revoked_at" DATETIME)',
        'CREATE UNIQUE INDEX "api_key_key_hash" ON "api_key" ("key_hash")',
        'CREATE TABLE "user" ("id" INTEGER NOT NULL PRIMARY KEY, "username" VARCHAR(64) NOT NULL, "password_hash" VARCHAR(255) NOT NULL, "role" VARCHAR(16) NOT NULL, "session_version" INTEGER NOT NULL, "created_at" DATETIME NOT NULL)',
        'CREATE UNIQUE INDEX "user_username" ON "user" ("username")',
        'CREATE TABLE "lease" ("name" VARCHAR(64) NOT NULL PRIMARY KEY, "owner" VARCHAR(128) NOT NULL, "expires_at" DATETIME NOT NULL)',
        'CREATE TABLE "schema_migration" ("version" INTEGER NOT NULL PRIMARY KEY, "name" VARCHAR(128) NOT NULL, "applied_at" DATETIME NOT NULL)',
    ],
    "postgres": [
        'CREATE TABLE "message" ("id" SERIAL NOT NULL PRIMARY KEY, "reference" VARCHAR(32) NOT NULL, "client_ref" VARCHAR(64), "provider" VARCHAR(32) NOT NULL, "provider_message_id" VARCHAR(128), "recipient" VARCHAR(20) NOT NULL, "sender" VARCHAR(32), "text" TEXT NOT NULL, "status" VARCHAR(16) NOT NULL, "status_rank" SMALLINT NOT NULL, "status_order" VARCHAR(40) NOT NULL, "status_inferred" BOOLEAN NOT NULL, "status_at" TIMESTAMP, "error_code" VARCHAR(64), "error_detail" TEXT, "send_at" TIMESTAMP, "due_at" TIMESTAMP, "claimed_until" TIMESTAMP, "attempts" INTEGER NOT NULL, "submitted_at" TIMESTAMP, "created_at" TIMESTAMP NOT NULL, "updated_at" TIMESTAMP NOT NULL)',
        'CREATE UNIQUE INDEX "message_reference" ON "message" ("reference")',
        'CREATE INDEX "message_status_provider_created_at" ON "message" ("status", "provider", "created_at")',
        'CREATE INDEX "message_provider_provider_message_id" ON "message" ("provider", "provider_message_id")',
        'CREATE INDEX "message_recipient_created_at" ON "message" ("recipient", "created_at")',
        'CREATE INDEX "message_client_ref" ON "message" ("client_ref")',
        'CREATE INDEX "message_due_at" ON "message" ("due_at")',
        'CREATE INDEX "message_created_at" ON "message" ("created_at")',
        'CREATE TABLE "callback" ("id" SERIAL NOT NULL PRIMARY KEY, "provider" VARCHAR(32) NOT NULL, "method" VARCHAR(8) NOT NULL, "path" VARCHAR(512) NOT NULL, "query" TEXT NOT NULL, "headers" TEXT NOT NULL, "body" BYTEA NOT NULL, "remote_addr" VARCHAR(64), "received_at" TIMESTAMP NOT NULL, "verdict" VARCHAR(16) NOT NULL, "detail" TEXT)',
        'CREATE INDEX "callback_received_at" ON "callback" ("received_at")',
        'CREATE INDEX "callback_verdict_received_at" ON "callback" ("verdict", "received_at")',
        'CREATE TABLE "event" ("id" SERIAL NOT NULL PRIMARY KEY, "message_id" INTEGER, "callback_id" INTEGER, "kind" VARCHAR(16) NOT NULL, "source" VARCHAR(16) NOT NULL, "provider" VARCHAR(32), "provider_message_id" VARCHAR(128), "reference" VARCHAR(32), "status" VARCHAR(16), "raw_status" VARCHAR(128), "error_code" VARCHAR(64), "detail" TEXT, "applied" BOOLEAN, "reason" TEXT, "occurred_at" TIMESTAMP, "received_at" TIMESTAMP NOT NULL, "dedupe_key" VARCHAR(255), FOREIGN KEY ("message_id") REFERENCES "message" ("id") ON DELETE CASCADE, FOREIGN KEY ("callback_id") REFERENCES "callback" ("id") ON DELETE SET NULL)',
        'CREATE UNIQUE INDEX "event_dedupe_key" ON "event" ("dedupe_key")',
        'CREATE INDEX "event_message_id_id" ON "event" ("message_id", "id")',
        'CREATE INDEX "event_provider_provider_message_id" ON "event" ("provider", "provider_message_id") WHERE ("message_id" IS NULL)',
        'CREATE TABLE "api_key" ("id" SERIAL NOT NULL PRIMARY KEY, "name" VARCHAR(64) NOT NULL, "key_hash" VARCHAR(64) NOT NULL, "prefix" VARCHAR(12) NOT NULL, "created_at" TIMESTAMP NOT NULL, "revoked_at" TIMESTAMP)',
        'CREATE UNIQUE INDEX "api_key_key_hash" ON "api_key" ("key_hash")',
        'CREATE TABLE "user" ("id" SERIAL NOT NULL PRIMARY KEY, "username" VARCHAR(64) NOT NULL, "password_hash" VARCHAR(255) NOT NULL, "role" VARCHAR(16) NOT NULL, "session_version" INTEGER NOT NULL, "created_at" TIMESTAMP NOT NULL)',
        'CREATE UNIQUE INDEX "user_username" ON "user" ("username")',
        'CREATE TABLE "lease" ("name" VARCHAR(64) NOT NULL PRIMARY KEY, "owner" VARCHAR(128) NOT NULL, "expires_at" TIMESTAMP NOT NULL)',
        'CREATE TABLE "schema_migration" ("version" INTEGER NOT NULL PRIMARY KEY, "name" VARCHAR(128) NOT NULL, "applied_at" TIMESTAMP NOT NULL)',
    ],
}


def upgrade(database: peewee.Database, dialect: str) -> None:
    """Create the initial schema."""
    for statement in DDL[dialect]:
        database.execute_sql(statement)
