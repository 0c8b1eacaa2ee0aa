-- Herald's SQLite schema. Applied by every process on start, inside one transaction;
-- every statement is idempotent (IF NOT EXISTS). Times are integer microseconds since
-- the Unix epoch. This file is the current version; a database of an older version is
-- first brought up to it by the migration steps in common/src/store/sqlite.rs, keyed on
-- schema_meta.schema_version, which this file then sets.

CREATE TABLE IF NOT EXISTS schema_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Resumable streams (SPEC §7): one row per stream, its epoch and the offset of its last
-- entry. Appending bumps `head` inside the appending transaction, so offsets are dense and
-- unique per stream; `last_us` keeps creation times strictly increasing per stream.
-- Keys: 't/<token id>' (a Mozilla token's messages), 'c/<app>/<channel>' (a channel's
-- history; `active` = 0 while its history is off).
CREATE TABLE IF NOT EXISTS streams (
    stream  TEXT PRIMARY KEY,
    epoch   TEXT NOT NULL,
    head    INTEGER NOT NULL DEFAULT 0,
    last_us INTEGER NOT NULL DEFAULT 0,
    active  INTEGER NOT NULL DEFAULT 1
) WITHOUT ROWID;

-- Mozilla push (SPEC §3). Tokens are stored only as the SHA-256 of the secret.
CREATE TABLE IF NOT EXISTS mozilla_tokens (
    token_id     TEXT PRIMARY KEY,
    own_queue_id TEXT NOT NULL,
    created_us   INTEGER NOT NULL
) WITHOUT ROWID;

-- domain IS NULL marks the token's own queue (created with the token).
CREATE TABLE IF NOT EXISTS mozilla_queues (
    queue_id   TEXT PRIMARY KEY,
    token_id   TEXT NOT NULL REFERENCES mozilla_tokens (token_id) ON DELETE CASCADE,
    domain     TEXT,
    read_us    INTEGER NOT NULL DEFAULT 0,
    created_us INTEGER NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS mozilla_queues_by_token_domain
    ON mozilla_queues (token_id, domain);

-- A message of one queue, on its token's stream at `stream_offset`. A read mark
-- (action=read) is a message of the token's own queue with only `read_key` set.
CREATE TABLE IF NOT EXISTS mozilla_messages (
    key           TEXT PRIMARY KEY,
    queue_id      TEXT NOT NULL REFERENCES mozilla_queues (queue_id) ON DELETE CASCADE,
    token_id      TEXT NOT NULL,
    stream_offset INTEGER NOT NULL,
    created_us    INTEGER NOT NULL,
    title         TEXT,
    body          TEXT,
    action_url    TEXT,
    icon_url      TEXT,
    replace_id    TEXT,
    read_key      TEXT
);
CREATE INDEX IF NOT EXISTS mozilla_messages_by_queue
    ON mozilla_messages (queue_id, created_us, key);
CREATE INDEX IF NOT EXISTS mozilla_messages_by_token
    ON mozilla_messages (token_id, created_us, key);
CREATE UNIQUE INDEX IF NOT EXISTS mozilla_messages_by_token_offset
    ON mozilla_messages (token_id, stream_offset);
CREATE INDEX IF NOT EXISTS mozilla_messages_by_replace_id
    ON mozilla_messages (queue_id, replace_id, created_us) WHERE replace_id IS NOT NULL;

-- Channels (SPEC §4). A row exists once a channel was configured; history is on when
-- history_size or history_ttl_s is set.
CREATE TABLE IF NOT EXISTS channels (
    app           TEXT NOT NULL,
    name          TEXT NOT NULL,
    history_size  INTEGER,
    history_ttl_s INTEGER,
    created_us    INTEGER NOT NULL,
    updated_us    INTEGER NOT NULL,
    PRIMARY KEY (app, name)
) WITHOUT ROWID;

-- A channel's history, at the offsets of its stream. `data` is JSON text; `keep_until_us`
-- is when the row goes (the earlier of the history ttl and the message's own expiry).
CREATE TABLE IF NOT EXISTS channel_messages (
    app           TEXT NOT NULL,
    channel       TEXT NOT NULL,
    stream_offset INTEGER NOT NULL,
    id            TEXT NOT NULL,
    data          TEXT NOT NULL,
    created_us    INTEGER NOT NULL,
    expires_us    INTEGER,
    keep_until_us INTEGER,
    replace_id    TEXT,
    PRIMARY KEY (app, channel, stream_offset)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS channel_messages_by_keep_until
    ON channel_messages (keep_until_us) WHERE keep_until_us IS NOT NULL;
CREATE INDEX IF NOT EXISTS channel_messages_by_replace_id
    ON channel_messages (app, channel, replace_id, stream_offset) WHERE replace_id IS NOT NULL;

-- Idempotency keys of publishes: the first result, held until expires_us.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    app           TEXT NOT NULL,
    -- "<channel> <idempotencyKey>": keys are scoped to the channel.
    key           TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    created_us    INTEGER NOT NULL,
    stream_epoch  TEXT,
    stream_offset INTEGER,
    -- The message's own expiry, part of the first result.
    message_expires_us INTEGER,
    expires_us    INTEGER NOT NULL,
    PRIMARY KEY (app, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_keys_by_expiry ON idempotency_keys (expires_us);

-- VPush contexts (SPEC §5): channels created through the VPush API; `id` is the channel.
CREATE TABLE IF NOT EXISTS vpush_contexts (
    app        TEXT NOT NULL,
    id         TEXT NOT NULL,
    name       TEXT,
    created_us INTEGER NOT NULL,
    PRIMARY KEY (app, id)
) WITHOUT ROWID;

-- Addressed messages (SPEC §4 Messages), one row per recipient, at `stream_offset` of the
-- recipient's inbox stream 'i/<app>/<user>'. `kind` is 'text' (Socrate's `message`) or
-- 'data' (JSON text in `body`). `status` leaves 'PENDING' once, for 'DELIVERED',
-- 'CANCELLED' or 'EXPIRED', with the matching time set; a 'DELIVERED' one says how in
-- `delivered_via` ('websocket' or 'webpush').
CREATE TABLE IF NOT EXISTS messages (
    app               TEXT NOT NULL,
    id                TEXT NOT NULL,
    recipient         TEXT NOT NULL,
    stream_offset     INTEGER NOT NULL,
    foreign_id        TEXT,
    kind              TEXT NOT NULL,
    body              TEXT NOT NULL,
    topic             TEXT,
    status            TEXT NOT NULL,
    created_us        INTEGER NOT NULL,
    expires_us        INTEGER,
    delivered_us      INTEGER,
    cancelled_us      INTEGER,
    expired_us        INTEGER,
    global_message_id TEXT,
    delivered_via     TEXT,
    -- The PushPushGo bucket that sent it (its callback hears of it too), if one did.
    bucket            TEXT,
    PRIMARY KEY (app, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_by_recipient ON messages (app, recipient, stream_offset);
CREATE INDEX IF NOT EXISTS messages_newest_first ON messages (app, created_us, id);
CREATE INDEX IF NOT EXISTS messages_pending_expiry ON messages (expires_us)
    WHERE status = 'PENDING' AND expires_us IS NOT NULL;

-- Broadcasts (SPEC §4; Socrate's global messages): each reaches connected recipients as one
-- `messages` row per recipient carrying `global_message_id`.
CREATE TABLE IF NOT EXISTS global_messages (
    app        TEXT NOT NULL,
    id         TEXT NOT NULL,
    kind       TEXT NOT NULL,
    body       TEXT NOT NULL,
    topic      TEXT,
    created_us INTEGER NOT NULL,
    expires_us INTEGER,
    PRIMARY KEY (app, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS global_messages_newest_first ON global_messages (app, created_us, id);
CREATE INDEX IF NOT EXISTS messages_by_global ON messages (app, global_message_id)
    WHERE global_message_id IS NOT NULL;

-- Message templates (SPEC §4 Templates): `content` is the JSON object a message sent with
-- the template carries, kept as its exact text; `ttl` in seconds.
CREATE TABLE IF NOT EXISTS templates (
    app        TEXT NOT NULL,
    id         TEXT NOT NULL,
    content    TEXT NOT NULL,
    ttl        INTEGER,
    created_us INTEGER NOT NULL,
    PRIMARY KEY (app, id)
) WITHOUT ROWID;

-- Webhooks (SPEC §4): one per app. `events` lists the wanted kinds as ',sent,delivered,'
-- (so a kind is wanted when `instr(events, ',<kind>,') > 0`). The lease columns say which
-- dispatcher holds the app's outbox until when; the rest is how delivery is going.
CREATE TABLE IF NOT EXISTS webhooks (
    app              TEXT PRIMARY KEY,
    url              TEXT NOT NULL,
    secret           TEXT NOT NULL,
    events           TEXT NOT NULL,
    max_batch        INTEGER NOT NULL,
    max_delay_ms     INTEGER NOT NULL,
    updated_us       INTEGER NOT NULL,
    lease_holder     TEXT,
    lease_until_us   INTEGER NOT NULL DEFAULT 0,
    next_attempt_us  INTEGER NOT NULL DEFAULT 0,
    failures         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    last_attempt_us  INTEGER,
    last_success_us  INTEGER,
    dropped          INTEGER NOT NULL DEFAULT 0,
    format           TEXT
) WITHOUT ROWID;

-- The webhook outbox: events waiting to reach their app's webhook, written in the same
-- transaction as the state change that caused them; `seq` orders them.
CREATE TABLE IF NOT EXISTS webhook_outbox (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    app         TEXT NOT NULL,
    kind        TEXT NOT NULL,
    message_id  TEXT,
    foreign_id  TEXT,
    recipient   TEXT,
    at_us       INTEGER NOT NULL,
    recorded_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_outbox_by_app ON webhook_outbox (app, seq);

-- Force logout (SPEC §4): connection tokens of the user issued before not_before_us are
-- refused.
CREATE TABLE IF NOT EXISTS revocations (
    app           TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    not_before_us INTEGER NOT NULL,
    PRIMARY KEY (app, user_id)
) WITHOUT ROWID;

-- Web Push (SPEC §4 Users, §5): each app's VAPID key pair (base64url, made on first use),
-- its users' subscriptions (at most a few per user, one per endpoint), and the push queue
-- of messages waiting to go out by Web Push: addressed messages to an offline recipient
-- (`user_id` set) and PushPushGo bucket messages (`user_id` NULL). A job is
-- claimable once `next_us` has passed: its due time, or the end of a claim's lease.
CREATE TABLE IF NOT EXISTS webpush_keys (
    app         TEXT PRIMARY KEY,
    private_key TEXT NOT NULL,
    public_key  TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS webpush_subscriptions (
    app        TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    id         TEXT NOT NULL,
    endpoint   TEXT NOT NULL,
    p256dh     TEXT NOT NULL,
    auth       TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    PRIMARY KEY (app, user_id, id),
    UNIQUE (app, user_id, endpoint)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS webpush_jobs (
    id         TEXT PRIMARY KEY,
    app        TEXT NOT NULL,
    user_id    TEXT,
    message_id TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_us    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS webpush_jobs_by_next ON webpush_jobs (next_us);

-- PushPushGo CORE buckets, their contexts and the messages of their sends (SPEC §5; the
-- /v1 surface), each kept as the JSON of its record (common::store::buckets), written once.
CREATE TABLE IF NOT EXISTS ppg_buckets (
    id         TEXT PRIMARY KEY,
    app        TEXT NOT NULL,
    expires_us INTEGER NOT NULL,
    record     TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ppg_buckets_by_expiry ON ppg_buckets (expires_us);
CREATE TABLE IF NOT EXISTS ppg_contexts (
    id     TEXT PRIMARY KEY,
    app    TEXT NOT NULL,
    bucket TEXT NOT NULL,
    record TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ppg_contexts_by_bucket ON ppg_contexts (bucket);
CREATE TABLE IF NOT EXISTS ppg_messages (
    id     TEXT PRIMARY KEY,
    app    TEXT NOT NULL,
    bucket TEXT NOT NULL,
    record TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ppg_messages_by_bucket ON ppg_messages (bucket);

-- The edge registry and presence live in the second, non-durable database file
-- (store.sqlite_live_path), schema common/src/store/sqlite/live.sql.

INSERT INTO schema_meta (key, value) VALUES ('schema_version', '4')
    ON CONFLICT (key) DO UPDATE SET value = excluded.value;
