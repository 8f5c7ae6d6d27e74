"""Tables: messages, callbacks, events (the timeline), and the auth and bookkeeping tables.

Indexes are declared here and created by the migrations; each names the query it serves.
"""

from __future__ import annotations

import datetime as dt

import peewee as pw

from .db import db


def utcnow() -> dt.datetime:
    """Naive UTC: every timestamp in the database is UTC without tzinfo."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class BaseModel(pw.Model):
    class Meta:
        database = db
        legacy_table_names = False


class Message(BaseModel):
    """One outbound SMS."""

    reference = pw.CharField(max_length=32, unique=True)
    client_ref = pw.CharField(max_length=64, null=True)
    provider = pw.CharField(max_length=32)
    provider_message_id = pw.CharField(max_length=128, null=True)
    recipient = pw.CharField(max_length=20)  # E.164, "+" included; the API calls it `to`
    sender = pw.CharField(max_length=32, null=True)  # the API calls it `from`
    text = pw.TextField()
    status = pw.CharField(max_length=16)
    status_rank = pw.SmallIntegerField(default=0)
    status_order = pw.CharField(max_length=40)  # status.order_key of the current status
    status_inferred = pw.BooleanField(default=False)
    status_at = pw.DateTimeField(null=True)  # provider time of the current status
    error_code = pw.CharField(max_length=64, null=True)
    error_detail = pw.TextField(null=True)
    send_at = pw.DateTimeField(null=True)
    due_at = pw.DateTimeField(null=True)  # when the dispatcher should (re)try; null = not due
    claimed_until = pw.DateTimeField(null=True)  # a dispatcher's lease on this row
    claimed_by = pw.CharField(max_length=128, null=True)  # which dispatcher (host:pid:nonce)
    send_started_at = pw.DateTimeField(null=True)  # a send in flight (m0007): never resent
    attempts = pw.IntegerField(default=0)
    submitted_at = pw.DateTimeField(null=True)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)
    encoding = pw.CharField(max_length=8, null=True)  # GSM-7 or UCS-2 (tracker.segments)
    segments = pw.IntegerField(null=True)
    route = pw.CharField(max_length=255, null=True)  # providers still to try, comma-separated
    expires_at = pw.DateTimeField(null=True)  # validity end: not final by then -> expired
    poll_at = pw.DateTimeField(null=True)  # next status poll (providers with a status API)
    resent_from = pw.IntegerField(null=True)  # the message this one is a resend of
    status_callback = pw.CharField(max_length=2048, null=True)  # the sender's webhook URL
    api_key_id = pw.IntegerField(null=True)  # the API key that sent it: its webhook endpoints

    class Meta:
        indexes = (
            (("status", "provider", "created_at"), False),  # dashboard filters, newest first
            (("provider", "provider_message_id"), False),  # callback correlation
            # Search by phone number or client_ref, newest first (migration 0003 says why
            # status is not in them: the callback path would rewrite them; 0006 and 0013 add
            # the columns each database can carry for free).
            (("recipient", "created_at"), False),
            (("client_ref", "created_at"), False),
            (("due_at",), False),  # dispatcher: due messages
            (("created_at",), False),  # dashboard: newest first, unfiltered
            # Dashboard filters, newest first (migration 0003 says why each exists).
            (("status", "created_at"), False),
            (("provider", "created_at"), False),
            (("provider_message_id",), False),  # search by provider id, provider unknown
        )


class Callback(BaseModel):
    """One raw HTTP request a provider sent us, verbatim, with its verdict."""

    provider = pw.CharField(max_length=32)
    method = pw.CharField(max_length=8)
    path = pw.CharField(max_length=512)  # the secret token segment is masked
    query = pw.TextField(default="")
    headers = pw.TextField(default="[]")  # JSON list of [name, value]
    body = pw.BlobField()
    remote_addr = pw.CharField(max_length=64, null=True)
    received_at = pw.DateTimeField(default=utcnow)
    verdict = pw.CharField(max_length=16)
    detail = pw.TextField(null=True)

    class Meta:
        # Few indexes: every one is written on the callback hot path.
        indexes = (
            (("received_at",), False),  # replay by time range
            (("verdict", "received_at"), False),  # replay / list by verdict
        )


class Event(BaseModel):
    """One line of a message's timeline; a receipt with no message yet is an orphan."""

    message = pw.ForeignKeyField(Message, null=True, backref="events", on_delete="CASCADE",
                                  index=False)  # (message, id) below serves it
    callback = pw.ForeignKeyField(Callback, null=True, backref="events", on_delete="SET NULL",
                                  index=False)  # looked up from the event side only
    kind = pw.CharField(max_length=16)  # created, submitted, send_failed, retry, receipt, ...
    source = pw.CharField(max_length=16)  # api, cli, dispatcher, callback, poll, replay, worker
    provider = pw.CharField(max_length=32, null=True)
    provider_message_id = pw.CharField(max_length=128, null=True)
    reference = pw.CharField(max_length=32, null=True)
    status = pw.CharField(max_length=16, null=True)
    raw_status = pw.CharField(max_length=128, null=True)
    error_code = pw.CharField(max_length=64, null=True)
    detail = pw.TextField(null=True)
    applied = pw.BooleanField(null=True)
    reason = pw.TextField(null=True)  # why a receipt was not applied
    occurred_at = pw.DateTimeField(null=True)  # provider's clock
    received_at = pw.DateTimeField(default=utcnow)  # ours
    dedupe_key = pw.CharField(max_length=255, null=True, unique=True)

    class Meta:
        indexes = ((("message", "id"), False),)  # a message's timeline in order


# Only messages that can still change: the expiry and poll jobs never walk final history.
Message.add_index(Message.index(Message.expires_at, where=Message.status_rank < 3))
Message.add_index(Message.index(Message.provider, Message.poll_at,
                                where=Message.status_rank < 3))
# Sends in flight, for the job that finds the lost ones (a handful of rows at any time).
Message.add_index(Message.index(Message.claimed_until,
                                where=Message.send_started_at.is_null(False)))
# Due messages by provider, for the dispatcher's claims (m0007).
Message.add_index(Message.index(Message.provider, Message.due_at,
                                where=Message.due_at.is_null(False)))
Message.add_index(Message.index(Message.resent_from, where=Message.resent_from.is_null(False)))


# Dashboard error-code filters: only failed messages carry a code, so these stay small.
for _columns in ((Message.error_code, Message.created_at),
                 (Message.error_code, Message.status, Message.created_at),
                 (Message.error_code, Message.provider, Message.created_at),
                 (Message.error_code, Message.status, Message.provider, Message.created_at)):
    Message.add_index(Message.index(*_columns, where=Message.error_code.is_null(False)))


# Orphans waiting for their message. Partial: a matched event never touches this index.
Event.add_index(Event.index(Event.provider, Event.provider_message_id,
                            where=Event.message.is_null()))
# A callback deleted by retention nulls its events' link through this (m0012).
Event.add_index(Event.index(Event.callback, where=Event.callback.is_null(False)))


class ApiKey(BaseModel):
    """A developer's API key; only its SHA-256 is stored."""

    name = pw.CharField(max_length=64)
    key_hash = pw.CharField(max_length=64, unique=True)
    prefix = pw.CharField(max_length=12)
    created_at = pw.DateTimeField(default=utcnow)
    revoked_at = pw.DateTimeField(null=True)
    last_used_at = pw.DateTimeField(null=True)  # written at most once a minute (m0010)
    webhook_secret = pw.CharField(max_length=64, null=True)  # whsec_…: signs its webhooks
    webhook_secret_previous = pw.CharField(max_length=64, null=True)  # still signs until:
    webhook_secret_previous_until = pw.DateTimeField(null=True)


# Live key names are unique: `tracker keys revoke NAME` names one key (m0010).
ApiKey.add_index(ApiKey.index(ApiKey.name, unique=True, where=ApiKey.revoked_at.is_null()))


class User(BaseModel):
    """A dashboard account."""

    username = pw.CharField(max_length=64, unique=True)
    password_hash = pw.CharField(max_length=255)
    role = pw.CharField(max_length=16, default="viewer")
    session_version = pw.IntegerField(default=1)  # bumped on logout: old cookies stop working
    created_at = pw.DateTimeField(default=utcnow)
    disabled_at = pw.DateTimeField(null=True)  # cannot log in; sessions end (m0010)
    last_login_at = pw.DateTimeField(null=True)


class Lease(BaseModel):
    """Which worker process runs the jobs; it renews the lease while alive."""

    name = pw.CharField(max_length=64, primary_key=True)
    owner = pw.CharField(max_length=128)
    expires_at = pw.DateTimeField()


class LoginFailure(BaseModel):
    """One wrong password; counted per key (user+address, address, user) to throttle guessing."""

    key = pw.CharField(max_length=160)
    at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("key", "at"), False),)


class ProviderThrottle(BaseModel):
    """Per-provider send rate limit shared by every dispatcher: the earliest next send."""

    provider = pw.CharField(max_length=32, primary_key=True)
    next_at = pw.DoubleField()  # Unix time; arithmetic in SQL stays portable


class SchemaMigration(BaseModel):
    """Applied schema migrations."""

    version = pw.IntegerField(primary_key=True)
    name = pw.CharField(max_length=128)
    applied_at = pw.DateTimeField(default=utcnow)






class MessageRollup(BaseModel):
    """The overview's figures of the messages created in one closed hour or UTC day, per
    provider (tracker.overview.Tally); the counters are JSON objects, `latency` a JSON list."""

    step = pw.CharField(max_length=8)  # "hour" or "day"
    period = pw.DateTimeField()  # its start
    provider = pw.CharField(max_length=32)
    messages = pw.IntegerField()
    submitted = pw.IntegerField()
    delivered = pw.IntegerField()
    final = pw.IntegerField()
    receipted = pw.IntegerField()
    statuses = pw.TextField()
    errors = pw.TextField()
    latency = pw.TextField()

    class Meta:
        indexes = ((("step", "period"), False),)


class CallbackRollup(BaseModel):
    """Callbacks and poll answers received in one closed hour or UTC day, per provider."""

    step = pw.CharField(max_length=8)
    period = pw.DateTimeField()
    provider = pw.CharField(max_length=32)
    verdicts = pw.TextField()  # JSON object: verdict -> count
    last_callback = pw.DateTimeField(null=True)  # the last pushed one (poll answers are not)

    class Meta:
        indexes = ((("step", "period"), False),
                   (("provider", "last_callback"), False))  # a provider's last callback ever


class RollupPeriod(BaseModel):
    """A closed hour or day whose MessageRollup and CallbackRollup rows are complete."""

    step = pw.CharField(max_length=8)
    period = pw.DateTimeField()
    rolled_at = pw.DateTimeField()

    class Meta:
        indexes = ((("step", "period"), True),)


class RollupState(BaseModel):
    """The rollup job's bookmarks (event ids it has looked at)."""

    name = pw.CharField(max_length=32, primary_key=True)
    value = pw.BigIntegerField()


class ExportJob(BaseModel):
    """One export started from the messages page (tracker/export_jobs.py, m0008): what, who,
    how far, and the lease of the process writing it."""

    token = pw.CharField(max_length=32, unique=True)  # in its URLs: not guessable
    requested_by = pw.CharField(max_length=64)  # a username: only they (or an admin) see it
    format = pw.CharField(max_length=16)  # a name of exports.FORMATS
    filters = pw.TextField()  # JSON: the messages-page filter, as the page names it
    masked = pw.BooleanField()  # phone numbers masked (a viewer, mask_phone_numbers on)
    state = pw.CharField(max_length=8)  # queued, running, done, failed
    rows_written = pw.IntegerField(default=0)
    rows_expected = pw.IntegerField(null=True)  # the filter's count when writing started
    file_name = pw.CharField(max_length=64, null=True)  # in the exports folder, once done
    error = pw.TextField(null=True)
    created_at = pw.DateTimeField(default=utcnow)
    started_at = pw.DateTimeField(null=True)
    progress_at = pw.DateTimeField(null=True)  # rows_written last written
    finished_at = pw.DateTimeField(null=True)
    claimed_by = pw.CharField(max_length=128, null=True)  # the writer (host:pid:nonce)
    claimed_until = pw.DateTimeField(null=True)  # its lease, renewed with each progress write

    class Meta:
        indexes = (
            (("requested_by", "state"), False),  # a user's exports under way (the limit)
            (("created_at",), False),  # cleaning old jobs
        )


class WebhookEndpoint(BaseModel):
    """A URL of an API key's application that receives its messages' status changes."""

    api_key = pw.ForeignKeyField(ApiKey, backref="webhook_endpoints", on_delete="CASCADE")
    url = pw.CharField(max_length=2048)
    events = pw.TextField(null=True)  # comma-separated event names; null = every event
    created_at = pw.DateTimeField(default=utcnow)
    disabled_at = pw.DateTimeField(null=True)
    disabled_reason = pw.TextField(null=True)
    failing_since = pw.DateTimeField(null=True)  # first failure since its last success
    last_success_at = pw.DateTimeField(null=True)
    last_error = pw.TextField(null=True)
    last_error_at = pw.DateTimeField(null=True)


class Outbox(BaseModel):
    """One status change (or failover) of a message someone listens to, written by a trigger
    in the transaction of the change (m0011); the worker fans it out to deliveries."""

    message = pw.ForeignKeyField(Message, on_delete="CASCADE")
    kind = pw.CharField(max_length=16)  # status, failover
    status = pw.CharField(max_length=16)
    status_inferred = pw.BooleanField()
    error_code = pw.CharField(max_length=64, null=True)
    error_detail = pw.TextField(null=True)
    provider = pw.CharField(max_length=32)
    previous_provider = pw.CharField(max_length=32, null=True)  # failover: the one that failed
    status_at = pw.DateTimeField(null=True)
    changed_at = pw.DateTimeField()
    fanned_out_at = pw.DateTimeField(null=True)


class WebhookDelivery(BaseModel):
    """One outbox row to one destination: pending until a 2xx, or given up."""

    outbox = pw.ForeignKeyField(Outbox, on_delete="CASCADE")
    endpoint = pw.ForeignKeyField(WebhookEndpoint, null=True, on_delete="CASCADE",
                                  index=False)  # null: the message's status_callback
    api_key_id = pw.IntegerField(null=True)  # whose secret signs it
    url = pw.CharField(max_length=2048)
    origin = pw.CharField(max_length=300)  # scheme://host:port: concurrency is bounded per origin
    webhook_id = pw.CharField(max_length=40)  # the event's: one per outbox row, on every try
    payload = pw.TextField()  # the JSON body sent (and signed) on every try
    state = pw.CharField(max_length=16)  # pending, delivered, failed
    attempts = pw.IntegerField(default=0)
    created_at = pw.DateTimeField(default=utcnow)
    give_up_at = pw.DateTimeField()  # failures past this end the retries (webhook_retry_hours)
    next_at = pw.DateTimeField(null=True)  # due; while claimed, the end of the claim's lease
    claimed_by = pw.CharField(max_length=128, null=True)  # the worker that last claimed it
    delivered_at = pw.DateTimeField(null=True)
    last_status_code = pw.IntegerField(null=True)
    last_error = pw.TextField(null=True)


class WebhookAttempt(BaseModel):
    """One HTTP try of a delivery: when, the answer's status and first bytes, or the error."""

    delivery = pw.ForeignKeyField(WebhookDelivery, backref="tries", on_delete="CASCADE",
                                  index=False)
    at = pw.DateTimeField()
    status_code = pw.IntegerField(null=True)
    latency_ms = pw.IntegerField(null=True)
    response = pw.TextField(null=True)
    error = pw.TextField(null=True)


ALL_MODELS: list[type[BaseModel]] = [
    Message, Callback, Event, ApiKey, User, Lease, LoginFailure, ProviderThrottle,
    MessageRollup, CallbackRollup, RollupPeriod, RollupState, SchemaMigration, ExportJob,
    WebhookEndpoint, Outbox, WebhookDelivery, WebhookAttempt,
]
