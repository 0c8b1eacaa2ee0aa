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
-- Keys: 't/<token id>' (a Mozilla token's messages).
CREATE TABLE IF NOT EXISTS streams (
    stream  TEXT PRIMARY KEY,
    epoch   TEXT NOT NULL,
    head    INTEGER NOT NULL DEFAULT 0,
    last_us INTEGER NOT NULL DEFAULT 0
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

-- WebSocket edges (SPEC §7, §9). Edges write url..heartbeat_us; the monitor writes
-- checked_us, check_failures and monitor_down.
CREATE TABLE IF NOT EXISTS edge_nodes (
    node_id        TEXT PRIMARY KEY,
    url            TEXT NOT NULL,
    connections    INTEGER NOT NULL DEFAULT 0,
    status         TEXT NOT NULL CHECK (status IN ('up', 'draining')),
    started_us     INTEGER NOT NULL,
    heartbeat_us   INTEGER NOT NULL,
    checked_us     INTEGER,
    check_failures INTEGER NOT NULL DEFAULT 0,
    monitor_down   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS edge_nodes_by_url ON edge_nodes (url);

INSERT INTO schema_meta (key, value) VALUES ('schema_version', '2')
    ON CONFLICT (key) DO UPDATE SET value = excluded.value;
