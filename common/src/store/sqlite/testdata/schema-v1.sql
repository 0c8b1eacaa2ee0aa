-- Schema version 1 as it shipped before stream positions: the starting point of the
-- migration test in sqlite.rs. Never applied by the product.
-- Herald's SQLite schema. Applied by every process on start, inside one transaction;
-- every statement is idempotent (IF NOT EXISTS). Times are integer microseconds since
-- the Unix epoch. A change that is not purely additive needs a migration step keyed on
-- schema_meta.schema_version.

CREATE TABLE IF NOT EXISTS schema_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT OR IGNORE INTO schema_meta (key, value) VALUES ('schema_version', '1');

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

CREATE TABLE IF NOT EXISTS mozilla_messages (
    key        TEXT PRIMARY KEY,
    queue_id   TEXT NOT NULL REFERENCES mozilla_queues (queue_id) ON DELETE CASCADE,
    token_id   TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    title      TEXT,
    body       TEXT,
    action_url TEXT,
    replace_id TEXT,
    read_us    INTEGER
);
CREATE INDEX IF NOT EXISTS mozilla_messages_by_queue
    ON mozilla_messages (queue_id, created_us, key);
CREATE INDEX IF NOT EXISTS mozilla_messages_by_token
    ON mozilla_messages (token_id, created_us, key);
CREATE INDEX IF NOT EXISTS mozilla_messages_by_replace_id
    ON mozilla_messages (queue_id, replace_id, created_us) WHERE replace_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS mozilla_messages_by_created
    ON mozilla_messages (created_us);
CREATE INDEX IF NOT EXISTS mozilla_messages_by_token_read
    ON mozilla_messages (token_id, read_us) WHERE read_us IS NOT NULL;

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
